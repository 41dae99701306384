//! The tests that start emulator stacks, the template's checks and the Lambda runtime's, in
//! one test binary (one link of the AWS SDK instead of one per file): each file beside this one
//! is a module of it, run as `cargo nextest run -p eventline-stack-tests FILE::`.

mod aggregates_sqlite;
mod auth;
mod conflicts;
mod cost;
mod emulator;
mod faults;
mod generator;
mod isolation;
mod kinesis_test_events;
mod kpl;
mod lambda_runtime;
mod openapi;
mod page;
mod pipeline;
mod policies;
mod poller;
mod producers;
mod received;
mod redrive;
mod reference;
mod retention;
mod template;
mod timeline;
mod window;

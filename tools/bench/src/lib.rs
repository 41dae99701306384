//! Pieces of the figures `make bench` prints: the Lambda Runtime API stub that times cold
//! starts, package sizes and the table (the AWS requests, write units and items read are
//! counted by `eventline_local::cost`). The measurements themselves are `src/bin/figures.rs`.

pub mod bill;
pub mod mix;
pub mod package;
pub mod report;
pub mod runtime_api;

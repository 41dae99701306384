//! Eventline's test-data generator and load driver.
//!
//! - [`cdr`]: the call-detail event model and its seeded generator;
//! - [`format`]: CSV, NDJSON, API and Kinesis-event writers;
//! - [`plain`]: the events as plain serde values, the reference the fast writers are held to;
//! - [`generate`]: the multi-threaded, memory-bounded generation pipeline;
//! - [`load`]: sends events through the HTTP API and verifies they were stored;
//! - [`api`]: the HTTP client side of the API: endpoints and what responses mean;
//! - [`source`]: generated or replayed events grouped into request batches;
//! - [`summary`]: the results of a load run and their rendering;
//! - [`reference`]: the reference table of the users a seed's events carry;
//! - [`signing`]: SigV4 signing of API requests;
//! - [`segment`]: Segment's tracking API: track messages, batch packing, write keys, answers;
//! - [`text`]: fixed-size text values and the byte cursor the writers use.

pub mod api;
pub mod cdr;
pub mod clock;
pub mod format;
pub mod generate;
pub mod load;
pub mod plain;
pub mod reference;
pub mod rng;
pub mod segment;
pub mod signing;
pub mod source;
pub mod summary;
pub mod text;

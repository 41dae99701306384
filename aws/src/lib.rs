//! Eventline's AWS adapters, shared by the functions and tools: the DynamoDB key layout
//! and item codec, the Kinesis record sink, the reference table store, the SDK bootstrap,
//! logs and metrics, and the routing and responses of the HTTP functions.

pub mod batch_get;
pub mod bootstrap;
pub mod errors;
pub mod http;
pub mod item;
pub mod keys;
pub mod kinesis;
pub mod logs;
pub mod reference;
pub mod routes;
pub mod telemetry;
pub mod write_keys;

pub use bootstrap::{SDK_ATTEMPT_TIMEOUT, SDK_CONNECT_TIMEOUT, SDK_OPERATION_TIMEOUT, sdk_config, sdk_timeouts};
pub use errors::{error_chain, refused_for_good};
pub use kinesis::KinesisSink;
pub use logs::{init_tracing, log_filter};
pub use telemetry::{flush_metrics, metrics_recorder};

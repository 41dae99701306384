//! Eventline's model: the event and its validation, the stream record, the pure
//! transformation, the storage key layout, latency statistics and the stream port.
//! Nothing here talks to AWS unless the `aws` feature brings in the shared adapters.

pub mod aggregate;
pub mod batch;
pub mod config;
pub mod event;
pub mod identity;
pub mod json;
pub mod keys;
pub mod latency;
pub mod record;
pub mod reference;
pub mod response;
pub mod retry;
pub mod sink;
pub mod telemetry;
pub mod validation;
pub mod window;

#[cfg(feature = "aws")]
pub mod aws;

pub use event::{Event, EventId, EventType, IngestId, RawObject, Source, UserId, format_rfc3339};
pub use identity::{Digest, Provenance, Sender};
pub use record::{Arrival, DecodeError, Position, ProcessedEvent, StreamRecord};
pub use validation::{FieldError, Rule, Rules, parse_event};

//! Eventline's model: the event and its validation, the stream record, the pure
//! transformation, the storage key layout, latency statistics and the stream port.
//! Nothing here talks to AWS unless the `aws` feature brings in the shared adapters.

pub mod config;
pub mod event;
pub mod keys;
pub mod latency;
pub mod record;
pub mod response;
pub mod sink;
pub mod validation;

#[cfg(feature = "aws")]
pub mod aws;

pub use event::{Event, EventId, EventType, Source, UserId, format_rfc3339};
pub use record::{DecodeError, Position, ProcessedEvent, StreamRecord};
pub use validation::{FieldError, Rules};

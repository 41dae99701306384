//! Eventline's model: the event and its validation, who sent it, the stream record and
//! what the transform makes of it (records in the KPL's aggregated format included), windows, aggregates, latency statistics, the reference
//! table, retry budgets, and the stream port with its in-memory adapter. Nothing here talks
//! to AWS: the adapters are in `eventline-aws`.

pub mod aggregate;
pub mod batch;
pub mod config;
pub mod event;
pub mod identity;
pub mod json;
pub mod kpl;
pub mod latency;
pub mod memory;
pub mod outcomes;
pub mod rate;
pub mod record;
pub mod reference;
pub mod retry;
pub mod segment;
pub mod sink;
pub mod validation;
pub mod window;
pub mod write_key;

pub use event::{Event, EventId, EventType, IngestId, RawObject, Source, UserId, format_rfc3339};
pub use identity::{Digest, Provenance, Sender};
pub use record::{Arrival, DecodeError, Position, ProcessedEvent, StreamRecord};
pub use validation::{FieldError, Rule, Rules, parse_event};

//! What travels on the ingest stream and what the transform makes of it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::Event;

/// One ingest-stream record: the validated event and when the service received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    #[serde(flatten)]
    pub event: Event,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// Why a stream record cannot be processed; such a record goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record data is not valid UTF-8 (byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("record data is not a valid event: {0}")]
    Invalid(String),
}

impl StreamRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(data).map_err(|e| DecodeError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
        serde_json::from_str(text).map_err(|e| DecodeError::Invalid(e.to_string()))
    }
}

/// Where a record sat in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub shard_id: String,
    pub sequence_number: String,
}

/// The stored and published form: the event with its payload uppercased and processing metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    #[serde(flatten)]
    pub event: Event,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub processed_at: OffsetDateTime,
    pub latency_ms: u64,
    pub shard_id: String,
    pub sequence_number: String,
}

impl ProcessedEvent {
    /// The pure transformation: uppercase the payload (full Unicode, `ß` becomes `SS`)
    /// and stamp where and when the event was processed.
    pub fn from_record(record: StreamRecord, position: Position, processed_at: OffsetDateTime) -> Self {
        let mut event = record.event;
        event.payload = event.payload.map(|p| p.to_uppercase());
        let latency = (processed_at - record.received_at).whole_milliseconds().max(0);
        Self {
            event,
            received_at: record.received_at,
            processed_at,
            latency_ms: u64::try_from(latency).unwrap_or(u64::MAX),
            shard_id: position.shard_id,
            sequence_number: position.sequence_number,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Rules;
    use serde_json::json;
    use time::macros::datetime;

    fn record(payload: &str) -> StreamRecord {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let event = Event::from_json(&json!({"id": "e1", "payload": payload}), &Rules::default(), now).unwrap();
        StreamRecord { event, received_at: now }
    }

    fn position() -> Position {
        Position { shard_id: "shardId-000000000000".into(), sequence_number: "42".into() }
    }

    #[test]
    fn payload_is_uppercased_with_full_unicode() {
        let out = ProcessedEvent::from_record(record("straße ǆ ﬁ ok"), position(), datetime!(2026-11-23 12:00:01 UTC));
        assert_eq!(out.event.payload.as_deref(), Some("STRASSE Ǆ FI OK"));
    }

    #[test]
    fn metadata_is_stamped() {
        let out = ProcessedEvent::from_record(record("x"), position(), datetime!(2026-11-23 12:00:01.250 UTC));
        assert_eq!(out.latency_ms, 1250);
        assert_eq!(out.shard_id, "shardId-000000000000");
        assert_eq!(out.sequence_number, "42");
        let json: serde_json::Value = serde_json::from_slice(&out.to_json()).unwrap();
        assert_eq!(json["received_at"], "2026-11-23T12:00:00Z");
        assert_eq!(json["processed_at"], "2026-11-23T12:00:01.25Z");
        assert_eq!(json["type"], "event");
    }

    #[test]
    fn clock_going_backwards_gives_zero_latency() {
        let out = ProcessedEvent::from_record(record("x"), position(), datetime!(2026-11-23 11:59:59 UTC));
        assert_eq!(out.latency_ms, 0);
    }

    #[test]
    fn stream_record_round_trips() {
        let original = record("hello");
        assert_eq!(StreamRecord::decode(&original.encode()).unwrap(), original);
    }

    #[test]
    fn invalid_utf8_is_a_decode_error() {
        assert_eq!(StreamRecord::decode(b"{\"id\":\"\xff\"}"), Err(DecodeError::NotUtf8 { valid_up_to: 7 }));
    }

    #[test]
    fn malformed_records_are_decode_errors() {
        for bad in [&b"not json"[..], b"{}", b"{\"id\":\"bad id\",\"source\":\"a\",\"type\":\"b\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"received_at\":\"2026-01-01T00:00:00Z\"}"] {
            assert!(matches!(StreamRecord::decode(bad), Err(DecodeError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

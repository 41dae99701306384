//! What travels on the ingest stream and what the transform makes of it.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{
    Event, EventId, EventType, IngestId, RawObject, Source, TIMESTAMP_RANGE_RULE, UserId, checked_utc, format_rfc3339,
};
use crate::json::check_unique_keys;
use crate::reference::Enrichment;

/// One ingest-stream record: the validated event, when the service received it, and the
/// id ingest gave this record (absent in records other producers write).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub event: Event,
    pub received_at: OffsetDateTime,
    pub ingest_id: Option<IngestId>,
}

/// Why a stream record cannot be processed; such a record goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record data is not valid UTF-8 (byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("record data is not a valid event: {0}")]
    Invalid(String),
}

impl Serialize for StreamRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.event.serialize_members(&mut map)?;
        map.serialize_entry("received_at", &format_rfc3339(self.received_at))?;
        if let Some(ingest_id) = &self.ingest_id {
            map.serialize_entry("ingest_id", ingest_id)?;
        }
        map.end()
    }
}

/// The record as it is written; fields another producer adds are ignored, so a newer
/// producer does not turn records into poison. A repeated field is an error.
#[derive(Deserialize)]
struct RecordWire {
    id: EventId,
    source: Source,
    #[serde(rename = "type")]
    event_type: EventType,
    timestamp: String,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    received_at: String,
    #[serde(default)]
    ingest_id: Option<IngestId>,
}

fn stream_time(name: &str, text: &str) -> Result<OffsetDateTime, DecodeError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| DecodeError::Invalid(format!("{name} must be an RFC 3339 timestamp")))?;
    checked_utc(parsed).ok_or_else(|| DecodeError::Invalid(format!("{name} {TIMESTAMP_RANGE_RULE}")))
}

impl StreamRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(data).map_err(|e| DecodeError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
        let wire: RecordWire = serde_json::from_str(text).map_err(|e| DecodeError::Invalid(e.to_string()))?;
        let data = match wire.data {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) if !raw.get().starts_with('{') => {
                return Err(DecodeError::Invalid("data must be a JSON object".into()));
            }
            Some(raw) => {
                check_unique_keys(&raw, "data").map_err(|e| DecodeError::Invalid(e.to_string()))?;
                Some(RawObject::new_unchecked(raw))
            }
        };
        Ok(Self {
            event: Event {
                id: wire.id,
                source: wire.source,
                event_type: wire.event_type,
                timestamp: stream_time("timestamp", &wire.timestamp)?,
                user_id: wire.user_id,
                payload: wire.payload,
                data,
            },
            received_at: stream_time("received_at", &wire.received_at)?,
            ingest_id: wire.ingest_id,
        })
    }
}

/// Where a record sat in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub shard_id: String,
    pub sequence_number: String,
}

/// The stored and published form: the event with its payload uppercased and processing metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedEvent {
    pub event: Event,
    pub received_at: OffsetDateTime,
    pub processed_at: OffsetDateTime,
    pub latency_ms: u64,
    pub shard_id: String,
    pub sequence_number: String,
    /// Kept with the stored item (not published) to recognise ingest's copies of a record.
    pub ingest_id: Option<IngestId>,
    /// The user's plan and region from the reference generation current when the batch
    /// was processed.
    pub enrichment: Option<Enrichment>,
}

impl Serialize for ProcessedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.event.serialize_members(&mut map)?;
        map.serialize_entry("received_at", &format_rfc3339(self.received_at))?;
        map.serialize_entry("processed_at", &format_rfc3339(self.processed_at))?;
        map.serialize_entry("latency_ms", &self.latency_ms)?;
        map.serialize_entry("shard_id", &self.shard_id)?;
        map.serialize_entry("sequence_number", &self.sequence_number)?;
        if let Some(enrichment) = &self.enrichment {
            map.serialize_entry("plan", &enrichment.plan)?;
            map.serialize_entry("region", &enrichment.region)?;
            map.serialize_entry("generation", &enrichment.generation)?;
        }
        map.end()
    }
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
            ingest_id: record.ingest_id,
            enrichment: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Rules, parse_value};
    use serde_json::json;
    use time::macros::datetime;

    fn record(payload: &str) -> StreamRecord {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let event = parse_value(&json!({"id": "e1", "payload": payload}), &Rules::default(), now).unwrap();
        StreamRecord { event, received_at: now, ingest_id: Some(IngestId::generate()) }
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
        assert!(json.get("ingest_id").is_none(), "the ingest id is not published");
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
    fn data_travels_byte_for_byte_to_the_processed_event() {
        let data = r#"{"a":1e15,"b":12345678901234567890123,"c":-0}"#;
        let line = format!(
            r#"{{"id":"e1","source":"web","type":"t","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z","data":{data}}}"#
        );
        let decoded = StreamRecord::decode(line.as_bytes()).unwrap();
        let out = ProcessedEvent::from_record(decoded, position(), datetime!(2026-01-01 00:00:01 UTC));
        let json = String::from_utf8(out.to_json()).unwrap();
        assert!(json.contains(&format!(r#""data":{data}"#)), "{json}");
    }

    #[test]
    fn invalid_utf8_is_a_decode_error() {
        assert_eq!(StreamRecord::decode(b"{\"id\":\"\xff\"}"), Err(DecodeError::NotUtf8 { valid_up_to: 7 }));
    }

    #[test]
    fn malformed_records_are_decode_errors() {
        let base = r#""source":"a","type":"b","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z""#;
        for bad in [
            "not json".to_owned(),
            "{}".to_owned(),
            format!(r#"{{"id":"bad id",{base}}}"#),
            format!(r#"{{"id":"a","id":"b",{base}}}"#),
            format!(r#"{{"id":"a","data":{{"k":1,"k":2}},{base}}}"#),
            format!(r#"{{"id":"a","data":[1],{base}}}"#),
            r#"{"id":"a","source":"a","type":"b","timestamp":"9999-12-31T23:30:00-01:00","received_at":"2026-01-01T00:00:00Z"}"#.to_owned(),
        ] {
            assert!(matches!(StreamRecord::decode(bad.as_bytes()), Err(DecodeError::Invalid(_))), "{bad}");
        }
    }
}

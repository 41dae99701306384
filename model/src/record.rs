//! What travels on the ingest stream and what the transform makes of it.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{
    Event, EventId, EventType, IngestId, RawObject, Source, TIMESTAMP_RANGE_RULE, UserId, checked_utc, format_rfc3339,
};
use crate::identity::{Digest, Provenance, Sender};
use crate::json::{Members, check_unique_keys};
use crate::reference::Enrichment;
use crate::validation::{FieldError, Rules, parse_event_with_id};

/// One ingest-stream record: the validated event, when the service received it, the id
/// ingest gave this record (absent in records other producers write), and who sent it with
/// the digest of what they sent (absent in records written before senders were recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub event: Event,
    pub received_at: OffsetDateTime,
    pub ingest_id: Option<IngestId>,
    pub provenance: Option<Provenance>,
}

/// Why a stream record cannot be processed; such a record goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record data is not valid UTF-8 (byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("record data is not a valid event: {0}")]
    Invalid(String),
    /// An event in the API's shape that breaks the API's rules.
    #[error("record data is not a valid event: {}", join(.0))]
    Rejected(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// How to read a record without `received_at`: an event in the API's shape that another
/// producer (a script, `sam local generate-event kinesis`) put on the stream directly.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// When the stream took the record (its approximate arrival timestamp); `None` when that
    /// lies outside the years the pipeline stores. It stands in for the time ingest would have
    /// received the event, and is the "now" the clock-skew rule measures from, so every
    /// delivery of a record gets the same verdict.
    pub at: Option<OffsetDateTime>,
    /// Where the record sits in the stream.
    pub position: &'a Position,
    /// The rules ingest validates events with.
    pub rules: &'a Rules,
}

impl Arrival<'_> {
    /// The id of an event that names none. The API draws a random UUID; a stream record gets
    /// one derived from its position, so a redelivery is the same event, stored and counted once.
    fn default_id(&self) -> EventId {
        self.position.derived_event_id()
    }
}

impl Serialize for StreamRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.event.serialize_members(&mut map)?;
        map.serialize_entry("received_at", &format_rfc3339(self.received_at))?;
        if let Some(ingest_id) = &self.ingest_id {
            map.serialize_entry("ingest_id", ingest_id)?;
        }
        if let Some(provenance) = &self.provenance {
            map.serialize_entry("sender", &provenance.sender)?;
            map.serialize_entry("digest", &provenance.digest)?;
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
    #[serde(default)]
    sender: Option<Sender>,
    #[serde(default)]
    digest: Option<Digest>,
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
            // Both or neither: a record with one of them was not written by ingest.
            provenance: match (wire.sender, wire.digest) {
                (Some(sender), Some(digest)) => Some(Provenance { sender, digest }),
                (None, None) => None,
                _ => return Err(DecodeError::Invalid("sender and digest must come together".into())),
            },
        })
    }

    /// Decodes a record whoever wrote it: ingest's shape as [`StreamRecord::decode`] does,
    /// held to the deployment's rules again ([`Rules::check_received`]), or, when the data
    /// has no `received_at`, an event in the API's shape, validated as ingest validates it
    /// (with its defaults) and received when it arrived on the stream, sent by
    /// [`Sender::stream`].
    pub fn decode_arrived(data: &[u8], arrival: &Arrival<'_>) -> Result<Self, DecodeError> {
        let not_ingest_shape = match Self::decode(data) {
            Ok(record) => {
                arrival
                    .rules
                    .check_received(&record.event, record.received_at, arrival.at)
                    .map_err(DecodeError::Rejected)?;
                return Ok(record);
            }
            Err(error) => error,
        };
        // Only records that are not in ingest's shape are read a second time.
        let Ok(raw) = serde_json::from_slice::<&RawValue>(data) else {
            return Err(not_ingest_shape);
        };
        if Members::parse(raw).is_ok_and(|members| members.get("received_at").is_some()) {
            return Err(not_ingest_shape);
        }
        let Some(at) = arrival.at else {
            return Err(DecodeError::Invalid(format!("approximateArrivalTimestamp {TIMESTAMP_RANGE_RULE}")));
        };
        let event =
            parse_event_with_id(raw, arrival.rules, at, || arrival.default_id()).map_err(DecodeError::Rejected)?;
        let provenance = Provenance { sender: Sender::stream(), digest: Digest::of_event(raw) };
        Ok(Self { event, received_at: at, ingest_id: None, provenance: Some(provenance) })
    }
}

/// Where a record sat in the stream. The user records of an aggregated record share its
/// sequence number and are told apart by their index in it, as the KCL's sub-sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub shard_id: String,
    pub sequence_number: String,
    /// The index of a user record in its aggregated record; `None` for an ordinary record.
    pub sub_sequence_number: Option<u64>,
}

impl Position {
    /// An ordinary record's position.
    pub fn of_record(shard_id: impl Into<String>, sequence_number: impl Into<String>) -> Self {
        Self { shard_id: shard_id.into(), sequence_number: sequence_number.into(), sub_sequence_number: None }
    }

    /// The position as text that sorts in the shard's order: the sequence number's length
    /// (Kinesis writes them without leading zeros, so a longer one is larger), the sequence
    /// number, and the index in an aggregated record (0 for an ordinary record, which never
    /// shares a sequence number with user records). An item that takes a shard's records
    /// keeps the last one's key, and takes only records that sort after it.
    pub fn order_key(&self) -> String {
        format!(
            "{:03}{}#{:010}",
            self.sequence_number.len(),
            self.sequence_number,
            self.sub_sequence_number.unwrap_or(0)
        )
    }

    /// The id of an event that names none, derived from where it sat so that every delivery
    /// of it is the same event: `{shard}:{sequence}`, and `:{index}` for a user record of an
    /// aggregated record, so that its siblings do not collide.
    pub fn derived_event_id(&self) -> EventId {
        match self.sub_sequence_number {
            None => EventId::derived_from(&format!("{}:{}", self.shard_id, self.sequence_number)),
            Some(index) => EventId::derived_from(&format!("{}:{}:{index}", self.shard_id, self.sequence_number)),
        }
    }
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
    /// The index of its user record in an aggregated record (see [`Position`]).
    pub sub_sequence_number: Option<u64>,
    /// Kept with the stored item (not published) to recognise ingest's copies of a record.
    pub ingest_id: Option<IngestId>,
    /// Kept with the stored item (not published) to tell a duplicate from a conflict.
    pub provenance: Option<Provenance>,
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
        if let Some(sub_sequence_number) = self.sub_sequence_number {
            map.serialize_entry("sub_sequence_number", &sub_sequence_number)?;
        }
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
            sub_sequence_number: position.sub_sequence_number,
            ingest_id: record.ingest_id,
            provenance: record.provenance,
            enrichment: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Where the record it came from sat in the stream.
    pub fn position(&self) -> Position {
        Position {
            shard_id: self.shard_id.clone(),
            sequence_number: self.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Rule, Rules, parse_value};
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn positions_sort_in_the_shards_order_as_text() {
        let at = |sequence: &str, index: Option<u64>| Position {
            shard_id: "shardId-000000000000".to_owned(),
            sequence_number: sequence.to_owned(),
            sub_sequence_number: index,
        };
        let ordered = [
            at("9", None),
            at("10", None),
            at("49590338271490256608559692538361571095921575989136588898", Some(0)),
            at("49590338271490256608559692538361571095921575989136588898", Some(2)),
            at("49590338271490256608559692538361571095921575989136588898", Some(10)),
            at("49590338271490256608559692538361571095921575989136588899", None),
            at("149590338271490256608559692538361571095921575989136588898", None),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0].order_key() < pair[1].order_key(), "{:?} before {:?}", pair[0], pair[1]);
        }
    }

    fn record(payload: &str) -> StreamRecord {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let event = parse_value(&json!({"id": "e1", "payload": payload}), &Rules::default(), now).unwrap();
        let provenance = Provenance {
            sender: Sender::iam("arn:aws:iam::123456789012:user/test"),
            digest: Digest::try_from("0".repeat(32)).unwrap(),
        };
        StreamRecord { event, received_at: now, ingest_id: Some(IngestId::generate()), provenance: Some(provenance) }
    }

    fn position() -> Position {
        Position::of_record("shardId-000000000000", "42")
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
    fn records_written_before_senders_were_recorded_still_decode() {
        let old = r#"{"id":"e1","source":"web","type":"t","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z","ingest_id":"abc"}"#;
        let decoded = StreamRecord::decode(old.as_bytes()).unwrap();
        assert_eq!(decoded.provenance, None);
        assert!(!String::from_utf8(decoded.encode()).unwrap().contains("sender"), "no empty members are written");
        let with = record("x");
        let text = String::from_utf8(with.encode()).unwrap();
        assert!(
            text.ends_with(
                r#","sender":"arn:aws:iam::123456789012:user/test","digest":"00000000000000000000000000000000"}"#
            ),
            "{text}"
        );
        let half = old.replace(r#""ingest_id":"abc""#, r#""sender":"stream""#);
        assert!(matches!(StreamRecord::decode(half.as_bytes()), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn the_provenance_is_kept_for_the_stored_item() {
        let original = record("x");
        let out = ProcessedEvent::from_record(original.clone(), position(), datetime!(2026-11-23 12:00:01 UTC));
        assert_eq!(out.provenance, original.provenance);
        let json: serde_json::Value = serde_json::from_slice(&out.to_json()).unwrap();
        assert!(json.get("sender").is_none() && json.get("digest").is_none(), "not published");
    }

    #[test]
    fn a_direct_record_is_sent_by_the_stream_with_the_digest_of_its_data() {
        let data = r#"{"id":"k-1", "source":"sam","payload":"hi"}"#;
        let record = arrived(data, &Rules::default()).unwrap();
        let expected = Digest::of_event(&RawValue::from_string(data.to_owned()).unwrap());
        assert_eq!(record.provenance, Some(Provenance { sender: Sender::stream(), digest: expected }));
        // The defaults filled in (type, timestamp) are not part of it.
        let explicit =
            arrived(r#"{"id":"k-1","source":"sam","payload":"hi","type":"event"}"#, &Rules::default()).unwrap();
        assert_ne!(explicit.provenance, record.provenance);
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

    const ARRIVED: OffsetDateTime = datetime!(2015-04-09 00:00:00.25 UTC);

    fn arrived(data: &str, rules: &Rules) -> Result<StreamRecord, DecodeError> {
        let position = position();
        StreamRecord::decode_arrived(data.as_bytes(), &Arrival { at: Some(ARRIVED), position: &position, rules })
    }

    fn rejected_fields(data: &str, rules: &Rules) -> Vec<(String, Rule)> {
        match arrived(data, rules) {
            Err(DecodeError::Rejected(errors)) => errors.into_iter().map(|e| (e.field, e.rule)).collect(),
            other => panic!("{data}: {other:?}"),
        }
    }

    #[test]
    fn an_api_shaped_record_is_received_when_it_arrived_with_the_apis_defaults() {
        let record = arrived(r#"{"id":"k-1","source":"sam","payload":"hi"}"#, &Rules::default()).unwrap();
        assert_eq!(record.received_at, ARRIVED);
        assert_eq!(record.ingest_id, None);
        assert_eq!(record.provenance.as_ref().map(|p| p.sender.as_str()), Some("stream"));
        assert_eq!(record.event.id.as_str(), "k-1");
        assert_eq!(record.event.source.as_str(), "sam");
        assert_eq!(record.event.event_type.as_str(), "event");
        assert_eq!(record.event.timestamp, ARRIVED);
        assert_eq!(record.event.payload.as_deref(), Some("hi"));
        let without_source = arrived(r#"{"id":"k-2","timestamp":1428537000}"#, &Rules::default()).unwrap();
        assert_eq!(without_source.event.source.as_str(), "api");
        assert_eq!(without_source.event.timestamp, datetime!(2015-04-08 23:50:00 UTC));
    }

    #[test]
    fn an_api_shaped_record_without_id_gets_the_same_id_on_every_delivery() {
        let first = arrived(r#"{"source":"sam"}"#, &Rules::default()).unwrap();
        let again = arrived(r#"{"source":"sam"}"#, &Rules::default()).unwrap();
        assert_eq!(first.event.id, again.event.id);
        assert!(uuid::Uuid::parse_str(first.event.id.as_str()).is_ok());
        let elsewhere = Position { sequence_number: "43".into(), ..position() };
        let rules = Rules::default();
        let other = StreamRecord::decode_arrived(
            br#"{"source":"sam"}"#,
            &Arrival { at: Some(ARRIVED), position: &elsewhere, rules: &rules },
        )
        .unwrap();
        assert_ne!(other.event.id, first.event.id);
    }

    #[test]
    fn user_records_of_an_aggregate_without_id_get_ids_of_their_own_on_every_delivery() {
        let rules = Rules::default();
        let id_at = |sub_sequence_number| {
            let position = Position { sub_sequence_number, ..position() };
            let arrival = Arrival { at: Some(ARRIVED), position: &position, rules: &rules };
            StreamRecord::decode_arrived(br#"{"source":"sam"}"#, &arrival).unwrap().event.id
        };
        let (first, second) = (id_at(Some(0)), id_at(Some(1)));
        assert_ne!(first, second, "siblings do not collide");
        assert_eq!(first, id_at(Some(0)), "a redelivered aggregate gives the same ids");
        assert_ne!(first, id_at(None), "nor does a user record collide with an ordinary record");
        assert_eq!(first, EventId::derived_from("shardId-000000000000:42:0"));
        assert_eq!(id_at(None), EventId::derived_from("shardId-000000000000:42"), "ordinary records keep theirs");
    }

    #[test]
    fn a_user_records_index_in_its_aggregate_is_published_beside_the_sequence_number() {
        let at = datetime!(2026-11-23 12:00:01 UTC);
        let ordinary = ProcessedEvent::from_record(record("x"), position(), at);
        let json: serde_json::Value = serde_json::from_slice(&ordinary.to_json()).unwrap();
        assert!(json.get("sub_sequence_number").is_none(), "{json}");
        let position = Position { sub_sequence_number: Some(3), ..position() };
        let user_record = ProcessedEvent::from_record(record("x"), position.clone(), at);
        let json: serde_json::Value = serde_json::from_slice(&user_record.to_json()).unwrap();
        assert_eq!((json["sequence_number"].as_str(), json["sub_sequence_number"].as_u64()), (Some("42"), Some(3)));
        assert_eq!(user_record.position(), position);
    }

    #[test]
    fn an_api_shaped_record_that_breaks_the_apis_rules_is_rejected_with_every_error() {
        let rules = Rules::default();
        let fields = rejected_fields(r#"{"id":"a b","timestamp":"yesterday","colour":"red"}"#, &rules);
        assert_eq!(
            fields,
            [("colour".into(), Rule::UnknownField), ("id".into(), Rule::Format), ("timestamp".into(), Rule::Format)]
        );
        let error = arrived(r#"{"timestamp":"yesterday"}"#, &rules).unwrap_err();
        assert!(error.to_string().contains("timestamp must be an RFC 3339 string"), "{error}");
        // Checked against the arrival, not the clock: the verdict is the same on every delivery.
        assert_eq!(
            rejected_fields(r#"{"timestamp":"2015-04-09T00:05:01Z"}"#, &rules),
            [("timestamp".into(), Rule::Future)]
        );
        assert!(arrived(r#"{"timestamp":"2015-04-09T00:05:00Z"}"#, &rules).is_ok());
        assert_eq!(rejected_fields(r#"{"id":"a","id":"b"}"#, &rules), [("id".into(), Rule::DuplicateKey)]);
        assert_eq!(rejected_fields("[1]", &rules), [("".into(), Rule::Type)]);
        assert_eq!(rejected_fields(r#"{"ingest_id":"abc"}"#, &rules), [("ingest_id".into(), Rule::UnknownField)]);
    }

    #[test]
    fn an_api_shaped_record_meets_the_allow_lists() {
        let rules = Rules {
            allowed_types: vec![EventType::parse("click").unwrap()],
            allowed_sources: vec![Source::parse("web").unwrap()],
            ..Rules::default()
        };
        assert!(arrived(r#"{"type":"click","source":"web"}"#, &rules).is_ok());
        assert_eq!(
            rejected_fields(r#"{"type":"view","source":"sam"}"#, &rules),
            [("type".into(), Rule::NotAllowed), ("source".into(), Rule::NotAllowed)]
        );
    }

    /// [`arrived`] for a record the stream took at `at`.
    fn arrived_at(data: &str, rules: &Rules, at: OffsetDateTime) -> Result<StreamRecord, DecodeError> {
        let position = position();
        StreamRecord::decode_arrived(data.as_bytes(), &Arrival { at: Some(at), position: &position, rules })
    }

    #[test]
    fn a_record_in_ingests_shape_from_another_producer_meets_the_deployments_rules() {
        let original = record("hello");
        let took = original.received_at + time::Duration::seconds(1);
        let line = |event: &str| {
            format!(
                r#"{{"id":"x","source":"web","type":"click",{event},"ingest_id":"71bd9491b292458882d96fa34d4551f1"}}"#
            )
        };
        let rules = Rules { allowed_types: vec![EventType::parse("view").unwrap()], ..Rules::default() };
        let fields = |data: &str, rules: &Rules| match arrived_at(data, rules, took) {
            Err(DecodeError::Rejected(errors)) => errors.into_iter().map(|e| (e.field, e.rule)).collect::<Vec<_>>(),
            other => panic!("{data}: {other:?}"),
        };
        let received = format_rfc3339(original.received_at);
        let in_time = line(&format!(r#""timestamp":"{received}","received_at":"{received}""#));
        assert_eq!(fields(&in_time, &rules), [("type".into(), Rule::NotAllowed)]);
        assert!(arrived_at(&in_time, &Rules::default(), took).is_ok());
        // A year ahead of when it was received, or received a year after the stream took it.
        let later = format_rfc3339(original.received_at + time::Duration::days(365));
        let ahead = line(&format!(r#""timestamp":"{later}","received_at":"{received}""#));
        assert_eq!(fields(&ahead, &Rules::default()), [("timestamp".into(), Rule::Future)]);
        let forged = line(&format!(r#""timestamp":"{later}","received_at":"{later}""#));
        assert_eq!(fields(&forged, &Rules::default()), [("received_at".into(), Rule::Future)]);
        // Within the skew both ways is fine.
        let skew = format_rfc3339(original.received_at + time::Duration::seconds(300));
        let edge = line(&format!(r#""timestamp":"{skew}","received_at":"{received}""#));
        assert!(arrived_at(&edge, &Rules::default(), took).is_ok());
    }

    #[test]
    fn a_record_with_received_at_is_read_as_ingest_wrote_it() {
        let original = record("hello");
        let took = original.received_at + time::Duration::milliseconds(250);
        let line = String::from_utf8(original.encode()).unwrap();
        assert_eq!(arrived_at(&line, &Rules::default(), took), Ok(original));
        // Broken ingest-shaped records keep their own error; the API's rules are not applied.
        let missing_source =
            r#"{"id":"a","type":"t","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        let error = arrived(missing_source, &Rules::default()).unwrap_err();
        assert!(matches!(&error, DecodeError::Invalid(m) if m.contains("missing field `source`")), "{error:?}");
        let null = r#"{"id":"a","received_at":null}"#;
        assert!(matches!(arrived(null, &Rules::default()), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn an_arrival_time_out_of_range_fails_only_records_that_need_it() {
        let position = position();
        let rules = Rules::default();
        let unknown = Arrival { at: None, position: &position, rules: &rules };
        let error = StreamRecord::decode_arrived(br#"{"id":"k-1"}"#, &unknown).unwrap_err();
        assert!(error.to_string().contains("approximateArrivalTimestamp"), "{error}");
        let original = record("x");
        assert_eq!(StreamRecord::decode_arrived(&original.encode(), &unknown), Ok(original));
    }

    #[test]
    fn undecodable_data_keeps_its_error() {
        let rules = Rules::default();
        assert!(matches!(arrived("not json", &rules), Err(DecodeError::Invalid(_))));
        let position = position();
        let arrival = Arrival { at: Some(ARRIVED), position: &position, rules: &rules };
        assert_eq!(
            StreamRecord::decode_arrived(b"{\"id\":\"\xff\"}", &arrival),
            Err(DecodeError::NotUtf8 { valid_up_to: 7 })
        );
    }

    #[test]
    fn null_data_is_read_as_absent() {
        let line = r#"{"id":"e1","source":"web","type":"t","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z","data":null}"#;
        assert_eq!(StreamRecord::decode(line.as_bytes()).unwrap().event.data, None);
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

//! Output formats. The line formats are written straight into byte buffers; the Kinesis test
//! event, small by construction, is built with serde.
//!
//! Line writers fill a byte buffer owned by a worker thread through a [`Cursor`]: integers are
//! split into digits eight at a time with word-wide arithmetic, UUIDs come from a hex table,
//! dates from a [`DateCache`], and every text value is a [`crate::text::Text`], which is checked
//! at compile time to need no CSV quoting or JSON escaping. Formatting an event allocates
//! nothing.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::Serialize;

use crate::cdr::{CallEvent, GenConfig};
use crate::clock::{self, DateCache};
use crate::plain::PipelineEvent;
use crate::text::Cursor;

/// Most records a `kinesis-event` document may hold. About 1.4 KB per record keeps 1000 well
/// inside Lambda's 6 MB invocation payload limit.
pub const KINESIS_MAX_RECORDS: u64 = 1000;

/// Most pipeline events per `POST /events` request, and so per line of the `api` format.
pub const API_MAX_BATCH: usize = 100;

/// Delay between an event's time and the moment the service "received" it, in
/// `kinesis-event` records: a fixed base plus a per-event part taken from the event's UUID.
const RECEIVE_DELAY_MICROS: i64 = 40_000;

pub const CSV_HEADER: &str = "event_source,event_ref,event_type,event_date,calling_number,called_number,location,duration_seconds,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Api,
    KinesisEvent,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Csv, Format::Ndjson, Format::Api, Format::KinesisEvent];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Api => "api",
            Format::KinesisEvent => "kinesis-event",
        }
    }

    /// The line format an [`EventWriter`] writes; `None` for the Kinesis test event, which is
    /// one document (see [`kinesis_event`]).
    pub fn line_format(self) -> Option<LineFormat> {
        match self {
            Format::Csv => Some(LineFormat::Csv),
            Format::Ndjson => Some(LineFormat::Ndjson),
            Format::Api => Some(LineFormat::Api),
            Format::KinesisEvent => None,
        }
    }
}

/// The formats written event after event, in chunks on many threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Csv,
    Ndjson,
    Api,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown format '{s}' (expected csv, ndjson, api or kinesis-event)"))
    }
}

/// Per-thread formatting state: the date cache.
#[derive(Debug, Clone)]
pub struct EventWriter {
    format: LineFormat,
    total: u64,
    batch: u64,
    dates: DateCache,
}

impl EventWriter {
    /// `total` is the number of events in the run (it decides where the last array closes);
    /// `batch` is the `api` array length, 1 to [`API_MAX_BATCH`].
    pub fn new(format: LineFormat, total: u64, batch: usize) -> Self {
        Self { format, total, batch: batch.clamp(1, API_MAX_BATCH) as u64, dates: DateCache::default() }
    }

    /// Bytes that go before the first event.
    pub fn header(&self) -> &'static [u8] {
        match self.format {
            LineFormat::Csv => CSV_HEADER.as_bytes(),
            LineFormat::Ndjson | LineFormat::Api => b"",
        }
    }

    /// About how many bytes an event takes, for sizing buffers.
    pub fn typical_event_len(&self) -> usize {
        match self.format {
            LineFormat::Csv => 190,
            LineFormat::Ndjson => 390,
            LineFormat::Api => 620,
        }
    }

    /// Room that [`EventWriter::write_into`] may need for one event. Every field has a bounded
    /// size, so this is a true bound (checked by tests with generous margin).
    pub fn max_event_len(&self) -> usize {
        match self.format {
            LineFormat::Csv => 1024,
            LineFormat::Ndjson => 2048,
            LineFormat::Api => 3072,
        }
    }

    /// Appends event number `index` (0-based, across the whole run) to a vector.
    pub fn write(&mut self, index: u64, event: &CallEvent, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.max_event_len(), 0);
        let written = self.write_into(index, event, &mut out[start..]);
        out.truncate(start + written);
    }

    /// Writes event number `index` (0-based, across the whole run) at the start of `out`,
    /// which must have at least [`EventWriter::max_event_len`] bytes; returns the length.
    #[inline]
    pub fn write_into(&mut self, index: u64, event: &CallEvent, out: &mut [u8]) -> usize {
        match self.format {
            LineFormat::Csv => self.write_csv(event, out),
            LineFormat::Ndjson => self.write_ndjson(event, out),
            LineFormat::Api => self.write_api_line_item(index, event, out),
        }
    }

    fn write_ndjson(&mut self, e: &CallEvent, buf: &mut [u8]) -> usize {
        let mut out = Cursor::new(buf);
        self.write_call_json(e, &mut out);
        out.byte(b'\n');
        out.written()
    }

    fn write_api_line_item(&mut self, index: u64, e: &CallEvent, buf: &mut [u8]) -> usize {
        let mut out = Cursor::new(buf);
        out.byte(if index.is_multiple_of(self.batch) { b'[' } else { b',' });
        self.write_api_fields(e, &mut out);
        out.byte(b'}');
        if (index + 1).is_multiple_of(self.batch) || index + 1 == self.total {
            out.array(b"]\n");
        }
        out.written()
    }

    fn write_csv(&mut self, e: &CallEvent, buf: &mut [u8]) -> usize {
        let out = &mut Cursor::new(buf);
        // Text fields are `Text` values, proven at compile time to need no quoting.
        out.text(e.source);
        out.byte(b',');
        out.uuid(e.event_ref);
        out.byte(b',');
        out.byte(b'0' + e.event_type.code());
        out.byte(b',');
        out.array(self.dates.get(e.time_secs()));
        out.byte(b',');
        e.calling.write(out);
        out.byte(b',');
        e.called.write(out);
        out.byte(b',');
        e.write_location(out);
        out.byte(b',');
        out.u64(u64::from(e.duration_seconds));
        // Spelled out so each call is inlined with a constant attribute number.
        let mut attr = |n: usize| {
            out.byte(b',');
            e.write_attr(n, out);
        };
        attr(1);
        attr(2);
        attr(3);
        attr(4);
        attr(5);
        attr(6);
        attr(7);
        attr(8);
        out.byte(b'\n');
        out.written()
    }

    /// The call-detail fields as one JSON object; empty attributes are `null`.
    #[inline(always)]
    fn write_call_json(&mut self, e: &CallEvent, out: &mut Cursor<'_>) {
        out.array(b"{\"event_source\":\"");
        out.text(e.source);
        out.array(b"\",\"event_ref\":\"");
        out.uuid(e.event_ref);
        out.array(b"\",\"event_type\":");
        out.byte(b'0' + e.event_type.code());
        out.array(b",\"event_date\":\"");
        out.array(self.dates.get(e.time_secs()));
        out.array(b"\",\"calling_number\":");
        e.calling.write(out);
        out.array(b",\"called_number\":");
        e.called.write(out);
        out.array(b",\"location\":\"");
        e.write_location(out);
        out.array(b"\",\"duration_seconds\":");
        out.u64(u64::from(e.duration_seconds));
        // Spelled out so each call is inlined with a constant attribute number.
        let mut attr = |n: usize, key: &[u8; 11]| {
            out.array(key);
            if e.write_attr(n, out) {
                out.byte(b'"');
            } else {
                // Replace the opening quote.
                out.unwrite(1);
                out.array(b"null");
            }
        };
        attr(1, b",\"attr_1\":\"");
        attr(2, b",\"attr_2\":\"");
        attr(3, b",\"attr_3\":\"");
        attr(4, b",\"attr_4\":\"");
        attr(5, b",\"attr_5\":\"");
        attr(6, b",\"attr_6\":\"");
        attr(7, b",\"attr_7\":\"");
        attr(8, b",\"attr_8\":\"");
        out.byte(b'}');
    }

    /// One pipeline event as accepted by `POST /events` (see the crate README for the mapping).
    pub fn write_api_event(&mut self, e: &CallEvent, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.max_event_len(), 0);
        let mut cursor = Cursor::new(&mut out[start..]);
        self.write_api_fields(e, &mut cursor);
        cursor.byte(b'}');
        let written = cursor.written();
        out.truncate(start + written);
    }

    /// The pipeline event without its closing brace.
    #[inline(always)]
    fn write_api_fields(&mut self, e: &CallEvent, out: &mut Cursor<'_>) {
        out.array(b"{\"id\":\"");
        out.uuid(e.event_ref);
        out.array(b"\",\"source\":\"");
        out.text(e.source);
        out.array(b"\",\"type\":\"");
        out.bytes(e.event_type.api_name().as_bytes());
        out.array(b"\",\"timestamp\":\"");
        out.array(self.dates.get(e.time_secs()));
        out.array(b"\",\"user_id\":\"");
        e.subscriber().write(out);
        out.array(b"\",\"payload\":\"");
        e.write_location(out);
        out.array(b"\",\"data\":");
        self.write_call_json(e, out);
        if let Some(volume) = e.data_volume() {
            // Reopens the call-detail object, which NDJSON writes unchanged, to add the volume.
            out.unwrite(1);
            out.array(b",\"bytes_up\":");
            out.u64(volume.bytes_up);
            out.array(b",\"bytes_down\":");
            out.u64(volume.bytes_down);
            out.byte(b'}');
        }
    }
}

/// A Lambda `KinesisEvent` document, as `sam local invoke -e` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KinesisEvent {
    #[serde(rename = "Records")]
    pub records: Vec<KinesisEventRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisEventRecord {
    pub kinesis: KinesisRecord,
    pub event_source: &'static str,
    pub event_version: &'static str,
    #[serde(rename = "eventID")]
    pub event_id: String,
    pub event_name: &'static str,
    pub invoke_identity_arn: &'static str,
    pub aws_region: &'static str,
    #[serde(rename = "eventSourceARN")]
    pub event_source_arn: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisRecord {
    pub kinesis_schema_version: &'static str,
    pub partition_key: String,
    pub sequence_number: String,
    /// Base64 of an [`IngestRecord`] in JSON.
    pub data: String,
    /// Epoch seconds, with milliseconds.
    pub approximate_arrival_timestamp: f64,
}

/// What ingest puts on the stream: the pipeline event and when the service received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestRecord {
    #[serde(flatten)]
    pub event: PipelineEvent,
    /// RFC 3339, UTC, milliseconds.
    pub received_at: String,
}

const SHARD_ID: &str = "shardId-000000000000";

/// When the service received the event, for the `kinesis-event` format.
pub fn received_at_micros(e: &CallEvent) -> i64 {
    // Derived from the event itself so output stays reproducible for a seed.
    e.time_micros + RECEIVE_DELAY_MICROS + (e.event_ref as u64 % 500_000) as i64
}

/// The `kinesis-event` document of a run: one record per event, as Lambda delivers records
/// that ingest wrote to one shard.
pub fn kinesis_event(config: &GenConfig) -> Result<KinesisEvent, serde_json::Error> {
    let records = config
        .events()
        .enumerate()
        .map(|(index, e)| {
            let received = received_at_micros(&e);
            let millis = received.div_euclid(1000);
            let event = PipelineEvent::from(&e);
            let partition_key = event.user_id.clone();
            let record = IngestRecord {
                event,
                received_at: String::from_utf8_lossy(&clock::format_millis(received)).into_owned(),
            };
            let data = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&record)?);
            let sequence_number = sequence_number(index as u64);
            Ok(KinesisEventRecord {
                kinesis: KinesisRecord {
                    kinesis_schema_version: "1.0",
                    partition_key,
                    sequence_number: sequence_number.clone(),
                    data,
                    approximate_arrival_timestamp: millis as f64 / 1000.0,
                },
                event_source: "aws:kinesis",
                event_version: "1.0",
                event_id: format!("{SHARD_ID}:{sequence_number}"),
                event_name: "aws:kinesis:record",
                invoke_identity_arn: "arn:aws:iam::123456789012:role/lambda-role",
                aws_region: "us-east-1",
                event_source_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/eventline-ingest",
            })
        })
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(KinesisEvent { records })
}

/// Kinesis-style sequence numbers: 56 digits, a fixed prefix then the zero-padded record
/// number, so they increase strictly both as numbers and as strings.
pub fn sequence_number(index: u64) -> String {
    format!("495903382714902566085596925383615710{:020}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{ATTR_COUNT, EventType, GenConfig};

    #[test]
    fn sequence_numbers_have_56_digits_and_increase() {
        let mut previous = String::new();
        for index in [0u64, 1, 9, 10, 99, 12_345, 999_999] {
            let text = sequence_number(index);
            assert_eq!(text.len(), 56);
            assert!(text.bytes().all(|b| b.is_ascii_digit()));
            assert!(text > previous, "{text} after {previous}");
            previous = text;
        }
    }

    #[test]
    fn ndjson_line_parses_with_numbers_as_numbers_and_empty_attrs_as_null() {
        let events: Vec<_> = GenConfig::new(8, 200).events().collect();
        let mut writer = EventWriter::new(LineFormat::Ndjson, 200, 100);
        let mut nulls = 0;
        for (i, e) in events.iter().enumerate() {
            let mut out = Vec::new();
            writer.write(i as u64, e, &mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
            assert_eq!(v["calling_number"].as_u64(), Some(e.calling_number()));
            assert_eq!(v["event_type"].as_u64(), Some(u64::from(e.event_type.code())));
            assert_eq!(v["location"].as_str(), Some(e.location().as_str()));
            for n in 1..=ATTR_COUNT {
                let field = &v[format!("attr_{n}")];
                assert_eq!(field.as_str().map(str::to_owned), e.attr(n));
                nulls += usize::from(field.is_null());
            }
        }
        assert!(nulls > 0);
    }

    #[test]
    fn api_events_carry_the_subscriber_and_data_sessions_their_volume() {
        let events: Vec<_> = GenConfig::new(19, 2_000).events().collect();
        let mut writer = EventWriter::new(LineFormat::Api, 2_000, 100);
        let mut incoming = 0;
        for e in &events {
            let mut out = Vec::new();
            writer.write_api_event(e, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
            let user = v["user_id"].as_str().and_then(|u| u.parse::<u64>().ok());
            if e.event_type == EventType::CallIn {
                assert_eq!(user, Some(e.called_number()), "{v}");
                incoming += 1;
            } else {
                assert_eq!(user, Some(e.calling_number()), "{v}");
            }
            assert_eq!(v["type"].as_str(), Some(e.event_type.api_name()));
            assert_eq!(v["timestamp"].as_str(), Some(e.event_date().as_str()));
            let data = &v["data"];
            assert_eq!(data["duration_seconds"].as_u64(), Some(u64::from(e.duration_seconds)));
            let volume = (data.get("bytes_up").map(|b| b.as_u64()), data.get("bytes_down").map(|b| b.as_u64()));
            match e.data_volume() {
                Some(expected) => {
                    // JSON integers, so `as_u64` only reads non-negative whole numbers.
                    assert_eq!(volume, (Some(Some(expected.bytes_up)), Some(Some(expected.bytes_down))), "{v}");
                    assert!(expected.bytes_down > 0 || e.duration_seconds == 0, "{v}");
                }
                None => assert_eq!(volume, (None, None), "{v}"),
            }
        }
        assert!(incoming > 0);
    }

    #[test]
    fn kinesis_records_are_partitioned_by_the_subscriber() {
        let events: Vec<_> = GenConfig::new(19, 100).events().collect();
        let Some(call_in) = events.iter().find(|e| e.event_type == EventType::CallIn) else {
            panic!("no incoming call in 100 events");
        };
        let document = kinesis_event(&GenConfig::new(19, 100));
        let Ok(document) = document else {
            panic!("{document:?}");
        };
        let Some(record) = document.records.iter().find(|r| r.kinesis.data == ingest_data(call_in)) else {
            panic!("the incoming call has no record");
        };
        assert_eq!(record.kinesis.partition_key, call_in.called_number().to_string());
    }

    fn ingest_data(e: &CallEvent) -> String {
        let received_at = String::from_utf8_lossy(&clock::format_millis(received_at_micros(e))).into_owned();
        let record = IngestRecord { event: PipelineEvent::from(e), received_at };
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&record).unwrap_or_default())
    }

    #[test]
    fn kinesis_records_arrive_when_the_service_received_them() {
        let Ok(document) = kinesis_event(&GenConfig::new(23, 300)) else {
            panic!("no document");
        };
        for (e, record) in GenConfig::new(23, 300).events().zip(&document.records) {
            let received_millis = received_at_micros(&e).div_euclid(1000);
            let arrival = record.kinesis.approximate_arrival_timestamp;
            assert_eq!((arrival * 1000.0).round() as i64, received_millis, "{arrival}");
            // The text JSON carries is the exact decimal with at most three places.
            let text = serde_json::to_string(&arrival).unwrap_or_default();
            let places = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
            assert!((1..=3).contains(&places), "{text}");
        }
    }

    #[test]
    fn events_stay_well_inside_the_room_reserved_for_them() {
        for format in [LineFormat::Csv, LineFormat::Ndjson, LineFormat::Api] {
            let mut writer = EventWriter::new(format, 5_000, 100);
            let mut longest = 0;
            let mut out = Vec::new();
            for (i, e) in GenConfig::new(21, 5_000).events().enumerate() {
                out.clear();
                writer.write(i as u64, &e, &mut out);
                longest = longest.max(out.len());
            }
            assert!(longest * 2 <= writer.max_event_len(), "{format:?}: {longest} of {}", writer.max_event_len());
        }
    }

    #[test]
    fn format_names_parse_back() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        assert!("xml".parse::<Format>().is_err());
    }
}

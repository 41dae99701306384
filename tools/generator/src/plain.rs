//! The events as plain owned values written with serde: the `csv` crate, and `serde_json`
//! behind a `BufWriter`, as a first version would write them. The fast writers of
//! [`crate::format`] are tested byte for byte and benchmarked against these, and the Kinesis
//! test event, at most a thousand records, is built from them.

use std::io::{self, Write};

use serde::Serialize;

use crate::cdr::CallEvent;

/// A call-detail event, one CSV row or NDJSON line; `None` attributes are empty fields in
/// CSV and `null` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub event_source: String,
    pub event_ref: String,
    pub event_type: u8,
    pub event_date: String,
    pub calling_number: u64,
    pub called_number: u64,
    pub location: String,
    pub duration_seconds: u32,
    pub attr_1: Option<String>,
    pub attr_2: Option<String>,
    pub attr_3: Option<String>,
    pub attr_4: Option<String>,
    pub attr_5: Option<String>,
    pub attr_6: Option<String>,
    pub attr_7: Option<String>,
    pub attr_8: Option<String>,
}

impl From<&CallEvent> for CallRecord {
    fn from(e: &CallEvent) -> Self {
        Self {
            event_source: e.source.as_str().to_owned(),
            event_ref: e.event_ref_text(),
            event_type: e.event_type.code(),
            event_date: e.event_date(),
            calling_number: e.calling_number(),
            called_number: e.called_number(),
            location: e.location(),
            duration_seconds: e.duration_seconds,
            attr_1: e.attr(1),
            attr_2: e.attr(2),
            attr_3: e.attr(3),
            attr_4: e.attr(4),
            attr_5: e.attr(5),
            attr_6: e.attr(6),
            attr_7: e.attr(7),
            attr_8: e.attr(8),
        }
    }
}

/// A pipeline event as `POST /events` takes it (the mapping is in the crate README).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub timestamp: String,
    pub user_id: String,
    pub payload: String,
    pub data: PipelineData,
}

/// A pipeline event's `data`: the call-detail record, and a data session's volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineData {
    #[serde(flatten)]
    pub call: CallRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
}

impl From<&CallEvent> for PipelineEvent {
    fn from(e: &CallEvent) -> Self {
        let call = CallRecord::from(e);
        let volume = e.data_volume();
        Self {
            id: call.event_ref.clone(),
            source: call.event_source.clone(),
            event_type: e.event_type.api_name(),
            timestamp: call.event_date.clone(),
            user_id: e.subscriber_number().to_string(),
            payload: call.location.clone(),
            data: PipelineData { call, bytes_up: volume.map(|v| v.bytes_up), bytes_down: volume.map(|v| v.bytes_down) },
        }
    }
}

/// Writes `events` as CSV with a header row; returns how many were written. The csv writer
/// buffers its output itself, as a `BufWriter` would.
pub fn write_csv(events: impl IntoIterator<Item = CallEvent>, out: impl Write) -> Result<u64, csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    let mut count = 0;
    for e in events {
        writer.serialize(CallRecord::from(&e))?;
        count += 1;
    }
    writer.flush()?;
    Ok(count)
}

/// Writes `events` as NDJSON, one call-detail object per line; returns how many were written.
pub fn write_ndjson(events: impl IntoIterator<Item = CallEvent>, out: impl Write) -> io::Result<u64> {
    let mut out = io::BufWriter::new(out);
    let mut count = 0;
    for e in events {
        serde_json::to_writer(&mut out, &CallRecord::from(&e))?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::GenConfig;
    use crate::format::{EventWriter, LineFormat};
    use crate::generate::{GenerateOptions, generate_to};

    fn fast(format: crate::format::Format, count: u64, seed: u64) -> Vec<u8> {
        let mut options = GenerateOptions::new(count, seed, format);
        options.threads = 2;
        let mut out = Vec::new();
        let stats = generate_to(&options, &mut out);
        assert!(stats.is_ok(), "{stats:?}");
        out
    }

    // 20 013 events: two chunks and a short last type block.
    const COUNT: u64 = 20_013;

    #[test]
    fn the_fast_csv_is_what_the_csv_crate_writes() {
        let mut plain = Vec::new();
        assert_eq!(write_csv(GenConfig::new(5, COUNT).events(), &mut plain).ok(), Some(COUNT));
        assert!(plain == fast(crate::format::Format::Csv, COUNT, 5), "CSV differs from the csv crate's");
    }

    #[test]
    fn the_fast_ndjson_is_what_serde_json_writes() {
        let mut plain = Vec::new();
        assert_eq!(write_ndjson(GenConfig::new(6, COUNT).events(), &mut plain).ok(), Some(COUNT));
        assert!(plain == fast(crate::format::Format::Ndjson, COUNT, 6), "NDJSON differs from serde_json's");
    }

    #[test]
    fn the_fast_api_event_is_what_serde_json_writes() {
        let mut writer = EventWriter::new(LineFormat::Api, 2_000, 100);
        for e in GenConfig::new(7, 2_000).events() {
            let mut fast = Vec::new();
            writer.write_api_event(&e, &mut fast);
            let plain = serde_json::to_vec(&PipelineEvent::from(&e)).ok();
            assert_eq!(plain.as_deref(), Some(&fast[..]), "{}", String::from_utf8_lossy(&fast));
        }
    }
}

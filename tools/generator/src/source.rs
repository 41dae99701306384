//! Where `load` and `replay` get their events: the generator, or a captured file.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::cdr::{CallEvent, DataVolume, EventType, Events, GenConfig};
use crate::clock::{self, MICROS_PER_SEC};
use crate::format::{EventWriter, LineFormat};
use crate::segment::{self, Packer};

/// The lookup key of an event: `GET /events/{source}/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub source: String,
    pub id: String,
}

/// The `source` and `id` an event was sent with, when it had them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemRef {
    pub source: Option<String>,
    pub id: Option<String>,
}

impl ItemRef {
    /// The lookup key once accepted; the service's answer supplies the id if the event had none.
    pub fn key(&self, id_from_response: Option<String>) -> Option<EventKey> {
        Some(EventKey { source: self.source.clone()?, id: self.id.clone().or(id_from_response)? })
    }
}

/// The events of one request and what identifies each of them.
#[derive(Clone, Debug)]
pub struct Batch {
    /// A JSON array: the whole body of `POST /events`, or the `batch` of `POST /v1/batch`.
    pub body: Bytes,
    pub keys: Vec<ItemRef>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Turns one line item into a pipeline event: call-detail objects (those with an `event_ref`)
/// are mapped like `generate --format api` does; anything else is sent as it is.
pub fn to_pipeline_event(item: Value) -> Result<Value, String> {
    let Value::Object(fields) = item else {
        return Err("expected a JSON object (or an array of objects)".into());
    };
    if !fields.contains_key("event_ref") {
        return Ok(Value::Object(fields));
    }
    let text = |key: &str| -> Result<String, String> {
        match fields.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(format!("call-detail event without a text or number '{key}'")),
        }
    };
    let number = |key: &str| -> Result<u64, String> {
        fields
            .get(key)
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| format!("call-detail event without a numeric '{key}'"))
    };
    let code = number("event_type")?;
    let event_type =
        EventType::from_code(code).ok_or_else(|| format!("unknown event_type {code} (expected 1, 2, 3 or 5)"))?;
    let subscriber = match event_type {
        EventType::CallIn => "called_number",
        _ => "calling_number",
    };
    // Data sessions carry their volume, derived like the generator does unless already there.
    let has_volume = fields.contains_key("bytes_up") || fields.contains_key("bytes_down");
    let volume = if event_type == EventType::DataSession && !has_volume {
        let duration = u32::try_from(number("duration_seconds")?)
            .map_err(|_| "call-detail event with a 'duration_seconds' above 4294967295".to_owned())?;
        Some(DataVolume::of_session(duration, number("called_number")?))
    } else {
        None
    };
    let mut event = Map::new();
    event.insert("id".into(), Value::String(text("event_ref")?));
    event.insert("source".into(), Value::String(text("event_source")?));
    event.insert("type".into(), Value::String(event_type.api_name().into()));
    event.insert("timestamp".into(), Value::String(text("event_date")?));
    event.insert("user_id".into(), Value::String(text(subscriber)?));
    event.insert("payload".into(), Value::String(text("location")?));
    let mut data = fields;
    if let Some(volume) = volume {
        data.insert("bytes_up".into(), volume.bytes_up.into());
        data.insert("bytes_down".into(), volume.bytes_down.into());
    }
    event.insert("data".into(), Value::Object(data));
    Ok(Value::Object(event))
}

fn item_ref(event: &Value) -> ItemRef {
    let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
    ItemRef { source: text("source"), id: text("id") }
}

/// The pipeline events on one line of a replay file.
fn line_events(line: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(items) => items.into_iter().map(to_pipeline_event).collect(),
        other => Ok(vec![to_pipeline_event(other)?]),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    Parse { path: PathBuf, line: u64, reason: String },
    /// The generator made a message Segment's API would refuse: a bug, not bad luck.
    #[error("generated event {id} is {bytes} bytes as a track message, over the {limit}-byte limit")]
    OversizedMessage { id: String, bytes: usize, limit: usize },
}

/// Reads a replay file once to check every line, and counts its events.
pub fn check_file(path: &Path) -> Result<u64, SourceError> {
    let mut lines = FileLines::open(path)?;
    let mut count = 0u64;
    while let Some(events) = lines.next_events()? {
        count += events.len() as u64;
    }
    Ok(count)
}

struct FileLines {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    text: String,
}

impl FileLines {
    fn open(path: &Path) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Read { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), reader: BufReader::new(file), line: 0, text: String::new() })
    }

    /// Events of the next non-blank line, or `None` at the end of the file.
    fn next_events(&mut self) -> Result<Option<Vec<Value>>, SourceError> {
        loop {
            self.text.clear();
            let n = self
                .reader
                .read_line(&mut self.text)
                .map_err(|source| SourceError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let line = self.text.trim();
            if line.is_empty() {
                continue;
            }
            return line_events(line).map(Some).map_err(|reason| SourceError::Parse {
                path: self.path.clone(),
                line: self.line,
                reason,
            });
        }
    }
}

/// Produces request batches.
pub struct Batches(Inner);

enum Inner {
    Generated {
        events: Events,
        writer: EventWriter,
        remaining: Option<u64>,
    },
    File {
        lines: FileLines,
        pending: Vec<Value>,
    },
    /// Generated events as Segment track messages. `carry` holds the message (and its id)
    /// that did not fit in the previous batch.
    Segment {
        events: Events,
        source: Option<String>,
        carry: Option<(Vec<u8>, String)>,
    },
}

impl Batches {
    /// Generated events; `count` of `None` means until the caller stops asking.
    pub fn generated(seed: u64, count: Option<u64>) -> Self {
        let total = count.unwrap_or(u64::MAX);
        Batches(Inner::Generated {
            events: GenConfig::new(seed, total).events(),
            writer: EventWriter::new(LineFormat::Api, total, crate::format::API_MAX_BATCH),
            remaining: count,
        })
    }

    /// Generated events as track messages for `POST /v1/batch`, each batch holding as many as
    /// fit [`segment::MAX_BATCH_BYTES`]. The service files them under the write key's
    /// `source`, which is where they are looked up afterwards (no lookup without it).
    pub fn segment(seed: u64, count: Option<u64>, source: Option<String>) -> Self {
        let events = GenConfig::new(seed, count.unwrap_or(u64::MAX)).events();
        Batches(Inner::Segment { events, source, carry: None })
    }

    pub fn file(path: &Path) -> Result<Self, SourceError> {
        Ok(Batches(Inner::File { lines: FileLines::open(path)?, pending: Vec::new() }))
    }

    /// The next batch of at most `size` events, or `None` when the source is exhausted.
    pub fn next_batch(&mut self, size: usize) -> Result<Option<Batch>, SourceError> {
        match &mut self.0 {
            Inner::Generated { events, writer, remaining } => {
                let take = remaining.map_or(size as u64, |r| r.min(size as u64)) as usize;
                let mut body = Vec::with_capacity(take * 600 + 2);
                let mut keys = Vec::with_capacity(take);
                body.push(b'[');
                let now = clock::now_micros();
                for mut event in events.by_ref().take(take) {
                    restamp(&mut event, now);
                    if !keys.is_empty() {
                        body.push(b',');
                    }
                    writer.write_api_event(&event, &mut body);
                    keys.push(ItemRef {
                        source: Some(event.source.as_str().to_owned()),
                        id: Some(event.event_ref_text()),
                    });
                }
                body.push(b']');
                if let Some(r) = remaining {
                    *r -= keys.len() as u64;
                }
                Ok((!keys.is_empty()).then(|| Batch { body: Bytes::from(body), keys }))
            }
            Inner::File { lines, pending } => {
                while pending.len() < size {
                    match lines.next_events()? {
                        Some(events) => pending.extend(events),
                        None => break,
                    }
                }
                if pending.is_empty() {
                    return Ok(None);
                }
                let rest = pending.split_off(pending.len().min(size));
                let items = std::mem::replace(pending, rest);
                let keys = items.iter().map(item_ref).collect();
                // Serialising values that came from JSON cannot fail.
                let body = serde_json::to_vec(&items).unwrap_or_default();
                Ok(Some(Batch { body: Bytes::from(body), keys }))
            }
            Inner::Segment { events, source, carry } => {
                let mut packer = Packer::default();
                let mut keys = Vec::new();
                let now = clock::now_micros();
                while packer.len() < size {
                    let (message, id) = match carry.take() {
                        Some(held) => held,
                        None => {
                            let Some(mut event) = events.next() else { break };
                            restamp(&mut event, now);
                            let message = segment::track_message(&event);
                            let id = event.event_ref_text();
                            if message.len() > segment::MAX_MESSAGE_BYTES {
                                let (bytes, limit) = (message.len(), segment::MAX_MESSAGE_BYTES);
                                return Err(SourceError::OversizedMessage { id, bytes, limit });
                            }
                            (message, id)
                        }
                    };
                    if !packer.try_push(&message) {
                        *carry = Some((message, id));
                        break;
                    }
                    keys.push(ItemRef { source: source.clone(), id: Some(id) });
                }
                Ok((!keys.is_empty()).then(|| Batch { body: Bytes::from(packer.finish()), keys }))
            }
        }
    }
}

/// Dates a generated event a little before `now`, as a live feed would be.
fn restamp(event: &mut CallEvent, now: i64) {
    event.time_micros = now - (event.event_ref as u64 % (2 * MICROS_PER_SEC as u64)) as i64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::generate::{GenerateOptions, generate_to};

    fn generated_lines(format: Format, count: u64) -> Vec<String> {
        let mut options = GenerateOptions::new(count, 12, format);
        options.threads = 1;
        let mut out = Vec::new();
        let result = generate_to(&options, &mut out);
        assert!(result.is_ok(), "{result:?}");
        String::from_utf8_lossy(&out).lines().map(str::to_owned).collect()
    }

    #[test]
    fn ndjson_call_details_convert_to_the_same_events_as_the_api_format() {
        let ndjson = generated_lines(Format::Ndjson, 250);
        let api = generated_lines(Format::Api, 250);
        let converted: Vec<Value> = ndjson.iter().flat_map(|l| line_events(l).unwrap_or_default()).collect();
        let direct: Vec<Value> = api.iter().flat_map(|l| line_events(l).unwrap_or_default()).collect();
        assert_eq!(converted.len(), 250);
        assert_eq!(converted, direct);
    }

    #[test]
    fn converted_call_details_follow_the_subscriber_and_volume_mapping() {
        let call_in = r#"{"event_ref":"r","event_source":"s","event_type":2,"event_date":"d","calling_number":1,"called_number":2,"location":"l"}"#;
        let events = line_events(call_in).unwrap_or_default();
        assert_eq!(events.first().map(|e| e["user_id"].clone()), Some("2".into()));
        assert!(events.first().is_some_and(|e| e["data"].get("bytes_up").is_none()));

        let session = |extra: &str| {
            format!(
                r#"{{"event_ref":"r","event_source":"s","event_type":5,"event_date":"d","calling_number":1,"location":"l","duration_seconds":100{extra}}}"#
            )
        };
        let volume_of = |line: &str| {
            let events = line_events(line).unwrap_or_default();
            let data = events.first().map(|e| e["data"].clone()).unwrap_or_default();
            (data["bytes_up"].as_u64(), data["bytes_down"].as_u64())
        };
        let derived = session(r#","called_number":493012345678"#);
        assert_eq!(volume_of(&derived), (Some(774_144), Some(6_451_200)));
        let events = line_events(&derived).unwrap_or_default();
        assert_eq!(events.first().map(|e| e["user_id"].clone()), Some("1".into()));
        // A volume the record already has is kept.
        assert_eq!(
            volume_of(&session(r#","called_number":493012345678,"bytes_up":1,"bytes_down":2"#)),
            (Some(1), Some(2))
        );
        assert_eq!(line_events(&session("")), Err("call-detail event without a numeric 'called_number'".into()));
    }

    #[test]
    fn pipeline_events_pass_through_unchanged() {
        let line = r#"{"id":"x1","source":"s","type":"t","payload":"p"}"#;
        let events = line_events(line).unwrap_or_default();
        assert_eq!(events.len(), 1);
        assert_eq!(item_ref(&events[0]).key(None), Some(EventKey { source: "s".into(), id: "x1".into() }));
        let no_id = item_ref(&serde_json::json!({"source": "s"}));
        assert_eq!(no_id.key(None), None);
        assert_eq!(no_id.key(Some("srv-1".into())).map(|k| k.id), Some("srv-1".into()));
    }

    #[test]
    fn bad_lines_are_explained() {
        assert!(line_events("{").is_err());
        assert!(line_events("42").is_err());
        let unknown_type =
            r#"{"event_ref":"r","event_source":"s","event_type":4,"event_date":"d","calling_number":1,"location":"l"}"#;
        assert_eq!(line_events(unknown_type), Err("unknown event_type 4 (expected 1, 2, 3 or 5)".into()));
    }

    #[test]
    fn file_batches_regroup_lines_into_requested_sizes() {
        let dir = std::env::temp_dir().join(format!("eventline-gen-src-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("api.ndjson");
        let lines = generated_lines(Format::Api, 230);
        assert_eq!(lines.len(), 3);
        let written = std::fs::write(&path, lines.join("\n\n"));
        assert!(written.is_ok());
        assert_eq!(check_file(&path).ok(), Some(230));
        let mut batches = Batches::file(&path).ok();
        let mut sizes = Vec::new();
        while let Some(Ok(Some(batch))) = batches.as_mut().map(|b| b.next_batch(64)) {
            let parsed: Vec<Value> = serde_json::from_slice(&batch.body).unwrap_or_default();
            assert_eq!(parsed.len(), batch.len());
            assert!(batch.keys.iter().all(|k| k.key(None).is_some()));
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [64, 64, 64, 38]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segment_batches_pack_every_event_once_under_the_batch_limit() {
        let mut batches = Batches::segment(2, Some(2500), Some("web".into()));
        let mut ids = Vec::new();
        let mut sizes = Vec::new();
        while let Ok(Some(batch)) = batches.next_batch(usize::MAX) {
            let body = segment::batch_body(&batch.body, 0);
            assert!(body.len() <= segment::MAX_BATCH_BYTES, "{}", body.len());
            let messages: Vec<Value> = serde_json::from_slice(&batch.body).unwrap_or_default();
            assert_eq!(messages.len(), batch.len());
            for (message, key) in messages.iter().zip(&batch.keys) {
                assert_eq!(message["messageId"].as_str(), key.id.as_deref());
                assert_eq!(key.source.as_deref(), Some("web"));
            }
            sizes.push(batch.len());
            ids.extend(batch.keys.into_iter().filter_map(|k| k.id));
        }
        let direct: Vec<String> = GenConfig::new(2, 2500).events().map(|e| e.event_ref_text()).collect();
        assert_eq!(ids, direct, "events lost, repeated or reordered");
        assert!(sizes.len() >= 3 && sizes[0] > 100, "{sizes:?}");
        let mut capped = Batches::segment(2, Some(250), None);
        let mut capped_sizes = Vec::new();
        while let Ok(Some(batch)) = capped.next_batch(120) {
            assert!(batch.keys.iter().all(|k| k.key(None).is_none()), "looked up without a source");
            capped_sizes.push(batch.len());
        }
        assert_eq!(capped_sizes, [120, 120, 10]);
    }

    #[test]
    fn generated_batches_stop_at_the_count_and_are_recent() {
        let mut batches = Batches::generated(1, Some(250));
        let mut sizes = Vec::new();
        let now = clock::now_micros();
        while let Ok(Some(batch)) = batches.next_batch(100) {
            let parsed: Vec<Value> = serde_json::from_slice(&batch.body).unwrap_or_default();
            assert_eq!(parsed.len(), batch.len());
            for event in &parsed {
                let ts = event["timestamp"].as_str().map(clock::parse_rfc3339);
                let Some(Ok(ts)) = ts else {
                    panic!("bad timestamp in {event}");
                };
                assert!(ts <= now + MICROS_PER_SEC && ts > now - 10 * MICROS_PER_SEC);
            }
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [100, 100, 50]);
    }
}

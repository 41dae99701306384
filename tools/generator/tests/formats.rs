//! The output formats checked from the outside: CSV through a real CSV reader, the API batches
//! against the service's own validator, and the Lambda Kinesis event document through the
//! service's own stream-record decoder.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use base64::Engine as _;
use eventline_gen::clock;
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_model::{Event, Rules, StreamRecord, parse_event};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

fn generate(format: Format, count: u64, seed: u64) -> String {
    let mut options = GenerateOptions::new(count, seed, format);
    options.threads = 2;
    let mut out = Vec::new();
    let result = generate_to(&options, &mut out);
    assert!(result.is_ok(), "{result:?}");
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => panic!("output is not UTF-8: {e}"),
    }
}

fn parse(line: &str) -> Value {
    match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {line}"),
    }
}

const COLUMNS: [&str; 16] = [
    "event_source",
    "event_ref",
    "event_type",
    "event_date",
    "calling_number",
    "called_number",
    "location",
    "duration_seconds",
    "attr_1",
    "attr_2",
    "attr_3",
    "attr_4",
    "attr_5",
    "attr_6",
    "attr_7",
    "attr_8",
];

/// A JSON field as the text a CSV file holds for it (null is the empty field).
fn as_csv_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn csv_round_trips_through_a_csv_reader_with_every_field_intact() {
    let csv_text = generate(Format::Csv, 20_000, 31);
    let ndjson = generate(Format::Ndjson, 20_000, 31);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().map(|h| h.iter().map(str::to_owned).collect::<Vec<_>>());
    assert_eq!(headers.ok(), Some(COLUMNS.iter().map(|c| c.to_string()).collect()));
    let mut rows = 0;
    for (record, line) in reader.records().zip(ndjson.lines()) {
        let record = match record {
            Ok(r) => r,
            Err(e) => panic!("row {rows}: {e}"),
        };
        let expected = parse(line);
        assert_eq!(record.len(), COLUMNS.len());
        for (i, column) in COLUMNS.iter().enumerate() {
            assert_eq!(record.get(i).map(str::to_owned), Some(as_csv_text(&expected[column])), "row {rows}, {column}");
        }
        rows += 1;
    }
    assert_eq!(rows, 20_000);
}

/// 64-bit FNV-1a: a fixed, dependency-free fingerprint of a whole output.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn csv_and_ndjson_of_a_seed_keep_their_exact_bytes() {
    // The database-loadable forms are pinned: data already loaded, the README's SQL and the
    // benchmark figures rely on them. Only the pipeline event formats may change. 25 013 events
    // span three chunks and end in a short type block.
    let csv_text = generate(Format::Csv, 25_013, 42);
    let ndjson = generate(Format::Ndjson, 25_013, 42);
    assert_eq!(fnv1a(csv_text.as_bytes()), 0xdc8a_cb7f_b19f_28e0, "CSV output changed");
    assert_eq!(fnv1a(ndjson.as_bytes()), 0x068d_e60a_6303_94d1, "NDJSON output changed");
}

#[test]
fn no_column_is_constant_and_optional_ones_are_sometimes_empty() {
    let csv_text = generate(Format::Csv, 10_000, 4);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let mut values: Vec<HashSet<String>> = vec![HashSet::new(); COLUMNS.len()];
    for record in reader.records().flatten() {
        for (i, field) in record.iter().enumerate() {
            values[i].insert(field.to_owned());
        }
    }
    for (column, seen) in COLUMNS.iter().zip(&values) {
        assert!(seen.len() > 1, "{column} is constant");
        let optional = column.starts_with("attr_");
        assert_eq!(seen.contains(""), optional, "{column}: empty values");
    }
    // Dates vary, and every one is RFC 3339 UTC.
    assert!(values[3].len() > 10);
    assert!(values[3].iter().all(|d| d.ends_with('Z') && clock::parse_rfc3339(d).is_ok()));
}

#[test]
fn event_type_codes_map_to_documented_api_types() {
    let ndjson = generate(Format::Ndjson, 2000, 12);
    let api = generate(Format::Api, 2000, 12);
    let items: Vec<Value> = api.lines().flat_map(|l| parse(l).as_array().cloned().unwrap_or_default()).collect();
    let mut pairs = BTreeSet::new();
    for (line, item) in ndjson.lines().zip(&items) {
        let call = parse(line);
        pairs.insert((call["event_type"].as_u64(), item["type"].as_str().map(str::to_owned)));
        // `data` is the call-detail object, plus the volume for data sessions.
        let mut data = item["data"].clone();
        if let Some(fields) = data.as_object_mut() {
            let volume = [fields.remove("bytes_up"), fields.remove("bytes_down")];
            let is_data_session = call["event_type"] == 5;
            assert_eq!(volume.iter().all(Option::is_some), is_data_session, "{item}");
            assert!(volume.iter().flatten().all(Value::is_u64), "{item}");
        }
        assert_eq!(data, call);
        let subscriber = if call["event_type"] == 2 { &call["called_number"] } else { &call["calling_number"] };
        assert_eq!(item["user_id"].as_str().map(str::to_owned), Some(subscriber.to_string()));
        assert_eq!(item["timestamp"], call["event_date"]);
    }
    let expected: BTreeSet<_> = [(1, "call_out"), (2, "call_in"), (3, "sms"), (5, "data_session")]
        .into_iter()
        .map(|(c, n)| (Some(c), Some(n.to_owned())))
        .collect();
    assert_eq!(pairs, expected);
}

/// The event as the service's validator reads it, or every rule it breaks.
fn validated(item: &str, now: OffsetDateTime) -> Event {
    let raw = match RawValue::from_string(item.to_owned()) {
        Ok(raw) => raw,
        Err(e) => panic!("not JSON ({e}): {item}"),
    };
    match parse_event(&raw, &Rules::default(), now) {
        Ok(event) => event,
        Err(errors) => panic!("the service rejects {item}: {errors:?}"),
    }
}

#[test]
fn api_lines_are_arrays_of_at_most_100_valid_pipeline_events() {
    let api = generate(Format::Api, 2_345, 8);
    let now = OffsetDateTime::now_utc();
    let mut total = 0;
    let mut ids = HashSet::new();
    for line in api.lines() {
        let items: Vec<&RawValue> = match serde_json::from_str(line) {
            Ok(items) => items,
            Err(e) => panic!("line is not an array ({e}): {line}"),
        };
        assert!((1..=100).contains(&items.len()));
        for item in &items {
            let event = validated(item.get(), now);
            assert!(event.user_id.is_some() && event.payload.is_some() && event.data.is_some(), "{item}");
            ids.insert(event.id);
        }
        total += items.len();
    }
    assert_eq!(total, 2_345);
    assert_eq!(ids.len(), 2_345, "ids repeat");
    assert_eq!(api.lines().count(), 24);
}

#[test]
fn api_batch_size_is_configurable() {
    let mut options = GenerateOptions::new(250, 1, Format::Api);
    options.batch = 40;
    let mut out = Vec::new();
    assert!(generate_to(&options, &mut out).is_ok());
    let lengths: Vec<usize> =
        String::from_utf8_lossy(&out).lines().map(|l| parse(l).as_array().map_or(0, Vec::len)).collect();
    assert_eq!(lengths, [40, 40, 40, 40, 40, 40, 10]);
}

#[test]
fn kinesis_event_is_a_lambda_document_of_decodable_ingest_records() {
    let text = generate(Format::KinesisEvent, 250, 17);
    assert_eq!(text.lines().count(), 1);
    let doc = parse(&text);
    let keys: Vec<&String> = doc.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    assert_eq!(keys, ["Records"]);
    let Some(records) = doc["Records"].as_array() else {
        panic!("Records is not an array");
    };
    assert_eq!(records.len(), 250);
    let now = OffsetDateTime::now_utc();
    let mut previous_sequence = String::new();
    for record in records {
        assert_eq!(record["eventSource"], "aws:kinesis");
        assert_eq!(record["eventVersion"], "1.0");
        assert_eq!(record["eventName"], "aws:kinesis:record");
        assert_eq!(record["awsRegion"], "us-east-1");
        assert_eq!(record["invokeIdentityArn"], "arn:aws:iam::123456789012:role/lambda-role");
        assert_eq!(record["eventSourceARN"], "arn:aws:kinesis:us-east-1:123456789012:stream/eventline-ingest");
        let kinesis = &record["kinesis"];
        assert_eq!(kinesis["kinesisSchemaVersion"], "1.0");
        let sequence = kinesis["sequenceNumber"].as_str().unwrap_or_default().to_owned();
        assert!(!sequence.is_empty() && sequence.bytes().all(|b| b.is_ascii_digit()));
        // Same length, so string order is numeric order.
        assert_eq!(sequence.len(), 56);
        assert!(sequence > previous_sequence, "{sequence} after {previous_sequence}");
        assert_eq!(record["eventID"], format!("shardId-000000000000:{sequence}"));
        previous_sequence = sequence;
        assert!(kinesis["approximateArrivalTimestamp"].is_f64());

        let encoded = kinesis["data"].as_str().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded);
        let Ok(decoded) = decoded else {
            panic!("bad base64: {decoded:?}");
        };
        // The transform reads it as a record ingest wrote.
        let stream_record = match StreamRecord::decode(&decoded) {
            Ok(record) => record,
            Err(e) => panic!("the transform cannot decode {}: {e}", String::from_utf8_lossy(&decoded)),
        };
        assert_eq!(stream_record.ingest_id, None);
        assert!(stream_record.received_at >= stream_record.event.timestamp);
        let arrival = kinesis["approximateArrivalTimestamp"].as_f64().unwrap_or_default();
        let received_secs = stream_record.received_at.unix_timestamp_nanos() as f64 / 1e9;
        assert!((arrival - received_secs).abs() < 0.0005, "{arrival} vs {received_secs}");
        // Raw values, so `data` keeps its bytes when the rest is written again.
        let mut members: BTreeMap<String, &RawValue> = match serde_json::from_slice(&decoded) {
            Ok(members) => members,
            Err(e) => panic!("record data is not a JSON object: {e}"),
        };
        let received_at = members.remove("received_at").map(RawValue::get);
        assert!(received_at.is_some_and(|t| t.ends_with("Z\"")), "{received_at:?}");
        // What is left is exactly a pipeline event, which ingest would accept as it is.
        let event = validated(&serde_json::to_string(&members).unwrap_or_default(), now);
        assert_eq!(event, stream_record.event);
        assert_eq!(kinesis["partitionKey"].as_str(), event.user_id.as_ref().map(|u| u.as_str()));
    }
}

#[test]
fn the_largest_kinesis_event_fits_lambdas_payload_limit() {
    let text = generate(Format::KinesisEvent, 1000, 3);
    assert!(text.len() < 6 * 1024 * 1024, "{} bytes", text.len());
    assert_eq!(parse(&text)["Records"].as_array().map(Vec::len), Some(1000));
}

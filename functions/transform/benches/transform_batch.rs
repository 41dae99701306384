//! CPU per batch: the transform handler on one Kinesis batch of 100 records as ingest writes
//! them, through its ports with the in-memory adapters the unit tests use (a fresh store per
//! iteration, so every record is stored, not recognised as a redelivery; an output stream
//! that keeps nothing); and on the same 100 events as user records of 4 KPL aggregated
//! records.
//!
//! `cargo bench -p eventline-transform --bench transform_batch`

// The handler future nests several retrying calls deeper than the default limit allows.
#![recursion_limit = "256"]

use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use eventline_model::kpl::{self, UserRecord};
use eventline_model::memory::MemoryStream;
use eventline_model::retry::Backoff;
use eventline_model::{Rules, format_rfc3339};
use eventline_transform::handler::Transform;
use eventline_transform::memory::{MemoryDeadLetters, MemoryReference, MemoryStore};

const RECORDS: usize = 100;
/// User records per aggregated record.
const PER_AGGREGATE: usize = 25;

type MemoryTransform = Transform<MemoryStore, MemoryStream, MemoryDeadLetters, MemoryReference>;

fn transform() -> MemoryTransform {
    Transform {
        store: MemoryStore::new(),
        output: MemoryStream::discarding(),
        dead_letters: MemoryDeadLetters::new(),
        reference: MemoryReference::new(),
        backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(1), budget: Duration::ZERO },
        rules: Rules::default(),
    }
}

/// A record of the ingest stream at `sequence`, carrying `data`.
fn record(sequence: usize, partition_key: &str, data: Vec<u8>) -> KinesisEventRecord {
    let sequence = format!("49655{sequence:048}");
    let json = serde_json::json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0", "partitionKey": partition_key, "sequenceNumber": sequence,
            "data": base64_of(&data), "approximateArrivalTimestamp": time::OffsetDateTime::now_utc().unix_timestamp(),
        },
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": format!("shardId-000000000000:{sequence}"),
        "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/eventline-ingest",
    });
    serde_json::from_value(json).expect("a Kinesis record")
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// 100 call-detail events as ingest writes them: received now, a user, a payload and three
/// numeric measures each; with their partition keys.
fn events() -> Vec<(String, Vec<u8>)> {
    let now = format_rfc3339(time::OffsetDateTime::now_utc());
    (0..RECORDS)
        .map(|i| {
            let kind = ["call_out", "call_in", "sms", "data_session"][i % 4];
            let user = format!("sub-{}", i % 200);
            let line = serde_json::json!({
                "id": format!("c-{i}"), "source": "switch-a", "type": kind, "user_id": user,
                "timestamp": now, "received_at": now, "ingest_id": format!("{i:032x}"), "payload": "cell 4711",
                "data": {"duration_seconds": i % 300, "bytes_up": i * 10, "bytes_down": i * 40},
            });
            (user, line.to_string().into_bytes())
        })
        .collect()
}

/// A record per event.
fn ordinary_records() -> Vec<KinesisEventRecord> {
    events().into_iter().enumerate().map(|(i, (key, data))| record(i, &key, data)).collect()
}

/// The events as user records of aggregated records, [`PER_AGGREGATE`] in each.
fn aggregated_records() -> Vec<KinesisEventRecord> {
    let users: Vec<UserRecord> = events()
        .into_iter()
        .map(|(partition_key, data)| UserRecord { partition_key, explicit_hash_key: None, data })
        .collect();
    users.chunks(PER_AGGREGATE).enumerate().map(|(i, chunk)| record(i, "aggregate", kpl::aggregate(chunk))).collect()
}

fn transform_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let mut group = c.benchmark_group("transform_batch");
    for (name, records) in [("ordinary_records", ordinary_records()), ("aggregated_records", aggregated_records())] {
        let (response, report) = runtime.block_on(transform().process(&records));
        assert!(response.batch_item_failures.is_empty(), "the benchmark's batch is processed whole");
        assert_eq!(report.stored, RECORDS, "every event of the benchmark's batch is stored");
        group.bench_function(name, |b| {
            b.iter_batched(transform, |t| runtime.block_on(t.process(&records)), BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, transform_batch);
criterion_main!(benches);

//! What storing an event costs in DynamoDB write units, measured on 1,000 live-looking
//! events (200 users, a second apart, with data measures) through the transform against
//! the emulator. Every write request is recorded by an SDK interceptor; units follow
//! DynamoDB's rules (a transactional write costs 2 units per KB of the item, a plain write
//! 1), with each updated item's size taken from the table afterwards (its final, largest
//! size: an upper bound). Run with `--no-capture` to see the table the README quotes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{Intercept, interceptors::BeforeSerializationInterceptorContextRef};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_smithy_types::config_bag::ConfigBag;
use common::{call, read_stream, stack};
use eventline_local::poller::kinesis_event;
use eventline_model::aws::item::{Item, item_size};
use eventline_model::retry::Backoff;
use serde_json::{Value, json};
use transform::handler::Transform;

/// One write: the item's key, whether it was transactional, and its size if a put.
#[derive(Debug, Clone)]
struct Write {
    pk: String,
    sk: String,
    transactional: bool,
    put_size: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Write>>>);

fn key_of(item: &Item) -> (String, String) {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    (text("pk"), text("sk"))
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "WriteRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let mut writes = self.0.lock().unwrap();
        if let Some(input) = context.input().downcast_ref::<TransactWriteItemsInput>() {
            for action in input.transact_items() {
                if let Some(put) = action.put() {
                    let (pk, sk) = key_of(put.item());
                    writes.push(Write { pk, sk, transactional: true, put_size: Some(item_size(put.item())) });
                } else if let Some(update) = action.update() {
                    let (pk, sk) = key_of(update.key());
                    writes.push(Write { pk, sk, transactional: true, put_size: None });
                }
            }
        } else if let Some(input) = context.input().downcast_ref::<UpdateItemInput>() {
            let (pk, sk) = key_of(&input.key().cloned().unwrap_or_default());
            writes.push(Write { pk, sk, transactional: false, put_size: None });
        }
        Ok(())
    }
}

/// What a write updated: the part of the design it serves.
fn kind(write: &Write) -> &'static str {
    match write.pk.split('#').next().unwrap_or_default() {
        "EVENT" if write.sk == "EVENT" => "event item",
        "EVENT" | "POISON" => "duplicate and poison markers",
        "METRICS" | "RATE" => "shard totals and throughput",
        "WINDOW" if !write.transactional => "window users sketches",
        "WINDOW" => "window buckets",
        "USERAGG" => "user day and month aggregates",
        "AGG" => "global day and month aggregates",
        _ => "other",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_units_per_event_with_and_without_aggregates() {
    let stack = stack(&[]).await;
    const EVENTS: usize = 1000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let kind = ["call_out", "call_in", "sms", "data_session"][i % 4];
            json!({
                "id": format!("c-{i}"), "source": "switch-a", "type": kind,
                "user_id": format!("sub-{}", i % 200), "timestamp": now - 60 + (i as i64 / 17),
                "payload": "cell 4711", "data": {"duration_seconds": i % 300, "bytes_up": i * 10, "bytes_down": i * 40},
            })
        })
        .collect();
    for chunk in events.chunks(100) {
        let (status, _) = call(&stack, "POST", "/events", Some(Value::Array(chunk.to_vec()).to_string())).await;
        assert_eq!(status, 202);
    }
    let records = read_stream(&stack, &stack.manifest.outputs["IngestStreamName"]).await;
    assert_eq!(records.len(), EVENTS);

    let recorder = Recorder::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk).interceptor(recorder.clone()).build(),
    );
    let env = &stack.manifest.functions["transform"].environment;
    let table = &env["EVENTS_TABLE"];
    let transform = Transform {
        store: transform::dynamo::DynamoEventStore::new(dynamodb.clone(), table, Backoff::default()),
        output: eventline_model::aws::KinesisSink::new(aws_sdk_kinesis::Client::new(&stack.sdk), &env["OUTPUT_STREAM"]),
        dead_letters: transform::dead_letter::SqsDeadLetters::new(
            aws_sdk_sqs::Client::new(&stack.sdk),
            &env["DEAD_LETTER_QUEUE_URL"],
            Backoff::default(),
        ),
        reference: transform::enrich::CachedReference::new(eventline_model::aws::reference::ReferenceStore::new(
            dynamodb,
            table,
            Backoff::default(),
        )),
        backoff: Backoff::default(),
    };
    let arn = &stack.manifest.event_sources[0].stream_arn;
    for batch in records.chunks(100) {
        let event = kinesis_event(batch, "shardId-000000000000", arn, "us-east-1").unwrap();
        assert!(transform.handle(event).await.batch_item_failures.is_empty());
    }

    // Every item's final size, from the table.
    let scan = aws_sdk_dynamodb::Client::new(&stack.sdk).scan().table_name(table).into_paginator().items().send();
    let sizes: HashMap<(String, String), usize> =
        scan.collect::<Result<Vec<_>, _>>().await.unwrap().iter().map(|item| (key_of(item), item_size(item))).collect();

    let mut units: HashMap<&str, f64> = HashMap::new();
    for write in recorder.0.lock().unwrap().iter() {
        let size = write.put_size.or_else(|| sizes.get(&(write.pk.clone(), write.sk.clone())).copied()).unwrap_or(0);
        let per_kb = if write.transactional { 2.0 } else { 1.0 };
        *units.entry(kind(write)).or_default() += per_kb * size.div_ceil(1024).max(1) as f64;
    }
    let per_event =
        |kinds: &[&str]| kinds.iter().map(|k| units.get(k).copied().unwrap_or(0.0)).sum::<f64>() / EVENTS as f64;
    let mut rows: Vec<(&str, f64)> = units.iter().map(|(k, u)| (*k, u / EVENTS as f64)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (kind, u) in &rows {
        eprintln!("| {kind} | {u:.2} |");
    }
    let all: Vec<&str> = units.keys().copied().collect();
    let total = per_event(&all);
    let aggregates = per_event(&["user day and month aggregates", "global day and month aggregates"]);
    eprintln!("| total | {total:.2} |\n| without aggregates | {:.2} |", total - aggregates);

    // An event item is well under 1 KB here: 2 units; everything else must stay cheap.
    assert_eq!(per_event(&["event item"]), 2.0);
    assert!(total <= 12.0, "{total:.2} write units per event");
    assert!(total - aggregates <= 6.0, "{:.2} write units per event without aggregates", total - aggregates);
}

//! `GET /metrics?window=N` through the functions against the emulator: exact breakdowns
//! for a known event set, exactly once under duplicates and redelivery, by event time
//! (late events in their own second, old ones outside), the 1-second edge, and the number
//! of items a 30-minute window reads.

use eventline_stack_tests as common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{call, read_stream, stack, until};
use eventline_local::LocalStack;
use eventline_local::poller::kinesis_event;
use eventline_query::dynamo::AwsReader;
use eventline_query::reader::Reader;
use serde_json::{Value, json};
use time::OffsetDateTime;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn window(stack: &LocalStack, seconds: &str) -> Value {
    let (status, body) = call(stack, "GET", &format!("/metrics?window={seconds}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn post(stack: &LocalStack, events: &[Value]) {
    let (status, body) = call(stack, "POST", "/events", Some(Value::Array(events.to_vec()).to_string())).await;
    assert_eq!(status, 202, "{body}");
}

async fn processed(stack: &LocalStack, count: u64) {
    until(Duration::from_secs(90), "events to be processed", || async {
        let (_, totals) = call(stack, "GET", "/metrics", None).await;
        (totals["current_queue_depth"] == 0 && totals["events_processed"].as_u64() >= Some(count)).then_some(())
    })
    .await;
}

fn counts(body: &Value, field: &str) -> BTreeMap<String, u64> {
    body[field].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_counts_a_known_event_set_exactly_once() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let plans = ["free", "pro", "enterprise"];
    let table: serde_json::Map<String, Value> = (0..5)
        .map(|i| {
            let (plan, region) = (plans[i % 3], if i < 3 { "eu" } else { "us" });
            (format!("u-{i}"), json!({"plan": plan, "region": region}))
        })
        .collect();
    let body = json!({"user_metadata": table, "ts": "2026-11-30T12:00:00Z"}).to_string();
    assert_eq!(call(&stack, "PUT", "/reference/users", Some(body)).await.0, 200);

    // 60 events over the last minute: users u-0..u-6 (u-5, u-6 unknown) and every 10th
    // without a user; three types, two sources.
    let start = now();
    let events: Vec<Value> = (0..60)
        .map(|i| {
            let (source, event_type) = (["web", "mobile"][i % 2], ["a", "b", "c"][i % 3]);
            let mut e = json!({
                "id": format!("w-{i}"), "source": source, "type": event_type,
                "timestamp": start - 55 + (i as i64 % 50),
            });
            if i % 10 != 9 {
                e["user_id"] = json!(format!("u-{}", i % 7));
            }
            e
        })
        .collect();
    post(&stack, &events).await;
    processed(&stack, 60).await;
    common::finished(&running).await;

    // What the window must say, computed from the events themselves.
    let mut expected: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut unknown = 0;
    for (i, e) in events.iter().enumerate() {
        let user = e["user_id"].as_str();
        let entry = user.and_then(|u| table.get(u));
        let plan = entry.map_or("unknown", |t| t["plan"].as_str().unwrap());
        let region = entry.map_or("unknown", |t| t["region"].as_str().unwrap());
        unknown += u64::from(entry.is_none());
        for (field, key) in [
            ("by_type", ["a", "b", "c"][i % 3]),
            ("by_source", ["web", "mobile"][i % 2]),
            ("by_plan", plan),
            ("by_region", region),
        ] {
            *expected.entry(field).or_default().entry(key.to_owned()).or_default() += 1;
        }
    }
    let check = |body: &Value| {
        for (field, counts_expected) in &expected {
            assert_eq!(&counts(body, field), counts_expected, "{field}: {body}");
        }
        assert_eq!(body["unknown"], unknown);
        assert_eq!(body["unique_users"], 7, "u-0..u-6");
        assert_eq!(body["window_sec"], 300);
        assert_eq!(body["events_per_sec"], 0.2);
    };
    // The users sketch is merged just after its batch commits.
    let body = until(Duration::from_secs(30), "the users sketch", || async {
        let body = window(&stack, "").await;
        (body["unique_users"] == 7).then_some(body)
    })
    .await;
    check(&body);

    // Client duplicates and a redelivered batch change nothing.
    post(&stack, &events[..20]).await;
    processed(&stack, 60).await;
    common::finished(&running).await;
    until(Duration::from_secs(60), "duplicates counted", || async {
        let (_, totals) = call(&stack, "GET", "/metrics", None).await;
        (totals["events_duplicate"] == 20).then_some(())
    })
    .await;
    let records = read_stream(&stack, &stack.manifest.outputs["IngestStreamName"]).await;
    let event =
        kinesis_event(&records, "shardId-000000000000", &stack.manifest.event_sources[0].stream_arn, "us-east-1")
            .unwrap();
    assert!(stack.functions.transform.handle(event).await.batch_item_failures.is_empty());
    check(&window(&stack, "").await);
    running.stop(Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_follow_event_time_to_the_second() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let sent = now();
    // A late event 100 s old, one an hour old, and one 4 s ahead (within the skew guard).
    let ahead = sent + 4;
    post(
        &stack,
        &[
            json!({"id": "late", "timestamp": sent - 100}),
            json!({"id": "old", "timestamp": sent - 3600}),
            json!({"id": "ahead", "timestamp": ahead}),
        ],
    )
    .await;
    processed(&stack, 3).await;
    common::finished(&running).await;

    let body = window(&stack, "300").await;
    assert_eq!(body["by_source"]["api"], 1, "only the late event lies in the last 300 s: {body}");
    assert_eq!(window(&stack, "60").await["by_source"].as_object().map(|m| m.len()), Some(0), "not in the last 60 s");
    assert_eq!(window(&stack, "1800").await["by_source"]["api"], 1, "the hour-old event is outside every window");

    // The event ahead is counted by a 1-second window only during its own second.
    let during = until(Duration::from_secs(20), "the event's second", || async {
        let body = window(&stack, "1").await;
        (now() == ahead && body["by_source"]["api"] == 1).then_some(body)
    })
    .await;
    assert_eq!(during["events_per_sec"], 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = window(&stack, "1").await;
    assert!(body["by_source"].as_object().unwrap().is_empty(), "2 s later it is outside: {body}");
    running.stop(Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_minute_window_reads_at_most_148_items_per_shard_however_many_events() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    // An event every 7 s over the last 30 minutes fills seconds and minutes alike.
    let start = now();
    let events: Vec<Value> =
        (0..258).map(|i| json!({"id": format!("spread-{i}"), "timestamp": start - 7 * i})).collect();
    for chunk in events.chunks(100) {
        post(&stack, chunk).await;
    }
    processed(&stack, 258).await;
    common::finished(&running).await;

    let env = &stack.manifest.functions["query"].environment;
    let reader = AwsReader::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        aws_sdk_kinesis::Client::new(&stack.sdk),
        &env["EVENTS_TABLE"],
        &env["INGEST_STREAM"],
    );
    let shards = vec!["shardId-000000000000".to_owned()];
    let last = now();
    let read = reader.window(&shards, &eventline_model::window::ReadPlan::new(last, 1800)).await.unwrap();
    // 29 whole minutes and the events' seconds at the two edges.
    assert!((29..=148).contains(&read.items_read), "{} items", read.items_read);
    let inside = events.iter().filter(|e| e["timestamp"].as_i64().unwrap() > last - 1800).count();
    assert_eq!(read.tally.events, inside as u64);

    // Ten times the events in the same 30 minutes: the same number of items, at most.
    let more: Vec<Value> =
        (0..1000).map(|i| json!({"id": format!("dense-{i}"), "timestamp": start - (i * 17) % 1790})).collect();
    for chunk in more.chunks(100) {
        post(&stack, chunk).await;
    }
    processed(&stack, 1258).await;
    common::finished(&running).await;
    let read = reader.window(&shards, &eventline_model::window::ReadPlan::new(now(), 1800)).await.unwrap();
    assert!(read.items_read <= 148, "{} items", read.items_read);
    running.stop(Duration::from_secs(60)).await.unwrap();
}

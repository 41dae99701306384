//! `EventRetentionDays`: events, their index copies and their markers expire by the table's
//! TTL, counted from when they were received; aggregates are kept; values that do not
//! outlast the stream's retention by a day are refused before anything is created.

use eventline_stack_tests as common;

use common::{call, read_stream, stack, try_stack};
use eventline_local::LocalStack;
use eventline_local::poller::kinesis_event;
use serde_json::{Value, json};

/// Every item of the stack's table, read with a Scan (fine for a test's own table).
async fn items(stack: &LocalStack) -> Vec<eventline_aws::item::Item> {
    let table = &stack.manifest.functions["transform"].environment["EVENTS_TABLE"];
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    dynamodb.scan().table_name(table).into_paginator().items().send().collect::<Result<_, _>>().await.unwrap()
}

fn text<'a>(item: &'a eventline_aws::item::Item, name: &str) -> &'a str {
    item.get(name).and_then(|v| v.as_s().ok()).map_or("", String::as_str)
}

fn expires_at(item: &eventline_aws::item::Item) -> Option<i64> {
    item.get("expires_at").and_then(|v| v.as_n().ok()).map(|n| n.parse().unwrap())
}

/// Sends three events of one user (one of them twice) and processes the stream.
async fn store_events(stack: &LocalStack) {
    let events: Vec<Value> =
        (0..3).map(|i| json!({"id": format!("r-{i}"), "source": "web", "type": "click", "user_id": "u-1"})).collect();
    for body in [Value::Array(events.clone()), Value::Array(events[..1].to_vec())] {
        let (status, answer) = call(stack, "POST", "/events", Some(body.to_string())).await;
        assert_eq!(status, 202, "{answer}");
    }
    let records = read_stream(stack, &stack.manifest.outputs["IngestStreamName"]).await;
    let arn = &stack.manifest.event_sources[0].stream_arn;
    let event = kinesis_event(&records, "shardId-000000000000", arn, &stack.manifest.region).unwrap();
    assert!(stack.functions.transform.handle(event).await.batch_item_failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_their_index_copies_and_markers_expire_and_aggregates_stay() {
    let stack = stack(&[("EventRetentionDays", "30")]).await;
    store_events(&stack).await;
    let items = items(&stack).await;

    let events: Vec<_> = items.iter().filter(|item| text(item, "sk") == "EVENT").collect();
    assert_eq!(events.len(), 3);
    for event in &events {
        let received =
            time::OffsetDateTime::parse(text(event, "received_at"), &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(expires_at(event), Some(received.unix_timestamp() + 30 * 86_400), "{event:?}");
        assert!(event.contains_key("user_pk"), "the index copy is the item's: it expires with it");
    }
    let marker = items.iter().find(|item| text(item, "sk").starts_with("DUP#")).expect("the duplicate's marker");
    assert!(expires_at(marker).is_some(), "a marker goes with the event it counts against");
    for item in
        items.iter().filter(|item| text(item, "pk").starts_with("USERAGG#") || text(item, "pk").starts_with("AGG#"))
    {
        assert_eq!(expires_at(item), None, "aggregates outlive the events they count: {item:?}");
    }
    let (_, days) = call(&stack, "GET", "/users/u-1/aggregates", None).await;
    assert_eq!(days["periods"][0]["count"], 3, "{days}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_events_are_kept_forever() {
    let stack = stack(&[]).await;
    store_events(&stack).await;
    let items = items(&stack).await;
    let events: Vec<_> = items.iter().filter(|item| text(item, "sk") == "EVENT").collect();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|event| expires_at(event).is_none()));
}

#[tokio::test]
async fn a_retention_that_does_not_outlast_the_stream_by_a_day_is_refused() {
    for (parameters, expected) in [
        (vec![("EventRetentionDays", "1")], "EventRetentionDays must be 0 (forever) or at least 2"),
        (
            vec![("StreamRetentionHours", "168"), ("EventRetentionDays", "7")],
            "With StreamRetentionHours 168, EventRetentionDays must be 0 (forever) or at least 8",
        ),
        (vec![("StreamRetentionHours", "36")], "parameter StreamRetentionHours must be one of 24, 48"),
        (vec![("EventRetentionDays", "1.0")], "parameter EventRetentionDays must match"),
        (vec![("EventRetentionDays", "02")], "parameter EventRetentionDays must match"),
    ] {
        let Err(error) = try_stack(&parameters).await else { panic!("a stack started with {parameters:?}") };
        assert!(error.to_string().contains(expected), "{parameters:?}: {error}");
    }
    for parameters in
        [vec![("StreamRetentionHours", "168"), ("EventRetentionDays", "8")], vec![("EventRetentionDays", "2")]]
    {
        let stack = try_stack(&parameters).await.unwrap_or_else(|e| panic!("{parameters:?}: {e}"));
        drop(stack);
    }
}

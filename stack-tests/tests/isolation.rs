//! One producer cannot cost another its events, through the local stack: a flood of distinct
//! types in one day is folded under `other` while every event is stored and counted, and an
//! analytics item the table refuses to grow costs no event and holds up no shard.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{call, stack, until};
use eventline_aws::keys;
use eventline_local::LocalStack;
use eventline_model::aggregate::{ANSWER_KEYS, Granularity, Period};
use serde_json::{Value, json};
use time::OffsetDateTime;

async fn post(stack: &LocalStack, events: &[Value]) {
    let (status, body) = call(stack, "POST", "/events", Some(Value::Array(events.to_vec()).to_string())).await;
    assert_eq!(status, 202, "{body}");
}

async fn drained(stack: &LocalStack, count: u64) -> Value {
    until(Duration::from_secs(300), "events to be processed", || async {
        let (_, totals) = call(stack, "GET", "/metrics", None).await;
        let done = totals["current_queue_depth"] == 0
            && totals["events_processed"].as_u64().unwrap_or(0) + totals["events_failed"].as_u64().unwrap_or(0)
                >= count;
        done.then_some(totals)
    })
    .await
}

fn sum_of(counts: &Value) -> u64 {
    counts.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_types_is_folded_and_every_event_of_everyone_is_stored() {
    let stack = stack(&[("MaxBreakdownKeys", "100")]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();

    // A buggy producer puts an id into its type, 2,000 times in one day; then ordinary
    // events of the same user (so the same shard), the same day.
    const FLOOD: usize = 2000;
    const ORDINARY: usize = 60;
    for first in (0..FLOOD).step_by(100) {
        let events: Vec<Value> = (first..first + 100)
            .map(|i| {
                json!({"id": format!("f-{i}"), "source": "buggy", "type": format!("error-{i:04}"),
                       "user_id": "u-1", "timestamp": now, "data": {"duration_seconds": 1}})
            })
            .collect();
        post(&stack, &events).await;
    }
    let ordinary: Vec<Value> = (0..ORDINARY)
        .map(|i| {
            json!({"id": format!("o-{i}"), "source": "web", "type": "click", "user_id": "u-1",
                   "timestamp": now, "data": {"duration_seconds": 0.25}})
        })
        .collect();
    post(&stack, &ordinary).await;
    let total = (FLOOD + ORDINARY) as u64;

    let totals = drained(&stack, total).await;
    common::finished(&running).await;
    assert_eq!(totals["events_processed"], total, "{totals}");
    assert_eq!(totals["events_failed"], 0, "{totals}");
    assert_eq!(totals["analytics_lost"], 0, "{totals}");
    for i in [0, ORDINARY / 2, ORDINARY - 1] {
        let (status, _) = call(&stack, "GET", &format!("/events/web/o-{i}"), None).await;
        assert_eq!(status, 200, "o-{i} stored");
    }

    for uri in ["/aggregates?granularity=day", "/users/u-1/aggregates?granularity=day"] {
        let (status, body) = call(&stack, "GET", uri, None).await;
        assert_eq!(status, 200, "{uri}: {body}");
        assert!(body.to_string().len() < 10_000, "{uri}: the answer stays small: {} bytes", body.to_string().len());
        assert_eq!(body["folded"], true, "{uri}: says keys were folded");
        let day = &body["periods"][0];
        assert_eq!(day["count"], total, "{uri}: the day's total is exact");
        let by_type = day["by_type"].as_object().unwrap();
        assert!(by_type.len() <= ANSWER_KEYS + 1, "{uri}: {} types", by_type.len());
        assert_eq!(sum_of(&day["by_type"]), total, "{uri}: every event is in a type counter");
        assert_eq!(day["by_type"]["error-0000"], 1, "{uri}: the first keys keep their own counter");
        assert!(day["by_type"]["other"].as_u64().unwrap() >= (FLOOD - 100) as u64, "{uri}: later ones fold");
        assert_eq!(sum_of(&day["by_source"]), total, "{uri}");
        assert_eq!(day["sums"]["duration_seconds"], 2015, "{uri}: sums stay exact");
    }

    let (_, window) = call(&stack, "GET", "/metrics?window=600", None).await;
    assert_eq!(window["folded"], true, "{window}");
    assert_eq!(sum_of(&window["by_type"]), total, "{window}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_the_table_refuses_to_grow_costs_no_event_and_holds_up_no_shard() {
    let stack = stack(&[("IngestShardCount", "1")]).await;
    let now = OffsetDateTime::now_utc();
    let table = &stack.manifest.functions["transform"].environment["EVENTS_TABLE"];
    // The shard's aggregate for today already at DynamoDB's item limit (written by an older
    // version, say): no update of it can be stored.
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let s = |text: String| aws_sdk_dynamodb::types::AttributeValue::S(text);
    dynamodb
        .put_item()
        .table_name(table)
        .item(keys::PK, s(keys::shard_aggregate_pk("shardId-000000000000")))
        .item(keys::SK, s(keys::period_sk(Period::of(now, Granularity::Day))))
        // 5 bytes short of 400 KB, counted as DynamoDB counts (names and values).
        .item("filler", s("x".repeat(400 * 1024 - 46 - 5)))
        .send()
        .await
        .unwrap();
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();

    let events: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("e-{i}"), "source": "web", "type": "click", "user_id": format!("u-{}", i % 3)}))
        .collect();
    post(&stack, &events).await;
    let totals = drained(&stack, 30).await;
    common::finished(&running).await;
    assert_eq!(totals["events_processed"], 30, "every event is stored and counted: {totals}");
    assert_eq!(totals["events_failed"], 0, "nothing is dead-lettered: {totals}");
    assert_eq!(totals["analytics_lost"], 30, "the refused day item's counts are lost, and counted: {totals}");
    for i in [0, 29] {
        assert_eq!(call(&stack, "GET", &format!("/events/web/e-{i}"), None).await.0, 200);
    }
    // The other items still count: the users' days and the shard's month.
    let (_, month) = call(&stack, "GET", "/aggregates?granularity=month", None).await;
    assert_eq!(month["periods"][0]["count"], 30, "{month}");
    let (_, user) = call(&stack, "GET", "/users/u-0/aggregates?granularity=day", None).await;
    assert_eq!(user["periods"][0]["count"], 10, "{user}");
}

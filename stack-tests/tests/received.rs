//! Ingest's received count against the emulator: exactly once per request, counted in slots
//! leased by execution environments, and by request token when every slot tried is held.

use eventline_stack_tests as common;

use std::sync::Arc;
use std::time::Duration;

use common::{faults, stack};
use eventline_aws::item::{Item, n, s};
use eventline_aws::keys::{self, attr};
use eventline_ingest::counter::{DynamoReceivedCounter, ReceivedCounter};
use eventline_local::LocalStack;
use eventline_model::IngestId;
use eventline_model::retry::Backoff;
use serde_json::json;

fn table(stack: &LocalStack) -> String {
    stack.manifest.functions["ingest"].environment["EVENTS_TABLE"].clone()
}

/// One execution environment's counter.
fn environment(stack: &LocalStack) -> DynamoReceivedCounter {
    let backoff =
        Backoff { base: Duration::from_millis(5), max: Duration::from_millis(50), budget: Duration::from_secs(10) };
    DynamoReceivedCounter::new(aws_sdk_dynamodb::Client::new(&stack.sdk), table(stack), backoff)
}

/// The `METRICS` items of the received count: (sort key, item).
async fn counter_slots(stack: &LocalStack) -> Vec<(String, Item)> {
    let output = aws_sdk_dynamodb::Client::new(&stack.sdk)
        .query()
        .table_name(table(stack))
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(keys::METRICS_PK))
        .expression_attribute_values(":prefix", s(keys::INGEST_PREFIX))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output.items().iter().map(|item| (item[keys::SK].as_s().unwrap().clone(), item.clone())).collect()
}

fn received(item: &Item) -> u64 {
    item.get(attr::RECEIVED).map_or(0, |v| v.as_n().unwrap().parse().unwrap())
}

fn is_leased(sk: &str) -> bool {
    sk.starts_with(&format!("{}L", keys::INGEST_PREFIX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_once_in_leased_slots_though_answers_are_lost() {
    let stack = stack(&[]).await;
    // Three environments, each with two requests at a time (two leases), under lost answers:
    // the update takes effect and its answer never comes, so the retry meets its own count.
    faults(&stack, json!({"rate": 0.3, "seed": 11, "kinds": ["lost_response"], "reset_counts": true})).await;
    let environments: Vec<Arc<DynamoReceivedCounter>> = (0..3).map(|_| Arc::new(environment(&stack))).collect();
    let mut requests = tokio::task::JoinSet::new();
    let mut expected = 0;
    for (e, counter) in environments.iter().enumerate() {
        for lane in 0..2_u64 {
            let counter = Arc::clone(counter);
            let accepted: Vec<u64> = (0..15).map(|i| 1 + (e as u64 * 7 + lane * 3 + i) % 5).collect();
            expected += accepted.iter().sum::<u64>();
            requests.spawn(async move {
                for n in accepted {
                    counter.add(&IngestId::generate(), n).await.expect("counted within the budget");
                }
            });
        }
    }
    requests.join_all().await;
    let injected = faults(&stack, json!({"rate": 0})).await;
    let lost = injected["injected"]["lost_response"].as_u64().unwrap();
    assert!(lost > 5, "answers were lost: {injected}");

    let slots = counter_slots(&stack).await;
    let total: u64 = slots.iter().map(|(_, item)| received(item)).sum();
    assert_eq!(total, expected, "each request once: {slots:?}");
    assert!(slots.iter().all(|(sk, _)| is_leased(sk)), "every environment found a free slot: {slots:?}");
    assert!(slots.len() <= 6, "one slot per lease at most: {slots:?}");
}

/// Holds every leased slot for `owner` until `until_ms`, as other environments would.
async fn hold_every_slot(stack: &LocalStack, owner: &str, until_ms: i128) {
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    for slot in 0..keys::INGEST_LEASED_SLOTS {
        dynamodb
            .put_item()
            .table_name(table(stack))
            .item(keys::PK, s(keys::METRICS_PK))
            .item(keys::SK, s(keys::ingest_leased_sk(slot)))
            .item(attr::RECEIVED, n(10))
            .item(attr::LEASE_OWNER, s(owner))
            .item(attr::LEASE_SEQUENCE, n(3))
            .item(attr::LEASE_UNTIL_MS, n(until_ms))
            .send()
            .await
            .unwrap();
    }
}

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_slot_held_a_request_is_counted_by_token_and_a_lapsed_lease_is_taken_over() {
    let stack = stack(&[]).await;
    let held = u64::from(keys::INGEST_LEASED_SLOTS) * 10;

    // Every slot held by environments that counted a moment ago: this one counts by token,
    // once per request though answers are lost (the launcher keeps client tokens as
    // DynamoDB does).
    hold_every_slot(&stack, "others", now_ms() + 60_000).await;
    faults(&stack, json!({"rate": 0.4, "seed": 5, "kinds": ["lost_response"], "reset_counts": true})).await;
    let counter = environment(&stack);
    for accepted in 1..=10 {
        counter.add(&IngestId::generate(), accepted).await.unwrap();
    }
    let injected = faults(&stack, json!({"rate": 0})).await;
    assert!(injected["injected"]["lost_response"].as_u64().unwrap() > 2, "answers were lost: {injected}");
    let slots = counter_slots(&stack).await;
    let by_token: u64 = slots.iter().filter(|(sk, _)| !is_leased(sk)).map(|(_, item)| received(item)).sum();
    assert_eq!(by_token, 55, "every request by token, once: {slots:?}");
    assert_eq!(slots.iter().filter(|(sk, _)| is_leased(sk)).map(|(_, item)| received(item)).sum::<u64>(), held);

    // Their holders stopped counting long ago: a new environment takes a slot over and adds
    // to what it holds.
    hold_every_slot(&stack, "gone", now_ms() - 1).await;
    let counter = environment(&stack);
    counter.add(&IngestId::generate(), 6).await.unwrap();
    counter.add(&IngestId::generate(), 1).await.unwrap();
    let slots = counter_slots(&stack).await;
    let taken: Vec<_> = slots
        .iter()
        .filter(|(sk, item)| is_leased(sk) && item[attr::LEASE_OWNER].as_s().unwrap() != "gone")
        .map(|(sk, item)| (sk.clone(), received(item)))
        .collect();
    assert_eq!(taken.len(), 1, "one slot taken over, and kept: {slots:?}");
    assert_eq!(taken[0].1, 10 + 6 + 1, "the lapsed holder's count stays, the new requests add");
    let total: u64 = slots.iter().map(|(_, item)| received(item)).sum();
    assert_eq!(total, held + 55 + 7);
}

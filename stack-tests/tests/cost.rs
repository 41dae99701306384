//! What storing an event costs in DynamoDB write units, measured on 1,000 live-looking
//! events (200 users, a second apart, with data measures) through the transform against
//! the emulator. Every write request is recorded by an SDK interceptor; units follow
//! DynamoDB's rules (a transactional write costs 2 units per KB of the item, a plain write
//! 1), with each updated item's size taken from the table afterwards (its final, largest
//! size: an upper bound), and each item's copy in the `ByUser` index counted as a plain
//! write. Run with `--no-capture` to see the table docs/figures.md quotes; `make bench`
//! prints the same figures beside the naive design's.

use eventline_stack_tests as common;

use common::{call, read_stream, stack};
use eventline_local::cost::{self, AGGREGATE_KINDS, Recorder};
use eventline_local::poller::kinesis_event;
use eventline_model::retry::Backoff;
use eventline_transform::handler::Transform;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_units_per_event_with_and_without_aggregates() {
    let stack = stack(&[]).await;
    const EVENTS: usize = 1000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for chunk in cost::live_events(EVENTS, now).chunks(100) {
        let (status, _) = call(&stack, "POST", "/events", Some(Value::Array(chunk.to_vec()).to_string())).await;
        assert_eq!(status, 202);
    }
    let records = read_stream(&stack, &stack.manifest.outputs["IngestStreamName"]).await;
    assert_eq!(records.len(), EVENTS);

    let recorder = Recorder::default();
    let dynamodb = recorder.dynamodb(&stack.sdk);
    let env = &stack.manifest.functions["transform"].environment;
    let table = &env["EVENTS_TABLE"];
    let transform =
        Transform {
            store: eventline_transform::dynamo::DynamoEventStore::new(dynamodb.clone(), table, Backoff::default()),
            output: eventline_aws::KinesisSink::new(aws_sdk_kinesis::Client::new(&stack.sdk), &env["OUTPUT_STREAM"]),
            dead_letters: eventline_transform::sqs::SqsDeadLetters::built_on_first_use(
                &stack.sdk,
                &env["DEAD_LETTER_QUEUE_URL"],
                &env["DEAD_LETTER_BUCKET"],
                Backoff::default(),
            ),
            reference: eventline_transform::enrich::CachedReference::new(
                eventline_aws::reference::ReferenceStore::new(dynamodb, table, Backoff::default()),
            ),
            backoff: Backoff::default(),
            rules: eventline_model::Rules::default(),
        };
    let arn = &stack.manifest.event_sources[0].stream_arn;
    for batch in records.chunks(100) {
        let event = kinesis_event(batch, "shardId-000000000000", arn, "us-east-1").unwrap();
        assert!(transform.handle(event).await.batch_item_failures.is_empty());
    }

    let sizes = cost::item_sizes(&aws_sdk_dynamodb::Client::new(&stack.sdk), table).await.unwrap();
    let units = cost::units_by_kind(&recorder.writes(), &sizes);
    let per_event =
        |kinds: &[&str]| kinds.iter().map(|k| units.get(k).copied().unwrap_or(0.0)).sum::<f64>() / EVENTS as f64;
    let mut rows: Vec<(&str, f64)> = units.iter().map(|(k, u)| (*k, u / EVENTS as f64)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (kind, u) in &rows {
        eprintln!("| {kind} | {u:.2} |");
    }
    let all: Vec<&str> = units.keys().copied().collect();
    let total = per_event(&all);
    let aggregates = per_event(&AGGREGATE_KINDS);
    eprintln!("| total | {total:.2} |\n| without aggregates | {:.2} |", total - aggregates);

    // An event item is well under 1 KB here: 2 units, and 1 for its index copy. The floor
    // for storing each event once with its timeline is those 3 units; with every analytic,
    // at most 1.5 times that.
    assert_eq!(per_event(&["event item"]), 2.0);
    assert_eq!(per_event(&[cost::INDEX_KIND]), 1.0);
    assert!(total <= 4.5, "{total:.2} write units per event, index copies included");
    assert!(total - aggregates <= 3.5, "{:.2} write units per event without aggregates", total - aggregates);
}

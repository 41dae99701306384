//! The generator against the real pipeline: `load` through the local stack's HTTP API, and
//! `kinesis-event` output through the transform handler.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use common::{load_options, stack};
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_gen::load::{EventSource, LoadOptions, run_async};
use serde_json::Value;

async fn metrics(stack: &eventline_local::LocalStack) -> Value {
    let request = http::Request::builder().uri("/metrics").body(lambda_http::Body::Empty).unwrap();
    let request = eventline_query::routes::routed(request);
    serde_json::from_slice(stack.functions.query.handle(request).await.body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_the_local_stack_verifies_every_event_it_sent() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();

    let mut options = load_options(&running.url(), EventSource::Generated { seed: 7, count: Some(500) });
    options.rate = Some(1000.0);
    options.concurrency = 4;
    options.verify_timeout = Duration::from_secs(120);
    let summary = run_async(options).await.unwrap();

    assert_eq!(summary.sent, 500);
    assert_eq!(summary.accepted, 500);
    assert_eq!((summary.rejected, summary.failed), (0, 0));
    assert_eq!(summary.verified, 500, "every accepted event was found in the table");
    assert_eq!(summary.unverified, 0);
    let totals = metrics(&stack).await;
    assert_eq!(totals["events_received"], 500);
    assert_eq!(totals["events_processed"], 500);
    running.stop(Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_kinesis_event_is_accepted_by_the_transform() {
    let stack = stack(&[]).await;
    let mut bytes = Vec::new();
    let mut options = GenerateOptions::new(50, 11, Format::KinesisEvent);
    options.threads = 1;
    generate_to(&options, &mut bytes).unwrap();
    let event: KinesisEvent = serde_json::from_slice(&bytes).expect("a Lambda KinesisEvent");
    assert_eq!(event.records.len(), 50);

    let response = stack.functions.transform.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    let totals = metrics(&stack).await;
    assert_eq!(totals["events_processed"], 50, "every record decoded as an event: none was poison");
    assert_eq!(totals["events_failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_load_with_its_reference_table_fills_every_plan_and_region() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let (seed, count) = (9, 200);
    let table = std::env::temp_dir().join(format!("eventline-reference-{}.json", running.addr.port()));
    let mut file = std::fs::File::create(&table).unwrap();
    let users = eventline_gen::reference::user_ids(seed, count);
    eventline_gen::reference::write_table(seed, &users, &eventline_gen::reference::now_ts(), &mut file).unwrap();

    let mut options = load_options(&running.url(), EventSource::Generated { seed, count: Some(count as u64) });
    options.reference = Some(table.clone());
    options.verify_timeout = Duration::from_secs(120);
    let summary = run_async(options).await.unwrap();
    assert_eq!((summary.accepted, summary.verified), (count as u64, count as u64));

    let request = http::Request::builder().uri("/metrics").body(lambda_http::Body::Empty).unwrap();
    let query = std::collections::HashMap::from([("window".to_owned(), "1800".to_owned())]);
    let request =
        eventline_query::routes::routed(lambda_http::RequestExt::with_query_string_parameters(request, query));
    let body: Value = match stack.functions.query.handle(request).await.into_body() {
        lambda_http::Body::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body["unknown"], 0, "every user is in the table: {body}");
    let plans: u64 = body["by_plan"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(plans, count as u64);
    assert!(body["by_plan"].as_object().unwrap().len() >= 2, "a mix of plans: {body}");
    assert!(body["by_region"].as_object().unwrap().len() >= 2, "a mix of regions: {body}");

    // Unsigned, the table is refused at the gateway and the run stops before any event.
    let mut unsigned = LoadOptions::new(&running.url(), EventSource::Generated { seed, count: Some(10) });
    unsigned.reference = Some(table.clone());
    assert!(run_async(unsigned).await.is_err());
    let _ = std::fs::remove_file(&table);
    running.stop(Duration::from_secs(60)).await.unwrap();
}

//! The generator against the real pipeline: `load` through the local stack's HTTP API, and
//! `kinesis-event` output through the transform handler.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use common::stack;
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_gen::load::{EventSource, LoadOptions, run_async};
use serde_json::Value;

async fn metrics(stack: &eventline_local::LocalStack) -> Value {
    let request = http::Request::builder().uri("/metrics").body(lambda_http::Body::Empty).unwrap();
    serde_json::from_slice(stack.functions.metrics.handle(request).await.body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_the_local_stack_verifies_every_event_it_sent() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();

    let mut options = LoadOptions::new(&running.url(), EventSource::Generated { seed: 7, count: Some(500) });
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

//! The whole local stack under injected faults: the emulator throttles, fails, drops
//! connections and loses responses on 10 % of every AWS call while the generator drives
//! thousands of events through the HTTP API, with client duplicates and poison records
//! written straight to the stream. Afterwards every count must be exact.

use eventline_stack_tests as common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use common::{faults, load_options, read_stream, stack, until};
use eventline_gen::load::{EventSource, run_async};
use eventline_local::LocalStack;
use serde_json::{Value, json};

const EVENTS: u64 = 5_000;
const CLIENT_DUPLICATES: u64 = 300;
const POISON: usize = 5;
const FAULT_RATE: f64 = 0.1;

/// The totals, read through the metrics handler (which may itself meet a fault).
async fn metrics(stack: &LocalStack) -> Option<Value> {
    let request = http::Request::builder().uri("/metrics").body(lambda_http::Body::Empty).unwrap();
    let response = stack.functions.query.handle(eventline_query::routes::routed(request)).await;
    let lambda_http::Body::Text(text) = response.body() else { return None };
    (response.status() == 200).then(|| serde_json::from_str(text).ok()).flatten()
}

/// Poison records as another producer might write them, straight to the ingest stream.
async fn put_poison(stack: &LocalStack) -> HashSet<String> {
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let entries = (0..POISON)
        .map(|i| {
            let data = if i % 2 == 0 { format!("not json {i}").into_bytes() } else { vec![0xff, 0xfe, i as u8] };
            PutRecordsRequestEntry::builder()
                .partition_key(format!("poison-{i}"))
                .data(Blob::new(data))
                .build()
                .unwrap()
        })
        .collect();
    let output = kinesis
        .put_records()
        .stream_name(&stack.manifest.outputs["IngestStreamName"])
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(output.failed_record_count(), Some(0));
    output.records().iter().map(|r| r.sequence_number().unwrap().to_owned()).collect()
}

/// Sequence numbers of the records in the dead-letter queue.
async fn dead_lettered(stack: &LocalStack) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let url = &stack.manifest.outputs["DeadLetterQueueUrl"];
    let mut sequences = Vec::new();
    loop {
        let output = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
        if output.messages().is_empty() {
            return sequences;
        }
        for message in output.messages() {
            let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            sequences.push(body["sequence_number"].as_str().unwrap().to_owned());
            sqs.delete_message().queue_url(url).receipt_handle(message.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_is_stored_and_counted_once_under_ten_percent_faults() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let poison = put_poison(&stack).await;
    faults(&stack, json!({"rate": FAULT_RATE, "seed": 6, "reset_counts": true})).await;

    let mut load = load_options(&running.url(), EventSource::Generated { seed: 42, count: Some(EVENTS) });
    load.concurrency = 4;
    load.retries = 10;
    load.verify_timeout = Duration::from_secs(300);
    let first = run_async(load).await.unwrap();
    assert_eq!((first.sent, first.rejected), (EVENTS, 0));
    assert_eq!(first.accepted + first.failed, EVENTS);
    assert_eq!(first.verified, first.accepted, "every accepted event can be read back");
    assert!(first.accepted >= EVENTS - 5, "ingest's retries ride out the faults: {first:?}");

    // A client sending the start of the same run again: the same identities, restamped, so
    // other content: conflicts, never stored over the first.
    let mut again = load_options(&running.url(), EventSource::Generated { seed: 42, count: Some(CLIENT_DUPLICATES) });
    again.concurrency = 2;
    again.retries = 10;
    again.verify = false;
    let second = run_async(again).await.unwrap();
    assert_eq!(second.accepted + second.failed, CLIENT_DUPLICATES);

    let received = first.accepted + second.accepted + POISON as u64;
    let totals = until(Duration::from_secs(300), "the stream to drain", || async {
        metrics(&stack)
            .await
            .filter(|t| t["current_queue_depth"] == 0 && t["events_received"].as_u64() == Some(received))
    })
    .await;
    let injected = faults(&stack, json!({"rate": 0})).await;
    for kind in ["throttle", "server_error", "reset", "lost_response"] {
        assert!(injected["injected"][kind].as_u64().unwrap() > 0, "no {kind} was injected: {injected}");
    }

    let (processed, duplicate, conflict, failed) = (
        totals["events_processed"].as_u64().unwrap(),
        totals["events_duplicate"].as_u64().unwrap(),
        totals["events_conflict"].as_u64().unwrap(),
        totals["events_failed"].as_u64().unwrap(),
    );
    assert_eq!(failed, POISON as u64, "only the poison records failed: {totals}");
    assert_eq!(processed + duplicate + conflict + failed, received, "{totals}");
    assert!(conflict > 0 && duplicate + conflict <= second.accepted, "restamped copies are conflicts: {totals}");
    assert_eq!(processed, first.accepted.max(second.accepted), "each identity stored once: {totals}");

    // Published at least once: every stored identity is on the output stream.
    let published: HashSet<String> = read_stream(&stack, &stack.manifest.outputs["OutputStreamName"])
        .await
        .iter()
        .map(|r| {
            let event: Value = serde_json::from_slice(r.data().as_ref()).unwrap();
            format!("{}/{}", event["source"].as_str().unwrap(), event["id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(published.len() as u64, processed, "every stored event was published");

    // The dead-letter queue holds the poison records (at least once each) and nothing else.
    let dead: HashSet<String> = dead_lettered(&stack).await.into_iter().collect();
    assert_eq!(dead, poison);

    eprintln!("faults injected: {}", injected["injected"]);
    eprintln!("totals: {totals}");
    running.stop(Duration::from_secs(120)).await.unwrap();
}

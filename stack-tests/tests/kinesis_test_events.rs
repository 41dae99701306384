//! Kinesis test events as `sam local generate-event kinesis get-records --data ...` makes
//! them: record data in the API's event shape, with no `received_at` or ingest id, handed to
//! the transform against the emulator.

use eventline_stack_tests as common;

use aws_lambda_events::event::kinesis::KinesisEvent;
use common::{call, checkout, stack};
use eventline_local::LocalStack;
use serde_json::{Value, json};

/// The data of each record, and the sequence number `sam` gives it (distinct, so each record
/// has its own stream position).
const VALID: &str = r#"{"id":"k-1","source":"sam","payload":"hi"}"#;
const VALID_WITHOUT_SOURCE: &str = r#"{"id":"k-2","payload":"no source"}"#;
const BAD_TIMESTAMP: &str = r#"{"id":"k-3","source":"sam","timestamp":"yesterday"}"#;
const UNKNOWN_FIELD: &str = r#"{"id":"k-4","source":"sam","colour":"red"}"#;

fn sequence_number(n: u32) -> String {
    format!("4954511524349098501828006771497314458218006259324420{n:04}")
}

/// One record made by the real `sam local generate-event` command.
async fn sam_record(data: &str, sequence_number: &str) -> Value {
    let sam = checkout().join(".venv/bin/sam");
    assert!(sam.exists(), "{} is missing: run `make test` (or `make .venv/.dev`) to install the venv", sam.display());
    let output = tokio::process::Command::new(&sam)
        .args(["local", "generate-event", "kinesis", "get-records", "--data", data, "--sequence", sequence_number])
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", sam.display()));
    assert!(output.status.success(), "sam generate-event failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut event: Value = serde_json::from_slice(&output.stdout).expect("sam prints a JSON event");
    let records = event["Records"].as_array_mut().expect("a Records array");
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

/// Every message in the dead-letter queue, deleted as read.
async fn dead_letters(stack: &LocalStack) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let url = &stack.manifest.outputs["DeadLetterQueueUrl"];
    let mut bodies = Vec::new();
    loop {
        let output = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
        if output.messages().is_empty() {
            return bodies;
        }
        for message in output.messages() {
            bodies.push(serde_json::from_str(message.body().unwrap()).unwrap());
            sqs.delete_message().queue_url(url).receipt_handle(message.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
}

fn arrival_rfc3339(record: &Value) -> String {
    let seconds = record["kinesis"]["approximateArrivalTimestamp"].as_f64().expect("an arrival timestamp");
    let arrived = time::OffsetDateTime::from_unix_timestamp_nanos((seconds * 1e9).round() as i128).unwrap();
    eventline_model::format_rfc3339(arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_generated_records_are_validated_like_api_events_and_stored_or_dead_lettered() {
    let mut records = Vec::new();
    for (n, data) in [VALID, VALID_WITHOUT_SOURCE, BAD_TIMESTAMP, UNKNOWN_FIELD].into_iter().enumerate() {
        records.push(sam_record(data, &sequence_number(n as u32 + 1)).await);
    }
    let arrived = arrival_rfc3339(&records[0]);
    let event: KinesisEvent = serde_json::from_value(json!({ "Records": records.clone() })).unwrap();

    let stack = stack(&[]).await;
    let response = stack.functions.transform.handle(event.clone()).await;
    assert!(response.batch_item_failures.is_empty(), "poison does not block the shard: {response:?}");

    let (status, stored) = call(&stack, "GET", "/events/sam/k-1", None).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["received_at"], arrived.as_str(), "received when it arrived on the stream");
    assert_eq!(stored["timestamp"], arrived.as_str(), "the API's default timestamp: when it was received");
    assert_eq!(stored["type"], "event", "the API's default type");
    assert_eq!(stored["payload"], "HI");
    let (status, stored) = call(&stack, "GET", "/events/api/k-2", None).await;
    assert_eq!(status, 200, "the API's default source: {stored}");
    assert_eq!(stored["payload"], "NO SOURCE");
    for id in ["k-3", "k-4"] {
        assert_eq!(call(&stack, "GET", &format!("/events/sam/{id}"), None).await.0, 404, "{id} is not stored");
    }

    let mut poison = dead_letters(&stack).await;
    poison.sort_by_key(|body| body["sequence_number"].as_str().map(str::to_owned));
    assert_eq!(poison.len(), 2, "{poison:?}");
    assert_eq!(poison[0]["sequence_number"], sequence_number(3));
    let reason = poison[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timestamp must be an RFC 3339 string"), "{reason}");
    assert_eq!(poison[0]["data_base64"], records[2]["kinesis"]["data"]);
    assert_eq!(poison[1]["sequence_number"], sequence_number(4));
    let reason = poison[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("colour is not a known field"), "{reason}");

    // Delivered again, as Lambda may: nothing is counted twice.
    assert!(stack.functions.transform.handle(event).await.batch_item_failures.is_empty());
    let (status, totals) = call(&stack, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{totals}");
    assert_eq!(totals["events_processed"], 2, "{totals}");
    assert_eq!(totals["events_failed"], 2, "{totals}");
    assert_eq!(totals["events_duplicate"], 0, "{totals}");
    // No ingest counted these records: the transform counts each received once.
    assert_eq!(totals["events_received"], 4, "{totals}");
    assert_eq!(totals["current_queue_depth"], 0, "{totals}");
}

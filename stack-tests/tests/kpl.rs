//! A producer writing KPL aggregated records straight to the ingest stream, played by a
//! real client nobody here wrote: the Python library aws_kinesis_agg with boto3
//! (`stack-tests/producers/kpl_producer.py`), against the local stack. Each user record is
//! stored as an event of its own, an aggregate put again counts its events as duplicates, and
//! one whose digest is broken is dead-lettered whole.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{checkout, eventually, http, stack};
use eventline_local::LocalStack;
use eventline_model::EventId;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(90);

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Where one put of the producer went, and the bytes it put.
#[derive(Debug)]
struct Put {
    shard_id: String,
    sequence_numbers: Vec<String>,
    data_base64: String,
}

/// Runs the producer with this plan (see the script) against the stack's ingest stream.
async fn produce(stack: &LocalStack, plan: &Value) -> Vec<Put> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("producers/kpl_producer.py");
    let python = checkout().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: `make .venv/.dev` installs the venv", python.display());
    let stream = &stack.manifest.outputs["IngestStreamName"];
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--endpoint-url", &stack.emulator.endpoint, "--stream", stream])
        .env("AWS_ACCESS_KEY_ID", common::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", common::SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", common::REGION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(plan.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "the producer failed: {}", String::from_utf8_lossy(&output.stderr));
    let puts: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the producer prints JSON");
    puts.into_iter()
        .map(|put| Put {
            shard_id: put["shard_id"].as_str().unwrap().to_owned(),
            sequence_numbers: put["sequence_numbers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect(),
            data_base64: put["data_base64"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn user_record(partition_key: &str, event: Value) -> Value {
    json!({"partition_key": partition_key, "data": event.to_string()})
}

async fn stored(addr: SocketAddr, id: &str) -> (u16, Value) {
    let response = http(addr, "GET", &format!("/events/kpl/{id}"), None).await;
    (response.status, response.body)
}

/// Every message in the dead-letter queue.
async fn dead_letters(stack: &LocalStack) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let url = &stack.manifest.outputs["DeadLetterQueueUrl"];
    let output = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
    output.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_are_stored_one_event_each_counted_once_and_dead_lettered_whole() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;

    let midpoint = "170141183460469231731687303715884105728";
    let mut second = user_record("meter-2", json!({"id": "kpl-2", "source": "kpl", "payload": "second"}));
    second["explicit_hash_key"] = json!(midpoint);
    let plan = json!([
        {"records": [
            user_record("meter-1", json!({"id": "kpl-1", "source": "kpl", "user_id": "meter-1", "payload": "first", "data": {"kwh": 1.5}})),
            second,
            user_record("meter-1", json!({"source": "kpl", "payload": "no id"})),
        ]},
        // Put twice, as a producer retrying its put does.
        {"records": [
            user_record("meter-3", json!({"id": "kpl-3", "source": "kpl"})),
            user_record("meter-4", json!({"id": "kpl-4", "source": "kpl"})),
        ], "times": 2},
        {"records": [user_record("meter-5", json!({"id": "kpl-5", "source": "kpl"}))], "break_digest": true},
    ]);
    let puts = produce(&stack, &plan).await;
    assert_eq!(puts.len(), 3, "{puts:?}");

    // 3 + 2 + 2 user records and one broken aggregate, counted received as they are processed.
    eventually(WAIT, "every user record processed", || async {
        let metrics = http(addr, "GET", "/metrics", None).await.body;
        metrics["events_received"] == 8 && metrics["current_queue_depth"] == 0
    })
    .await;
    let metrics = http(addr, "GET", "/metrics", None).await.body;
    assert_eq!(metrics["events_processed"], 5, "{metrics}");
    assert_eq!(metrics["events_duplicate"], 2, "the aggregate put again: {metrics}");
    assert_eq!(metrics["events_failed"], 1, "the broken aggregate, whole: {metrics}");
    assert_eq!(metrics["events_conflict"], 0, "{metrics}");

    let first = &puts[0];
    let sequence_number = first.sequence_numbers[0].as_str();
    let (status, kpl_1) = stored(addr, "kpl-1").await;
    assert_eq!(status, 200, "{kpl_1}");
    assert_eq!((kpl_1["payload"].as_str(), kpl_1["user_id"].as_str()), (Some("FIRST"), Some("meter-1")));
    assert_eq!(kpl_1["data"], json!({"kwh": 1.5}));
    assert_eq!(
        (kpl_1["sequence_number"].as_str(), kpl_1["sub_sequence_number"].as_u64()),
        (Some(sequence_number), Some(0))
    );
    let (status, kpl_2) = stored(addr, "kpl-2").await;
    assert_eq!((status, kpl_2["sub_sequence_number"].as_u64()), (200, Some(1)), "{kpl_2}");
    // Without an id: the one its shard, its aggregate's sequence number and its index give it.
    let derived = EventId::derived_from(&format!("{}:{sequence_number}:2", first.shard_id));
    let (status, no_id) = stored(addr, derived.as_str()).await;
    assert_eq!((status, no_id["payload"].as_str()), (200, Some("NO ID")), "{no_id}");
    for id in ["kpl-3", "kpl-4"] {
        let (status, event) = stored(addr, id).await;
        assert_eq!(status, 200, "{event}");
        assert_eq!(event["sequence_number"], puts[1].sequence_numbers[0].as_str(), "the first put stored it");
    }
    assert_eq!(stored(addr, "kpl-5").await.0, 404, "nothing of the broken aggregate is stored");

    let poison = dead_letters(&stack).await;
    assert_eq!(poison.len(), 1, "{poison:?}");
    assert_eq!(poison[0]["sequence_number"], puts[2].sequence_numbers[0].as_str());
    assert!(poison[0].get("sub_sequence_number").is_none(), "the record whole: {}", poison[0]);
    assert_eq!(poison[0]["data_base64"], puts[2].data_base64.as_str(), "the bytes the producer put");
    let reason = poison[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not match its MD5 digest"), "{reason}");

    running.stop(Duration::from_secs(30)).await.unwrap();
}

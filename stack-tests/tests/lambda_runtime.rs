//! The built function binaries behind a real Lambda Runtime API (`cargo lambda watch`),
//! invoked with every file in `events/` (`cargo lambda invoke --data-file`), talking to
//! the emulator through the AWS SDK exactly as they talk to AWS when deployed.

use eventline_stack_tests as common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use common::{checkout, stack};
use eventline_local::LocalStack;
use eventline_local::poller::kinesis_event;
use serde_json::Value;
use tokio::process::{Child, Command};

/// First invocations compile the binaries if they are not built yet.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(600);

fn cargo_lambda() -> String {
    let in_venv = checkout().join(".venv/bin/cargo-lambda");
    if in_venv.exists() { in_venv.display().to_string() } else { "cargo-lambda".to_owned() }
}

/// The Runtime API emulator with every function's environment from the template.
struct Watch {
    _child: Child,
    port: u16,
    /// What the functions wrote to stdout and stderr, through `cargo lambda watch`.
    output: std::path::PathBuf,
}

impl Watch {
    async fn start(stack: &LocalStack) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let output = std::env::temp_dir().join(format!("eventline-watch-{port}.log"));
        let log = std::fs::File::create(&output).unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        for function in stack.manifest.functions.values() {
            env.extend(function.environment.clone());
        }
        let mut command = Command::new(cargo_lambda());
        // Lambda's environment has no AWS settings of this machine's (AWS_CA_BUNDLE, a profile).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(checkout())
            .envs(env)
            // The template's own variable: with nothing but Lambda's `AWS_*` variables
            // beside it, the functions build their AWS configuration as they do in Lambda.
            .env("ENDPOINT_URL", &stack.emulator.endpoint)
            .env("AWS_REGION", &stack.manifest.region)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda is installed (run `make test`)");
        common::eventually(Duration::from_secs(60), "cargo lambda watch to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { _child: child, port, output }
    }

    /// The sum of `metric` over the embedded-metric-format documents the functions logged.
    fn emitted(&self, metric: &str) -> u64 {
        let log = std::fs::read_to_string(&self.output).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.find("{\"").map(|start| &line[start..]))
            .filter_map(|json| serde_json::from_str::<Value>(json).ok())
            .filter(|document| document.get("_aws").is_some())
            .filter_map(|document| document.get(metric).and_then(Value::as_u64))
            .sum()
    }

    /// The function's JSON answer to the event in `file`.
    async fn invoke(&self, function: &str, file: &Path) -> Value {
        let invoked = Command::new(cargo_lambda())
            .args(["lambda", "invoke", "-A", "127.0.0.1", "-P", &self.port.to_string(), function, "--data-file"])
            .arg(file)
            .current_dir(checkout())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(INVOKE_TIMEOUT, invoked).await.expect("invoke finished").unwrap();
        assert!(output.status.success(), "{function} {}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{function} answered something that is not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// Status and parsed body of an HTTP function's answer to a fixture.
    async fn http(&self, function: &str, fixture: &str) -> (u64, Value) {
        let response = self.invoke(function, &checkout().join("events").join(fixture)).await;
        let status = response["statusCode"].as_u64().unwrap_or_else(|| panic!("{fixture}: {response}"));
        let body = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_binaries_answer_every_sample_event_through_the_runtime_api() {
    let stack = stack(&[]).await;
    let watch = Watch::start(&stack).await;

    let (status, generation) = watch.http("admin", "admin-put-reference-users.json").await;
    assert_eq!((status, &generation["generation"]), (200, &Value::from(1)), "{generation}");

    // The write-key authorizer's simple response: the sample's key was never made.
    let denied = watch.invoke("authorizer", &checkout().join("events").join("authorizer-request.json")).await;
    assert_eq!(denied, serde_json::json!({"isAuthorized": false, "context": {}}));

    let expected_ingest = [
        ("ingest-post-event.json", 202),
        ("ingest-post-array.json", 202),
        ("ingest-post-batch.json", 202),
        ("ingest-post-partial.json", 207),
        ("ingest-post-invalid.json", 400),
        ("ingest-post-not-json.json", 400),
        ("ingest-post-wrong-content-type.json", 415),
    ];
    for (fixture, status) in expected_ingest {
        assert_eq!(watch.http("ingest", fixture).await.0, status, "{fixture}");
    }
    assert_eq!(watch.http("query", "query-get-event.json").await.0, 404, "not processed yet");

    // Hand what ingest put on the stream to the transform binary, as Lambda would.
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let stream = &stack.manifest.outputs["IngestStreamName"];
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = kinesis.get_records().shard_iterator(iterator).send().await.unwrap().records;
    assert_eq!(records.len(), 1 + 3 + 2 + 1, "every accepted event is on the stream");
    let event =
        kinesis_event(&records, "shardId-000000000000", &stack.manifest.event_sources[0].stream_arn, "us-east-1")
            .unwrap();
    let batch_file = std::env::temp_dir().join(format!("eventline-batch-{}.json", watch.port));
    std::fs::write(&batch_file, serde_json::to_vec(&event).unwrap()).unwrap();
    let response = watch.invoke("transform", &batch_file).await;
    assert_eq!(response["batchItemFailures"], Value::Array(vec![]), "{response}");
    let _ = std::fs::remove_file(&batch_file);

    for fixture in ["transform-kinesis-good.json", "transform-kinesis-poison.json", "transform-kinesis-duplicate.json"]
    {
        let response = watch.invoke("transform", &checkout().join("events").join(fixture)).await;
        assert_eq!(response["batchItemFailures"], Value::Array(vec![]), "{fixture}: {response}");
    }

    let (status, event) = watch.http("query", "query-get-event.json").await;
    assert_eq!(status, 200);
    assert_eq!(event["payload"], "STRASSE CHECKOUT");
    assert_eq!(watch.http("query", "query-get-event-missing.json").await.0, 404);
    let (status, totals) = watch.http("query", "query-get-metrics.json").await;
    assert_eq!(status, 200);
    // 7 from ingest, then the fixtures: 3 good, 2 good + 2 poison, 2 unique + 1 duplicate.
    assert_eq!(totals["events_processed"], 7 + 3 + 2 + 2);
    assert_eq!(totals["events_failed"], 2);
    assert_eq!(totals["events_duplicate"], 1);
    // The fixtures were written to the stream directly, not through ingest: the transform
    // counts such records received as it processes them, so the queue drains to 0.
    assert_eq!(totals["events_received"], 7 + 3 + 4 + 3);
    assert_eq!(totals["current_queue_depth"], 0);
    assert_eq!(watch.http("query", "query-get-health.json").await, (200, health_ok()));
    assert_eq!(watch.http("query", "query-get-healthz.json").await.0, 200);

    // The same figures, as the functions' embedded-metric-format log lines report them.
    assert_eq!(watch.emitted("EventsAccepted"), 7);
    assert_eq!(watch.emitted("EventsStored"), 7 + 3 + 2 + 2);
    assert_eq!(watch.emitted("EventsPoison"), 2);
    assert_eq!(watch.emitted("EventsDuplicate"), 1);
    let _ = std::fs::remove_file(&watch.output);
}

fn health_ok() -> Value {
    serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "checks": {"table": "ok", "stream": "ok"}})
}

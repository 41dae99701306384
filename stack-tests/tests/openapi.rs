//! `openapi.yaml` against what is served: the document lists exactly the template's routes,
//! and schemathesis, driven by the document, finds no server error and no response that
//! breaks it on a fresh local stack, sending to every operation with the credentials it asks
//! for: SigV4 signatures, and write keys made for the run.

use eventline_stack_tests as common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{call, checkout, read_stream, stack};
use tokio::process::Command;

/// Longest a schemathesis run may take before the test fails.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(600);
/// Fixed, so a failure found once is found again.
const SEED: &str = "20261130";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "100";

/// Stored before the run, so `GET /reference/users` and the events' enrichment answer with a
/// table in place; `u-42` is the document's example user.
const REFERENCE_TABLE: &str =
    r#"{"user_metadata": {"u-42": {"plan": "pro", "region": "eu-west"}}, "ts": "2026-11-30T12:00:00Z"}"#;

/// The sources of the write keys made for the run: one sent in the `Authorization` header
/// (Segment's `/v1/batch`, `/v1/track`, ...), one in the body (analytics.js's `/v1/b`, ...), so
/// that the stream shows that both kinds of route stored calls. Each key has the highest rate
/// a key may have, so that the run is never over it.
const HEADER_KEY_SOURCE: &str = "openapi_header_key";
const BODY_KEY_SOURCE: &str = "openapi_body_key";

/// (METHOD, path) of every operation in `openapi.yaml`, read with the venv's PyYAML.
const READ_OPERATIONS: &str = r#"
import json, sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.safe_load(f)
assert str(doc.get("openapi", "")).startswith("3.1"), "openapi.yaml must be OpenAPI 3.1"
methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
print(json.dumps([[m.upper(), p] for p, item in doc["paths"].items() for m in item if m in methods]))
"#;

/// What schemathesis cannot learn from the document itself.
const SCHEMATHESIS_CONFIG: &str = r#"
generation.with-security-parameters = false

# Ingest refuses, beyond the schema, events whose timestamp is ahead of its clock or outside
# years 0001-9999 in UTC, types or sources off an allow-list, and events over 256 KiB: a
# schema-valid event may get a 400 or 413.
[[operations]]
include-operation-id = ["postEvents", "postEventsBatch"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "413"]
# An array or batch is answered per item: invalid items are rejected inside a 207. (5xx are
# left to not_a_server_error, which fails on any.)
checks.negative_data_rejection.expected-statuses = ["207", "400", "413", "415", "5xx"]

# Every operation but the health checks and Segment's routes requires a SigV4 signature,
# which the hooks in tests/schemathesis make; they send the run's write keys to Segment's
# routes. Schemathesis generates no credentials of its own. A table whose `ts` is not later
# than the current one's is refused with 409.
[[operations]]
include-operation-id = ["putReferenceUsers"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409", "413"]

# Times are strings in RFC 3339 or epoch digits, a cursor is one this service gave, and an
# aggregates span is at most 366 days or 120 months: the schema cannot say which strings
# those are, so a schema-valid one may get a 400.
[[operations]]
include-operation-id = ["getUserEvents", "getUserAggregates", "getAggregates"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

# A Segment call is held, beyond the schema, to the rules of every event once mapped (its
# timestamp, corrected for the client's clock, not ahead of the clock nor outside years
# 0001-9999) and to 32 KiB: a schema-valid call may get a 400 or 413.
[[operations]]
include-operation-id = [
    "postSegmentTrack", "postSegmentIdentify", "postSegmentPage", "postSegmentScreen",
    "postSegmentGroup", "postSegmentAlias",
    "postBrowserTrack", "postBrowserIdentify", "postBrowserPage", "postBrowserScreen",
    "postBrowserGroup", "postBrowserAlias",
]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "413"]

# A batch is answered 200 as a whole, listing in `refused` the calls that can never be stored,
# those that break the schema among them (Segment's SDKs would drop a batch answered 4xx); its
# 500 KiB are beyond the schema.
[[operations]]
include-operation-id = ["postSegmentBatch", "postBrowserBatch"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "413"]
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "413", "415", "5xx"]
"#;

fn document() -> PathBuf {
    checkout().join("openapi.yaml").canonicalize().expect("openapi.yaml at the root of the checkout")
}

fn venv_bin(name: &str) -> PathBuf {
    checkout().join(".venv").join("bin").join(name)
}

fn route_set<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeSet<(String, String)> {
    routes.into_iter().map(|(method, path)| (method.to_ascii_uppercase(), path.to_owned())).collect()
}

async fn document_operations(document: &Path) -> BTreeSet<(String, String)> {
    let output = Command::new(venv_bin("python"))
        .args(["-c", READ_OPERATIONS])
        .arg(document)
        .output()
        .await
        .expect("run the venv's python (run `make test` so .venv is installed)");
    assert!(output.status.success(), "reading {}: {}", document.display(), String::from_utf8_lossy(&output.stderr));
    let pairs: Vec<(String, String)> = serde_json::from_slice(&output.stdout).expect("operations as JSON");
    assert!(!pairs.is_empty(), "openapi.yaml has no operations");
    route_set(pairs.iter().map(|(m, p)| (m.as_str(), p.as_str())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_exactly_the_template_routes() {
    let documented = document_operations(&document()).await;
    let stack = stack(&[]).await;

    // The routes deploy_template.py read from the functions' HttpApi events in template.yaml.
    let template = route_set(
        stack.manifest.functions.values().flat_map(|f| f.routes.iter().map(|r| (r.method.as_str(), r.path.as_str()))),
    );
    assert!(!template.is_empty(), "template.yaml has no HttpApi events");
    assert_eq!(
        documented,
        template,
        "openapi.yaml operations (left) differ from template.yaml HttpApi events (right); only in the document: {:?}; only in the template: {:?}",
        documented.difference(&template).collect::<Vec<_>>(),
        template.difference(&documented).collect::<Vec<_>>(),
    );

    // And what the local gateway serves from them.
    let served: BTreeSet<(String, String)> = stack
        .app()
        .route_list()
        .iter()
        .map(|route| {
            let (method, path) = route.split_once(' ').expect("METHOD /path");
            (method.to_owned(), path.to_owned())
        })
        .collect();
    assert_eq!(served, documented, "routes served by the local gateway (left) differ from openapi.yaml (right)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_response_conforms() {
    let schemathesis = venv_bin("schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: `make test` installs requirements-dev.txt into .venv",
        schemathesis.display()
    );
    // Browsers allowed from any origin: a write key may then name any origin, so that every
    // key the document allows is made (the schema cannot know a deployment's origins).
    let stack = stack(&[("CorsAllowedOrigins", "*")]).await;
    // Straight to the administrator function, as the gateway passes a request once its
    // signature verifies.
    let (status, body) = call(&stack, "PUT", "/reference/users", Some(REFERENCE_TABLE.to_owned())).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"generation": 1, "users": 1, "ts": "2026-11-30T12:00:00Z"})),
        "storing the reference table"
    );
    let header_key = create_write_key(&stack, HEADER_KEY_SOURCE).await;
    let body_key = create_write_key(&stack, BODY_KEY_SOURCE).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let url = running.url();

    // Everything schemathesis writes (config, example database, reports) stays in here.
    let work = std::env::temp_dir().join(format!("eventline-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("schemathesis.toml");
    std::fs::write(&config, SCHEMATHESIS_CONFIG).unwrap();

    let args: Vec<String> = vec![
        "--no-color".into(),
        "--config-file".into(),
        config.display().to_string(),
        "run".into(),
        document().display().to_string(),
        "--url".into(),
        url.clone(),
        "--checks".into(),
        "all".into(),
        // API Gateway, and the local gateway like it, answers a method with no route on a
        // documented path with 404 {"message":"Not Found"}, not 405.
        "--exclude-checks".into(),
        "unsupported_method".into(),
        "--mode".into(),
        "all".into(),
        "--phases".into(),
        "examples,coverage,fuzzing".into(),
        "--seed".into(),
        SEED.into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--generation-database".into(),
        "none".into(),
        // Ingest gives the stream 10 s before it answers 503; a response is due well before
        // the timeout, and `all` holds every response to the default limit of 10 s.
        "--request-timeout".into(),
        "30".into(),
        "--max-response-time".into(),
        "10".into(),
        "--max-redirects".into(),
        "0".into(),
        // One worker: with two, both threads can `ast.parse` schemathesis's sources at once
        // (Hypothesis describing its filters), and CPython 3.11 keeps the AST constructor's
        // depth in shared state: now and then an operation errors with "AST constructor
        // recursion depth mismatch" (python/cpython#106905). The emulator serves one request
        // at a time anyway, so one worker takes about as long.
        "--workers".into(),
        "1".into(),
    ];
    let started = Instant::now();
    let child = Command::new(&schemathesis)
        .args(&args)
        .current_dir(&work)
        // Only the local stack is reached: no proxy, nothing from the environment's config.
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        // Signs every request as the document's `sigv4` scheme asks, and sends the write keys.
        .env("SCHEMATHESIS_HOOKS", "eventline_hooks")
        .env("EVENTLINE_HEADER_WRITE_KEY", &header_key)
        .env("EVENTLINE_BODY_WRITE_KEY", &body_key)
        .env("PYTHONPATH", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCHEMATHESIS_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {SCHEMATHESIS_TIMEOUT:?}"))
        .expect("run schemathesis");
    let elapsed = started.elapsed();
    let report = format!(
        "schemathesis {} ({:.1} s, {})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        elapsed.as_secs_f64(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let _ = std::fs::remove_dir_all(&work);
    // Not drained: what the run sent is of no further interest, and the emulator goes with `stack`.
    drop(running);
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    // Its signatures were accepted: had every request been refused with the documented 403,
    // no event would have reached ingest.
    let (_, totals) = call(&stack, "GET", "/metrics", None).await;
    assert!(totals["events_received"].as_u64().unwrap_or(0) > 0, "no signed event got through: {totals}\n{report}");
    // And the write keys were taken: calls sent with each are on the stream, under its source.
    let records = read_stream(&stack, &stack.manifest.outputs["IngestStreamName"]).await;
    let stored = |source: &str| {
        records
            .iter()
            .filter_map(|record| serde_json::from_slice::<serde_json::Value>(record.data().as_ref()).ok())
            .filter(|event| event["source"] == source)
            .count()
    };
    for source in [HEADER_KEY_SOURCE, BODY_KEY_SOURCE] {
        assert!(stored(source) > 0, "no call sent with the {source} write key got through\n{report}");
    }
    println!("{report}");
}

/// A write key for `source`, made by the administrator function as the gateway passes a
/// signed `POST /write-keys`: the key itself.
async fn create_write_key(stack: &eventline_local::LocalStack, source: &str) -> String {
    let body = serde_json::json!({"source": source, "events_per_second": 100_000}).to_string();
    let request = common::request("POST", "/write-keys", Some(body));
    let response = stack.functions.admin.handle(eventline_admin::routes::routed(request)).await;
    let lambda_http::Body::Text(text) = response.body() else { panic!("a text answer") };
    assert_eq!(response.status(), 201, "making a write key: {text}");
    let made: serde_json::Value = serde_json::from_str(text).unwrap();
    made["write_key"].as_str().expect("the key in the answer").to_owned()
}

//! `load` and `replay` against a small stand-in for the Eventline HTTP API on loopback.
//!
//! The stand-in answers the first batch with 503 + `Retry-After`, then 207 with every tenth
//! event rejected, makes accepted events visible to `GET /events/{source}/{id}` only after a
//! delay (as the real pipeline does), and can be told to lose some accepted events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_gen::load::{self, EventSource, LoadOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_eventline-gen");

#[derive(Default)]
struct FakeApi {
    /// Event key ("source/id") → when it becomes visible.
    stored: Mutex<HashMap<String, Instant>>,
    posts: AtomicUsize,
    /// Accepted events whose position in the run is a multiple of this are never stored.
    lose_every: usize,
    accepted_so_far: AtomicUsize,
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl FakeApi {
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let json = |status: u16, body: Value| Response { status, headers: Vec::new(), body: body.to_string() };
        match (method, path) {
            ("POST", "/events") => {
                if self.posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Response {
                        status: 503,
                        headers: vec![("Retry-After", "0".into())],
                        body: "{\"error\":\"busy\"}".into(),
                    };
                }
                let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
                    return json(400, json!({"error": "body is not a JSON array"}));
                };
                let mut results = Vec::new();
                let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
                for (index, item) in items.iter().enumerate() {
                    let id = item["id"].as_str().unwrap_or_default();
                    let source = item["source"].as_str().unwrap_or_default();
                    if index % 10 == 9 {
                        results
                            .push(json!({"index": index, "id": id, "status": "rejected", "error": "test rejection"}));
                        continue;
                    }
                    let n = self.accepted_so_far.fetch_add(1, Ordering::SeqCst) + 1;
                    if self.lose_every == 0 || !n.is_multiple_of(self.lose_every) {
                        stored.insert(format!("{source}/{id}"), Instant::now() + Duration::from_millis(300));
                    }
                    results.push(json!({"index": index, "id": id, "status": "accepted", "error": null}));
                }
                json(207, json!({ "results": results }))
            }
            ("GET", "/metrics") => {
                let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
                json(200, json!({ "events_processed": stored.len() }))
            }
            ("GET", p) if p.starts_with("/events/") => {
                let key = &p["/events/".len()..];
                let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
                match stored.get(key) {
                    Some(visible) if Instant::now() >= *visible => json(200, json!({ "id": key })),
                    _ => json(404, json!({ "error": "not found" })),
                }
            }
            _ => json(404, json!({ "error": "no route" })),
        }
    }
}

async fn serve_connection(api: Arc<FakeApi>, stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let response = api.handle(&method, &path, &body);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(&response.body);
        // One write per response: a separate small body write would wait on delayed ACKs.
        if reader.get_mut().write_all(head.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Starts the stand-in on a free loopback port, on a runtime of its own.
fn start(api: Arc<FakeApi>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else { return };
            let _ = tx.send(listener.local_addr());
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(Arc::clone(&api), stream));
            }
        });
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => addr,
        other => panic!("fake API did not start: {other:?}"),
    }
}

fn options(addr: SocketAddr, source: EventSource) -> LoadOptions {
    let mut options = LoadOptions::new(&format!("http://{addr}"), source);
    options.concurrency = 4;
    options.batch = 50;
    options.poll_interval = Duration::from_millis(100);
    options.verify_timeout = Duration::from_secs(20);
    options
}

#[test]
fn load_counts_207_items_retries_503_and_verifies_every_accepted_event() {
    let api = Arc::new(FakeApi::default());
    let addr = start(Arc::clone(&api));
    let summary = load::run(options(addr, EventSource::Generated { seed: 3, count: Some(500) }));
    let Ok(summary) = summary else {
        panic!("load failed: {summary:?}");
    };
    assert_eq!(summary.sent, 500);
    assert_eq!(summary.rejected, 50);
    assert_eq!(summary.accepted, 450);
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.retries, 1);
    assert!(summary.verification);
    assert_eq!(summary.verified, 450);
    assert_eq!(summary.unverified, 0);
    assert!(summary.all_verified());
    // Ten batches plus the one retried.
    assert_eq!(summary.latency_ms.requests, 11);
    assert!(summary.latency_ms.p50 <= summary.latency_ms.p99);
    assert_eq!(summary.errors.0.get("rejected: test rejection"), Some(&50));
    assert_eq!(summary.metrics, Some(json!({"events_processed": 450})));
    assert!((summary.success_rate - 0.9).abs() < 1e-9);
}

#[test]
fn events_that_never_arrive_are_reported_as_unverified() {
    let api = Arc::new(FakeApi { lose_every: 45, ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let mut options = options(addr, EventSource::Generated { seed: 4, count: Some(200) });
    options.verify_timeout = Duration::from_secs(1);
    let summary = load::run(options);
    let Ok(summary) = summary else {
        panic!("load failed: {summary:?}");
    };
    assert_eq!(summary.accepted, 180, "{summary:?}");
    assert_eq!(summary.unverified, 4, "{summary:?}");
    assert_eq!(summary.verified, 176);
    assert!(!summary.all_verified());
}

#[test]
fn paced_load_takes_about_count_over_rate() {
    let api = Arc::new(FakeApi::default());
    let addr = start(Arc::clone(&api));
    let mut options = options(addr, EventSource::Generated { seed: 5, count: Some(300) });
    options.rate = Some(500.0);
    options.verify = false;
    options.fetch_metrics = false;
    let started = Instant::now();
    let summary = load::run(options);
    let elapsed = started.elapsed();
    let Ok(summary) = summary else {
        panic!("load failed: {summary:?}");
    };
    assert_eq!(summary.sent, 300);
    assert!(!summary.verification);
    // Six batches of 50 at 500 events/s start 0.1 s apart: the last one at 0.5 s.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn replay_accepts_generated_ndjson_and_api_files() {
    let api = Arc::new(FakeApi::default());
    let addr = start(Arc::clone(&api));
    let dir = std::env::temp_dir().join(format!("eventline-gen-replay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut replayed = 0;
    for (format, name) in [(Format::Ndjson, "calls.ndjson"), (Format::Api, "calls.api")] {
        let mut generate = GenerateOptions::new(120, 11 + replayed, format);
        generate.start_micros = eventline_gen::clock::now_micros() - 3_600_000_000;
        let mut out = Vec::new();
        assert!(generate_to(&generate, &mut out).is_ok());
        let path = dir.join(name);
        assert!(std::fs::write(&path, &out).is_ok());
        let summary = load::run(options(addr, EventSource::File(path)));
        let Ok(summary) = summary else {
            panic!("replay of {name} failed: {summary:?}");
        };
        assert_eq!(summary.sent, 120, "{name}");
        assert_eq!(summary.accepted + summary.rejected, 120, "{name}");
        assert_eq!(summary.unverified, 0, "{name}");
        assert_eq!(summary.verified, summary.accepted, "{name}");
        replayed += 1;
    }
    assert_eq!(replayed, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_command_prints_a_json_summary_and_exits_zero_when_all_arrive() {
    let api = Arc::new(FakeApi::default());
    let addr = start(Arc::clone(&api));
    let output = Command::new(BIN)
        .args(["load", "--url", &format!("http://{addr}/"), "--count", "100", "--seed", "1"])
        .args(["--batch", "50", "--json", "--quiet", "--verify-timeout", "20s"])
        .output();
    let Ok(output) = output else {
        panic!("could not run {BIN}: {output:?}");
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    assert_eq!(summary["sent"], 100);
    assert_eq!(summary["accepted"], 90);
    assert_eq!(summary["verified"], 90);
    assert!(summary["latency_ms"]["p95"].is_number());
}

#[test]
fn load_command_exits_non_zero_when_accepted_events_go_missing() {
    let api = Arc::new(FakeApi { lose_every: 10, ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let output = Command::new(BIN)
        .args(["load", "--url", &format!("http://{addr}"), "--count", "40", "--quiet"])
        .args(["--verify-timeout", "1s"])
        .output();
    let Ok(output) = output else {
        panic!("could not run {BIN}: {output:?}");
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("not found   3"), "{stdout}");
    assert!(stderr.contains("3 accepted events were not found"), "{stderr}");
}

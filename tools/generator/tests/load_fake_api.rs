//! `load` and `replay` against a small stand-in for the Eventline HTTP API on loopback.
//!
//! The stand-in answers the first batch with 503 + `Retry-After`, then 207 with every tenth
//! event rejected, makes accepted events visible to `GET /events/{source}/{id}` only after a
//! delay (as the real pipeline does), and can be told to lose some accepted events. It takes
//! `PUT /reference/users` (or refuses it with a chosen status), keeps a log of every request,
//! and, given the test credentials, checks each request's SigV4 signature the way a server
//! does: by signing what it received again with aws-sigv4 and comparing.
//!
//! Given a write key, it also serves Segment's `POST /v1/batch` as the contract has it: Basic
//! authorisation with the key, JSON (gzip-inflated when so encoded) of at most 500 KB, the
//! first batch answered 429 + `Retry-After`, every `sms` track refused, and the rest stored
//! under the key's source with the messageId as id.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use eventline_gen::clock::days_from_civil;
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_gen::load::{self, EventSource, LoadOptions, SegmentOptions};
use eventline_gen::segment::WriteKey;
use eventline_gen::signing::Signer;
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
    /// Credentials that signatures are checked against.
    credentials: Option<TestCredentials>,
    /// Answer to `PUT /reference/users`; 200 when left at 0.
    reference_status: u16,
    /// Every request, in the order it arrived.
    log: Mutex<Vec<Seen>>,
    /// The write key `POST /v1/batch` takes; without one that route is not served.
    write_key: Option<TestKey>,
    segment_posts: AtomicUsize,
}

/// A write key and the source it was made for.
#[derive(Clone, Copy, Debug)]
struct TestKey {
    key: &'static str,
    source: &'static str,
}

const WRITE_KEY: TestKey =
    TestKey { key: "wk_00c0ffee00c0ffee_Zm9yIHRlc3RzIG9ubHksIG5vdCBhIHJlYWwga2V5IQ0", source: "web" };

/// Well formed, but not a key the stand-in knows.
const OTHER_KEY: &str = "wk_0123456789abcdef_bm90IHRoZSBrZXkgdGhlIHN0YW5kLWluIGtub3dzIQ0";

/// Segment's limits as the stand-in enforces them.
const MAX_BATCH_BYTES: usize = 500_000;
const MAX_MESSAGE_BYTES: usize = 32_000;

/// What the stand-in's signature check found on a request.
#[derive(Clone, Debug, PartialEq)]
enum Signature {
    Absent,
    Valid,
    Invalid(String),
}

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    /// Signature headers present at all (`authorization`, `x-amz-date`).
    signed: bool,
    signature: Option<Signature>,
    body: Vec<u8>,
    /// Names lowercased.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, inflated first when it came gzip-encoded.
    fn json_body(&self) -> Vec<u8> {
        match self.header("content-encoding") {
            Some("gzip") => inflate(&self.body).unwrap_or_default(),
            _ => self.body.clone(),
        }
    }
}

fn inflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)?;
    Ok(out)
}

fn basic_authorization(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

/// What is wrong with a `/v1/batch` body, checked against the contract: an object of
/// `batch` (track messages) and `sentAt`, both times RFC 3339, `sentAt` about now.
fn check_segment_body(body: &Value) -> Result<&Vec<Value>, String> {
    let fields = body.as_object().ok_or("the body is not a JSON object")?;
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["batch", "sentAt"] {
        return Err(format!("the body has keys {keys:?}, not batch and sentAt"));
    }
    let sent_at = body["sentAt"].as_str().ok_or("sentAt is not a string")?;
    let sent_at = eventline_gen::clock::parse_rfc3339(sent_at)?;
    if (eventline_gen::clock::now_micros() - sent_at).abs() > 60_000_000 {
        return Err("sentAt is not now".into());
    }
    let batch = body["batch"].as_array().filter(|b| !b.is_empty()).ok_or("batch is not a non-empty array")?;
    for (index, message) in batch.iter().enumerate() {
        let text = |key: &str| message[key].as_str().ok_or(format!("message {index}: {key} is not a string"));
        if text("type")? != "track" {
            return Err(format!("message {index} is not a track"));
        }
        if !["call_out", "call_in", "sms", "data_session"].contains(&text("event")?) {
            return Err(format!("message {index}: unknown event {}", text("event")?));
        }
        let id = text("messageId")?;
        if !text("userId")?.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("message {index}: userId is not a subscriber number"));
        }
        eventline_gen::clock::parse_rfc3339(text("timestamp")?)?;
        if message["properties"]["event_ref"] != id {
            return Err(format!("message {index}: properties are not the call-detail record of {id}"));
        }
    }
    Ok(batch)
}

#[derive(Clone, Copy, Debug)]
struct TestCredentials {
    access_key_id: &'static str,
    secret_access_key: &'static str,
    session_token: Option<&'static str>,
    region: &'static str,
}

const CREDENTIALS: TestCredentials = TestCredentials {
    access_key_id: "testing",
    secret_access_key: "testing",
    session_token: None,
    region: "eu-west-1",
};

const TEMPORARY_CREDENTIALS: TestCredentials = TestCredentials {
    access_key_id: "ASIATEST",
    secret_access_key: "temporary-secret",
    session_token: Some("session-token/with+symbols="),
    region: "ap-southeast-2",
};

struct Received {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `20250101T000000Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let days = days_from_civil(num(0, 4)?, num(4, 6)? as u32, num(6, 8)? as u32);
    let secs = days * 86_400 + num(9, 11)? * 3600 + num(11, 13)? * 60 + num(13, 15)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Checks a request's SigV4 signature as API Gateway would: recomputes it with the
/// credentials the stand-in knows, over the method, path, signed headers and body received.
fn check_signature(expected: &TestCredentials, request: &Received) -> Signature {
    if request.header("authorization").is_none() {
        return Signature::Absent;
    }
    match verify_signature(expected, request) {
        Ok(()) => Signature::Valid,
        Err(reason) => Signature::Invalid(reason),
    }
}

fn verify_signature(expected: &TestCredentials, request: &Received) -> Result<(), String> {
    let authorization = request.header("authorization").ok_or("no authorization header")?;
    let fields = authorization.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let mut parts = HashMap::new();
    for part in fields.split(", ") {
        let (name, value) = part.split_once('=').ok_or_else(|| format!("bad part '{part}'"))?;
        parts.insert(name, value);
    }
    let field = |name: &str| parts.get(name).copied().ok_or_else(|| format!("no {name}"));
    let scope: Vec<&str> = field("Credential")?.split('/').collect();
    let [key, day, region, service, "aws4_request"] = scope[..] else {
        return Err(format!("bad credential scope {scope:?}"));
    };
    if key != expected.access_key_id || region != expected.region || service != "execute-api" {
        return Err(format!("scope {scope:?} is not for {expected:?}"));
    }
    let amz_date = request.header("x-amz-date").ok_or("no x-amz-date")?;
    let time = parse_amz_date(amz_date).ok_or_else(|| format!("bad x-amz-date {amz_date}"))?;
    if !amz_date.starts_with(day) {
        return Err(format!("x-amz-date {amz_date} is not of the scope's day {day}"));
    }
    let skew = SystemTime::now().duration_since(time).unwrap_or_else(|e| e.duration());
    if skew > Duration::from_secs(300) {
        return Err(format!("signed {skew:?} away from now"));
    }
    if request.header("x-amz-security-token") != expected.session_token {
        return Err("wrong or missing x-amz-security-token".into());
    }
    let names: Vec<&str> = field("SignedHeaders")?.split(';').collect();
    let mut required = vec!["host", "x-amz-date"];
    if !request.body.is_empty() {
        required.push("content-type");
    }
    if expected.session_token.is_some() {
        required.push("x-amz-security-token");
    }
    if let Some(name) = required.iter().find(|name| !names.contains(name)) {
        return Err(format!("{name} is not signed ({names:?})"));
    }
    let mut headers = Vec::new();
    for name in &names {
        headers.push((*name, request.header(name).ok_or_else(|| format!("signed header {name} not sent"))?));
    }
    let host = request.header("host").ok_or("no host")?;
    let credentials = Credentials::new(
        expected.access_key_id,
        expected.secret_access_key,
        expected.session_token.map(str::to_owned),
        None,
        "stand-in",
    );
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = format!("http://{host}{}", request.path);
    let signable = SignableRequest::new(&request.method, uri, headers.into_iter(), SignableBody::Bytes(&request.body))
        .map_err(|e| e.to_string())?;
    let (_, signature) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    if field("Signature")? != signature {
        return Err("signature does not match".into());
    }
    Ok(())
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl FakeApi {
    fn handle(&self, request: &Received) -> Response {
        let signature = self.credentials.as_ref().map(|c| check_signature(c, request));
        let signed = request.header("authorization").is_some() || request.header("x-amz-date").is_some();
        locked(&self.log).push(Seen {
            method: request.method.clone(),
            path: request.path.clone(),
            signed,
            signature,
            body: request.body.clone(),
            headers: request.headers.clone(),
        });
        if (request.method.as_str(), request.path.as_str()) == ("POST", "/v1/batch") {
            return self.answer_segment(request);
        }
        self.answer(&request.method, &request.path, &request.body)
    }

    fn answer_segment(&self, request: &Received) -> Response {
        let json = |status: u16, body: Value| Response { status, headers: Vec::new(), body: body.to_string() };
        let Some(key) = self.write_key else {
            return json(404, json!({"error": "no route"}));
        };
        if request.header("authorization") != Some(basic_authorization(key.key).as_str()) {
            return json(401, json!({"error": "unknown write key"}));
        }
        if request.header("content-type") != Some("application/json") {
            return json(400, json!({"error": "not application/json"}));
        }
        let body = match request.header("content-encoding") {
            None => request.body.clone(),
            Some("gzip") => match inflate(&request.body) {
                Ok(body) => body,
                Err(e) => return json(400, json!({"error": format!("not gzip: {e}")})),
            },
            Some(other) => return json(415, json!({"error": format!("unknown encoding {other}")})),
        };
        if body.len() > MAX_BATCH_BYTES {
            return json(413, json!({"error": "over 500 KB"}));
        }
        if self.segment_posts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Response {
                status: 429,
                headers: vec![("Retry-After", "0".into())],
                body: "{\"error\":\"over the key's rate\"}".into(),
            };
        }
        let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
        let batch = match check_segment_body(&parsed) {
            Ok(batch) => batch,
            Err(e) => return json(400, json!({ "error": e })),
        };
        let mut refused = Vec::new();
        let mut stored = locked(&self.stored);
        for (index, message) in batch.iter().enumerate() {
            let id = message["messageId"].as_str().unwrap_or_default();
            let error = if message.to_string().len() > MAX_MESSAGE_BYTES {
                Some("over 32 KB")
            } else if message["event"] == "sms" {
                Some("sms is not tracked here")
            } else {
                None
            };
            match error {
                Some(error) => refused.push(json!({"index": index, "messageId": id, "error": error})),
                None => {
                    stored.insert(format!("{}/{id}", key.source), Instant::now() + Duration::from_millis(300));
                }
            }
        }
        json(200, json!({"success": true, "accepted": batch.len() - refused.len(), "refused": refused}))
    }

    fn answer(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let json = |status: u16, body: Value| Response { status, headers: Vec::new(), body: body.to_string() };
        match (method, path) {
            ("PUT", "/reference/users") => {
                let table: Value = serde_json::from_slice(body).unwrap_or_default();
                let Some(users) = table["user_metadata"].as_object() else {
                    return json(400, json!({"error": "user_metadata is missing"}));
                };
                match self.reference_status {
                    0 | 200 => json(200, json!({"generation": 4, "users": users.len()})),
                    status => json(status, json!({"message": "Forbidden by the stand-in"})),
                }
            }
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
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let response = api.handle(&Received { method, path, headers, body });
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

fn signer(credentials: &TestCredentials) -> Signer {
    let signer = Signer::new(
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.session_token,
        credentials.region,
    );
    match signer {
        Ok(signer) => signer,
        Err(e) => panic!("test credentials refused: {e}"),
    }
}

fn seen(api: &FakeApi) -> Vec<Seen> {
    locked(&api.log).clone()
}

fn assert_all_validly_signed(seen: &[Seen]) {
    assert!(!seen.is_empty(), "no request reached the stand-in");
    for request in seen {
        assert_eq!(request.signature, Some(Signature::Valid), "{} {}", request.method, request.path);
    }
}

fn count(seen: &[Seen], method: &str, path_prefix: &str) -> usize {
    seen.iter().filter(|s| s.method == method && s.path.starts_with(path_prefix)).count()
}

/// `eventline-gen load` against the stand-in, with no AWS variables but those a test sets.
fn load_command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(["load", "--url", &format!("http://{addr}"), "--batch", "50", "--verify-timeout", "20s"]).args(args);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"] {
        command.env_remove(var);
    }
    command
}

fn with_credentials(command: &mut Command, credentials: &TestCredentials, region_var: &str) -> Output {
    command
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key)
        .env(region_var, credentials.region);
    if let Some(token) = credentials.session_token {
        command.env("AWS_SESSION_TOKEN", token);
    }
    output_of(command)
}

fn output_of(command: &mut Command) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(e) => panic!("could not run {BIN}: {e}"),
    }
}

fn assert_succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn with_a_signer_every_post_retry_lookup_and_metrics_read_is_validly_signed() {
    let api = Arc::new(FakeApi { credentials: Some(TEMPORARY_CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let mut options = options(addr, EventSource::Generated { seed: 6, count: Some(200) });
    options.signer = Some(signer(&TEMPORARY_CREDENTIALS));
    let summary = load::run(options);
    let Ok(summary) = summary else {
        panic!("load failed: {summary:?}");
    };
    assert_eq!(summary.verified, 180, "{summary:?}");
    let seen = seen(&api);
    assert_all_validly_signed(&seen);
    // Four batches, the first sent twice because of the 503: the retry is signed afresh.
    assert_eq!(count(&seen, "POST", "/events"), 5);
    assert!(count(&seen, "GET", "/events/") >= 180);
    // Before sending (what the pipeline had settled) and at the end.
    assert_eq!(count(&seen, "GET", "/metrics"), 2);
}

#[test]
fn replayed_events_are_signed_too() {
    let api = Arc::new(FakeApi { credentials: Some(CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let dir = std::env::temp_dir().join(format!("eventline-gen-signed-replay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut generate = GenerateOptions::new(80, 21, Format::Ndjson);
    generate.start_micros = eventline_gen::clock::now_micros() - 3_600_000_000;
    let mut out = Vec::new();
    assert!(generate_to(&generate, &mut out).is_ok());
    let path = dir.join("calls.ndjson");
    assert!(std::fs::write(&path, &out).is_ok());
    let mut options = options(addr, EventSource::File(path));
    options.signer = Some(signer(&CREDENTIALS));
    let summary = load::run(options);
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(summary) = summary else {
        panic!("replay failed: {summary:?}");
    };
    assert_eq!(summary.sent, 80);
    assert_eq!(summary.unverified, 0);
    assert_all_validly_signed(&seen(&api));
}

#[test]
fn the_stand_in_tells_a_signature_made_with_another_secret_from_a_valid_one() {
    let api = Arc::new(FakeApi { credentials: Some(CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let mut options = options(addr, EventSource::Generated { seed: 2, count: Some(50) });
    options.signer = Some(signer(&TestCredentials { secret_access_key: "not-the-secret", ..CREDENTIALS }));
    options.verify = false;
    options.fetch_metrics = false;
    assert!(load::run(options).is_ok());
    let seen = seen(&api);
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.signature, Some(Signature::Invalid("signature does not match".into())));
    }
}

#[test]
fn load_command_signs_with_credentials_from_the_environment_unless_told_not_to() {
    let api = Arc::new(FakeApi { credentials: Some(CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let output = with_credentials(
        &mut load_command(addr, &["--count", "100", "--seed", "2", "--quiet"]),
        &CREDENTIALS,
        "AWS_REGION",
    );
    assert_succeeded(&output);
    let signed = seen(&api);
    assert_all_validly_signed(&signed);
    assert!(count(&signed, "GET", "/events/") >= 90);

    let output = with_credentials(
        &mut load_command(addr, &["--count", "100", "--seed", "3", "--quiet", "--no-sign"]),
        &CREDENTIALS,
        "AWS_REGION",
    );
    assert_succeeded(&output);
    let unsigned = &seen(&api)[signed.len()..];
    assert!(count(unsigned, "POST", "/events") >= 2 && count(unsigned, "GET", "/events/") >= 90);
    for request in unsigned {
        assert!(!request.signed, "{} {} carries a signature", request.method, request.path);
    }
}

#[test]
fn load_command_uses_a_session_token_and_aws_default_region() {
    let api = Arc::new(FakeApi { credentials: Some(TEMPORARY_CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let output = with_credentials(
        &mut load_command(addr, &["--count", "50", "--seed", "4", "--quiet", "--sign"]),
        &TEMPORARY_CREDENTIALS,
        "AWS_DEFAULT_REGION",
    );
    assert_succeeded(&output);
    assert_all_validly_signed(&seen(&api));
}

/// Writes `eventline-gen reference` output to a file and returns its path and bytes.
fn reference_file(dir: &std::path::Path, users: &str, seed: &str) -> (std::path::PathBuf, Vec<u8>) {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join("ref.json");
    let path_text = path.to_string_lossy().into_owned();
    let output =
        output_of(Command::new(BIN).args(["reference", "--users", users, "--seed", seed, "--out", &path_text]));
    assert_succeeded(&output);
    let bytes = std::fs::read(&path).unwrap_or_default();
    (path, bytes)
}

#[test]
fn load_reference_puts_the_table_before_the_first_event_and_every_user_is_in_it() {
    let api = Arc::new(FakeApi { credentials: Some(CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let dir = std::env::temp_dir().join(format!("eventline-gen-load-ref-{}", std::process::id()));
    // 490 is not a multiple of 20: the run's last type block is a short one.
    let (path, table) = reference_file(&dir, "490", "9");
    let path_text = path.to_string_lossy().into_owned();
    let args = ["--count", "490", "--seed", "9", "--reference", &path_text, "--json", "--quiet"];
    let output = with_credentials(&mut load_command(addr, &args), &CREDENTIALS, "AWS_REGION");
    let _ = std::fs::remove_dir_all(&dir);
    assert_succeeded(&output);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(summary["reference"], json!({"generation": 4, "users": 490}));
    assert_eq!(summary["sent"], 490);

    let seen = seen(&api);
    assert_all_validly_signed(&seen);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("PUT", "/reference/users"));
    assert!(seen[0].body == table, "the PUT body is not the file's bytes");
    assert_eq!(count(&seen, "PUT", "/"), 1);

    let table: Value = serde_json::from_slice(&table).unwrap_or_default();
    let known: HashSet<&str> =
        table["user_metadata"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(known.len(), 490);
    let mut events = 0;
    for post in seen.iter().filter(|s| s.method == "POST") {
        let batch: Vec<Value> = serde_json::from_slice(&post.body).unwrap_or_default();
        for event in batch {
            let user = event["user_id"].as_str().unwrap_or_default();
            assert!(known.contains(user), "user {user} is not in the table");
            events += 1;
        }
    }
    // 490 events, the first batch of 50 sent twice.
    assert_eq!(events, 540);
}

#[test]
fn a_refused_reference_table_stops_the_run_before_any_event() {
    let api = Arc::new(FakeApi { reference_status: 403, ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let dir = std::env::temp_dir().join(format!("eventline-gen-refused-ref-{}", std::process::id()));
    let (path, _) = reference_file(&dir, "20", "1");
    let path_text = path.to_string_lossy().into_owned();
    let output = output_of(&mut load_command(addr, &["--count", "100", "--reference", &path_text]));
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP 403 Forbidden: Forbidden by the stand-in"), "{stderr}");
    assert!(output.stdout.is_empty());
    let seen = seen(&api);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "PUT");
}

#[test]
fn an_overloaded_reference_route_is_retried_then_stops_the_run() {
    let api = Arc::new(FakeApi { reference_status: 503, ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let dir = std::env::temp_dir().join(format!("eventline-gen-busy-ref-{}", std::process::id()));
    let (path, _) = reference_file(&dir, "10", "1");
    let mut options = options(addr, EventSource::Generated { seed: 1, count: Some(10) });
    options.reference = Some(path);
    options.retries = 1;
    let result = load::run(options);
    let _ = std::fs::remove_dir_all(&dir);
    let Err(e) = result else {
        panic!("a 503 to the reference table did not stop the run: {result:?}");
    };
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    let seen = seen(&api);
    assert_eq!(count(&seen, "PUT", "/reference/users"), 2);
    assert_eq!(seen.len(), 2);
}

fn segment_options(source: Option<&str>, gzip: bool) -> SegmentOptions {
    let write_key = match WriteKey::parse(WRITE_KEY.key) {
        Ok(key) => key,
        Err(e) => panic!("the test key was refused: {e}"),
    };
    SegmentOptions { write_key, source: source.map(str::to_owned), gzip }
}

/// The `POST /v1/batch` requests the stand-in saw, with their bodies as JSON.
fn segment_posts(seen: &[Seen]) -> Vec<(&Seen, Value)> {
    seen.iter()
        .filter(|s| s.method == "POST" && s.path == "/v1/batch")
        .map(|s| (s, serde_json::from_slice(&s.json_body()).unwrap_or_default()))
        .collect()
}

fn messages(body: &Value) -> &[Value] {
    body["batch"].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn write_key_load_packs_batches_under_500_kb_retries_429_and_verifies_under_the_keys_source() {
    let api = Arc::new(FakeApi { write_key: Some(WRITE_KEY), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let mut options = options(addr, EventSource::Generated { seed: 8, count: Some(2000) })
        .through_write_key(segment_options(Some(WRITE_KEY.source), false));
    // One request at a time, so that batches arrive in the order they were packed.
    options.concurrency = 1;
    let summary = load::run(options);
    let Ok(summary) = summary else {
        panic!("load failed: {summary:?}");
    };
    // 100 blocks of 20 events, four of them SMS in each: refused, and counted as rejected.
    assert_eq!(summary.sent, 2000);
    assert_eq!(summary.rejected, 400, "{summary:?}");
    assert_eq!(summary.errors.0.get("rejected: sms is not tracked here"), Some(&400));
    assert_eq!(summary.accepted, 1600);
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.retries, 1);
    assert_eq!(summary.verified, 1600);
    assert_eq!(summary.unverified, 0);

    let seen = seen(&api);
    let posts = segment_posts(&seen);
    for (post, body) in &posts {
        assert_eq!(post.header("authorization"), Some(basic_authorization(WRITE_KEY.key).as_str()));
        assert_eq!(post.header("content-type"), Some("application/json"));
        assert_eq!(post.header("content-encoding"), None);
        assert_eq!(post.header("x-amz-date"), None, "a write-key batch carries a SigV4 signature");
        assert!(check_segment_body(body).is_ok(), "{:?}", check_segment_body(body).err());
        assert!(post.body.len() <= MAX_BATCH_BYTES, "{} bytes", post.body.len());
    }
    // The batch answered 429 went again with the same messages.
    assert!(posts.len() >= 4, "{} posts", posts.len());
    assert_eq!(messages(&posts[0].1), messages(&posts[1].1));
    let batches = &posts[1..];
    let ids: HashSet<&str> =
        batches.iter().flat_map(|(_, b)| messages(b)).filter_map(|m| m["messageId"].as_str()).collect();
    assert_eq!(ids.len(), 2000);
    // Packed: far more than the native 100 to a request, and each full batch would have
    // gone over 500 KB with the first message of the next.
    for pair in batches.windows(2) {
        let (post, body) = &pair[0];
        let next = serde_json::to_vec(&messages(&pair[1].1)[0]).unwrap_or_default();
        assert!(messages(body).len() > 100, "{} events", messages(body).len());
        assert!(post.body.len() + 1 + next.len() > MAX_BATCH_BYTES, "{} bytes sent", post.body.len());
    }
    // Looked up under the key's source, never under the generator's switch names.
    assert!(count(&seen, "GET", "/events/web/") >= 1600);
    assert_eq!(count(&seen, "GET", "/events/"), count(&seen, "GET", "/events/web/"));
}

#[test]
fn load_command_sends_gzip_batches_capped_by_batch_with_a_write_key() {
    let api = Arc::new(FakeApi { write_key: Some(WRITE_KEY), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let output = output_of(
        Command::new(BIN)
            .args(["load", "--url", &format!("http://{addr}"), "--count", "300", "--seed", "1"])
            .args(["--write-key", WRITE_KEY.key, "--source", WRITE_KEY.source, "--gzip", "--batch", "120"])
            .args(["--concurrency", "1", "--json", "--quiet", "--verify-timeout", "20s"]),
    );
    assert_succeeded(&output);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(summary["sent"], 300);
    assert_eq!(summary["rejected"], 60);
    assert_eq!(summary["accepted"], 240);
    assert_eq!(summary["verified"], 240);
    assert_eq!(summary["retries"], 1);

    let seen = seen(&api);
    let posts = segment_posts(&seen);
    let sizes: Vec<usize> = posts.iter().map(|(_, body)| messages(body).len()).collect();
    assert_eq!(sizes, [120, 120, 120, 60]);
    for (post, body) in &posts {
        assert_eq!(post.header("content-encoding"), Some("gzip"));
        assert_eq!(post.body.get(..2), Some(&[0x1f, 0x8b][..]), "not gzip");
        assert!(post.body.len() < post.json_body().len() / 3, "hardly compressed");
        assert!(check_segment_body(body).is_ok(), "{:?}", check_segment_body(body).err());
    }
}

#[test]
fn load_command_with_an_unknown_write_key_fails_every_batch_and_says_why() {
    let api = Arc::new(FakeApi { write_key: Some(WRITE_KEY), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let output = output_of(
        Command::new(BIN).args(["load", "--url", &format!("http://{addr}"), "--count", "100", "--quiet"]).args([
            "--write-key",
            OTHER_KEY,
            "--source",
            "web",
        ]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout} {stderr}");
    assert!(stdout.contains("failed      100"), "{stdout}");
    assert!(stdout.contains("100 × failed: HTTP 401 Unauthorized: unknown write key"), "{stdout}");
    assert!(stderr.contains("no event could be delivered"), "{stderr}");
    assert!(!stdout.contains(OTHER_KEY) && !stderr.contains(OTHER_KEY), "the key was printed");
    // Not retried: one request per batch of the default size.
    assert_eq!(count(&seen(&api), "POST", "/v1/batch"), 1);
}

#[test]
fn with_a_write_key_batches_carry_the_key_and_everything_else_is_signed() {
    let api = Arc::new(FakeApi { write_key: Some(WRITE_KEY), credentials: Some(CREDENTIALS), ..FakeApi::default() });
    let addr = start(Arc::clone(&api));
    let args = ["--count", "100", "--seed", "6", "--quiet", "--write-key", WRITE_KEY.key, "--source", "web"];
    let output = with_credentials(&mut load_command(addr, &args), &CREDENTIALS, "AWS_REGION");
    assert_succeeded(&output);
    let seen = seen(&api);
    // Two batches of 50 (the command's --batch), the first twice because of the 429.
    assert_eq!(count(&seen, "POST", "/v1/batch"), 3);
    assert!(count(&seen, "GET", "/events/web/") >= 80);
    assert_eq!(count(&seen, "GET", "/metrics"), 2);
    for request in &seen {
        if request.path == "/v1/batch" {
            assert_eq!(request.header("authorization"), Some(basic_authorization(WRITE_KEY.key).as_str()));
            assert_eq!(request.header("x-amz-date"), None);
        } else {
            assert_eq!(request.signature, Some(Signature::Valid), "{} {}", request.method, request.path);
        }
    }
}

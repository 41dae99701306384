//! The tests that start emulator stacks (each file in `tests/` is one test binary), and the
//! helpers they share: a fresh local stack per test, signed requests, reading streams.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_kinesis::types::Record;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use eventline_gen::load::{EventSource, LoadOptions};
use eventline_gen::signing::Signer;
use eventline_local::{LocalStack, Options};
use serde_json::Value;

/// The credentials the local gateway verifies SigV4 signatures with, and its region.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

pub fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of another workspace package, from the target directory this test binary runs
/// from (`target/<profile>/deps/<test>`). `cargo nextest run --workspace` builds every
/// binary first; a run of this package alone needs `cargo build -p <package>` before it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let path = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps").join(name);
    assert!(path.exists(), "{} is not built: `cargo build --bin {name}` first", path.display());
    path
}

/// A fresh emulator with the template's resources, each test its own.
pub async fn stack(parameters: &[(&str, &str)]) -> LocalStack {
    try_stack(parameters).await.expect("local stack starts (run `make test` so .venv is installed)")
}

/// [`stack`], for a test that expects it to fail.
pub async fn try_stack(parameters: &[(&str, &str)]) -> Result<LocalStack, eventline_local::Error> {
    let mut options = Options::for_checkout(&checkout());
    options.stack_name = format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    options.parameters = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    LocalStack::start(&options).await
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The generator's signer with the local credentials.
pub fn signer() -> Signer {
    Signer::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, REGION).unwrap()
}

/// `eventline-gen load` options for a local stack, signing like every client of it.
pub fn load_options(url: &str, source: EventSource) -> LoadOptions {
    let mut options = LoadOptions::new(url, source);
    options.signer = Some(signer());
    options
}

/// The headers a client adds to sign `method path` (with its query) and `body` for
/// execute-api with `testing` and `secret`, over `host` and `content-type`.
pub fn sigv4_headers(addr: SocketAddr, method: &str, path: &str, body: &str, secret: &str) -> Vec<(String, String)> {
    sigv4_headers_as(ACCESS_KEY_ID, addr, method, path, body, secret)
}

/// [`sigv4_headers`] with another access key.
pub fn sigv4_headers_as(
    access_key: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let identity = Credentials::new(access_key, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = addr.to_string();
    let headers = [("host", host.as_str()), ("content-type", "application/json")];
    let uri = format!("http://{addr}{path}");
    let request =
        SignableRequest::new(method, uri.as_str(), headers.into_iter(), SignableBody::Bytes(body.as_bytes())).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
}

/// One HTTP/1.1 request signed with the local credentials, as every route but the health
/// checks requires.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    let body = body.map(Value::to_string).unwrap_or_default();
    let headers = sigv4_headers(addr, method, path, &body, SECRET_ACCESS_KEY);
    http_raw(addr, method, path, body, headers).await
}

/// [`http`] signed with another of the local gateway's access keys (another principal).
pub async fn http_as(
    access_key: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> HttpResponse {
    let body = body.map(Value::to_string).unwrap_or_default();
    let headers = sigv4_headers_as(access_key, addr, method, path, &body, SECRET_ACCESS_KEY);
    http_raw(addr, method, path, body, headers).await
}

/// One HTTP/1.1 request without a signature.
pub async fn http_unsigned(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    http_raw(addr, method, path, body.map(Value::to_string).unwrap_or_default(), Vec::new()).await
}

/// Sets the emulator's fault layer (`POST /_eventline/faults`, tools/local/moto_correctness.py)
/// and returns its answer: the settings and the faults injected so far.
pub async fn faults(stack: &LocalStack, settings: Value) -> Value {
    let addr: SocketAddr =
        stack.emulator.endpoint.trim_start_matches("http://").parse().expect("the emulator listens on an address");
    let response = http_unsigned(addr, "POST", "/_eventline/faults", Some(&settings)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// One HTTP/1.1 request with `extra` headers over a fresh connection: enough for tests, no
/// client library.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: String,
    extra: Vec<(String, String)>,
) -> HttpResponse {
    let method = method.to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        write!(stream, "{head}\r\n{body}").unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        HttpResponse { status, headers, body: serde_json::from_str(body).unwrap_or(Value::Null) }
    })
    .await
    .unwrap()
}

/// Polls until `check` holds, or fails the test after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    until(timeout, what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// Polls until `probe` gives a value, or fails the test after `timeout`.
pub async fn until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until the transform has finished every record on the stream, its analytics
/// included: a batch's window buckets and aggregates follow its commit, so they may trail
/// the counts `GET /metrics` reports for a moment.
pub async fn finished(running: &eventline_local::Running) {
    until(Duration::from_secs(120), "the transform to finish every record", || async {
        (running.progress().records_unprocessed().await.ok()? == 0).then_some(())
    })
    .await;
}

/// Every record on a stream, from the oldest, over all shards.
pub async fn read_stream(stack: &LocalStack, stream: &str) -> Vec<Record> {
    stack.read_stream(stream).await.unwrap()
}

/// A JSON request for `uri` (path and query string), as a function receives it before
/// routing adds the route key and path parameters.
pub fn request(method: &str, uri: &str, body: Option<String>) -> lambda_http::Request {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let query: std::collections::HashMap<String, String> =
        query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or(lambda_http::Body::Empty, lambda_http::Body::Text))
        .unwrap();
    lambda_http::RequestExt::with_query_string_parameters(request, query)
}

/// A request straight to the function that serves it (GET: metrics, PUT /reference/users:
/// admin, else ingest), as the local gateway would pass it; the status and the JSON body.
pub async fn call(stack: &LocalStack, method: &str, uri: &str, body: Option<String>) -> (u16, Value) {
    let path = uri.split_once('?').map_or(uri, |(path, _)| path);
    let request = request(method, uri, body);
    // Each with the route key and path parameters API Gateway sends with it.
    let response = if method == "GET" {
        stack.functions.query.handle(eventline_query::routes::routed(request)).await
    } else if path == "/reference/users" {
        stack.functions.admin.handle(eventline_admin::routes::routed(request)).await
    } else {
        stack.functions.ingest.handle(eventline_ingest::routes::routed(request)).await
    };
    let lambda_http::Body::Text(text) = response.body() else { panic!("a text answer") };
    (response.status().as_u16(), serde_json::from_str(text).unwrap_or(Value::Null))
}

/// The template as CloudFormation, as the SAM translator makes it for the emulator (the
/// parameters' defaults; conditions left for CloudFormation to resolve).
pub async fn translated_template() -> Value {
    let script = "import json, sys\nsys.path.insert(0, 'tools/local')\nimport deploy_template\n\
        from samtranslator.yaml_helper import yaml_parse\n\
        print(json.dumps(deploy_template.translate(yaml_parse(open('template.yaml').read()), {})))";
    let output = tokio::process::Command::new(checkout().join(".venv/bin/python"))
        .args(["-c", script])
        .current_dir(checkout())
        .env("AWS_DEFAULT_REGION", REGION)
        .output()
        .await
        .expect("the venv's python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

//! Helpers for the tests that run against the emulator.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use eventline_local::{LocalStack, Options};
use serde_json::Value;

pub fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh emulator with the template's resources, each test its own.
pub async fn stack(parameters: &[(&str, &str)]) -> LocalStack {
    let mut options = Options::for_checkout(&checkout());
    options.stack_name = format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    options.parameters = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    LocalStack::start(&options).await.expect("local stack starts (run `make test` so .venv is installed)")
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

/// One HTTP/1.1 request over a fresh connection: enough for tests, no client library.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    let method = method.to_owned();
    let path = path.to_owned();
    let body = body.map(Value::to_string);
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
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

/// Every record on a stream, from the oldest, over all shards.
pub async fn read_stream(stack: &LocalStack, stream: &str) -> Vec<Record> {
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let shards = kinesis.list_shards().stream_name(stream).send().await.unwrap();
    let mut records = Vec::new();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(it) = iterator {
            let out = kinesis.get_records().shard_iterator(it).limit(1000).send().await.unwrap();
            if out.records().is_empty() {
                break;
            }
            records.extend(out.records().iter().cloned());
            iterator = out.next_shard_iterator;
        }
    }
    records
}

/// A request straight to the function that serves it (GET: metrics, else ingest), as the
/// local gateway would pass it; the status and the JSON body.
pub async fn call(stack: &LocalStack, method: &str, uri: &str, body: Option<String>) -> (u16, Value) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let query: std::collections::HashMap<String, String> =
        query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or(lambda_http::Body::Empty, lambda_http::Body::Text))
        .unwrap();
    let request = lambda_http::RequestExt::with_query_string_parameters(request, query);
    let response = if method == "GET" {
        stack.functions.metrics.handle(request).await
    } else {
        stack.functions.ingest.handle(request).await
    };
    let lambda_http::Body::Text(text) = response.body() else { panic!("a text answer") };
    (response.status().as_u16(), serde_json::from_str(text).unwrap_or(Value::Null))
}

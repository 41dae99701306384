//! The Eventline HTTP API as seen by a client: endpoints, requests, and what responses mean.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::signing::Signer;

/// Largest response body read; API answers are small JSON documents.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The base URL of a deployment, e.g. `http://127.0.0.1:3000` or
/// `https://abc.execute-api.eu-west-1.amazonaws.com/prod`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    base: String,
    events: Uri,
    tls: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let base = url.trim().trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|e| format!("{e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme '{other}' is not http or https")),
            None => return Err("the URL needs a scheme, e.g. http://127.0.0.1:3000".into()),
        };
        if uri.authority().is_none() {
            return Err("the URL has no host".into());
        }
        if uri.query().is_some() {
            return Err("the URL must not have a query string".into());
        }
        let events = format!("{base}/events").parse().map_err(|e| format!("{e}"))?;
        Ok(Self { base, events, tls })
    }

    pub fn uses_tls(&self) -> bool {
        self.tls
    }

    /// `POST` target for batches.
    pub fn events(&self) -> &Uri {
        &self.events
    }

    /// `GET {base}/events/{source}/{id}`, with both segments percent-encoded.
    pub fn event(&self, source: &str, id: &str) -> Result<Uri, String> {
        format!("{}/events/{}/{}", self.base, encode_segment(source), encode_segment(id))
            .parse()
            .map_err(|e| format!("{e}"))
    }

    pub fn metrics(&self) -> Result<Uri, String> {
        format!("{}/metrics", self.base).parse().map_err(|e| format!("{e}"))
    }

    /// `PUT` target for the reference table of users.
    pub fn reference_users(&self) -> Result<Uri, String> {
        format!("{}/reference/users", self.base).parse().map_err(|e| format!("{e}"))
    }

    /// `POST` target for batches in Segment's tracking API format.
    pub fn segment_batch(&self) -> Result<Uri, String> {
        format!("{}/v1/batch", self.base).parse().map_err(|e| format!("{e}"))
    }
}

/// Percent-encodes everything outside RFC 3986 unreserved characters and ':' and '@'.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP/1.1 client for http and https URLs. Root certificates come from the system store,
/// read only when the URL needs TLS.
pub fn client(endpoint: &Endpoint, max_idle: usize) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    if endpoint.uses_tls() {
        let loaded = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(loaded.certs);
        if roots.is_empty() {
            return Err(
                "no trusted root certificates found on this system (install the ca-certificates package)".into()
            );
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(max_idle).build(connector))
}

/// A response reduced to what the load driver needs.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

/// Sends one request, signed when there is a signer, and reads the whole (bounded) response body.
pub async fn send(
    client: &HttpClient,
    signer: Option<&Signer>,
    method: Method,
    uri: &Uri,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Reply, String> {
    let mut builder = request_builder(method, uri);
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.unwrap_or_default();
    let mut request = builder.body(Full::new(body.clone())).map_err(|e| format!("building request: {e}"))?;
    if let Some(signer) = signer {
        signer.sign(&mut request, &body, SystemTime::now())?;
    }
    exchange(client, request, timeout).await
}

/// The headers every request carries: who is asking, and that JSON answers are wanted.
pub fn request_builder(method: Method, uri: &Uri) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri.clone())
        .header(header::USER_AGENT, concat!("eventline-gen/", env!("CARGO_PKG_VERSION")))
        .header(header::ACCEPT, "application/json")
}

/// Sends a request as it is and reads the whole (bounded) response body.
pub async fn exchange(client: &HttpClient, request: Request<Full<Bytes>>, timeout: Duration) -> Result<Reply, String> {
    let exchange = async {
        let response = client.request(request).await.map_err(|e| describe_client_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading response: {e}"))?
            .to_bytes();
        Ok(Reply { status, retry_after, body })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("request timed out after {:.1} s", timeout.as_secs_f64())),
    }
}

/// The client error with its causes, e.g. "connection error: Connection refused".
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = if e.is_connect() { "connection error".to_owned() } else { "request error".to_owned() };
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    if !last.is_empty() {
        text.push_str(": ");
        text.push_str(&last);
    }
    text
}

/// What happened to one event of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    /// Accepted; carries the id from the response when it gave one.
    Accepted(Option<String>),
    Rejected(String),
    Failed(String),
}

/// What to do with a batch after a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// One status per event of the batch, in order.
    Done(Vec<ItemStatus>),
    /// Overloaded: try the whole batch again after the given wait (when the server named one).
    Retry(Option<Duration>),
}

#[derive(Deserialize)]
struct MultiStatus {
    results: Vec<ItemResult>,
}

#[derive(Deserialize)]
struct ItemResult {
    index: Option<usize>,
    id: Option<String>,
    status: String,
    error: Option<String>,
}

/// Interprets a `POST /events` response for a batch of `len` events whose ids are `ids`.
///
/// 2xx other than 207: all accepted. 207: per item, matched by `index` (or by `id`); items
/// the body does not mention count as failed. 400, 413, 422: all rejected. 429, 503: retry.
/// Anything else: all failed.
pub fn classify(reply: &Reply, ids: &[Option<&str>]) -> Outcome {
    let len = ids.len();
    let all = |s: ItemStatus| Outcome::Done(vec![s; len]);
    match reply.status {
        207 => parse_multi_status(&reply.body, ids),
        200..=299 => all(ItemStatus::Accepted(None)),
        400 | 413 | 422 => all(ItemStatus::Rejected(format!("HTTP {}{}", reply.status, error_detail(&reply.body)))),
        429 | 503 => Outcome::Retry(parse_retry_after(reply.retry_after.as_deref())),
        _ => all(ItemStatus::Failed(describe_status(reply))),
    }
}

/// A status with its reason phrase and the error the body names, e.g.
/// `HTTP 403 Forbidden: Missing Authentication Token`.
pub fn describe_status(reply: &Reply) -> String {
    describe_with(reply, error_detail(&reply.body))
}

/// [`describe_status`] that also reads the `detail` of an RFC 9457 problem body.
pub fn describe_problem(reply: &Reply) -> String {
    describe_with(reply, detail_of(&reply.body, &["error", "message", "detail"]))
}

fn describe_with(reply: &Reply, detail: String) -> String {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    format!("HTTP {} {}{detail}", reply.status, status.canonical_reason().unwrap_or(""))
}

fn parse_multi_status(body: &[u8], ids: &[Option<&str>]) -> Outcome {
    let len = ids.len();
    let parsed: MultiStatus = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Done(vec![ItemStatus::Failed(format!("unreadable 207 body: {e}")); len]);
        }
    };
    let mut statuses = vec![ItemStatus::Failed("not in the 207 results".to_owned()); len];
    for item in parsed.results {
        let slot = item
            .index
            .filter(|i| *i < len)
            .or_else(|| item.id.as_deref().and_then(|id| ids.iter().position(|x| *x == Some(id))));
        let Some(slot) = slot else { continue };
        let reason = || item.error.clone().unwrap_or_else(|| item.status.clone());
        statuses[slot] = match item.status.as_str() {
            "accepted" => ItemStatus::Accepted(item.id.clone()),
            "rejected" => ItemStatus::Rejected(reason()),
            "failed" => ItemStatus::Failed(reason()),
            other => ItemStatus::Failed(format!("unknown item status '{other}'")),
        };
    }
    Outcome::Done(statuses)
}

/// A short reason taken from a JSON error body (`error` or `message`), if there is one.
pub fn error_detail(body: &[u8]) -> String {
    detail_of(body, &["error", "message"])
}

/// `": <text>"` from the first of `keys` that holds a string in a JSON body, else nothing.
fn detail_of(body: &[u8], keys: &[&str]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    keys.iter()
        .find_map(|k| value.get(k).and_then(|v| v.as_str()))
        .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
        .unwrap_or_default()
}

/// `Retry-After` as delay-seconds (fractions allowed), capped; dates are not supported.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// The wait before retry number `attempt` (0-based) when the server gave none:
/// 0.5 s doubling up to 10 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, retry_after: None, body: Bytes::from(body.to_owned()) }
    }

    #[test]
    fn status_202_accepts_the_whole_batch() {
        let ids = [Some("a"), Some("b")];
        assert_eq!(classify(&reply(202, ""), &ids), Outcome::Done(vec![ItemStatus::Accepted(None); 2]));
    }

    #[test]
    fn status_207_counts_each_item() {
        let body = r#"{"results":[
            {"index":0,"id":"a","status":"accepted"},
            {"index":1,"id":"b","status":"rejected","error":"type is invalid"},
            {"index":2,"id":"c","status":"failed","error":"stream throttled"}
        ]}"#;
        let ids = [Some("a"), Some("b"), Some("c"), Some("d")];
        let Outcome::Done(items) = classify(&reply(207, body), &ids) else {
            panic!("207 must not be retried");
        };
        assert_eq!(items[0], ItemStatus::Accepted(Some("a".into())));
        assert_eq!(items[1], ItemStatus::Rejected("type is invalid".into()));
        assert_eq!(items[2], ItemStatus::Failed("stream throttled".into()));
        assert_eq!(items[3], ItemStatus::Failed("not in the 207 results".into()));
    }

    #[test]
    fn status_207_items_without_index_match_by_id() {
        let body = r#"{"results":[{"id":"b","status":"accepted","error":null}]}"#;
        let ids = [Some("a"), Some("b")];
        let outcome = classify(&reply(207, body), &ids);
        assert_eq!(
            outcome,
            Outcome::Done(vec![
                ItemStatus::Failed("not in the 207 results".into()),
                ItemStatus::Accepted(Some("b".into()))
            ])
        );
    }

    #[test]
    fn unreadable_207_fails_the_batch() {
        let Outcome::Done(items) = classify(&reply(207, "oops"), &[Some("a")]) else {
            panic!("207 must not be retried");
        };
        assert!(matches!(&items[0], ItemStatus::Failed(m) if m.starts_with("unreadable 207 body")));
    }

    #[test]
    fn status_400_and_413_reject_the_batch_with_the_reason() {
        let outcome = classify(&reply(400, r#"{"error":"body is not a JSON array"}"#), &[Some("a")]);
        assert_eq!(outcome, Outcome::Done(vec![ItemStatus::Rejected("HTTP 400: body is not a JSON array".into())]));
        let outcome = classify(&reply(413, ""), &[Some("a"), None]);
        assert_eq!(outcome, Outcome::Done(vec![ItemStatus::Rejected("HTTP 413".into()); 2]));
    }

    #[test]
    fn status_503_asks_for_a_retry_after_the_given_delay() {
        let mut r = reply(503, "");
        r.retry_after = Some("2".into());
        assert_eq!(classify(&r, &[Some("a")]), Outcome::Retry(Some(Duration::from_secs(2))));
        r.retry_after = None;
        assert_eq!(classify(&r, &[Some("a")]), Outcome::Retry(None));
    }

    #[test]
    fn other_statuses_fail_the_batch() {
        let outcome = classify(&reply(404, ""), &[Some("a")]);
        assert_eq!(outcome, Outcome::Done(vec![ItemStatus::Failed("HTTP 404 Not Found".into())]));
    }

    #[test]
    fn problem_bodies_are_described_by_their_detail() {
        let problem =
            r#"{"type":"about:blank","title":"Conflict","status":409,"detail":"the table's ts is not newer"}"#;
        assert_eq!(describe_problem(&reply(409, problem)), "HTTP 409 Conflict: the table's ts is not newer");
        assert_eq!(describe_problem(&reply(403, r#"{"message":"Forbidden"}"#)), "HTTP 403 Forbidden: Forbidden");
        assert_eq!(describe_problem(&reply(500, "")), "HTTP 500 Internal Server Error");
    }

    #[test]
    fn retry_after_parsing_is_bounded() {
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(Some("0.25")), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after(Some("99999")), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_segments() {
        let endpoint = Endpoint::parse("https://abc.execute-api.eu-west-1.amazonaws.com/prod/");
        let Ok(endpoint) = endpoint else {
            panic!("valid URL refused: {endpoint:?}");
        };
        assert!(endpoint.uses_tls());
        assert_eq!(endpoint.events().to_string(), "https://abc.execute-api.eu-west-1.amazonaws.com/prod/events");
        assert_eq!(
            endpoint.event("msc-ber-01", "a b/c").map(|u| u.to_string()),
            Ok("https://abc.execute-api.eu-west-1.amazonaws.com/prod/events/msc-ber-01/a%20b%2Fc".to_owned())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:3000").map(|e| e.metrics().map(|u| u.to_string())),
            Ok(Ok("http://127.0.0.1:3000/metrics".to_owned()))
        );
        assert_eq!(
            endpoint.reference_users().map(|u| u.to_string()),
            Ok("https://abc.execute-api.eu-west-1.amazonaws.com/prod/reference/users".to_owned())
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["127.0.0.1:3000", "ftp://host/x", "http://", "not a url", "http://h/?q=1"] {
            assert!(Endpoint::parse(url).is_err(), "{url} accepted");
        }
    }
}

//! `POST /events` and `POST /events/batch`: validate, put on the ingest stream in one
//! PutRecords call, and answer for every item.

use http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use eventline_model::response::{Problem, json, retry_after};
use eventline_model::sink::{Backoff, OutRecord, RecordSink, put_all};
use eventline_model::{Event, FieldError, Rules, StreamRecord};

use crate::counter::ReceivedCounter;

/// Most events one request may carry.
pub const MAX_BATCH: usize = 100;
/// Largest request body; well inside one PutRecords call (5 MiB) once defaults are added.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

pub struct Ingest<S, C> {
    pub sink: S,
    pub counter: C,
    pub rules: Rules,
    pub backoff: Backoff,
}

/// Why a request is refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route for {method} {path}")]
    NotFound { method: Method, path: String },
    #[error("{0} is not allowed here; use POST")]
    MethodNotAllowed(Method),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is {0} bytes; the limit is {MAX_BODY_BYTES}")]
    BodyTooLarge(usize),
    #[error("{0}")]
    BadBody(String),
}

impl RequestError {
    fn into_response(self) -> Response<Vec<u8>> {
        let status = match &self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        };
        let mut response = Problem::new(status, self.to_string()).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        response
    }
}

/// What the body held: one event (answered alone) or a list (answered per item).
#[derive(Debug)]
struct Submission {
    single: bool,
    items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Accepted,
    Rejected,
    Failed,
}

#[derive(Debug, Serialize)]
struct ItemResult {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

impl ItemResult {
    fn written(index: usize, event: Event, status: ItemStatus, error: Option<String>) -> Self {
        Self { index, id: Some(event.id.into()), source: Some(event.source.into()), status, error, errors: Vec::new() }
    }
}

impl<S: RecordSink, C: ReceivedCounter> Ingest<S, C> {
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = match self.respond(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%error, "request refused");
                error.into_response()
            }
        };
        response.map(Body::from)
    }

    async fn respond(&self, request: Request) -> Result<Response<Vec<u8>>, RequestError> {
        let Submission { single, items } = parse_request(&request)?;
        let now = OffsetDateTime::now_utc();
        let parsed: Vec<_> = items.iter().map(|value| Event::from_json(value, &self.rules, now)).collect();
        let outcomes = self.put_valid(parsed, now).await;

        let accepted = outcomes.iter().filter(|o| matches!(o, Outcome::Accepted(_))).count();
        if accepted > 0
            && let Err(error) = self.counter.add(accepted as u64).await
        {
            // The events are on the stream; only the received total will be low.
            tracing::warn!(%error, accepted, "could not count received events");
        }
        tracing::info!(items = items.len(), accepted, "request handled");

        let results: Vec<ItemResult> = outcomes
            .into_iter()
            .zip(&items)
            .enumerate()
            .map(|(index, (outcome, raw))| outcome.result(index, raw))
            .collect();
        Ok(if single { single_response(results.into_iter().next()) } else { batch_response(results) })
    }

    /// Puts the valid events in one call, re-sending failed entries, and tells each item's fate.
    async fn put_valid(&self, parsed: Vec<Result<Event, Vec<FieldError>>>, now: OffsetDateTime) -> Vec<Outcome> {
        let records: Vec<OutRecord> = parsed
            .iter()
            .flatten()
            .map(|event| OutRecord {
                partition_key: event.partition_key(),
                data: StreamRecord { event: event.clone(), received_at: now }.encode(),
            })
            .collect();
        let mut put = put_all(&self.sink, &records, self.backoff).await.into_iter();
        parsed
            .into_iter()
            .map(|item| match item {
                Err(errors) => Outcome::Rejected(errors),
                Ok(event) => match put.next() {
                    Some(Ok(())) => Outcome::Accepted(event),
                    Some(Err(failure)) => {
                        tracing::error!(code = %failure.code, message = %failure.message, "event not written to the stream");
                        Outcome::Failed(event)
                    }
                    None => Outcome::Failed(event),
                },
            })
            .collect()
    }
}

/// What became of one item of a request.
enum Outcome {
    Accepted(Event),
    Failed(Event),
    Rejected(Vec<FieldError>),
}

impl Outcome {
    fn result(self, index: usize, raw: &Value) -> ItemResult {
        match self {
            Outcome::Accepted(event) => ItemResult::written(index, event, ItemStatus::Accepted, None),
            Outcome::Failed(event) => ItemResult::written(
                index,
                event,
                ItemStatus::Failed,
                Some("the stream did not take the event; retry later".to_owned()),
            ),
            Outcome::Rejected(errors) => ItemResult {
                index,
                id: raw.get("id").and_then(Value::as_str).map(str::to_owned),
                source: None,
                status: ItemStatus::Rejected,
                error: Some(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
                errors,
            },
        }
    }
}

fn single_response(result: Option<ItemResult>) -> Response<Vec<u8>> {
    let Some(result) = result else {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    match result.status {
        ItemStatus::Accepted => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"id": result.id, "source": result.source, "status": "accepted"}),
        ),
        ItemStatus::Failed => unavailable(),
        ItemStatus::Rejected => {
            let too_large = result.errors.iter().any(|e| e.rule == "size");
            let status = if too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            Problem::new(status, "the event is invalid").with_errors(result.errors).into_response()
        }
    }
}

fn batch_response(results: Vec<ItemResult>) -> Response<Vec<u8>> {
    let count = |s| results.iter().filter(|r| r.status == s).count();
    let (accepted, rejected, failed) =
        (count(ItemStatus::Accepted), count(ItemStatus::Rejected), count(ItemStatus::Failed));
    if accepted == 0 && failed > 0 {
        return unavailable();
    }
    let status = if accepted == results.len() { StatusCode::ACCEPTED } else { StatusCode::MULTI_STATUS };
    json(status, &serde_json::json!({"accepted": accepted, "rejected": rejected, "failed": failed, "results": results}))
}

fn unavailable() -> Response<Vec<u8>> {
    retry_after(
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the stream is not taking events now; retry later")
            .into_response(),
        RETRY_AFTER_SECONDS,
    )
}

fn parse_request(request: &Request) -> Result<Submission, RequestError> {
    let path = request.uri().path().trim_end_matches('/');
    let batch_route = if path.ends_with("/events/batch") {
        true
    } else if path.ends_with("/events") {
        false
    } else {
        return Err(RequestError::NotFound { method: request.method().clone(), path: path.to_owned() });
    };
    if request.method() != Method::POST {
        return Err(RequestError::MethodNotAllowed(request.method().clone()));
    }
    if !is_json(request.headers().get(header::CONTENT_TYPE)) {
        return Err(RequestError::UnsupportedMediaType);
    }
    let bytes: &[u8] = match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(RequestError::BodyTooLarge(bytes.len()));
    }
    if bytes.is_empty() {
        return Err(RequestError::BadBody("request body is empty".into()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RequestError::BadBody(format!("request body is not UTF-8 (byte {})", e.valid_up_to())))?;
    let body: Value = serde_json::from_str(text)
        .map_err(|e| RequestError::BadBody(format!("request body is not valid JSON: {e}")))?;

    let submission = match (batch_route, body) {
        (false, Value::Object(map)) => Submission { single: true, items: vec![Value::Object(map)] },
        (false, Value::Array(items)) => Submission { single: false, items },
        (false, _) => return Err(RequestError::BadBody("body must be an event object or an array of events".into())),
        (true, Value::Object(mut map)) => {
            if let Some(unknown) = map.keys().find(|k| *k != "events") {
                return Err(RequestError::BadBody(format!(
                    "{unknown} is not a known field; send {{\"events\": [...]}}"
                )));
            }
            match map.remove("events") {
                Some(Value::Array(items)) => Submission { single: false, items },
                _ => return Err(RequestError::BadBody("events must be an array of events".into())),
            }
        }
        (true, _) => return Err(RequestError::BadBody("body must be an object {\"events\": [...]}".into())),
    };
    let count = submission.items.len();
    if count == 0 {
        return Err(RequestError::BadBody("the batch is empty".into()));
    }
    if count > MAX_BATCH {
        return Err(RequestError::BadBody(format!("the batch has {count} events; the limit is {MAX_BATCH}")));
    }
    Ok(submission)
}

/// `application/json` or any `+json` type, with or without parameters.
fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_model::sink::PutFailure;
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records what it was given; fails entries whose partition key is listed, every time.
    #[derive(Default)]
    struct FakeStream {
        calls: Mutex<Vec<Vec<OutRecord>>>,
        refuse_keys: Vec<String>,
    }

    impl RecordSink for FakeStream {
        async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
            self.calls.lock().unwrap().push(records.to_vec());
            Ok(records
                .iter()
                .map(|r| {
                    if self.refuse_keys.contains(&r.partition_key) {
                        Err(PutFailure {
                            code: "ProvisionedThroughputExceededException".into(),
                            message: "busy".into(),
                        })
                    } else {
                        Ok(())
                    }
                })
                .collect())
        }
    }

    #[derive(Default)]
    struct FakeCounter(Mutex<u64>);

    impl ReceivedCounter for FakeCounter {
        async fn add(&self, accepted: u64) -> Result<(), String> {
            *self.0.lock().unwrap() += accepted;
            Ok(())
        }
    }

    fn ingest(refuse_keys: &[&str]) -> Ingest<FakeStream, FakeCounter> {
        Ingest {
            sink: FakeStream { refuse_keys: refuse_keys.iter().map(|k| k.to_string()).collect(), ..Default::default() },
            counter: FakeCounter::default(),
            rules: Rules::default(),
            backoff: Backoff { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(2) },
        }
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        lambda_http::request::from_str(&text).unwrap()
    }

    fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request {
        http::Request::builder()
            .method("POST")
            .uri(format!("https://api.example.com{path}"))
            .header("content-type", content_type)
            .body(body.into())
            .unwrap()
    }

    async fn call(ingest: &Ingest<FakeStream, FakeCounter>, request: Request) -> (u16, Value, http::HeaderMap) {
        let response = ingest.handle(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (status, body, headers)
    }

    fn put_records(ingest: &Ingest<FakeStream, FakeCounter>) -> Vec<Value> {
        ingest.sink.calls.lock().unwrap()[0].iter().map(|r| serde_json::from_slice(&r.data).unwrap()).collect()
    }

    #[tokio::test]
    async fn when_single_event_valid_should_return_202_and_put_it() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, fixture("ingest-post-event.json")).await;
        assert_eq!(status, 202);
        assert_eq!(body, json!({"id": "evt-0001", "source": "web", "status": "accepted"}));
        let records = put_records(&ingest);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["payload"], "straße checkout");
        assert!(records[0]["received_at"].is_string());
        assert_eq!(ingest.sink.calls.lock().unwrap()[0][0].partition_key, "user-42");
        assert_eq!(*ingest.counter.0.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn when_array_valid_should_return_202_with_one_put_call() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, fixture("ingest-post-array.json")).await;
        assert_eq!(status, 202);
        assert_eq!(body["accepted"], 3);
        assert_eq!(body["results"][2]["id"], "evt-0102");
        assert_eq!(ingest.sink.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn batch_route_takes_events_object_and_epoch_timestamps() {
        let ingest = ingest(&[]);
        let (status, _, _) = call(&ingest, fixture("ingest-post-batch.json")).await;
        assert_eq!(status, 202);
        let records = put_records(&ingest);
        assert_eq!(records[0]["timestamp"], "2026-11-23T12:00:00Z");
        assert_eq!(records[1]["timestamp"], "2026-11-23T12:00:00.123Z");
    }

    #[tokio::test]
    async fn when_some_items_invalid_should_return_207_per_item() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, fixture("ingest-post-partial.json")).await;
        assert_eq!(status, 207);
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][1]["status"], "rejected");
        assert_eq!(body["results"][1]["id"], "bad id!");
        let fields: Vec<&str> =
            body["results"][1]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["colour", "id", "source"]);
        assert_eq!(put_records(&ingest).len(), 1);
    }

    #[tokio::test]
    async fn when_single_event_invalid_should_return_400_naming_fields() {
        let ingest = ingest(&[]);
        let (status, body, headers) = call(&ingest, fixture("ingest-post-invalid.json")).await;
        assert_eq!(status, 400);
        assert_eq!(headers["content-type"], "application/problem+json");
        let errors = body["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == "colour" && e["rule"] == "unknown_field"));
        assert!(errors.iter().any(|e| e["field"] == "id" && e["rule"] == "format"));
        assert!(ingest.sink.calls.lock().unwrap().is_empty() || put_records(&ingest).is_empty());
    }

    #[tokio::test]
    async fn when_body_not_json_should_return_400() {
        let (status, body, _) = call(&ingest(&[]), fixture("ingest-post-not-json.json")).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
    }

    #[tokio::test]
    async fn when_content_type_not_json_should_return_415() {
        let (status, _, _) = call(&ingest(&[]), fixture("ingest-post-wrong-content-type.json")).await;
        assert_eq!(status, 415);
        let (status, _, _) =
            call(&ingest(&[]), post("/events", "application/cloudevents+json; charset=utf-8", "{}")).await;
        assert_eq!(status, 202);
    }

    #[tokio::test]
    async fn when_batch_has_101_items_should_return_400() {
        let items: Vec<Value> = (0..101).map(|i| json!({"id": format!("e{i}")})).collect();
        let (status, body, _) =
            call(&ingest(&[]), post("/events", "application/json", Value::Array(items).to_string())).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("101"));
        let items: Vec<Value> = (0..100).map(|i| json!({"id": format!("e{i}")})).collect();
        let (status, _, _) =
            call(&ingest(&[]), post("/events", "application/json", Value::Array(items).to_string())).await;
        assert_eq!(status, 202);
    }

    #[tokio::test]
    async fn unusable_bodies_are_400() {
        for (path, body) in [
            ("/events", "[]"),
            ("/events", "\"text\""),
            ("/events", "42"),
            ("/events", ""),
            ("/events/batch", "[{}]"),
            ("/events/batch", "{\"events\": {}}"),
            ("/events/batch", "{\"events\": [], \"extra\": 1}"),
            ("/events/batch", "{\"events\": []}"),
        ] {
            let (status, _, _) = call(&ingest(&[]), post(path, "application/json", body)).await;
            assert_eq!(status, 400, "{path} {body}");
        }
    }

    #[tokio::test]
    async fn when_body_not_utf8_should_return_400() {
        let (status, body, _) = call(&ingest(&[]), post("/events", "application/json", vec![b'{', 0xff, b'}'])).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("UTF-8"));
    }

    #[tokio::test]
    async fn when_body_over_limit_should_return_413() {
        let body = format!("{{\"payload\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        let (status, _, _) = call(&ingest(&[]), post("/events", "application/json", body)).await;
        assert_eq!(status, 413);
    }

    #[tokio::test]
    async fn when_single_event_over_256_kib_should_return_413() {
        let body = json!({"payload": "a".repeat(300 * 1024)}).to_string();
        let (status, body, _) = call(&ingest(&[]), post("/events", "application/json", body)).await;
        assert_eq!(status, 413);
        assert_eq!(body["errors"][0]["rule"], "size");
    }

    #[tokio::test]
    async fn when_stream_refuses_every_try_should_return_503_with_retry_after() {
        let ingest = ingest(&["web/e1"]);
        let body = json!({"id": "e1", "source": "web"}).to_string();
        let (status, _, headers) = call(&ingest, post("/events", "application/json", body)).await;
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(ingest.sink.calls.lock().unwrap().len(), 3, "retried with backoff");
        assert_eq!(*ingest.counter.0.lock().unwrap(), 0, "a failed put is not counted as received");
    }

    #[tokio::test]
    async fn when_some_entries_fail_should_return_207_and_never_report_them_accepted() {
        let ingest = ingest(&["web/e2"]);
        let body = json!([{"id": "e1", "source": "web"}, {"id": "e2", "source": "web"}]).to_string();
        let (status, body, _) = call(&ingest, post("/events", "application/json", body)).await;
        assert_eq!(status, 207);
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][1]["status"], "failed");
        let calls = ingest.sink.calls.lock().unwrap();
        assert_eq!(calls[1].len(), 1, "only the failed entry is re-sent");
        assert_eq!(*ingest.counter.0.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn other_routes_and_methods_are_refused() {
        let (status, _, _) = call(&ingest(&[]), post("/other", "application/json", "{}")).await;
        assert_eq!(status, 404);
        let get = http::Request::builder().method("GET").uri("/events").body(Body::Empty).unwrap();
        let (status, _, headers) = call(&ingest(&[]), get).await;
        assert_eq!(status, 405);
        assert_eq!(headers["allow"], "POST");
    }
}

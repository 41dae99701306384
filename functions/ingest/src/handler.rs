//! `POST /events` and `POST /events/batch`: validate, put on the ingest stream in one
//! PutRecords call, count what was accepted, and answer for every item.

use http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use eventline_aws::http::{BodyError, MediaType, Problem, body_text, json, retry_after};
use eventline_aws::item::{MAX_ITEM_BYTES, fits_in_an_item};
use eventline_aws::routes::{Lookup, lookup};
use eventline_model::json::{JsonError, Members, array_elements};
use eventline_model::rate::RateLedger;
use eventline_model::retry::Backoff;
use eventline_model::sink::{OutRecord, RecordSink, put_all};
use eventline_model::validation::echo;
use eventline_model::write_key::{Denied, KeyStore, RefusalLog};
use eventline_model::{Digest, Event, FieldError, IngestId, Provenance, Rule, Rules, StreamRecord, parse_event};

use crate::caller::Caller;
use crate::counter::ReceivedCounter;
use crate::routes::{ROUTES, Route};
use crate::write_keys::WriteKeyGate;

/// Most events one request may carry.
pub const MAX_BATCH: usize = 100;
/// Largest request body; well inside one PutRecords call (5 MiB) once defaults are added.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most errors listed for one item; a response stays small whatever a client sends.
pub const MAX_ERRORS_PER_ITEM: usize = 8;
/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

pub struct Ingest<S, C, K, L> {
    pub sink: S,
    pub counter: C,
    /// The write keys, their rates and the origins browsers may send from (`/v1/*`).
    pub write_keys: WriteKeyGate<K, L>,
    pub rules: Rules,
    /// The token claim a JWT caller's `user_id` is bound to.
    pub user_claim: String,
    /// Budget for putting one request's events on the stream.
    pub backoff: Backoff,
}

/// Why a request is refused as a whole. The one place that turns an error into a status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route for {method} {path}")]
    NotFound { method: Method, path: String },
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed { method: Method, allowed: &'static str },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is {size} bytes; the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("request body inflates to more than {limit} bytes, the limit")]
    InflatesTooLarge { limit: usize },
    /// No write key, or one that is not valid: a `401` Segment's SDKs drop the batch on.
    #[error("{0}")]
    Unauthorized(Denied),
    /// A browser's origin the key may not send from.
    #[error("{0}")]
    OriginNotAllowed(Denied),
    /// Over the write key's rate: a `429` the SDKs retry after `Retry-After`.
    #[error("over this write key's rate of {0} events a second; retry after a second")]
    RateLimited(u32),
    /// More calls in one request than the key may send in a second: no retry could pass.
    #[error("the batch holds {calls} calls; this write key may send {rate} a second")]
    OverTheKeysRate { calls: usize, rate: u32 },
    /// A write-key route reached without the authorizer's answer: the deployment is wrong,
    /// and a `500` makes an SDK keep the batch.
    #[error("the write-key authorizer's answer is missing")]
    NoAuthorizerAnswer,
    #[error("{0}")]
    BadBody(String),
    /// A single event that breaks the rules.
    #[error("the event is invalid")]
    InvalidEvent(Vec<FieldError>),
    /// The stream did not take the events within the retry budget; nothing was accepted.
    #[error("the stream is not taking events now; retry later")]
    Unavailable,
}

impl RequestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge { .. } | Self::InflatesTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::OverTheKeysRate { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoAuthorizerAnswer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::InvalidEvent(errors) if errors.iter().any(|e| e.rule == Rule::Size) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn into_response(self) -> Response<String> {
        let status = self.status();
        let detail = self.to_string();
        match self {
            Self::MethodNotAllowed { allowed, .. } => {
                let mut response = Problem::new(status, detail).into_response();
                response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static(allowed));
                response
            }
            Self::InvalidEvent(errors) => Problem::new(status, detail).with_errors(errors).into_response(),
            Self::Unavailable | Self::RateLimited(_) => {
                retry_after(Problem::new(status, detail).into_response(), RETRY_AFTER_SECONDS)
            }
            Self::Unauthorized(_) => {
                let mut response = Problem::new(status, detail).into_response();
                response.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic"));
                response
            }
            _ => Problem::new(status, detail).into_response(),
        }
    }
}

/// What the body held: one event (answered alone) or a list (answered per item), each
/// item as the client wrote it.
#[derive(Debug)]
struct Submission<'a> {
    single: bool,
    items: Vec<&'a RawValue>,
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

impl<S: RecordSink, C: ReceivedCounter, K: KeyStore + RefusalLog, L: RateLedger> Ingest<S, C, K, L> {
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = match self.respond(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%error, status = error.status().as_u16(), "request refused");
                error.into_response()
            }
        };
        response.map(Body::Text)
    }

    async fn respond(&self, request: Request) -> Result<Response<String>, RequestError> {
        let route = route_of(&request)?;
        let accepted_types: &[MediaType] = match route {
            Route::Events => &[MediaType::Json, MediaType::Ndjson],
            Route::EventsBatch => &[MediaType::Json],
            Route::Segment { call, key } => return self.respond_segment(&request, call, key).await,
        };
        let (media, body) = body_text(&request, accepted_types, MAX_BODY_BYTES)?;
        let Submission { single, items } = parse_submission(route, media, &body)?;
        let now = OffsetDateTime::now_utc();
        let caller = Caller::of(&request, &self.user_claim);
        let parsed: Vec<_> = items.iter().map(|raw| self.stream_record(raw, now, &caller)).collect();
        let outcomes = self.put_valid(parsed).await;
        self.count(&outcomes).await;
        tracing::info!(items = items.len(), "request handled");

        let mut results =
            outcomes.into_iter().zip(&items).enumerate().map(|(index, (outcome, raw))| outcome.result(index, raw));
        if single {
            return single_response(results.next());
        }
        batch_response(results.collect())
    }

    /// Counts what a request put on the stream, once however often the count is retried.
    pub(crate) async fn count(&self, outcomes: &[Outcome]) {
        let accepted = outcomes.iter().filter(|o| matches!(o, Outcome::Accepted(_))).count();
        let rejected = outcomes.iter().filter(|o| matches!(o, Outcome::Rejected(_))).count();
        eventline_aws::telemetry::ingested(accepted as u64, rejected as u64);
        if accepted > 0
            && let Err(error) = self.counter.add(&IngestId::generate(), accepted as u64).await
        {
            // The events are on the stream and will be processed; answering an error now would
            // make the client send them again. The received total may be short by `accepted`
            // (a try that timed out may still have landed), which the metrics show as a
            // negative queue depth rather than hide.
            tracing::error!(error = %eventline_aws::error_chain(&error), accepted, "could not count received events");
        }
    }

    /// Validates one item, binds it to a JWT caller's user, and checks that the transform
    /// could store it. The digest is of the item as the client wrote it.
    fn stream_record(
        &self,
        raw: &RawValue,
        now: OffsetDateTime,
        caller: &Caller,
    ) -> Result<StreamRecord, Vec<FieldError>> {
        let mut event = parse_event(raw, &self.rules, now)?;
        bind_user(&mut event, caller, &self.user_claim)?;
        self.record_of(event, Provenance { sender: caller.sender.clone(), digest: Digest::of_event(raw) }, now)
    }

    /// The stream record of a valid event, if the transform could store it.
    pub(crate) fn record_of(
        &self,
        event: Event,
        provenance: Provenance,
        now: OffsetDateTime,
    ) -> Result<StreamRecord, Vec<FieldError>> {
        let record = StreamRecord {
            event,
            received_at: now,
            ingest_id: Some(IngestId::generate()),
            provenance: Some(provenance),
        };
        // Uppercasing can triple a payload: refuse what the table could not hold, now,
        // rather than accept it and fail in the transform. (The output record, JSON, is
        // bounded by the serialized event plus that growth, well inside Kinesis's 1 MiB.)
        if let Err(size) = fits_in_an_item(&record) {
            return Err(vec![FieldError::new(
                "",
                Rule::Size,
                format!(
                    "the stored event would be {size} bytes (the payload uppercased, with its metadata); DynamoDB's item limit is {MAX_ITEM_BYTES}"
                ),
            )]);
        }
        Ok(record)
    }

    /// Puts the valid events in one call, re-sending failed entries, and tells each item's fate.
    pub(crate) async fn put_valid(&self, parsed: Vec<Result<StreamRecord, Vec<FieldError>>>) -> Vec<Outcome> {
        let records: Vec<OutRecord> = parsed
            .iter()
            .flatten()
            .map(|record| OutRecord { partition_key: record.event.partition_key(), data: record.encode() })
            .collect();
        let mut put = put_all(&self.sink, &records, self.backoff).await.into_iter();
        parsed
            .into_iter()
            .map(|item| match item {
                Err(errors) => Outcome::Rejected(errors),
                Ok(record) => match put.next() {
                    Some(Ok(())) => Outcome::Accepted(record.event),
                    Some(Err(failure)) => {
                        tracing::error!(code = %failure.code, message = %failure.message, "event not written to the stream");
                        Outcome::Failed(record.event)
                    }
                    None => Outcome::Failed(record.event),
                },
            })
            .collect()
    }
}

/// A JWT caller sends its own user's events: a `user_id` naming another user is refused, and
/// a missing one is the caller's.
fn bind_user(event: &mut Event, caller: &Caller, claim: &str) -> Result<(), Vec<FieldError>> {
    let Some(bound) = &caller.user else { return Ok(()) };
    let refused = |message: String| vec![FieldError::new("user_id", Rule::NotAllowed, message)];
    let user = bound.as_ref().map_err(|reason| refused(reason.clone()))?;
    match &event.user_id {
        None => event.user_id = Some(user.clone()),
        Some(named) if named == user => {}
        Some(_) => return Err(refused(format!("must be the caller's own user (the token's {claim} claim)"))),
    }
    Ok(())
}

/// What became of one item of a request.
pub(crate) enum Outcome {
    Accepted(Event),
    Failed(Event),
    Rejected(Vec<FieldError>),
}

impl Outcome {
    fn result(self, index: usize, raw: &RawValue) -> ItemResult {
        match self {
            Outcome::Accepted(event) => ItemResult::written(index, event, ItemStatus::Accepted, None),
            Outcome::Failed(event) => ItemResult::written(
                index,
                event,
                ItemStatus::Failed,
                Some("the stream did not take the event; retry later".to_owned()),
            ),
            Outcome::Rejected(mut errors) => {
                let more = errors.len().saturating_sub(MAX_ERRORS_PER_ITEM);
                errors.truncate(MAX_ERRORS_PER_ITEM);
                let mut error = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                if more > 0 {
                    error.push_str(&format!("; and {more} more"));
                }
                ItemResult {
                    index,
                    id: echoed_string(raw, "id"),
                    source: None,
                    status: ItemStatus::Rejected,
                    error: Some(error),
                    errors,
                }
            }
        }
    }
}

/// A string member a rejected item gave (its `id`, a call's `messageId`), cut to the longest valid id.
pub(crate) fn echoed_string(raw: &RawValue, member: &str) -> Option<String> {
    let members = Members::parse(raw).ok()?;
    let text: String = serde_json::from_str(members.get(member)?.get()).ok()?;
    Some(echo(&text, 128))
}

fn single_response(result: Option<ItemResult>) -> Result<Response<String>, RequestError> {
    let Some(result) = result else {
        return Err(RequestError::BadBody("the request holds no event".into()));
    };
    match result.status {
        ItemStatus::Accepted => Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"id": result.id, "source": result.source, "status": "accepted"}),
        )),
        ItemStatus::Failed => Err(RequestError::Unavailable),
        ItemStatus::Rejected => Err(RequestError::InvalidEvent(result.errors)),
    }
}

fn batch_response(results: Vec<ItemResult>) -> Result<Response<String>, RequestError> {
    let count = |s| results.iter().filter(|r| r.status == s).count();
    let (accepted, rejected, failed) =
        (count(ItemStatus::Accepted), count(ItemStatus::Rejected), count(ItemStatus::Failed));
    if accepted == 0 && failed > 0 {
        return Err(RequestError::Unavailable);
    }
    let status = if accepted == results.len() { StatusCode::ACCEPTED } else { StatusCode::MULTI_STATUS };
    Ok(json(status, &BatchAnswer { accepted, rejected, failed, results: &results }))
}

/// The answer to a batch, written straight from the results.
#[derive(Serialize)]
struct BatchAnswer<'a> {
    accepted: usize,
    rejected: usize,
    failed: usize,
    results: &'a [ItemResult],
}

/// The route API Gateway matched, from its route key.
fn route_of(request: &Request) -> Result<Route, RequestError> {
    let method = request.method().clone();
    match lookup(ROUTES, request) {
        Lookup::Found(route) => Ok(route),
        Lookup::MethodNotAllowed => Err(RequestError::MethodNotAllowed { method, allowed: "POST" }),
        Lookup::NotFound => {
            Err(RequestError::NotFound { method, path: echo(request.uri().path().trim_end_matches('/'), 256) })
        }
    }
}

impl From<BodyError> for RequestError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::NotJson => Self::UnsupportedMediaType("content type must be application/json".into()),
            BodyError::UnsupportedType(_) | BodyError::UnsupportedEncoding(_) => {
                Self::UnsupportedMediaType(error.to_string())
            }
            BodyError::TooLarge { size, limit } => Self::BodyTooLarge { size, limit },
            BodyError::InflatesTooLarge { limit } => Self::InflatesTooLarge { limit },
            other => Self::BadBody(other.to_string()),
        }
    }
}

fn parse_submission(route: Route, media: MediaType, text: &str) -> Result<Submission<'_>, RequestError> {
    if media == MediaType::Ndjson {
        return check_count(Submission { single: false, items: ndjson_lines(text)? });
    }
    let batch_route = route == Route::EventsBatch;
    let body: &RawValue = serde_json::from_str(text)
        .map_err(|e| RequestError::BadBody(format!("request body is not valid JSON: {e}")))?;
    let first = body.get().as_bytes().first().copied();
    let submission = match (batch_route, first) {
        (false, Some(b'{')) => Submission { single: true, items: vec![body] },
        (false, Some(b'[')) => Submission { single: false, items: elements(body)? },
        (false, _) => return Err(RequestError::BadBody("body must be an event object or an array of events".into())),
        (true, Some(b'{')) => {
            let members = Members::parse(body).map_err(|e| match e {
                JsonError::DuplicateKey(key) => {
                    RequestError::BadBody(format!("{} appears more than once", echo(&key, 64)))
                }
                other => RequestError::BadBody(format!("request body {other}")),
            })?;
            if let Some((unknown, _)) = members.0.iter().find(|(k, _)| k != "events") {
                return Err(RequestError::BadBody(format!(
                    "{} is not a known field; send {{\"events\": [...]}}",
                    echo(unknown, 64)
                )));
            }
            match members.get("events") {
                Some(events) if events.get().starts_with('[') => Submission { single: false, items: elements(events)? },
                _ => return Err(RequestError::BadBody("events must be an array of events".into())),
            }
        }
        (true, _) => return Err(RequestError::BadBody("body must be an object {\"events\": [...]}".into())),
    };
    check_count(submission)
}

/// One event a line; blank lines (a trailing newline) are skipped.
fn ndjson_lines(text: &str) -> Result<Vec<&RawValue>, RequestError> {
    let mut items = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let item: &RawValue = serde_json::from_str(line)
            .map_err(|e| RequestError::BadBody(format!("line {} is not valid JSON: {e}", number + 1)))?;
        items.push(item);
    }
    Ok(items)
}

fn check_count(submission: Submission<'_>) -> Result<Submission<'_>, RequestError> {
    let count = submission.items.len();
    if count == 0 {
        return Err(RequestError::BadBody("the batch is empty".into()));
    }
    if count > MAX_BATCH {
        return Err(RequestError::BadBody(format!("the batch has {count} events; the limit is {MAX_BATCH}")));
    }
    Ok(submission)
}

fn elements(array: &RawValue) -> Result<Vec<&RawValue>, RequestError> {
    array_elements(array).map_err(|e| RequestError::BadBody(format!("request body {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryCounter;
    use crate::routes::routed;
    use eventline_model::memory::{MemoryKeys, MemoryRateLedger, MemoryStream};
    use serde_json::{Value, json};
    use std::time::Duration;

    type TestIngest = Ingest<MemoryStream, MemoryCounter, MemoryKeys, MemoryRateLedger>;

    fn ingest(refuse_keys: &[&str]) -> TestIngest {
        Ingest {
            sink: MemoryStream::throttling_keys(refuse_keys),
            counter: MemoryCounter::new(),
            rules: Rules::default(),
            user_claim: "sub".to_owned(),
            write_keys: WriteKeyGate::in_memory(),
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
                budget: Duration::from_millis(5),
            },
        }
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        lambda_http::request::from_str(&text).unwrap()
    }

    /// A POST as API Gateway hands it over when `path` is one of the function's routes.
    fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request {
        routed(
            http::Request::builder()
                .method("POST")
                .uri(format!("https://api.example.com{path}"))
                .header("content-type", content_type)
                .body(body.into())
                .unwrap(),
        )
    }

    async fn call(ingest: &TestIngest, request: Request) -> (u16, Value, http::HeaderMap) {
        let response = ingest.handle(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let Body::Text(text) = response.body() else { panic!("JSON answers are sent as text") };
        let body = serde_json::from_str(text).unwrap_or(Value::Null);
        (status, body, headers)
    }

    fn put_records(ingest: &TestIngest) -> Vec<Value> {
        ingest.sink.calls()[0].iter().map(|r| serde_json::from_slice(&r.data).unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ndjson_on_post_events_is_answered_per_line() {
        let ingest = ingest(&[]);
        let body = "{\"id\":\"n-1\",\"type\":\"click\"}\n\n{\"id\":\"n-2\",\"type\":\"view\"}\n";
        let (status, answer, _) = call(&ingest, post("/events", "application/x-ndjson", body)).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 2);
        assert_eq!(answer["results"][1]["id"], "n-2");
        let (status, answer, _) = call(&ingest, post("/events", "application/x-ndjson", "{}\n{oops")).await;
        assert_eq!(status, 400);
        assert!(answer["detail"].as_str().unwrap().contains("line 2"));
        let (status, _, _) = call(&ingest, post("/events/batch", "application/x-ndjson", body)).await;
        assert_eq!(status, 415, "the batch route takes its JSON object only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gzip_body_is_taken_on_the_native_routes_and_a_bomb_is_413() {
        use std::io::Write as _;
        let gzip = |bytes: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        let ingest = ingest(&[]);
        let gzipped = |path: &str, body: Vec<u8>| {
            let mut request = post(path, "application/json", body);
            request.headers_mut().insert("content-encoding", http::HeaderValue::from_static("gzip"));
            request
        };
        let body = gzip(br#"{"events": [{"id": "g-1", "type": "click"}]}"#);
        let (status, answer, _) = call(&ingest, gzipped("/events/batch", body)).await;
        assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)));
        let bomb = gzip(&vec![b' '; 64 * MAX_BODY_BYTES]);
        assert!(bomb.len() < MAX_BODY_BYTES / 8);
        let (status, answer, _) = call(&ingest, gzipped("/events", bomb)).await;
        assert_eq!(status, 413);
        assert!(answer["detail"].as_str().unwrap().contains("inflates"));
    }

    #[tokio::test(start_paused = true)]
    async fn when_single_event_valid_should_return_202_and_put_it() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, fixture("ingest-post-event.json")).await;
        assert_eq!(status, 202);
        assert_eq!(body, json!({"id": "evt-0001", "source": "web", "status": "accepted"}));
        let records = put_records(&ingest);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["payload"], "straße checkout");
        assert!(records[0]["received_at"].is_string());
        assert_eq!(ingest.sink.calls()[0][0].partition_key, "user-42");
        assert_eq!(ingest.counter.total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_array_valid_should_return_202_with_one_put_call() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, fixture("ingest-post-array.json")).await;
        assert_eq!(status, 202);
        assert_eq!(body["accepted"], 3);
        assert_eq!(body["results"][2]["id"], "evt-0102");
        assert_eq!(ingest.sink.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn batch_route_takes_events_object_and_epoch_timestamps() {
        let ingest = ingest(&[]);
        let (status, _, _) = call(&ingest, fixture("ingest-post-batch.json")).await;
        assert_eq!(status, 202);
        let records = put_records(&ingest);
        assert_eq!(records[0]["timestamp"], "2026-11-23T12:00:00Z");
        assert_eq!(records[1]["timestamp"], "2026-11-23T12:00:00.123Z");
    }

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn when_single_event_invalid_should_return_400_naming_fields() {
        let ingest = ingest(&[]);
        let (status, body, headers) = call(&ingest, fixture("ingest-post-invalid.json")).await;
        assert_eq!(status, 400);
        assert_eq!(headers["content-type"], "application/problem+json");
        let errors = body["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == "colour" && e["rule"] == "unknown_field"));
        assert!(errors.iter().any(|e| e["field"] == "id" && e["rule"] == "format"));
        assert!(ingest.sink.calls().is_empty() || put_records(&ingest).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn when_body_not_json_should_return_400() {
        let (status, body, _) = call(&ingest(&[]), fixture("ingest-post-not-json.json")).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
    }

    #[tokio::test(start_paused = true)]
    async fn when_content_type_not_json_should_return_415() {
        let (status, _, _) = call(&ingest(&[]), fixture("ingest-post-wrong-content-type.json")).await;
        assert_eq!(status, 415);
        let (status, _, _) =
            call(&ingest(&[]), post("/events", "application/cloudevents+json; charset=utf-8", "{}")).await;
        assert_eq!(status, 202);
    }

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn when_body_not_utf8_should_return_400() {
        let (status, body, _) = call(&ingest(&[]), post("/events", "application/json", vec![b'{', 0xff, b'}'])).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("UTF-8"));
    }

    #[tokio::test(start_paused = true)]
    async fn when_body_over_limit_should_return_413() {
        let body = format!("{{\"payload\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        let (status, _, _) = call(&ingest(&[]), post("/events", "application/json", body)).await;
        assert_eq!(status, 413);
    }

    #[tokio::test(start_paused = true)]
    async fn when_single_event_over_256_kib_should_return_413() {
        let body = json!({"payload": "a".repeat(300 * 1024)}).to_string();
        let (status, body, _) = call(&ingest(&[]), post("/events", "application/json", body)).await;
        assert_eq!(status, 413);
        assert_eq!(body["errors"][0]["rule"], "size");
    }

    #[tokio::test(start_paused = true)]
    async fn when_stream_refuses_every_try_should_return_503_with_retry_after() {
        let ingest = ingest(&["web/e1"]);
        let body = json!({"id": "e1", "source": "web"}).to_string();
        let (status, _, headers) = call(&ingest, post("/events", "application/json", body)).await;
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "1");
        assert!(ingest.sink.calls().len() >= 2, "retried with backoff");
        assert_eq!(ingest.counter.total(), 0, "a failed put is not counted as received");
    }

    #[tokio::test(start_paused = true)]
    async fn when_some_entries_fail_should_return_207_and_never_report_them_accepted() {
        let ingest = ingest(&["web/e2"]);
        let body = json!([{"id": "e1", "source": "web"}, {"id": "e2", "source": "web"}]).to_string();
        let (status, body, _) = call(&ingest, post("/events", "application/json", body)).await;
        assert_eq!(status, 207);
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][1]["status"], "failed");
        let calls = ingest.sink.calls();
        assert_eq!(calls[1].len(), 1, "only the failed entry is re-sent");
        assert_eq!(ingest.counter.total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn other_routes_and_methods_are_refused() {
        let (status, _, _) = call(&ingest(&[]), post("/other", "application/json", "{}")).await;
        assert_eq!(status, 404);
        let get = routed(http::Request::builder().method("GET").uri("/events").body(Body::Empty).unwrap());
        let (status, _, headers) = call(&ingest(&[]), get).await;
        assert_eq!(status, 405);
        assert_eq!(headers["allow"], "POST");
    }

    #[tokio::test(start_paused = true)]
    async fn when_a_key_repeats_should_return_400_naming_it() {
        let ingest = ingest(&[]);
        let (status, body, _) = call(&ingest, post("/events", "application/json", r#"{"id":"a1","id":"a2"}"#)).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "id");
        assert_eq!(body["errors"][0]["rule"], "duplicate_key");
        let (status, body, _) =
            call(&ingest, post("/events", "application/json", r#"{"id":"a1","data":{"n":{"k":1,"k":2}}}"#)).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "data.n.k");
        let (status, _, _) =
            call(&ingest, post("/events/batch", "application/json", r#"{"events":[{}],"events":[{}]}"#)).await;
        assert_eq!(status, 400);
        assert!(ingest.sink.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn data_is_put_on_the_stream_byte_for_byte() {
        let ingest = ingest(&[]);
        let data = r#"{"a":1e15,"b":12345678901234567890123,"c":-0}"#;
        let (status, _, _) =
            call(&ingest, post("/events", "application/json", format!(r#"{{"id":"n1","data":{data}}}"#))).await;
        assert_eq!(status, 202);
        let record = String::from_utf8(ingest.sink.calls()[0][0].data.clone()).unwrap();
        assert!(record.contains(&format!(r#""data":{data}"#)), "{record}");
    }

    #[tokio::test(start_paused = true)]
    async fn when_uppercasing_would_overflow_the_item_should_return_413_naming_the_limit() {
        let ingest = ingest(&[]);
        let body = json!({"id": "grows", "payload": "ΐ".repeat(130_000)}).to_string();
        let (status, body, _) = call(&ingest, post("/events", "application/json", body)).await;
        assert_eq!(status, 413);
        assert_eq!(body["errors"][0]["rule"], "size");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("409600"), "{body}");
        assert!(ingest.sink.calls().is_empty(), "nothing was put");
    }

    #[tokio::test(start_paused = true)]
    async fn timestamps_out_of_range_are_400_not_a_crash() {
        for timestamp in ["9999-12-31T23:30:00-01:00", "0000-01-01T00:00:00+01:00"] {
            let body = json!({"id": "t", "timestamp": timestamp}).to_string();
            let (status, body, _) = call(&ingest(&[]), post("/events", "application/json", body)).await;
            assert_eq!(status, 400, "{timestamp}");
            assert_eq!(body["errors"][0]["rule"], "range");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_stay_small_whatever_the_items_echo() {
        let key = "k".repeat(40_000);
        let items: Vec<String> = (0..100).map(|i| format!(r#"{{"id":"{}","{key}":1}}"#, "x".repeat(i + 200))).collect();
        let body = format!("[{}]", items.join(","));
        assert!(body.len() > 4_000_000 && body.len() <= MAX_BODY_BYTES);
        let response = ingest(&[]).handle(post("/events", "application/json", body)).await;
        assert_eq!(response.status(), 207);
        let Body::Text(text) = response.body() else { panic!("sent as text") };
        assert!(text.len() < 100_000, "{} bytes", text.len());
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_is_counted_with_a_token_of_its_own() {
        let ingest = ingest(&[]);
        call(&ingest, fixture("ingest-post-array.json")).await;
        call(&ingest, fixture("ingest-post-array.json")).await;
        assert_eq!(ingest.counter.total(), 6, "two requests of three events");
        assert_eq!(ingest.counter.requests(), 2, "one token per request");
    }

    #[tokio::test(start_paused = true)]
    async fn reference_tables_are_not_taken_here() {
        let put = routed(
            http::Request::builder()
                .method("PUT")
                .uri("https://api.example.com/reference/users")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"user_metadata":{},"ts":"2026-11-30T12:00:00Z"}"#))
                .unwrap(),
        );
        let (status, _, _) = call(&ingest(&[]), put).await;
        assert_eq!(status, 404, "the administrator function replaces the reference table");
    }
    #[tokio::test(start_paused = true)]
    async fn each_record_carries_its_sender_and_the_digest_of_what_the_client_wrote() {
        use crate::caller::tests::with_iam;
        let signed = ingest(&[]);
        let body =
            r#"[{"id":"e1","source":"web","data":{"b":1,"a":2}}, {"data":{"a":2,"b":1},"source":"web","id":"e2"}]"#;
        let request =
            with_iam(post("/events", "application/json", body), "arn:aws:sts::123456789012:assumed-role/Writer/s-1");
        let (status, _, _) = call(&signed, request).await;
        assert_eq!(status, 202);
        let records = put_records(&signed);
        assert_eq!(records[0]["sender"], "arn:aws:sts::123456789012:assumed-role/Writer");
        assert_eq!(records[0]["digest"].as_str().map(str::len), Some(32));
        assert_eq!(records[0]["digest"], records[1]["digest"], "the same content in another order");
        let raw = serde_json::value::RawValue::from_string(r#"{"source":"web","data":{"a":2,"b":1}}"#.into()).unwrap();
        assert_eq!(records[0]["digest"], Digest::of_event(&raw).as_str(), "before defaults (type, timestamp)");
        // Without an authorizer (a public collector) every caller is the same anonymous sender.
        let open = ingest(&[]);
        call(&open, post("/events", "application/json", r#"{"id":"e3"}"#)).await;
        assert_eq!(put_records(&open)[0]["sender"], "anonymous");
    }

    #[tokio::test(start_paused = true)]
    async fn a_jwt_caller_sends_only_its_own_users_events() {
        use crate::caller::tests::with_jwt;
        let claims = [("iss", "https://issuer.example"), ("sub", "device-7")];
        let jwt = ingest(&[]);
        let other = with_jwt(post("/events", "application/json", r#"{"id":"e1","user_id":"someone-else"}"#), &claims);
        let (status, body, _) = call(&jwt, other).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "user_id");
        assert_eq!(body["errors"][0]["rule"], "not_allowed");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("sub claim"), "{body}");
        assert!(jwt.sink.calls().is_empty());

        let batch = r#"[{"id":"e2","user_id":"device-7"},{"id":"e3","user_id":"u-1"},{"id":"e4"}]"#;
        let (status, body, _) = call(&jwt, with_jwt(post("/events", "application/json", batch), &claims)).await;
        assert_eq!(status, 207);
        let statuses: Vec<&str> =
            body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["accepted", "rejected", "accepted"]);
        let records = put_records(&jwt);
        assert_eq!(records[1]["user_id"], "device-7", "a missing user_id is the caller's");
        assert_eq!(records[1]["sender"], "jwt:https://issuer.example device-7");
        assert_eq!(jwt.sink.calls()[0][1].partition_key, "device-7");
    }
}

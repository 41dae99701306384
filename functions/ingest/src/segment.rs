//! Segment's tracking API (`/v1/*`): calls sent with a write key, mapped to events of the
//! key's source (`eventline_model::segment`), put on the stream like any other event.
//!
//! The answers are those Segment's SDKs act on correctly: they drop a batch on a 4xx and send
//! it again on a 429 or 5xx. So a batch is refused whole (4xx) only when no retry could
//! change the answer (bad JSON, no valid key, too large), a 429 or 503 only when a retry
//! could, and the calls that can never be stored are answered `200` with the batch, listed
//! in the answer and logged with why.

use http::{StatusCode, header};
use lambda_http::Request;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use eventline_aws::http::{MediaType, body_text, json};
use eventline_model::json::{JsonError, Members, array_elements};
use eventline_model::rate::RateLedger;
use eventline_model::segment::{CallType, MAX_BATCH_BYTES, MAX_CALL_BYTES, map_call};
use eventline_model::sink::RecordSink;
use eventline_model::validation::echo;
use eventline_model::write_key::{
    Denied, KeyGrant, KeyStore, RefusalLog, RefusedCall, WriteKey, check_key, origin_allowed,
};
use eventline_model::{Digest, FieldError, Provenance, Rule, Sender, StreamRecord, parse_event};

use crate::caller::Caller;
use crate::counter::ReceivedCounter;
use crate::handler::{Ingest, MAX_ERRORS_PER_ITEM, Outcome, RequestError, echoed_string};
use crate::routes::KeyPlace;

/// A call the batch carried that can never be stored, and why.
#[derive(Debug, Serialize)]
struct Refused {
    index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Debug, Serialize)]
struct SegmentAnswer {
    success: bool,
    accepted: usize,
    /// Every call refused; the first [`MAX_REFUSALS_LISTED`] are listed and kept.
    refused_count: usize,
    refused: Vec<Refused>,
}

/// The most refused calls one answer lists, and one request keeps: an answer stays far
/// below Lambda's 6 MB, and keeping them a few writes, whatever a batch holds.
pub const MAX_REFUSALS_LISTED: usize = 100;

impl<S: RecordSink, C: ReceivedCounter, K: KeyStore + RefusalLog, L: RateLedger> Ingest<S, C, K, L> {
    pub(crate) async fn respond_segment(
        &self,
        request: &Request,
        call: Option<CallType>,
        key_place: KeyPlace,
    ) -> Result<http::Response<String>, RequestError> {
        let (_, text) = body_text(request, &[MediaType::Json, MediaType::Text], MAX_BATCH_BYTES)?;
        let body: &RawValue = serde_json::from_str(&text)
            .map_err(|e| RequestError::BadBody(format!("request body is not valid JSON: {e}")))?;
        let members = Members::parse(body).map_err(|e| match e {
            JsonError::DuplicateKey(key) => RequestError::BadBody(format!("{} appears more than once", echo(&key, 64))),
            _ => RequestError::BadBody("request body must be a JSON object".into()),
        })?;
        let grant = self.grant(request, key_place, &members).await?;
        let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if !origin_allowed(origin, &grant.allowed_origins, &self.write_keys.cors_origins) {
            return Err(RequestError::OriginNotAllowed(Denied::Origin(echo(origin.unwrap_or_default(), 256))));
        }
        let (calls, sent_at) = match call {
            Some(_) => (vec![body], None),
            None => match members.get("batch") {
                Some(batch) if batch.get().starts_with('[') => (
                    array_elements(batch).map_err(|e| RequestError::BadBody(format!("batch {e}")))?,
                    members.get("sentAt"),
                ),
                _ => return Err(RequestError::BadBody("batch must be an array of calls".into())),
            },
        };
        if calls.is_empty() {
            return Err(RequestError::BadBody("the batch is empty".into()));
        }
        if calls.len() > grant.events_per_second as usize {
            return Err(RequestError::OverTheKeysRate { calls: calls.len(), rate: grant.events_per_second });
        }
        let now = OffsetDateTime::now_utc();
        if !self
            .write_keys
            .rate
            .admit(&grant.key_id, grant.events_per_second, calls.len() as u64, now.unix_timestamp())
            .await
        {
            return Err(RequestError::RateLimited(grant.events_per_second));
        }

        let sender = Sender::write_key(&grant.source);
        let parsed: Vec<Result<StreamRecord, Vec<FieldError>>> =
            calls.iter().map(|raw| self.segment_record(raw, call, &grant, &sender, now, sent_at)).collect();
        let outcomes = self.put_valid(parsed).await;
        self.count(&outcomes).await;
        if outcomes.iter().any(|o| matches!(o, Outcome::Failed(_))) {
            // The SDK sends the batch again; the calls that went through come back as
            // duplicates of themselves and are counted once.
            return Err(RequestError::Unavailable);
        }
        let mut accepted = 0;
        let mut refused_count = 0;
        let mut refused = Vec::new();
        let mut kept = Vec::new();
        for (index, (outcome, raw)) in outcomes.into_iter().zip(&calls).enumerate() {
            match outcome {
                Outcome::Rejected(_) if refused_count >= MAX_REFUSALS_LISTED => refused_count += 1,
                Outcome::Rejected(mut errors) => {
                    refused_count += 1;
                    errors.truncate(MAX_ERRORS_PER_ITEM);
                    let message_id = echoed_string(raw, "messageId");
                    tracing::warn!(
                        key_id = %grant.key_id,
                        source = %grant.source,
                        message_id = message_id.as_deref().unwrap_or_default(),
                        errors = %errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                        "call refused"
                    );
                    kept.push(refused_call(raw, &grant, message_id.clone(), now, errors.clone()));
                    refused.push(Refused { index, message_id, errors });
                }
                _ => accepted += 1,
            }
        }
        if !kept.is_empty()
            && let Err(error) = self.write_keys.keys.keep(&kept).await
        {
            // The answer still lists them; only their copies for later inspection are missing.
            tracing::error!(%error, refused = kept.len(), "could not keep the refused calls");
        }
        tracing::info!(calls = calls.len(), accepted, refused = refused_count, key_id = %grant.key_id, "request handled");
        if call.is_some()
            && let Some(refusal) = refused.pop()
        {
            return Err(RequestError::InvalidEvent(refusal.errors));
        }
        Ok(json(StatusCode::OK, &SegmentAnswer { success: true, accepted, refused_count, refused }))
    }

    /// What the request's write key may send: the authorizer's answer for a key in the
    /// header, the same check here for a key in the body.
    async fn grant(&self, request: &Request, place: KeyPlace, members: &Members<'_>) -> Result<KeyGrant, RequestError> {
        match place {
            KeyPlace::Header => Caller::write_key_grant(request)
                // An authorizer always answers before this route; without one, nothing was checked.
                .ok_or(RequestError::NoAuthorizerAnswer),
            KeyPlace::Body => {
                let key = match members.get("writeKey") {
                    Some(raw) => serde_json::from_str::<String>(raw.get()).ok().and_then(|text| WriteKey::parse(&text)),
                    None => None,
                };
                let key = match (members.get("writeKey"), key) {
                    (Some(_), None) => return Err(RequestError::Unauthorized(Denied::Invalid)),
                    (_, key) => key,
                };
                match check_key(&self.write_keys.keys, key.as_ref()).await {
                    Ok(Ok(grant)) => Ok(grant),
                    Ok(Err(denied)) => Err(RequestError::Unauthorized(denied)),
                    Err(error) => {
                        tracing::error!(%error, "could not read the write keys");
                        Err(RequestError::Unavailable)
                    }
                }
            }
        }
    }

    /// One call as a stream record of the key's source, or why it can never be stored.
    fn segment_record(
        &self,
        raw: &RawValue,
        call: Option<CallType>,
        grant: &KeyGrant,
        sender: &Sender,
        now: OffsetDateTime,
        sent_at: Option<&RawValue>,
    ) -> Result<StreamRecord, Vec<FieldError>> {
        if raw.get().len() > MAX_CALL_BYTES {
            let message = format!("the call is {} bytes; the limit is {MAX_CALL_BYTES}", raw.get().len());
            return Err(vec![FieldError::new("", Rule::Size, message)]);
        }
        let mapped = map_call(raw, call, &grant.source, now, sent_at).map_err(|error| vec![error])?;
        let event = parse_event(&mapped.event, &self.rules, now)?;
        self.record_of(event, Provenance { sender: sender.clone(), digest: mapped.digest }, now)
    }
}

/// A refused call as it is kept: the call itself (its first 32 KB), why, and who sent it.
fn refused_call(
    raw: &RawValue,
    grant: &KeyGrant,
    message_id: Option<String>,
    received_at: OffsetDateTime,
    errors: Vec<FieldError>,
) -> RefusedCall {
    // The key stays out of what is kept: it is stored only as a hash.
    let without_key = Members::parse(raw).ok().filter(|members| members.get("writeKey").is_some()).map(|members| {
        let kept: Vec<String> = members
            .0
            .iter()
            .filter(|(name, _)| name != "writeKey")
            .map(|(name, value)| format!("{}:{}", serde_json::Value::from(name.as_ref()), value.get()))
            .collect();
        format!("{{{}}}", kept.join(","))
    });
    let text = without_key.as_deref().unwrap_or(raw.get());
    let cut = (0..=MAX_CALL_BYTES.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    RefusedCall {
        key_id: grant.key_id.clone(),
        source: grant.source.clone(),
        message_id,
        received_at,
        errors,
        call: text[..cut].to_owned(),
        digest: Digest::of_object_without(raw, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryCounter;
    use crate::routes::routed;
    use crate::write_keys::WriteKeyGate;
    use eventline_model::memory::{MemoryKeys, MemoryRateLedger, MemoryStream};
    use eventline_model::rate::RateLimiter;
    use eventline_model::retry::Backoff;
    use eventline_model::write_key::StoredKey;
    use eventline_model::{Rules, Source};
    use lambda_http::Body;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizer;
    use serde_json::{Value, json};
    use std::time::Duration;

    type TestIngest = Ingest<MemoryStream, MemoryCounter, MemoryKeys, MemoryRateLedger>;

    fn grant(key: &WriteKey, rate: u32, origins: &[&str]) -> KeyGrant {
        KeyGrant {
            key_id: key.id.clone(),
            source: Source::parse("shop").unwrap(),
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            events_per_second: rate,
            created_at: String::new(),
        }
    }

    async fn ingest(stream: MemoryStream, keys: &[(&WriteKey, KeyGrant)]) -> TestIngest {
        let store = MemoryKeys::default();
        for (key, grant) in keys {
            store.put(&StoredKey { grant: grant.clone(), secret_hash: key.hash() }).await.unwrap();
        }
        Ingest {
            sink: stream,
            counter: MemoryCounter::new(),
            write_keys: WriteKeyGate {
                keys: store,
                rate: RateLimiter::new(MemoryRateLedger::default()),
                cors_origins: vec!["https://shop.example".into(), "https://a.example".into()],
            },
            rules: Rules::default(),
            user_claim: "sub".into(),
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
                budget: Duration::from_millis(5),
            },
        }
    }

    fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request {
        let mut builder = http::Request::builder().method("POST").uri(format!("https://api.example.com{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        routed(builder.body(body.into()).unwrap())
    }

    /// The request as API Gateway hands it over after the write-key authorizer allowed it.
    fn authorized(request: Request, grant: &KeyGrant) -> Request {
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.fields = grant.to_context().into_iter().collect();
        crate::caller::tests::with_authorizer(request, authorizer)
    }

    async fn call(ingest: &TestIngest, request: Request) -> (u16, Value, http::HeaderMap) {
        let response = ingest.handle(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let Body::Text(text) = response.body() else { panic!("JSON answers are sent as text") };
        (status, serde_json::from_str(text).unwrap_or(Value::Null), headers)
    }

    fn track(id: &str, user: &str) -> Value {
        json!({"type": "track", "event": "Order Completed", "messageId": id, "userId": user, "properties": {"revenue": 3}})
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn a_batch_with_a_header_key_is_stored_under_the_keys_source_and_refusals_are_listed() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let body = json!({"batch": [track("m-1", "u-1"), track("m-2", "u-2"), {"type": "track", "event": "e"}],
                          "sentAt": "2026-12-07T12:00:00Z"});
        let request = authorized(post("/v1/batch", &[JSON], body.to_string()), &grant(&key, 100, &[]));
        let (status, answer, _) = call(&ingest, request).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["success"], true);
        assert_eq!(answer["accepted"], 2);
        assert_eq!(answer["refused"][0]["index"], 2);
        assert_eq!(answer["refused"][0]["errors"][0]["field"], "userId");
        let kept = ingest.write_keys.keys.refused();
        assert_eq!(kept.len(), 1, "the refused call is kept for someone to look at");
        assert_eq!((kept[0].source.as_str(), &kept[0].key_id), ("shop", &key.id));
        assert!(kept[0].call.contains(r#""event":"e""#), "{}", kept[0].call);
        let records = ingest.sink.taken_json();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["source"], "shop");
        assert_eq!(records[0]["id"], "m-1");
        assert_eq!(records[0]["type"], "order_completed");
        assert_eq!(records[0]["data"]["revenue"], 3);
        assert_eq!(records[0]["sender"], "key:shop");
        assert_eq!(ingest.counter.total(), 2);
    }

    #[tokio::test]
    async fn a_key_in_the_body_is_checked_by_the_function_and_text_plain_is_taken() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[(&key, grant(&key, 100, &[]))]).await;
        let mut call_body = track("m-1", "u-1");
        call_body["writeKey"] = key.reveal().into();
        let beacon = [("content-type", "text/plain;charset=UTF-8"), ("origin", "https://shop.example")];
        let (status, answer, _) = call(&ingest, post("/v1/t", &beacon, call_body.to_string())).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(ingest.sink.taken_json()[0]["source"], "shop");

        let (status, answer, _) = call(
            &ingest,
            post(
                "/v1/b",
                &beacon,
                json!({"writeKey": key.reveal(), "batch": [{"type": "track", "event": "e"}]}).to_string(),
            ),
        )
        .await;
        assert_eq!((status, answer["refused"][0]["index"].as_u64()), (200, Some(0)));
        let kept = ingest.write_keys.keys.refused();
        assert!(!kept[0].call.contains("writeKey") && !kept[0].call.contains(&key.reveal()), "{}", kept[0].call);
        assert!(kept[0].call.contains(r#""event":"e""#));

        call_body["writeKey"] = WriteKey::generate().reveal().into();
        let (status, _, headers) = call(&ingest, post("/v1/t", &beacon, call_body.to_string())).await;
        assert_eq!(status, 401, "an unknown key");
        assert_eq!(headers["www-authenticate"], "Basic");
        call_body["writeKey"] = "not a key".into();
        assert_eq!(call(&ingest, post("/v1/t", &beacon, call_body.to_string())).await.0, 401);
        let (status, answer, _) = call(&ingest, post("/v1/t", &beacon, track("m-2", "u").to_string())).await;
        assert_eq!(status, 401);
        assert!(answer["detail"].as_str().unwrap().contains("writeKey"));
    }

    #[tokio::test]
    async fn a_browser_origin_outside_the_keys_origins_is_refused() {
        let key = WriteKey::generate();
        let narrowed = grant(&key, 100, &["https://a.example"]);
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let send = |origin: Option<&str>| {
            let mut headers = vec![JSON];
            if let Some(origin) = origin {
                headers.push(("origin", origin));
            }
            authorized(post("/v1/track", &headers, track("m", "u").to_string()), &narrowed)
        };
        assert_eq!(call(&ingest, send(Some("https://a.example"))).await.0, 200);
        let (status, answer, _) = call(&ingest, send(Some("https://shop.example"))).await;
        assert_eq!(status, 403, "the key narrows the deployment's origins");
        assert!(answer["detail"].as_str().unwrap().contains("https://shop.example"));
        assert_eq!(call(&ingest, send(None)).await.0, 200, "not a browser");
        let open = grant(&key, 100, &[]);
        let evil = authorized(post("/v1/track", &[JSON, ("origin", "https://evil.example")], "{}"), &open);
        assert_eq!(call(&ingest, evil).await.0, 403, "the deployment's origins when the key names none");
    }

    #[tokio::test]
    async fn over_the_keys_rate_the_answer_is_429_with_retry_after() {
        let key = WriteKey::generate();
        let slow = grant(&key, 2, &[]);
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let batch = json!({"batch": [track("a", "u"), track("b", "u")]}).to_string();
        // Within one clock second, unless the test straddles one: then the second try passes.
        let mut limited = None;
        for _ in 0..3 {
            let first = call(&ingest, authorized(post("/v1/batch", &[JSON], batch.clone()), &slow)).await;
            let second = call(&ingest, authorized(post("/v1/batch", &[JSON], batch.clone()), &slow)).await;
            if second.0 == 429 {
                assert_eq!(first.0, 200);
                limited = Some(second);
                break;
            }
        }
        let (_, answer, headers) = limited.expect("a second batch within the same second is over the rate");
        assert_eq!(headers["retry-after"], "1");
        assert!(answer["detail"].as_str().unwrap().contains("2 events a second"));
    }

    #[tokio::test]
    async fn a_gzip_batch_is_inflated_and_its_limit_is_segments() {
        use std::io::Write as _;
        let gzip = |text: &str| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap()
        };
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let headers = [JSON, ("content-encoding", "gzip")];
        let small = json!({"batch": [track("a", "u")]}).to_string();
        let (status, answer, _) =
            call(&ingest, authorized(post("/v1/batch", &headers, gzip(&small)), &grant(&key, 100, &[]))).await;
        assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));
        let big = json!({"batch": [track("a", "u")], "padding": "x".repeat(MAX_BATCH_BYTES)}).to_string();
        let (status, _, _) =
            call(&ingest, authorized(post("/v1/batch", &headers, gzip(&big)), &grant(&key, 100, &[]))).await;
        assert_eq!(status, 413);
    }

    #[tokio::test]
    async fn a_call_over_32_kb_is_refused_and_a_batch_over_the_native_limit_of_100_is_taken() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let mut calls: Vec<Value> = (0..300).map(|i| track(&format!("m-{i}"), "u")).collect();
        calls.push(
            json!({"type": "track", "event": "e", "userId": "u", "properties": {"big": "x".repeat(MAX_CALL_BYTES)}}),
        );
        let body = json!({"batch": calls}).to_string();
        let (status, answer, _) =
            call(&ingest, authorized(post("/v1/batch", &[JSON], body), &grant(&key, 1000, &[]))).await;
        assert_eq!(status, 200);
        assert_eq!(answer["accepted"], 300);
        assert_eq!(answer["refused"][0]["index"], 300);
        assert_eq!(answer["refused"][0]["errors"][0]["rule"], "size");
    }

    #[tokio::test]
    async fn a_batch_no_second_of_the_keys_rate_could_hold_is_413_and_refusals_are_listed_up_to_a_bound() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let calls: Vec<Value> = (0..11).map(|i| track(&format!("m-{i}"), "u")).collect();
        let body = json!({"batch": calls}).to_string();
        let (status, answer, _) =
            call(&ingest, authorized(post("/v1/batch", &[JSON], body), &grant(&key, 10, &[]))).await;
        assert_eq!(status, 413, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("11 calls"));
        assert!(ingest.sink.taken().is_empty());

        let refused: Vec<Value> =
            (0..250).map(|i| json!({"type": "track", "event": "e", "messageId": format!("r-{i}")})).collect();
        let body = json!({"batch": refused}).to_string();
        let (status, answer, _) =
            call(&ingest, authorized(post("/v1/batch", &[JSON], body), &grant(&key, 1000, &[]))).await;
        assert_eq!(status, 200);
        assert_eq!(answer["refused_count"], 250);
        assert_eq!(answer["refused"].as_array().unwrap().len(), MAX_REFUSALS_LISTED);
        assert_eq!(ingest.write_keys.keys.refused().len(), MAX_REFUSALS_LISTED, "as many kept as listed");
    }

    #[tokio::test]
    async fn when_the_stream_fails_the_batch_is_answered_503_so_the_sdk_sends_it_again() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::throttling_keys(&["u-2"]), &[]).await;
        let body = json!({"batch": [track("m-1", "u-1"), track("m-2", "u-2")]}).to_string();
        let (status, _, headers) =
            call(&ingest, authorized(post("/v1/batch", &[JSON], body), &grant(&key, 100, &[]))).await;
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "1");
    }

    #[tokio::test]
    async fn a_single_call_that_can_never_be_stored_is_a_400() {
        let key = WriteKey::generate();
        let ingest = ingest(MemoryStream::new(), &[]).await;
        let body = json!({"event": "e"}).to_string();
        let (status, answer, _) =
            call(&ingest, authorized(post("/v1/track", &[JSON], body), &grant(&key, 100, &[]))).await;
        assert_eq!(status, 400);
        assert_eq!(answer["errors"][0]["field"], "userId");
        let (status, _, _) =
            call(&ingest, authorized(post("/v1/batch", &[JSON], "{not json"), &grant(&key, 100, &[]))).await;
        assert_eq!(status, 400);
        let (status, _, _) = call(&ingest, post("/v1/batch", &[JSON], "{}")).await;
        assert_eq!(status, 500, "no authorizer answer: a deployment fault, which an SDK retries");
    }
}

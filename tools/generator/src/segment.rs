//! Segment's tracking API as `load --write-key` speaks it: generated events as `track`
//! messages, batches packed under Segment's size limits, the write key as HTTP Basic
//! authorisation, optional gzip, and what `POST /v1/batch` answers mean.

use std::fmt;
use std::io::{self, Write as _};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::{HeaderValue, Method, Uri, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::api::{self, HttpClient, ItemStatus, Outcome, Reply};
use crate::cdr::CallEvent;
use crate::clock;
use crate::plain::{PipelineData, PipelineEvent};

/// Most bytes of a batch body before compression. Segment's limit is 500 KB; read as
/// decimal kilobytes, the stricter reading, so that a server counting either way takes it.
pub const MAX_BATCH_BYTES: usize = 500_000;

/// Most bytes of one message (Segment's 32 KB, read the same way).
pub const MAX_MESSAGE_BYTES: usize = 32_000;

const BODY_HEAD: &[u8] = b"{\"batch\":";
const SENT_AT_KEY: &[u8] = b",\"sentAt\":\"";
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const SENT_AT_LEN: usize = 24;
const BODY_TAIL: &[u8] = b"\"}";

/// Room for the messages array (`[…]`) once the rest of the body is counted.
pub const MAX_MESSAGES_BYTES: usize =
    MAX_BATCH_BYTES - BODY_HEAD.len() - SENT_AT_KEY.len() - SENT_AT_LEN - BODY_TAIL.len();

/// A write key, `wk_<key_id>_<secret>`, held as the `Authorization` header it becomes.
#[derive(Clone)]
pub struct WriteKey {
    key_id: String,
    authorization: HeaderValue,
}

/// The text given is not shaped like a write key. It does not repeat the text: that may be
/// a key with a typo, and errors end up in logs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a write key: expected wk_<16 lowercase hex digits>_<43 base64url characters>")]
pub struct InvalidWriteKey;

impl WriteKey {
    pub fn parse(text: &str) -> Result<Self, InvalidWriteKey> {
        let rest = text.strip_prefix("wk_").ok_or(InvalidWriteKey)?;
        let (key_id, secret) = rest.split_at_checked(16).ok_or(InvalidWriteKey)?;
        let secret = secret.strip_prefix('_').ok_or(InvalidWriteKey)?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if !key_id.bytes().all(hex) || secret.len() != 43 || !secret.bytes().all(base64url) {
            return Err(InvalidWriteKey);
        }
        // User name the key, password empty.
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{text}:"));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|_| InvalidWriteKey)?;
        authorization.set_sensitive(true);
        Ok(Self { key_id: key_id.to_owned(), authorization })
    }

    /// The public half of the key, as the write-key admin routes name it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `Basic base64("<key>:")`.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl fmt::Debug for WriteKey {
    // The secret stays out of logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Track<'a> {
    #[serde(rename = "type")]
    call: &'static str,
    event: &'a str,
    message_id: &'a str,
    user_id: &'a str,
    timestamp: &'a str,
    properties: &'a PipelineData,
}

/// A generated event as a `track` message: its type (`call_out`, `sms`…, which the service's
/// name normalisation leaves as it is) is the event name, its id the `messageId` that the
/// service stores it under, its subscriber the `userId`, and the pipeline event's `data`
/// (the whole call-detail record, with a data session's volume) the `properties`.
pub fn track_message(event: &CallEvent) -> Vec<u8> {
    let pipeline = PipelineEvent::from(event);
    let track = Track {
        call: "track",
        event: pipeline.event_type,
        message_id: &pipeline.id,
        user_id: &pipeline.user_id,
        timestamp: &pipeline.timestamp,
        properties: &pipeline.data,
    };
    // Serialising strings, numbers and options cannot fail.
    serde_json::to_vec(&track).unwrap_or_default()
}

/// A JSON array of messages that stays small enough to be one batch.
#[derive(Debug)]
pub struct Packer {
    array: Vec<u8>,
    len: usize,
}

impl Default for Packer {
    fn default() -> Self {
        let mut array = Vec::with_capacity(MAX_MESSAGES_BYTES);
        array.push(b'[');
        Self { array, len: 0 }
    }
}

impl Packer {
    /// Adds `message` unless the batch would then be over [`MAX_BATCH_BYTES`]; an empty
    /// packer takes any message of at most [`MAX_MESSAGE_BYTES`].
    pub fn try_push(&mut self, message: &[u8]) -> bool {
        let separator = usize::from(self.len > 0);
        // The closing bracket still has to fit.
        if self.array.len() + separator + message.len() + 1 > MAX_MESSAGES_BYTES {
            return false;
        }
        if separator == 1 {
            self.array.push(b',');
        }
        self.array.extend_from_slice(message);
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The array, closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.array.push(b']');
        self.array
    }
}

/// `{"batch": <messages>, "sentAt": <sent_at>}`: the body of one attempt. Each attempt is
/// dated when it is sent, because the service corrects clock skew by `sentAt`.
pub fn batch_body(messages: &[u8], sent_at_micros: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(messages.len() + MAX_BATCH_BYTES - MAX_MESSAGES_BYTES);
    body.extend_from_slice(BODY_HEAD);
    body.extend_from_slice(messages);
    body.extend_from_slice(SENT_AT_KEY);
    body.extend_from_slice(&clock::format_millis(sent_at_micros));
    body.extend_from_slice(BODY_TAIL);
    body
}

pub fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Sends `messages` (a JSON array from a [`Packer`]) as one `POST /v1/batch`, dated now.
pub async fn send(
    client: &HttpClient,
    uri: &Uri,
    key: &WriteKey,
    messages: &[u8],
    compress: bool,
    timeout: Duration,
) -> Result<Reply, String> {
    let body = batch_body(messages, clock::now_micros());
    let mut builder = api::request_builder(Method::POST, uri)
        .header(header::AUTHORIZATION, key.authorization().clone())
        .header(header::CONTENT_TYPE, "application/json");
    let body = if compress {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        gzip(&body).map_err(|e| format!("compressing the batch: {e}"))?
    } else {
        body
    };
    let request = builder.body(Full::new(Bytes::from(body))).map_err(|e| format!("building request: {e}"))?;
    api::exchange(client, request, timeout).await
}

#[derive(Deserialize)]
struct Answer {
    success: Option<bool>,
    accepted: Option<u64>,
    #[serde(default)]
    refused: Vec<Refusal>,
}

#[derive(Deserialize)]
struct Refusal {
    index: Option<usize>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    /// Why, in one sentence.
    error: Option<String>,
    /// Why, as the field errors the service's native routes give.
    #[serde(default)]
    errors: Vec<FieldProblem>,
}

#[derive(Deserialize)]
struct FieldProblem {
    #[serde(default)]
    field: String,
    #[serde(default)]
    message: String,
}

impl Refusal {
    fn reason(self) -> String {
        if let Some(error) = self.error {
            return error;
        }
        let problems: Vec<String> = self
            .errors
            .into_iter()
            .map(|p| if p.field.is_empty() { p.message } else { format!("{}: {}", p.field, p.message) })
            .collect();
        if problems.is_empty() { "refused".to_owned() } else { problems.join("; ") }
    }
}

/// Interprets a `POST /v1/batch` answer for a batch whose messageIds are `ids`.
///
/// 2xx: each message accepted unless `refused` names it (by `index`, else by `messageId`),
/// with its `error`, or its `errors` as `field: message`. 429 and 5xx: retry. Any other status
/// fails the whole batch with the reason the body gives (`error`, `message`, or a problem's
/// `detail`).
pub fn classify(reply: &Reply, ids: &[Option<&str>]) -> Outcome {
    let len = ids.len();
    match reply.status {
        200..=299 => Outcome::Done(read_answer(&reply.body, ids)),
        429 | 500..=599 => Outcome::Retry(api::parse_retry_after(reply.retry_after.as_deref())),
        _ => Outcome::Done(vec![ItemStatus::Failed(api::describe_problem(reply)); len]),
    }
}

fn read_answer(body: &[u8], ids: &[Option<&str>]) -> Vec<ItemStatus> {
    let len = ids.len();
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return vec![ItemStatus::Failed(format!("unreadable 200 body: {e}")); len],
    };
    if answer.success == Some(false) {
        return vec![ItemStatus::Failed(format!("the answer says success: false{}", api::error_detail(body))); len];
    }
    let mut statuses = vec![ItemStatus::Accepted(None); len];
    let mut refused = 0u64;
    for refusal in answer.refused {
        let slot = refusal
            .index
            .filter(|i| *i < len)
            .or_else(|| refusal.message_id.as_deref().and_then(|id| ids.iter().position(|x| *x == Some(id))));
        let Some(slot) = slot else { continue };
        if statuses[slot] == ItemStatus::Accepted(None) {
            refused += 1;
        }
        statuses[slot] = ItemStatus::Rejected(refusal.reason());
    }
    let counted = len as u64 - refused;
    // An answer whose count disagrees with its own list leaves no way to tell which
    // messages were taken: count them as failed rather than guess.
    if let Some(accepted) = answer.accepted.filter(|a| *a != counted) {
        let reason = format!("the answer counts {accepted} accepted but refuses {refused} of {len}");
        for status in &mut statuses {
            if *status == ItemStatus::Accepted(None) {
                *status = ItemStatus::Failed(reason.clone());
            }
        }
    }
    statuses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::GenConfig;
    use serde_json::Value;

    const KEY: &str = "wk_0123456789abcdef_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, retry_after: None, body: Bytes::from(body.to_owned()) }
    }

    #[test]
    fn write_keys_become_basic_authorisation_with_an_empty_password() {
        let Ok(key) = WriteKey::parse(KEY) else {
            panic!("a well-formed key was refused");
        };
        assert_eq!(key.key_id(), "0123456789abcdef");
        let header = key.authorization().to_str().unwrap_or_default();
        let encoded = header.strip_prefix("Basic ").unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&decoded), format!("{KEY}:"));
        assert!(key.authorization().is_sensitive());
    }

    #[test]
    fn malformed_write_keys_are_refused() {
        let secret = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";
        for text in [
            "",
            "0123456789abcdef",
            &format!("wk_0123456789ABCDEF_{secret}"),
            &format!("wk_0123456789abcde_{secret}"),
            &format!("wk_0123456789abcdef{secret}"),
            &format!("wk_0123456789abcdef_{secret}x"),
            &format!("wk_0123456789abcdef_{}", &secret[1..]),
            &format!("wk_0123456789abcdef_{}=", &secret[1..]),
            "wk_0123456789abcdef_é",
        ] {
            assert_eq!(WriteKey::parse(text).map(|_| ()), Err(InvalidWriteKey), "{text:?}");
        }
    }

    #[test]
    fn debug_output_leaves_out_the_secret() {
        let text = WriteKey::parse(KEY).map(|k| format!("{k:?}")).unwrap_or_default();
        assert!(text.contains("0123456789abcdef") && !text.contains("ABCDEFGHIJ"), "{text}");
    }

    #[test]
    fn track_messages_carry_the_events_type_id_user_time_and_data() {
        let Some(event) = GenConfig::new(7, 40).events().find(|e| e.data_volume().is_some()) else {
            panic!("no data session in 40 events");
        };
        let message: Value = serde_json::from_slice(&track_message(&event)).unwrap_or_default();
        let pipeline = serde_json::to_value(PipelineEvent::from(&event)).unwrap_or_default();
        assert_eq!(message["type"], "track");
        assert_eq!(message["event"], "data_session");
        assert_eq!(message["messageId"], pipeline["id"]);
        assert_eq!(message["userId"], pipeline["user_id"]);
        assert_eq!(message["timestamp"], pipeline["timestamp"]);
        assert_eq!(message["properties"], pipeline["data"]);
        assert!(message["properties"]["bytes_down"].is_u64());
        assert_eq!(message.as_object().map(|m| m.len()), Some(6), "{message}");
    }

    #[test]
    fn generated_messages_stay_far_below_the_message_limit() {
        let longest = GenConfig::new(1, 20_000).events().map(|e| track_message(&e).len()).max().unwrap_or(0);
        assert!(longest > 300 && longest < MAX_MESSAGE_BYTES / 10, "{longest}");
    }

    #[test]
    fn packed_batches_fill_up_to_the_batch_limit_and_no_further() {
        let message = vec![b'x'; 1000];
        let mut packer = Packer::default();
        while packer.try_push(&message) {}
        let taken = packer.len();
        let body = batch_body(&packer.finish(), 0);
        assert!(body.len() <= MAX_BATCH_BYTES, "{}", body.len());
        assert!(body.len() + 1 + message.len() > MAX_BATCH_BYTES, "{} more bytes fit", MAX_BATCH_BYTES - body.len());
        assert_eq!(taken, 499);
        let mut empty = Packer::default();
        assert!(empty.try_push(&vec![b'x'; MAX_MESSAGE_BYTES]));
    }

    #[test]
    fn the_body_wraps_the_messages_with_the_time_sent() {
        let mut packer = Packer::default();
        assert!(packer.try_push(br#"{"a":1}"#) && packer.try_push(br#"{"b":2}"#));
        let body = batch_body(&packer.finish(), 1_735_689_600_123_456);
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"batch":[{"a":1},{"b":2}],"sentAt":"2025-01-01T00:00:00.123Z"}"#
        );
        assert_eq!(batch_body(b"[]", 0).len(), MAX_BATCH_BYTES - MAX_MESSAGES_BYTES + 2);
    }

    #[test]
    fn gzip_round_trips() {
        let body = batch_body(b"[]", 0);
        let packed = gzip(&body).unwrap_or_default();
        assert_eq!(&packed[..2], [0x1f, 0x8b]);
        let mut inflated = Vec::new();
        let read = io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut inflated);
        assert!(read.is_ok());
        assert_eq!(inflated, body);
    }

    #[test]
    fn status_200_accepts_all_but_the_refused() {
        let body = r#"{"success":true,"accepted":2,"refused":[{"index":1,"messageId":"b","error":"too big"}]}"#;
        let ids = [Some("a"), Some("b"), Some("c")];
        assert_eq!(
            classify(&reply(200, body), &ids),
            Outcome::Done(vec![
                ItemStatus::Accepted(None),
                ItemStatus::Rejected("too big".into()),
                ItemStatus::Accepted(None)
            ])
        );
        // Segment's own answer has neither count nor list.
        assert_eq!(
            classify(&reply(200, r#"{"success":true}"#), &ids),
            Outcome::Done(vec![ItemStatus::Accepted(None); 3])
        );
    }

    #[test]
    fn refusals_give_their_error_or_their_field_errors() {
        let body = r#"{"success":true,"accepted":0,"refused":[
            {"index":0,"messageId":"a","errors":[{"field":"userId","rule":"required","message":"a call needs userId"},
                                                 {"field":"","rule":"size","message":"too big"}]},
            {"index":1,"messageId":"b","errors":[]}
        ]}"#;
        assert_eq!(
            classify(&reply(200, body), &[Some("a"), Some("b")]),
            Outcome::Done(vec![
                ItemStatus::Rejected("userId: a call needs userId; too big".into()),
                ItemStatus::Rejected("refused".into())
            ])
        );
    }

    #[test]
    fn refusals_without_an_index_match_by_message_id() {
        let body = r#"{"success":true,"accepted":1,"refused":[{"messageId":"a","error":"no userId"}]}"#;
        assert_eq!(
            classify(&reply(200, body), &[Some("a"), Some("b")]),
            Outcome::Done(vec![ItemStatus::Rejected("no userId".into()), ItemStatus::Accepted(None)])
        );
    }

    #[test]
    fn an_answer_that_miscounts_or_cannot_be_read_fails_the_batch() {
        let miscounted = r#"{"success":true,"accepted":3,"refused":[{"index":0,"error":"bad"}]}"#;
        let Outcome::Done(items) = classify(&reply(200, miscounted), &[Some("a"), Some("b")]) else {
            panic!("200 must not be retried");
        };
        assert_eq!(items[0], ItemStatus::Rejected("bad".into()));
        assert_eq!(items[1], ItemStatus::Failed("the answer counts 3 accepted but refuses 1 of 2".into()));
        let Outcome::Done(items) = classify(&reply(200, "<html>"), &[Some("a")]) else {
            panic!("200 must not be retried");
        };
        assert!(matches!(&items[0], ItemStatus::Failed(m) if m.starts_with("unreadable 200 body")));
        let Outcome::Done(items) = classify(&reply(200, r#"{"success":false,"error":"no"}"#), &[Some("a")]) else {
            panic!("200 must not be retried");
        };
        assert_eq!(items[0], ItemStatus::Failed("the answer says success: false: no".into()));
    }

    #[test]
    fn status_429_and_5xx_ask_for_a_retry() {
        let mut busy = reply(429, "");
        busy.retry_after = Some("3".into());
        assert_eq!(classify(&busy, &[Some("a")]), Outcome::Retry(Some(Duration::from_secs(3))));
        for status in [500, 502, 503, 504] {
            assert_eq!(classify(&reply(status, ""), &[Some("a")]), Outcome::Retry(None), "{status}");
        }
    }

    #[test]
    fn other_4xx_fail_the_batch_with_the_reason() {
        let outcome = classify(&reply(401, r#"{"error":"unknown write key"}"#), &[Some("a"), Some("b")]);
        assert_eq!(
            outcome,
            Outcome::Done(vec![ItemStatus::Failed("HTTP 401 Unauthorized: unknown write key".into()); 2])
        );
        let problem = r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"origin not allowed"}"#;
        let outcome = classify(&reply(403, problem), &[Some("a")]);
        assert_eq!(outcome, Outcome::Done(vec![ItemStatus::Failed("HTTP 403 Forbidden: origin not allowed".into())]));
        for status in [400, 403, 413] {
            let Outcome::Done(items) = classify(&reply(status, ""), &[Some("a")]) else {
                panic!("{status} must not be retried");
            };
            assert!(matches!(&items[0], ItemStatus::Failed(m) if m.starts_with(&format!("HTTP {status}"))));
        }
    }
}

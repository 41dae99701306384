//! Poison records go to a dead-letter queue with their data and the reason, so nothing is
//! lost and the shard moves on: the message each travels in, and the port that sends them
//! (`sqs.rs` is its adapter). A record of up to 96 KiB travels in its message; a larger one
//! is stored whole in the failure bucket first, and its message names the object.

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_aws::keys;
use eventline_model::Position;
use serde::Serialize;

/// Records up to this many bytes go in their message, in base64; larger ones go to the
/// failure bucket. Either way a message stays well under SQS's limit.
pub const MAX_INLINE_BYTES: usize = 96 * 1024;
/// Reasons can quote the record (a parser names the value it choked on): cut them.
pub const MAX_REASON_CHARS: usize = 1024;
/// SQS's limit on one message, and on one SendMessageBatch call.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// One poison record and why it is one, with its data whole. For a user record of an
/// aggregated record: the aggregate's position, the user record's index in it, and the user
/// record's own partition key and data.
#[derive(Debug, Clone, PartialEq)]
pub struct PoisonMessage {
    pub reason: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub sub_sequence_number: Option<u64>,
    pub partition_key: String,
    pub event_source_arn: Option<String>,
    pub data: Vec<u8>,
}

/// The S3 object holding a record too large for its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataObject {
    pub bucket: String,
    pub key: String,
}

/// The message body: the record's data in `data_base64`, or the object that holds it in
/// `data_object`; `data_bytes` is its length either way.
#[derive(Serialize)]
struct Body<'a> {
    reason: &'a str,
    shard_id: &'a str,
    sequence_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_sequence_number: Option<u64>,
    partition_key: &'a str,
    event_source_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    data_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_object: Option<&'a DataObject>,
}

impl PoisonMessage {
    pub fn new(
        reason: String,
        shard_id: &str,
        sequence_number: &str,
        partition_key: &str,
        event_source_arn: Option<String>,
        data: &[u8],
    ) -> Self {
        Self {
            reason: sqs_text(&eventline_model::validation::echo(&reason, MAX_REASON_CHARS)),
            shard_id: sqs_text(shard_id),
            sequence_number: sqs_text(sequence_number),
            sub_sequence_number: None,
            partition_key: sqs_text(partition_key),
            event_source_arn,
            data: data.to_vec(),
        }
    }

    /// The message of user record `index` of an aggregated record.
    pub fn of_user_record(self, index: u64) -> Self {
        Self { sub_sequence_number: Some(index), ..self }
    }

    /// Whether the data goes in the message itself.
    pub fn fits_in_message(&self) -> bool {
        self.data.len() <= MAX_INLINE_BYTES
    }

    /// The object key of the record's data: its stream position, so a redelivered record
    /// overwrites its object instead of adding one.
    pub fn object_key(&self) -> String {
        keys::dead_letter_key(&Position {
            shard_id: self.shard_id.clone(),
            sequence_number: self.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number,
        })
    }

    /// The message body, with the data in it, or naming `object` when it holds the data.
    pub fn body(&self, object: Option<&DataObject>) -> String {
        let body = Body {
            reason: &self.reason,
            shard_id: &self.shard_id,
            sequence_number: &self.sequence_number,
            sub_sequence_number: self.sub_sequence_number,
            partition_key: &self.partition_key,
            event_source_arn: self.event_source_arn.as_deref(),
            data_base64: object.is_none().then(|| STANDARD.encode(&self.data)),
            data_bytes: self.data.len(),
            data_object: object,
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// SQS refuses a message holding characters outside XML's set (U+FFFE, U+FFFF, and the
/// controls JSON leaves unescaped are not among them, but a partition key or a quoted
/// value can hold the former): replace them, so one record cannot make its message
/// undeliverable.
fn sqs_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
            _ => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// Why a poison record was not dead-lettered. Either way the record is retried (its batch
/// checkpoints there), so nothing is dropped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeadLetterError {
    /// The queue or the bucket refused the request for what it is (access denied, no such
    /// queue or bucket, a malformed message): trying again within the invocation cannot help.
    #[error("refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The call failed for now (throttling, a server error, the network), or could not be built.
    #[error("the queue or the bucket did not answer")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl DeadLetterError {
    pub fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(error.into()))
    }

    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Where poison records go.
pub trait DeadLetters: Send + Sync {
    /// Sends every message; the result says, per message and in order, whether it went.
    fn send(&self, messages: &[PoisonMessage]) -> impl Future<Output = Vec<Result<(), DeadLetterError>>> + Send;
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const BUCKET: &str = "failures";

    fn message(data: &[u8]) -> PoisonMessage {
        PoisonMessage::new("bad".into(), "shardId-0", "1", "pk", None, data)
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_record_that_fits_goes_whole_in_its_message() {
        let data = vec![7u8; MAX_INLINE_BYTES];
        let m = message(&data);
        assert!(m.fits_in_message());
        let body = json(&m.body(None));
        assert_eq!(STANDARD.decode(body["data_base64"].as_str().unwrap()).unwrap(), data);
        assert_eq!(body["data_bytes"], MAX_INLINE_BYTES);
        assert!(body.get("data_object").is_none() && body.get("truncated").is_none(), "{body}");
        assert!(!message(&vec![7u8; MAX_INLINE_BYTES + 1]).fits_in_message());
    }

    #[test]
    fn a_message_for_a_stored_record_names_its_object_instead_of_holding_it() {
        let m = message(&vec![b'x'; 200 * 1024]);
        let object = DataObject { bucket: BUCKET.into(), key: m.object_key() };
        let body = m.body(Some(&object));
        assert!(body.len() < 1024, "{} bytes", body.len());
        let body = json(&body);
        assert_eq!(body["data_object"], serde_json::json!({"bucket": BUCKET, "key": "dead-letters/shardId-0/1"}));
        assert_eq!(body["data_bytes"], 200 * 1024);
        assert!(body.get("data_base64").is_none(), "{body}");
        assert_eq!((body["shard_id"].as_str(), body["partition_key"].as_str()), (Some("shardId-0"), Some("pk")));
    }

    #[test]
    fn the_object_key_is_the_stream_position_so_a_redelivery_overwrites_it() {
        let first = PoisonMessage::new("bad".into(), "shardId-000000000001", "4959", "a", None, b"x");
        let again = PoisonMessage::new("the table refused it".into(), "shardId-000000000001", "4959", "b", None, b"y");
        let next = PoisonMessage::new("bad".into(), "shardId-000000000001", "4960", "a", None, b"x");
        assert_eq!(first.object_key(), "dead-letters/shardId-000000000001/4959");
        assert_eq!(first.object_key(), again.object_key());
        assert_ne!(first.object_key(), next.object_key());
        let other_shard = PoisonMessage::new("bad".into(), "shardId-000000000002", "4959", "a", None, b"x");
        assert_ne!(first.object_key(), other_shard.object_key());
    }

    #[test]
    fn a_user_record_of_an_aggregate_is_named_by_its_index_in_it() {
        let user = |index| PoisonMessage::new("bad".into(), "shardId-1", "4959", "u", None, b"x").of_user_record(index);
        assert_eq!(user(2).object_key(), "dead-letters/shardId-1/4959/2");
        assert_ne!(user(2).object_key(), user(3).object_key());
        let body = json(&user(2).body(None));
        assert_eq!((body["sequence_number"].as_str(), body["sub_sequence_number"].as_u64()), (Some("4959"), Some(2)));
        assert!(json(&message(b"x").body(None)).get("sub_sequence_number").is_none(), "only a user record has one");
    }

    #[test]
    fn a_message_stays_under_the_sqs_limit_whatever_the_record_holds() {
        // A parser error quoting a 150 KB value, a long partition key, the most data inline.
        let reason = format!("invalid value: string \"{}\"", "\"".repeat(150_000));
        let m = PoisonMessage::new(reason, "shardId-0", "1", &"\"".repeat(256), None, &vec![b'"'; MAX_INLINE_BYTES]);
        assert!(m.body(None).len() <= MAX_MESSAGE_BYTES, "{} bytes", m.body(None).len());
        assert_eq!(m.reason.chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn characters_sqs_refuses_are_replaced() {
        let m = PoisonMessage::new("bad \u{FFFF} \u{1}".into(), "s", "1", "key\u{FFFE}", None, b"x");
        assert_eq!(m.partition_key, "key\u{FFFD}");
        assert_eq!(m.reason, "bad \u{FFFD} \u{FFFD}");
    }
}

//! The messages the transform sends to the dead-letter queue: one poison record each, with
//! its reason, stream position and partition key, and its data: in base64 in the message
//! (`data_base64`), or, for a record too large for a message, in the failure bucket
//! (`data_object`: bucket and key). Messages written before records were kept whole may
//! hold only the start of the data, marked `truncated`. The shape is
//! `eventline_transform::dead_letter::PoisonMessage::body`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_aws::keys::DEAD_LETTER_PREFIX;
use eventline_model::Position;
use serde::Deserialize;

/// The fields read; others (`event_source_arn`) are ignored.
#[derive(Deserialize)]
struct Wire {
    reason: String,
    shard_id: String,
    sequence_number: String,
    /// A user record of an aggregated record: its index there.
    #[serde(default)]
    sub_sequence_number: Option<u64>,
    partition_key: String,
    #[serde(default)]
    data_base64: Option<String>,
    data_bytes: usize,
    #[serde(default)]
    data_object: Option<DataObject>,
    #[serde(default)]
    truncated: bool,
}

/// The S3 object that holds a record's data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataObject {
    pub bucket: String,
    pub key: String,
}

/// Where a dead-lettered record's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// In the message, whole.
    Inline(Vec<u8>),
    /// In an object of this many bytes, under the dead-letter prefix.
    Stored { object: DataObject, bytes: usize },
}

/// A dead-lettered record whose data is whole, in the message or in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: String,
    pub position: Position,
    pub partition_key: String,
    pub data: Data,
}

/// Why a message cannot be re-submitted. Either way it stays in the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// The message is not one the transform wrote.
    #[error("is not a dead-lettered record: {0}")]
    Malformed(String),
    /// Only the start of the data was kept, so the record cannot be rebuilt.
    #[error("holds only the first {kept} of {bytes} bytes of the record, which cannot be rebuilt from it")]
    Truncated { reason: String, kept: usize, bytes: usize },
}

impl Unusable {
    /// The transform's reason, when the message has one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Unusable::Malformed(_) => None,
            Unusable::Truncated { reason, .. } => Some(reason),
        }
    }
}

/// Reads a message body.
pub fn parse(body: &str) -> Result<DeadLetter, Unusable> {
    let wire: Wire = serde_json::from_str(body).map_err(|e| Unusable::Malformed(e.to_string()))?;
    let data = match (wire.data_base64, wire.data_object) {
        (Some(_), Some(_)) => return Err(Unusable::Malformed("names both data_base64 and data_object".into())),
        (None, None) => return Err(Unusable::Malformed("has neither data_base64 nor data_object".into())),
        (None, Some(object)) => {
            // Only what the transform writes is read: a message cannot send the redrive to
            // copy any object its credentials can read onto the stream.
            if !object.key.starts_with(DEAD_LETTER_PREFIX) || object.bucket.is_empty() {
                return Err(Unusable::Malformed(format!(
                    "data_object s3://{}/{} is not under {DEAD_LETTER_PREFIX}",
                    object.bucket, object.key
                )));
            }
            Data::Stored { object, bytes: wire.data_bytes }
        }
        (Some(base64), None) => {
            let data = STANDARD
                .decode(base64.as_bytes())
                .map_err(|e| Unusable::Malformed(format!("data_base64 is not base64: {e}")))?;
            if wire.truncated {
                return Err(Unusable::Truncated { reason: wire.reason, kept: data.len(), bytes: wire.data_bytes });
            }
            if data.len() != wire.data_bytes {
                return Err(Unusable::Malformed(format!(
                    "data_base64 holds {} bytes but data_bytes says {}",
                    data.len(),
                    wire.data_bytes
                )));
            }
            Data::Inline(data)
        }
    };
    Ok(DeadLetter {
        reason: wire.reason,
        position: Position {
            shard_id: wire.shard_id,
            sequence_number: wire.sequence_number,
            sub_sequence_number: wire.sub_sequence_number,
        },
        partition_key: wire.partition_key,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_transform::dead_letter::{MAX_INLINE_BYTES, PoisonMessage};

    #[test]
    fn reads_what_the_transform_writes() {
        let data = b"{\"id\":\"e-1\",\"source\":\"web\"}\xff";
        let message = PoisonMessage::new(
            "record data is not valid UTF-8 (byte 28)".into(),
            "shardId-000000000001",
            "49590338271490256608559692538361571095921575989136588898",
            "u-7",
            Some("arn:aws:kinesis:us-east-1:123456789012:stream/ingest".into()),
            data,
        );
        let letter = parse(&message.body(None)).unwrap();
        assert_eq!(letter.data, Data::Inline(data.to_vec()));
        assert_eq!(letter.partition_key, "u-7");
        assert_eq!(letter.reason, "record data is not valid UTF-8 (byte 28)");
        assert_eq!(letter.position.shard_id, "shardId-000000000001");
        assert_eq!(letter.position.sequence_number, "49590338271490256608559692538361571095921575989136588898");
        assert_eq!(letter.position.sub_sequence_number, None);
        let user = parse(&message.of_user_record(4).body(None)).unwrap();
        assert_eq!(user.position.sub_sequence_number, Some(4), "a user record of an aggregated record");
    }

    #[test]
    fn a_record_kept_in_the_bucket_is_read_as_its_object() {
        let message = PoisonMessage::new("too big".into(), "s", "7", "k", None, &vec![b'x'; MAX_INLINE_BYTES + 5]);
        let object =
            eventline_transform::dead_letter::DataObject { bucket: "failures".into(), key: message.object_key() };
        let letter = parse(&message.body(Some(&object))).unwrap();
        let expected = DataObject { bucket: "failures".into(), key: "dead-letters/s/7".into() };
        assert_eq!(letter.data, Data::Stored { object: expected, bytes: MAX_INLINE_BYTES + 5 });
        assert_eq!((letter.reason.as_str(), letter.position.sequence_number.as_str()), ("too big", "7"));
    }

    #[test]
    fn an_object_outside_the_dead_letter_prefix_is_not_read() {
        let message = PoisonMessage::new("r".into(), "s", "1", "k", None, b"abc");
        for (bucket, key) in
            [("failures", "aws/lambda/m/s/2026/11/30/x"), ("other", "secrets/key"), ("", "dead-letters/s/1")]
        {
            let object = eventline_transform::dead_letter::DataObject { bucket: bucket.into(), key: key.into() };
            let error = parse(&message.body(Some(&object))).unwrap_err();
            assert!(matches!(&error, Unusable::Malformed(m) if m.contains("is not under dead-letters/")), "{error}");
        }
    }

    #[test]
    fn a_truncated_record_from_before_records_were_kept_whole_cannot_be_rebuilt() {
        let body = serde_json::json!({
            "reason": "too big", "shard_id": "s", "sequence_number": "1", "partition_key": "k",
            "event_source_arn": null, "data_base64": "eHh4", "data_bytes": 98309, "truncated": true,
        });
        let error = parse(&body.to_string()).unwrap_err();
        assert_eq!(error, Unusable::Truncated { reason: "too big".into(), kept: 3, bytes: 98309 });
        assert_eq!(error.reason(), Some("too big"));
        // Whole messages of that time still go back.
        let mut whole = body.clone();
        whole["data_bytes"] = 3.into();
        whole["truncated"] = false.into();
        assert_eq!(parse(&whole.to_string()).unwrap().data, Data::Inline(b"xxx".to_vec()));
    }

    #[test]
    fn other_messages_are_malformed() {
        for body in ["", "not json", "{}", r#"{"requestContext":{"condition":"RetryAttemptsExhausted"}}"#] {
            assert!(matches!(parse(body), Err(Unusable::Malformed(_))), "{body}");
        }
        let message = PoisonMessage::new("r".into(), "s", "1", "k", None, b"abc");
        let mut wire: serde_json::Value = serde_json::from_str(&message.body(None)).unwrap();
        wire["data_bytes"] = 4.into();
        let error = parse(&wire.to_string()).unwrap_err();
        assert!(error.to_string().contains("holds 3 bytes but data_bytes says 4"), "{error}");
        wire["data_base64"] = "%%%".into();
        assert!(parse(&wire.to_string()).unwrap_err().to_string().contains("not base64"));
        wire["data_object"] = serde_json::json!({"bucket": "b", "key": "dead-letters/s/1"});
        assert!(parse(&wire.to_string()).unwrap_err().to_string().contains("names both"));
        let mut neither = wire.clone();
        neither.as_object_mut().unwrap().retain(|k, _| k != "data_base64" && k != "data_object");
        assert!(parse(&neither.to_string()).unwrap_err().to_string().contains("neither"));
    }
}

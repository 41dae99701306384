//! The messages the transform sends to the dead-letter queue: one poison record each, with
//! its reason, stream position, partition key and raw data (cut after 96 KiB, then marked
//! `truncated`). The shape is `transform::dead_letter::PoisonMessage`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_model::Position;
use serde::Deserialize;

/// The fields read; others (`event_source_arn`) are ignored.
#[derive(Deserialize)]
struct Wire {
    reason: String,
    shard_id: String,
    sequence_number: String,
    partition_key: String,
    data_base64: String,
    data_bytes: usize,
    truncated: bool,
}

/// A dead-lettered record whose data is whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: String,
    pub position: Position,
    pub partition_key: String,
    pub data: Vec<u8>,
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
    let data = STANDARD
        .decode(wire.data_base64.as_bytes())
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
    Ok(DeadLetter {
        reason: wire.reason,
        position: Position { shard_id: wire.shard_id, sequence_number: wire.sequence_number },
        partition_key: wire.partition_key,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use transform::dead_letter::{MAX_RAW_BYTES, PoisonMessage};

    fn body(message: &PoisonMessage) -> String {
        serde_json::to_string(message).unwrap()
    }

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
        let letter = parse(&body(&message)).unwrap();
        assert_eq!(letter.data, data);
        assert_eq!(letter.partition_key, "u-7");
        assert_eq!(letter.reason, "record data is not valid UTF-8 (byte 28)");
        assert_eq!(letter.position.shard_id, "shardId-000000000001");
        assert_eq!(letter.position.sequence_number, "49590338271490256608559692538361571095921575989136588898");
    }

    #[test]
    fn a_truncated_record_cannot_be_rebuilt() {
        let message = PoisonMessage::new("too big".into(), "s", "1", "k", None, &vec![b'x'; MAX_RAW_BYTES + 5]);
        let error = parse(&body(&message)).unwrap_err();
        assert_eq!(
            error,
            Unusable::Truncated { reason: "too big".into(), kept: MAX_RAW_BYTES, bytes: MAX_RAW_BYTES + 5 }
        );
        assert_eq!(error.reason(), Some("too big"));
    }

    #[test]
    fn other_messages_are_malformed() {
        for body in ["", "not json", "{}", r#"{"requestContext":{"condition":"RetryAttemptsExhausted"}}"#] {
            assert!(matches!(parse(body), Err(Unusable::Malformed(_))), "{body}");
        }
        let message = PoisonMessage::new("r".into(), "s", "1", "k", None, b"abc");
        let mut wire: serde_json::Value = serde_json::from_str(&body(&message)).unwrap();
        wire["data_bytes"] = 4.into();
        let error = parse(&wire.to_string()).unwrap_err();
        assert!(error.to_string().contains("holds 3 bytes but data_bytes says 4"), "{error}");
        wire["data_base64"] = "%%%".into();
        assert!(parse(&wire.to_string()).unwrap_err().to_string().contains("not base64"));
    }
}

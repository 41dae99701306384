//! The Segment calls ingest refused because they can never be stored (no user, over 32 KB, a
//! type the deployment does not take): answered in their batch's `refused` list, and kept in
//! the table for 14 days (listed through the `ByUser` index, partition `REFUSED`), beside the
//! conflicts, for someone to see what a producer sends and why it is refused.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::conflicts::{index_partition, text};
use crate::error::Error;
use eventline_aws::keys::{self, attr};

/// One refused call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub source: String,
    /// The write key that sent it.
    pub key_id: String,
    pub message_id: Option<String>,
    pub received_at: String,
    /// Why, as the answer listed it: `[{"field", "rule", "message"}]`.
    pub errors: serde_json::Value,
    /// The call as the client wrote it (its first 32 KB).
    pub call: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.message_id.as_deref().unwrap_or("(no messageId)");
        writeln!(f, "{}  {}  {id}  key {}", self.received_at, self.source, self.key_id)?;
        for error in self.errors.as_array().into_iter().flatten() {
            let part = |name: &str| error[name].as_str().unwrap_or_default().to_owned();
            let field = part("field");
            let field = if field.is_empty() { "(the call)".to_owned() } else { field };
            writeln!(f, "  {field}: {} ({})", part("message"), part("rule"))?;
        }
        writeln!(f, "  call: {}", self.call)
    }
}

/// Up to `limit` refused calls received at or after `since`, newest first.
pub async fn list(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    since: Option<OffsetDateTime>,
    limit: usize,
) -> Result<Vec<Refused>, Error> {
    let items = index_partition(client, table, keys::REFUSED_INDEX_PK, since, limit).await?;
    Ok(items
        .iter()
        .map(|item| Refused {
            source: text(item, attr::KEY_SOURCE).unwrap_or_default(),
            key_id: text(item, attr::KEY_ID).unwrap_or_default(),
            message_id: text(item, attr::MESSAGE_ID),
            received_at: text(item, attr::RECEIVED_AT).unwrap_or_default(),
            errors: text(item, attr::ERRORS).and_then(|e| serde_json::from_str(&e).ok()).unwrap_or_default(),
            call: text(item, attr::CALL).unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_shows_why_and_what_was_sent() {
        let refused = Refused {
            source: "shop".into(),
            key_id: "0123456789abcdef".into(),
            message_id: Some("m-1".into()),
            received_at: "2026-12-07T12:00:00Z".into(),
            errors: serde_json::json!([{"field": "userId", "rule": "required", "message": "a call needs userId or anonymousId"}]),
            call: r#"{"type":"track","event":"e"}"#.into(),
        };
        let text = refused.to_string();
        assert!(text.starts_with("2026-12-07T12:00:00Z  shop  m-1  key 0123456789abcdef\n"), "{text}");
        assert!(text.contains("  userId: a call needs userId or anonymousId (required)\n"));
        assert!(text.ends_with("  call: {\"type\":\"track\",\"event\":\"e\"}\n"));
    }
}

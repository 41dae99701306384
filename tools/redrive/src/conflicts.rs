//! The conflicts the transform kept: copies of a stored identity `(source, id)` that came
//! from another sender or with other content. They are never stored over the first event,
//! are counted as `events_conflict`, and wait in the table (listed through the `ByUser`
//! index, partition `CONFLICTS`) for someone to look at them. Redriving such a record
//! changes nothing: the transform judges it against the stored event again, by the same rules.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use eventline_aws::batch_get::batch_get;
use eventline_aws::item::{Item, s};
use eventline_aws::keys::{self, attr};
use eventline_model::retry::Backoff;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, classify};

/// One conflicting copy, with what the stored event of its identity says about its own sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub source: String,
    pub id: String,
    /// When the transform judged the copy (RFC 3339).
    pub judged_at: String,
    pub received_at: Option<String>,
    pub sender: Option<String>,
    pub digest: Option<String>,
    /// The stored event's sender and digest, for comparison.
    pub stored_sender: Option<String>,
    pub stored_digest: Option<String>,
    /// Where the copy sat in the ingest stream.
    pub shard_id: String,
    pub sequence_number: String,
    /// A user record of an aggregated record: its index there.
    pub sub_sequence_number: Option<u64>,
    pub ingest_id: Option<String>,
    /// The copy as it would have been stored (JSON), unless it was too large to keep.
    pub copy: Option<String>,
    pub copy_bytes: u64,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unknown)".to_owned());
        writeln!(f, "{}  {}/{}", self.judged_at, self.source, self.id)?;
        writeln!(f, "  copy:    from {}  digest {}", or_unknown(&self.sender), or_unknown(&self.digest))?;
        writeln!(f, "  stored:  from {}  digest {}", or_unknown(&self.stored_sender), or_unknown(&self.stored_digest))?;
        write!(f, "  arrived: {} at {} #{}", or_unknown(&self.received_at), self.shard_id, self.sequence_number)?;
        match self.sub_sequence_number {
            Some(index) => writeln!(f, ", user record {index} of the aggregated record")?,
            None => writeln!(f)?,
        }
        match &self.copy {
            Some(copy) => writeln!(f, "  event:   {copy}"),
            None => writeln!(
                f,
                "  event:   {} bytes, too large to keep: read it from the stream position above while the stream retains it",
                self.copy_bytes
            ),
        }
    }
}

/// Up to `limit` conflicts judged at or after `since`, newest first.
pub async fn list(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    since: Option<OffsetDateTime>,
    limit: usize,
) -> Result<Vec<Conflict>, Error> {
    let items = index_partition(client, table, keys::CONFLICTS_INDEX_PK, since, limit).await?;

    // The stored events of these identities, in batches, for their senders.
    let event_keys: Vec<Item> = items
        .iter()
        .filter_map(|item| text(item, keys::PK))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|pk| Item::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(keys::EVENT_SK))]))
        .collect();
    let stored = batch_get(client, table, event_keys, false, Backoff::default()).await.map_err(|e| {
        Error::Unavailable { action: "BatchGetItem", what: format!("table {table}"), detail: e.to_string() }
    })?;
    let stored: HashMap<String, Item> =
        stored.into_iter().filter_map(|item| Some((text(&item, keys::PK)?, item))).collect();

    Ok(items
        .iter()
        .map(|item| {
            let original = text(item, keys::PK).and_then(|pk| stored.get(&pk));
            Conflict {
                source: text(item, attr::SOURCE).unwrap_or_default(),
                id: text(item, attr::ID).unwrap_or_default(),
                judged_at: text(item, attr::PROCESSED_AT).unwrap_or_default(),
                received_at: text(item, attr::RECEIVED_AT),
                sender: text(item, attr::SENDER),
                digest: text(item, attr::DIGEST),
                stored_sender: original.and_then(|o| text(o, attr::SENDER)),
                stored_digest: original.and_then(|o| text(o, attr::DIGEST)),
                shard_id: text(item, attr::SHARD_ID).unwrap_or_default(),
                sequence_number: text(item, attr::SEQUENCE_NUMBER).unwrap_or_default(),
                sub_sequence_number: item
                    .get(attr::SUB_SEQUENCE_NUMBER)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok()),
                ingest_id: text(item, attr::INGEST_ID),
                copy: text(item, attr::COPY),
                copy_bytes: item
                    .get(attr::COPY_BYTES)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// Up to `limit` items of one `ByUser` index partition whose sort key (a time first) is at
/// or after `since`, newest first: the conflicts, or the refused calls.
pub(crate) async fn index_partition(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    partition: &str,
    since: Option<OffsetDateTime>,
    limit: usize,
) -> Result<Vec<Item>, Error> {
    let mut items: Vec<Item> = Vec::new();
    let mut start: Option<Item> = None;
    while items.len() < limit {
        let mut query = client
            .query()
            .table_name(table)
            .index_name(keys::BY_USER_INDEX)
            .key_condition_expression(if since.is_some() { "#pk = :pk AND #sk >= :since" } else { "#pk = :pk" })
            .expression_attribute_names("#pk", keys::USER_PK)
            .expression_attribute_values(":pk", s(partition))
            .scan_index_forward(false)
            .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start.take());
        if let Some(since) = since {
            query = query
                .expression_attribute_names("#sk", keys::USER_SK)
                .expression_attribute_values(":since", s(eventline_model::event::sortable_timestamp(since)));
        }
        let page = query.send().await.map_err(|e| {
            classify(&e, "Query", &format!("table {table}"), |err| {
                err.is_resource_not_found_exception().then(|| Error::NotFound {
                    what: format!("table {table}"),
                    hint: "pass the stack output EventsTableName, in the stack's region".into(),
                })
            })
        })?;
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    items.truncate(limit);
    Ok(items)
}

pub(crate) fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v: &AttributeValue| v.as_s().ok()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_too_large_to_keep_points_at_its_stream_position() {
        let conflict = Conflict {
            source: "web".into(),
            id: "e-1".into(),
            judged_at: "2026-12-07T03:00:00Z".into(),
            received_at: Some("2026-12-07T02:59:59Z".into()),
            sender: Some("arn:aws:iam::123456789012:user/bob".into()),
            digest: Some("0123456789abcdef0123456789abcdef".into()),
            stored_sender: Some("arn:aws:iam::123456789012:user/alice".into()),
            stored_digest: None,
            shard_id: "shardId-000000000000".into(),
            sequence_number: "4965".into(),
            sub_sequence_number: None,
            ingest_id: None,
            copy: None,
            copy_bytes: 300_000,
        };
        let shown = conflict.to_string();
        assert!(shown.starts_with("2026-12-07T03:00:00Z  web/e-1\n"), "{shown}");
        assert!(shown.contains("from arn:aws:iam::123456789012:user/bob"), "{shown}");
        assert!(shown.contains("stored:  from arn:aws:iam::123456789012:user/alice  digest (unknown)"), "{shown}");
        assert!(shown.contains("300000 bytes, too large to keep"), "{shown}");
        assert!(shown.contains("shardId-000000000000 #4965\n"), "{shown}");
        let user_record = Conflict { sub_sequence_number: Some(2), ..conflict };
        assert!(user_record.to_string().contains("#4965, user record 2 of the aggregated record\n"));
    }
}

//! A processed event as a DynamoDB item and back, and the size DynamoDB counts for an item.
//! `data` is kept as the client's JSON text, so any JSON object round-trips byte for byte
//! (DynamoDB numbers cannot hold every JSON number).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::{self, attr};
use eventline_model::event::{Event, EventId, EventType, IngestId, RawObject, Source, UserId, format_rfc3339};
use eventline_model::identity::{Digest, Provenance, Sender};
use eventline_model::record::{Position, ProcessedEvent, StreamRecord};
use eventline_model::reference::{Enrichment, Label};

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limit on one item, names and values included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Room kept below [`MAX_ITEM_BYTES`] for attributes the transform may add beside the event
/// (enrichment) and for the index entry's own overhead.
pub const ITEM_HEADROOM_BYTES: usize = 1024;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn to_item(event: &ProcessedEvent) -> Item {
    let e = &event.event;
    let mut item = Item::from([
        (keys::PK.to_owned(), s(keys::event_pk(&e.source, &e.id))),
        (keys::SK.to_owned(), s(keys::EVENT_SK)),
        (attr::ID.to_owned(), s(e.id.as_str())),
        (attr::SOURCE.to_owned(), s(e.source.as_str())),
        (attr::TYPE.to_owned(), s(e.event_type.as_str())),
        (attr::TIMESTAMP.to_owned(), s(format_rfc3339(e.timestamp))),
        (attr::RECEIVED_AT.to_owned(), s(format_rfc3339(event.received_at))),
        (attr::PROCESSED_AT.to_owned(), s(format_rfc3339(event.processed_at))),
        (attr::LATENCY_MS.to_owned(), n(event.latency_ms)),
        (attr::SHARD_ID.to_owned(), s(&event.shard_id)),
        (attr::SEQUENCE_NUMBER.to_owned(), s(&event.sequence_number)),
    ]);
    if let Some(sub_sequence_number) = event.sub_sequence_number {
        item.insert(attr::SUB_SEQUENCE_NUMBER.to_owned(), n(sub_sequence_number));
    }
    if let Some(user) = &e.user_id {
        item.insert(attr::USER_ID.to_owned(), s(user.as_str()));
        item.insert(keys::USER_PK.to_owned(), s(keys::user_pk(user)));
        item.insert(keys::USER_SK.to_owned(), s(keys::user_sk(e.timestamp, &e.source, &e.id)));
    }
    if let Some(payload) = &e.payload {
        item.insert(attr::PAYLOAD.to_owned(), s(payload));
    }
    if let Some(data) = &e.data {
        item.insert(attr::DATA.to_owned(), s(data.get()));
    }
    if let Some(ingest_id) = &event.ingest_id {
        item.insert(attr::INGEST_ID.to_owned(), s(ingest_id.as_str()));
    }
    if let Some(provenance) = &event.provenance {
        item.insert(attr::SENDER.to_owned(), s(provenance.sender.as_str()));
        item.insert(attr::DIGEST.to_owned(), s(provenance.digest.as_str()));
    }
    if let Some(enrichment) = &event.enrichment {
        item.insert(attr::PLAN.to_owned(), s(enrichment.plan.as_str()));
        item.insert(attr::REGION.to_owned(), s(enrichment.region.as_str()));
        item.insert(attr::GENERATION.to_owned(), n(enrichment.generation));
    }
    item
}

/// The bytes DynamoDB counts for an item: each attribute's name plus its value (strings and
/// binaries by length, numbers by digits, containers by their elements plus overhead).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::B(blob) => blob.as_ref().len(),
        // Up to 38 significant digits in 21 bytes; counting every character is an upper bound.
        AttributeValue::N(number) => number.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(items) => items.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 0,
    }
}

/// The largest item the transform could store for this record: the payload uppercased (it
/// can grow threefold) and the processing metadata at its longest.
pub fn largest_stored_size(record: &StreamRecord) -> usize {
    let position = Position {
        shard_id: format!("shardId-{:012}", 0),
        sequence_number: "9".repeat(128),
        sub_sequence_number: Some(u64::MAX),
    };
    // Nine fraction digits and a four-digit year: the longest timestamp text.
    let processed_at = time::macros::datetime!(9999-12-31 23:59:59.999999999 UTC);
    let mut processed = ProcessedEvent::from_record(record.clone(), position, processed_at);
    processed.latency_ms = u64::MAX;
    // The longest labels: enrichment is part of the stored item.
    let longest = Label::parse("x".repeat(64)).unwrap_or_else(|_| Label::unknown());
    processed.enrichment = Some(Enrichment { plan: longest.clone(), region: longest, generation: u64::MAX });
    item_size(&to_item(&processed))
}

/// Whether the transform could store this record within DynamoDB's item limit. Nearly every
/// event is far below it, which [`stored_size_bound`] shows without building the item.
pub fn fits_in_an_item(record: &StreamRecord) -> Result<(), usize> {
    if stored_size_bound(record) + ITEM_HEADROOM_BYTES <= MAX_ITEM_BYTES {
        return Ok(());
    }
    let size = largest_stored_size(record);
    if size + ITEM_HEADROOM_BYTES <= MAX_ITEM_BYTES { Ok(()) } else { Err(size) }
}

/// What an item holds besides the event's own texts, at its longest: the attribute names,
/// the three timestamps and the user sort key's, the key prefixes, the stream position, the
/// ingest id, the latency and the enrichment (a test checks it against the longest item).
const FIXED_PART_BOUND: usize = 1024;

/// An upper bound of [`largest_stored_size`] from the texts' lengths alone: the id and the
/// source appear in the key, their own attributes and the user sort key, the user id in its
/// attribute and the user key, and an uppercased payload is at most three times as long.
fn stored_size_bound(record: &StreamRecord) -> usize {
    let e = &record.event;
    let user = e.user_id.as_ref().map_or(0, |u| u.as_str().len());
    FIXED_PART_BOUND
        + 3 * (e.id.as_str().len() + e.source.as_str().len())
        + e.event_type.as_str().len()
        + 2 * user
        + 3 * e.payload.as_ref().map_or(0, String::len)
        + e.data.as_ref().map_or(0, |data| data.get().len())
        + record.provenance.as_ref().map_or(0, |p| p.sender.as_str().len() + p.digest.as_str().len())
}

/// Why a stored item could not be read back as an event.
#[derive(Debug, thiserror::Error)]
#[error("stored item is malformed: {0}")]
pub struct MalformedItem(pub String);

pub fn from_item(item: &Item) -> Result<ProcessedEvent, MalformedItem> {
    let text = |name: &str| -> Result<&str, MalformedItem> {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .ok_or_else(|| MalformedItem(format!("{name} missing")))
    };
    let optional = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let time = |name: &str| -> Result<OffsetDateTime, MalformedItem> {
        OffsetDateTime::parse(text(name)?, &Rfc3339).map_err(|e| MalformedItem(format!("{name}: {e}")))
    };
    let bad = |name: &'static str| move |rule: &str| MalformedItem(format!("{name} {rule}"));
    let data = match optional(attr::DATA) {
        None => None,
        Some(json) => Some(RawObject::from_text(json).map_err(|e| MalformedItem(format!("data: {e}")))?),
    };
    Ok(ProcessedEvent {
        event: Event {
            id: EventId::parse(text(attr::ID)?).map_err(bad("id"))?,
            source: Source::parse(text(attr::SOURCE)?).map_err(bad("source"))?,
            event_type: EventType::parse(text(attr::TYPE)?).map_err(bad("type"))?,
            timestamp: time(attr::TIMESTAMP)?,
            user_id: optional(attr::USER_ID).map(UserId::parse).transpose().map_err(bad("user_id"))?,
            payload: optional(attr::PAYLOAD),
            data,
        },
        received_at: time(attr::RECEIVED_AT)?,
        processed_at: time(attr::PROCESSED_AT)?,
        latency_ms: item
            .get(attr::LATENCY_MS)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| MalformedItem("latency_ms missing".into()))?,
        shard_id: text(attr::SHARD_ID)?.to_owned(),
        sequence_number: text(attr::SEQUENCE_NUMBER)?.to_owned(),
        sub_sequence_number: match item.get(attr::SUB_SEQUENCE_NUMBER) {
            None => None,
            Some(value) => Some(
                value
                    .as_n()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| MalformedItem("sub_sequence_number is not a whole number".into()))?,
            ),
        },
        ingest_id: optional(attr::INGEST_ID).map(IngestId::parse).transpose().map_err(bad("ingest_id"))?,
        provenance: match (optional(attr::SENDER), optional(attr::DIGEST)) {
            (Some(sender), Some(digest)) => Some(Provenance {
                sender: Sender::try_from(sender).map_err(bad("sender"))?,
                digest: Digest::try_from(digest).map_err(bad("digest"))?,
            }),
            _ => None,
        },
        enrichment: match (optional(attr::PLAN), optional(attr::REGION)) {
            (Some(plan), Some(region)) => Some(Enrichment {
                plan: Label::parse(plan).map_err(bad("plan"))?,
                region: Label::parse(region).map_err(bad("region"))?,
                generation: item
                    .get(attr::GENERATION)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| MalformedItem("generation missing".into()))?,
            }),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_model::validation::{ParsedItem, Rules, parse_event};
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);

    fn provenance() -> Provenance {
        Provenance {
            sender: Sender::jwt("https://issuer.example", "device-7"),
            digest: Digest::try_from("0123456789abcdef0123456789abcdef".to_owned()).unwrap(),
        }
    }

    fn parse_value(value: &serde_json::Value, rules: &Rules, now: OffsetDateTime) -> ParsedItem {
        parse_event(&serde_json::value::RawValue::from_string(value.to_string()).unwrap(), rules, now)
    }

    fn record(value: serde_json::Value) -> StreamRecord {
        let event = parse_value(&value, &Rules::default(), NOW).unwrap();
        StreamRecord { event, received_at: NOW, ingest_id: Some(IngestId::generate()), provenance: None }
    }

    #[test]
    fn processed_event_round_trips_through_an_item() {
        let record = record(
            json!({"id": "e1", "source": "web", "user_id": "u1", "payload": "x", "data": {"big": 1e300, "n": [1, null]}}),
        );
        let processed = ProcessedEvent::from_record(
            record,
            Position { sub_sequence_number: Some(7), ..Position::of_record("shardId-1", "9") },
            datetime!(2026-11-23 12:00:00.5 UTC),
        );
        let mut processed = processed;
        processed.enrichment =
            Some(Enrichment { plan: Label::parse("pro").unwrap(), region: Label::parse("eu").unwrap(), generation: 4 });
        processed.provenance = Some(provenance());
        let item = to_item(&processed);
        assert_eq!(item["sender"].as_s().unwrap(), "jwt:https://issuer.example device-7");
        assert_eq!(item["pk"].as_s().unwrap(), "EVENT#web#e1");
        assert_eq!(item["user_pk"].as_s().unwrap(), "USER#u1");
        assert_eq!(item["user_sk"].as_s().unwrap(), "2026-11-23T12:00:00.000000000Z#web#e1");
        assert_eq!(item["sub_sequence_number"].as_n().unwrap(), "7");
        assert_eq!(from_item(&item).unwrap(), processed);
        processed.sub_sequence_number = None;
        let ordinary = to_item(&processed);
        assert!(!ordinary.contains_key("sub_sequence_number"), "only a user record of an aggregate has one");
        assert_eq!(from_item(&ordinary).unwrap(), processed);
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let item = Item::from([("ab".to_owned(), s("xyz")), ("n".to_owned(), n(12345))]);
        assert_eq!(item_size(&item), 2 + 3 + 1 + 4);
    }

    #[test]
    fn the_cheap_bound_is_never_below_the_largest_item() {
        let longest_label = "x".repeat(64);
        let records = [
            record(json!({"id": "e", "source": "s"})),
            record(json!({
                "id": "i".repeat(128), "source": "s".repeat(64), "type": "t".repeat(64),
                "user_id": longest_label.repeat(2), "payload": "ΐ".repeat(1000), "data": {"k": "v".repeat(500)},
            })),
            StreamRecord { ingest_id: None, ..record(json!({"id": "e", "source": "s", "payload": "ß"})) },
            StreamRecord {
                provenance: Some(Provenance {
                    sender: Sender::jwt("https://issuer.example", &"s".repeat(1000)),
                    ..provenance()
                }),
                ..record(json!({"id": "e", "source": "s"}))
            },
        ];
        for record in &records {
            assert!(stored_size_bound(record) >= largest_stored_size(record), "{record:?}");
        }
        // The fixed part alone: an event of one-character texts and every optional part.
        let small = record(json!({"id": "e", "source": "s", "type": "t", "user_id": "u", "payload": "p", "data": {}}));
        assert!(largest_stored_size(&small) <= FIXED_PART_BOUND, "{}", largest_stored_size(&small));
    }

    #[test]
    fn a_payload_that_grows_when_uppercased_does_not_fit() {
        // ΐ is 2 bytes and uppercases to 6: 130,000 of them are 260 KB sent, 780 KB stored.
        let grows = record(json!({"payload": "ΐ".repeat(130_000)}));
        assert!(grows.event.serialized_len() <= eventline_model::event::MAX_EVENT_BYTES);
        let size = fits_in_an_item(&grows).unwrap_err();
        assert!(size > 700_000, "{size}");
        assert!(fits_in_an_item(&record(json!({"payload": "a".repeat(250_000)}))).is_ok());
    }
}

//! A processed event as a DynamoDB item and back. `data` is kept as JSON text so any JSON
//! object round-trips unchanged (DynamoDB numbers cannot hold every JSON number).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{Event, EventId, EventType, Source, UserId, format_rfc3339};
use crate::keys;
use crate::record::ProcessedEvent;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn to_item(event: &ProcessedEvent) -> Item {
    let e = &event.event;
    let timestamp = format_rfc3339(e.timestamp);
    let mut item = Item::from([
        (keys::PK.to_owned(), s(keys::event_pk(&e.source, &e.id))),
        (keys::SK.to_owned(), s(keys::EVENT_SK)),
        ("id".to_owned(), s(e.id.as_str())),
        ("source".to_owned(), s(e.source.as_str())),
        ("type".to_owned(), s(e.event_type.as_str())),
        ("received_at".to_owned(), s(format_rfc3339(event.received_at))),
        ("processed_at".to_owned(), s(format_rfc3339(event.processed_at))),
        ("latency_ms".to_owned(), n(event.latency_ms)),
        ("shard_id".to_owned(), s(&event.shard_id)),
        ("sequence_number".to_owned(), s(&event.sequence_number)),
    ]);
    if let Some(user) = &e.user_id {
        item.insert("user_id".to_owned(), s(user.as_str()));
        item.insert(keys::USER_PK.to_owned(), s(keys::user_pk(user)));
        item.insert(keys::USER_SK.to_owned(), s(keys::user_sk(&timestamp, &e.source, &e.id)));
    }
    item.insert("timestamp".to_owned(), s(timestamp));
    if let Some(payload) = &e.payload {
        item.insert("payload".to_owned(), s(payload));
    }
    if let Some(data) = &e.data {
        item.insert("data".to_owned(), s(serde_json::Value::Object(data.clone()).to_string()));
    }
    item
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
    let data = match optional("data") {
        None => None,
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| MalformedItem(format!("data: {e}")))?),
    };
    Ok(ProcessedEvent {
        event: Event {
            id: EventId::parse(text("id")?).map_err(bad("id"))?,
            source: Source::parse(text("source")?).map_err(bad("source"))?,
            event_type: EventType::parse(text("type")?).map_err(bad("type"))?,
            timestamp: time("timestamp")?,
            user_id: optional("user_id").map(UserId::parse).transpose().map_err(bad("user_id"))?,
            payload: optional("payload"),
            data,
        },
        received_at: time("received_at")?,
        processed_at: time("processed_at")?,
        latency_ms: item
            .get("latency_ms")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| MalformedItem("latency_ms missing".into()))?,
        shard_id: text("shard_id")?.to_owned(),
        sequence_number: text("sequence_number")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Position, StreamRecord};
    use crate::validation::Rules;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn processed_event_round_trips_through_an_item() {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let event = Event::from_json(
            &json!({"id": "e1", "source": "web", "user_id": "u1", "payload": "x", "data": {"big": 1e300, "n": [1, null]}}),
            &Rules::default(),
            now,
        )
        .unwrap();
        let processed = ProcessedEvent::from_record(
            StreamRecord { event, received_at: now },
            Position { shard_id: "shardId-1".into(), sequence_number: "9".into() },
            datetime!(2026-11-23 12:00:00.5 UTC),
        );
        let item = to_item(&processed);
        assert_eq!(item["pk"].as_s().unwrap(), "EVENT#web#e1");
        assert_eq!(item["user_pk"].as_s().unwrap(), "USER#u1");
        assert_eq!(from_item(&item).unwrap(), processed);
    }
}

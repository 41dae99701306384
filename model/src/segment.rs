//! Segment's tracking API: one call (`track`, `identify`, `page`, `screen`, `group`, `alias`)
//! as an Eventline event, so that the SDKs people already use send to Eventline unchanged.
//!
//! - `id` is the call's `messageId` (one that breaks the id rule is hashed into a UUID, and a
//!   call without one gets a random UUID, as Segment gives it: the SDKs always send one, and
//!   two calls alike, a page's beacons, are two events);
//! - `source` is the write key's source;
//! - `user_id` is `userId`, else `anonymousId`;
//! - `type` is the call type, or for `track` the event name made a type (`Order Completed`
//!   is `order_completed`), the name itself kept;
//! - `data` is the call's `properties` (track, page, screen) or `traits` (identify, group),
//!   member for member as the client wrote them, so the deployment's aggregate measures apply
//!   to them, with the rest of the call (its type, event name, context, ...) under
//!   [`SEGMENT_MEMBER`];
//! - `timestamp` is the call's `timestamp` corrected for the client's clock as Segment does:
//!   received time less the time between `timestamp` and `sentAt` on the client's clock.

use std::fmt::Write as _;

use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::event::{EventId, Source, format_rfc3339};
use crate::identity::Digest;
use crate::json::Members;
use crate::validation::{FieldError, Rule, parse_timestamp};

/// The member of `data` that holds what the call carries besides its properties or traits.
pub const SEGMENT_MEMBER: &str = "$segment";
/// Segment's limit on one call, as its client wrote it.
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// Segment's limit on one request body (after inflating).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// Members of a call that differ between a client's tries, or that are not the call's
/// content: left out of its digest, so a retried call is a duplicate, not a conflict.
const NOT_CONTENT: [&str; 3] = ["messageId", "sentAt", "writeKey"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "track" => Self::Track,
            "identify" => Self::Identify,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Identify => "identify",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }

    /// The member whose object becomes the event's `data`.
    fn payload_member(self) -> Option<&'static str> {
        match self {
            Self::Track | Self::Page | Self::Screen => Some("properties"),
            Self::Identify | Self::Group => Some("traits"),
            Self::Alias => None,
        }
    }
}

/// One call as an event in Eventline's shape, ready for the event rules.
#[derive(Debug)]
pub struct Mapped {
    /// The event as JSON: `id`, `source`, `type`, `timestamp`, `user_id`, `data`.
    pub event: Box<RawValue>,
    /// The digest of the call as its client wrote it, without what changes between tries.
    pub digest: Digest,
}

/// The call `raw` as an event of `source`. `route_call` is the call the route names (`/v1/track`);
/// a call in a batch names its own `type`. `sent_at` is the batch's, which a call's own
/// `sentAt` overrides.
pub fn map_call(
    raw: &RawValue,
    route_call: Option<CallType>,
    source: &Source,
    received_at: OffsetDateTime,
    sent_at: Option<&RawValue>,
) -> Result<Mapped, FieldError> {
    let members =
        Members::parse(raw).map_err(|e| refused("", Rule::Type, format!("a call must be a JSON object ({e})")))?;
    let string = |name: &str| -> Result<Option<String>, FieldError> {
        match members.get(name) {
            None => Ok(None),
            Some(value) if value.get() == "null" => Ok(None),
            Some(value) => serde_json::from_str::<String>(value.get())
                .map(Some)
                .map_err(|_| refused(name, Rule::Type, "must be a string")),
        }
    };
    let call = match (route_call, string("type")?) {
        (Some(call), _) => call,
        (None, Some(name)) => CallType::parse(&name)
            .ok_or_else(|| refused("type", Rule::Format, "must be track, identify, page, screen, group or alias"))?,
        (None, None) => return Err(refused("type", Rule::Required, "a call in a batch names its type")),
    };
    let user = match (string("userId")?, string("anonymousId")?) {
        (Some(user), _) if !user.is_empty() => user,
        (_, Some(anonymous)) if !anonymous.is_empty() => anonymous,
        _ => return Err(refused("userId", Rule::Required, "a call needs userId or anonymousId")),
    };
    let digest = Digest::of_object_without(raw, &NOT_CONTENT);
    let id = match string("messageId")? {
        Some(id) => EventId::parse(id.as_str()).unwrap_or_else(|_| EventId::derived_from(&id)),
        None => EventId::generate(),
    };
    let event_type = match call {
        CallType::Track => {
            let name =
                string("event")?.ok_or_else(|| refused("event", Rule::Required, "a track call names its event"))?;
            type_of_event_name(&name)
        }
        other => other.name().to_owned(),
    };
    let timestamp = corrected_timestamp(members.get("timestamp"), members.get("sentAt").or(sent_at), received_at)?;

    let payload = call.payload_member();
    let mut data = String::with_capacity(raw.get().len() + 32);
    data.push('{');
    if let Some(object) = payload.and_then(|name| members.get(name)).filter(|v| v.get() != "null") {
        let fields = Members::parse(object)
            .map_err(|_| refused(payload.unwrap_or_default(), Rule::Type, "must be a JSON object"))?;
        for (key, value) in fields.0.iter().filter(|(key, _)| key != SEGMENT_MEMBER) {
            push_member(&mut data, key, value.get());
        }
    }
    let mut rest = String::with_capacity(raw.get().len());
    rest.push('{');
    push_member(&mut rest, "type", &json_string(call.name()));
    for (key, value) in &members.0 {
        let skipped = Some(key.as_ref()) == payload || matches!(key.as_ref(), "type" | "messageId" | "writeKey");
        if !skipped {
            push_member(&mut rest, key, value.get());
        }
    }
    rest.push('}');
    push_member(&mut data, SEGMENT_MEMBER, &rest);
    data.push('}');

    let mut event = String::with_capacity(data.len() + 256);
    event.push('{');
    push_member(&mut event, "id", &json_string(id.as_str()));
    push_member(&mut event, "source", &json_string(source.as_str()));
    push_member(&mut event, "type", &json_string(&event_type));
    push_member(&mut event, "timestamp", &json_string(&format_rfc3339(timestamp)));
    push_member(&mut event, "user_id", &json_string(&user));
    push_member(&mut event, "data", &data);
    event.push('}');
    let event = RawValue::from_string(event).map_err(|e| refused("", Rule::Format, e.to_string()))?;
    Ok(Mapped { event, digest })
}

/// A track call's event name as an event type: lowercase, each run of other characters one
/// `_`, without `_` at either end, at most 64 bytes; `track` when nothing is left.
pub fn type_of_event_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(64));
    for c in name.chars().flat_map(char::to_lowercase) {
        let kept = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
        if kept {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let cut = trimmed.char_indices().nth(64).map_or(trimmed.len(), |(i, _)| i);
    match trimmed[..cut].trim_end_matches('_') {
        "" => "track".to_owned(),
        kept => kept.to_owned(),
    }
}

/// When the call happened, on the server's clock: `received_at - (sent_at - timestamp)`
/// when the client gave both, its `timestamp` when it gave no `sentAt`, and `received_at`
/// when it gave no `timestamp`.
fn corrected_timestamp(
    timestamp: Option<&RawValue>,
    sent_at: Option<&RawValue>,
    received_at: OffsetDateTime,
) -> Result<OffsetDateTime, FieldError> {
    let read = |name: &str, raw: Option<&RawValue>| -> Result<Option<OffsetDateTime>, FieldError> {
        match raw.filter(|v| v.get() != "null") {
            None => Ok(None),
            Some(raw) => parse_timestamp(raw).map(Some).map_err(|(rule, message)| refused(name, rule, message)),
        }
    };
    let Some(timestamp) = read("timestamp", timestamp)? else { return Ok(received_at) };
    let Some(sent_at) = read("sentAt", sent_at)? else { return Ok(timestamp) };
    received_at
        .checked_sub(sent_at - timestamp)
        .filter(|corrected| (1..=9999).contains(&corrected.year()))
        .ok_or_else(|| refused("timestamp", Rule::Range, "corrected by sentAt, it lies outside 0001-9999"))
}

fn refused(field: &str, rule: Rule, message: impl Into<String>) -> FieldError {
    FieldError::new(field, rule, message)
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Appends `"key":value` to an object being written, with a comma after its first member.
fn push_member(out: &mut String, key: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    let _ = write!(out, "{}:{value}", json_string(key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use time::macros::datetime;

    const RECEIVED: OffsetDateTime = datetime!(2026-12-07 12:00:00 UTC);

    fn web() -> Source {
        Source::parse("web").unwrap()
    }

    fn map(call: Value, route: Option<CallType>) -> Result<Value, FieldError> {
        let raw = RawValue::from_string(call.to_string()).unwrap();
        map_call(&raw, route, &web(), RECEIVED, None).map(|m| serde_json::from_str(m.event.get()).unwrap())
    }

    #[test]
    fn a_track_call_is_an_event_of_the_keys_source_with_its_properties_as_data() {
        let event = map(
            json!({"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u-1",
                   "anonymousId": "a-1", "properties": {"revenue": 12.5, "plan": "pro"},
                   "context": {"library": {"name": "analytics-python"}}, "writeKey": "secret"}),
            None,
        )
        .unwrap();
        assert_eq!(event["id"], "m-1");
        assert_eq!(event["source"], "web");
        assert_eq!(event["type"], "order_completed");
        assert_eq!(event["user_id"], "u-1");
        assert_eq!(event["timestamp"], "2026-12-07T12:00:00Z", "no timestamp: when it was received");
        assert_eq!(event["data"]["revenue"], 12.5);
        assert_eq!(event["data"]["plan"], "pro");
        let segment = &event["data"][SEGMENT_MEMBER];
        assert_eq!(segment["type"], "track");
        assert_eq!(segment["event"], "Order Completed");
        assert_eq!(segment["context"]["library"]["name"], "analytics-python");
        assert_eq!(segment["anonymousId"], "a-1");
        assert!(segment.get("properties").is_none() && segment.get("writeKey").is_none());
        assert!(segment.get("messageId").is_none());
    }

    #[test]
    fn identify_and_group_keep_traits_and_alias_keeps_its_ids() {
        let identify =
            map(json!({"userId": "u", "traits": {"email": "a@b.example"}, "messageId": "i"}), Some(CallType::Identify))
                .unwrap();
        assert_eq!(identify["type"], "identify");
        assert_eq!(identify["data"]["email"], "a@b.example");
        let group =
            map(json!({"type": "group", "anonymousId": "anon", "groupId": "g-1", "traits": {"seats": 5}}), None)
                .unwrap();
        assert_eq!((group["type"].as_str(), group["user_id"].as_str()), (Some("group"), Some("anon")));
        assert_eq!(group["data"]["seats"], 5);
        assert_eq!(group["data"][SEGMENT_MEMBER]["groupId"], "g-1");
        let alias = map(json!({"type": "alias", "userId": "new", "previousId": "old"}), None).unwrap();
        assert_eq!(alias["data"][SEGMENT_MEMBER]["previousId"], "old");
        let page =
            map(json!({"type": "page", "userId": "u", "name": "Home", "properties": {"path": "/"}}), None).unwrap();
        assert_eq!((page["type"].as_str(), page["data"]["path"].as_str()), (Some("page"), Some("/")));
        assert_eq!(page["data"][SEGMENT_MEMBER]["name"], "Home");
    }

    #[test]
    fn numbers_are_kept_as_the_client_wrote_them() {
        let raw = RawValue::from_string(
            r#"{"type":"track","event":"e","userId":"u","properties":{"big":12345678901234567890123,"f":1.50}}"#.into(),
        )
        .unwrap();
        let mapped = map_call(&raw, None, &web(), RECEIVED, None).unwrap();
        assert!(mapped.event.get().contains(r#""big":12345678901234567890123"#), "{}", mapped.event.get());
        assert!(mapped.event.get().contains(r#""f":1.50"#));
    }

    #[test]
    fn the_timestamp_is_corrected_for_the_clients_clock() {
        // The client's clock is an hour behind: it sent at 11:00:10 what happened at 11:00:00.
        let call = json!({"type": "track", "event": "e", "userId": "u",
                          "timestamp": "2026-12-07T11:00:00Z", "sentAt": "2026-12-07T11:00:10Z"});
        assert_eq!(map(call, None).unwrap()["timestamp"], "2026-12-07T11:59:50Z");
        let batch_sent_at = RawValue::from_string(r#""2026-12-07T11:00:10Z""#.into()).unwrap();
        let raw = RawValue::from_string(
            r#"{"type":"track","event":"e","userId":"u","timestamp":"2026-12-07T11:00:00Z"}"#.into(),
        )
        .unwrap();
        let mapped = map_call(&raw, None, &web(), RECEIVED, Some(&batch_sent_at)).unwrap();
        assert!(mapped.event.get().contains("2026-12-07T11:59:50Z"), "the batch's sentAt applies");
        let without_sent_at =
            json!({"type": "track", "event": "e", "userId": "u", "timestamp": "2026-12-07T11:00:00Z"});
        assert_eq!(map(without_sent_at, None).unwrap()["timestamp"], "2026-12-07T11:00:00Z");
        for (timestamp, sent_at) in
            [("9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z"), ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z")]
        {
            let far = json!({"type": "track", "event": "e", "userId": "u", "timestamp": timestamp, "sentAt": sent_at});
            let error = map(far, None).unwrap_err();
            assert_eq!((error.field.as_str(), error.rule), ("timestamp", Rule::Range), "{timestamp} sent at {sent_at}");
        }
        let bad = json!({"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"});
        assert_eq!(map(bad, None).unwrap_err().field, "timestamp");
    }

    #[test]
    fn a_retry_with_another_sent_at_has_the_same_digest_and_id() {
        let first = RawValue::from_string(
            r#"{"type":"track","event":"e","userId":"u","sentAt":"2026-12-07T11:00:00Z"}"#.into(),
        )
        .unwrap();
        let retry = RawValue::from_string(
            r#"{"sentAt":"2026-12-07T11:00:09Z","userId":"u","event":"e","type":"track"}"#.into(),
        )
        .unwrap();
        let (a, b) = (
            map_call(&first, None, &web(), RECEIVED, None).unwrap(),
            map_call(&retry, None, &web(), RECEIVED, None).unwrap(),
        );
        assert_eq!(a.digest, b.digest);
        let id = |m: &Mapped| serde_json::from_str::<Value>(m.event.get()).unwrap()["id"].clone();
        assert_ne!(id(&a), id(&b), "no messageId: a random id, so two beacons alike are two events");
    }

    #[test]
    fn a_message_id_outside_the_id_rule_is_hashed_into_one() {
        let event = map(json!({"type": "identify", "userId": "u", "messageId": "has space"}), None).unwrap();
        assert_eq!(event["id"], EventId::derived_from("has space").as_str());
    }

    #[test]
    fn calls_that_can_never_be_stored_are_refused_naming_the_field() {
        let field = |call: Value| map(call, None).unwrap_err().field;
        assert_eq!(field(json!({"type": "track", "event": "e"})), "userId");
        assert_eq!(field(json!({"type": "track", "userId": "u"})), "event");
        assert_eq!(field(json!({"event": "e", "userId": "u"})), "type");
        assert_eq!(field(json!({"type": "purchase", "userId": "u"})), "type");
        assert_eq!(field(json!({"type": "track", "event": "e", "userId": 7})), "userId");
        assert_eq!(field(json!({"type": "track", "event": "e", "userId": "u", "properties": [1]})), "properties");
        assert_eq!(field(json!(["not", "an", "object"])), "");
    }

    #[test]
    fn event_names_become_types() {
        assert_eq!(type_of_event_name("Order Completed"), "order_completed");
        assert_eq!(type_of_event_name("  Signed Up!! "), "signed_up");
        assert_eq!(type_of_event_name("checkout.step-2"), "checkout.step-2");
        assert_eq!(type_of_event_name("Überweisung"), "berweisung");
        assert_eq!(type_of_event_name("!!!"), "track");
        assert_eq!(type_of_event_name(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn properties_cannot_forge_the_segment_member() {
        let event =
            map(json!({"type": "track", "event": "e", "userId": "u", "properties": {SEGMENT_MEMBER: "forged"}}), None)
                .unwrap();
        assert_eq!(event["data"][SEGMENT_MEMBER]["type"], "track");
    }
}

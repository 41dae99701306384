//! The event a client sends, parsed once into types that cannot hold invalid values.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::validation::{FieldError, Rules};

/// Largest serialized event, in bytes.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

const ID_RULE: &str = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";
const TOKEN_RULE: &str = "must be 1-64 characters of a-z 0-9 _ . -";
const USER_ID_RULE: &str = "must be 1-128 characters without control characters";

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = &'static str;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
    };
}

string_newtype!(
    /// Client-chosen event id: 1-128 characters of `[A-Za-z0-9._:-]`.
    EventId
);
string_newtype!(
    /// Where an event comes from: 1-64 characters of `[a-z0-9_.-]`.
    Source
);
string_newtype!(
    /// What kind of event it is: 1-64 characters of `[a-z0-9_.-]`.
    EventType
);
string_newtype!(
    /// The user an event belongs to: 1-128 characters, no control characters.
    UserId
);

impl EventId {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        let ok = (1..=128).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok { Ok(Self(value)) } else { Err(ID_RULE) }
    }

    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

fn is_token(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

impl Source {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        if is_token(&value) { Ok(Self(value)) } else { Err(TOKEN_RULE) }
    }

    pub fn default_source() -> Self {
        Self("api".to_owned())
    }
}

impl EventType {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        if is_token(&value) { Ok(Self(value)) } else { Err(TOKEN_RULE) }
    }

    pub fn default_type() -> Self {
        Self("event".to_owned())
    }
}

impl UserId {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        let chars = value.chars().count();
        if (1..=128).contains(&chars) && !value.chars().any(char::is_control) {
            Ok(Self(value))
        } else {
            Err(USER_ID_RULE)
        }
    }
}

/// A valid event with its defaults filled in: what ingest puts on the stream.
///
/// Deserializing checks each field's format; unknown fields are rejected by
/// [`Event::from_json`], the parser for client input, and ignored on the stream so a newer
/// producer does not turn records into poison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub source: Source,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// The events a request carried, each parsed on its own so one bad item does not spoil the rest.
pub type ParsedItem = Result<Event, Vec<FieldError>>;

impl Event {
    /// Identity of an event: the same `(source, id)` is stored and counted once.
    pub fn identity(&self) -> (&Source, &EventId) {
        (&self.source, &self.id)
    }

    /// Kinesis partition key: the user when known, so a user's events stay in order.
    pub fn partition_key(&self) -> String {
        match &self.user_id {
            Some(user) => user.as_str().to_owned(),
            None => format!("{}/{}", self.source, self.id),
        }
    }

    /// Validates one JSON value as an event, collecting every problem rather than the first.
    pub fn from_json(value: &Value, rules: &Rules, now: OffsetDateTime) -> ParsedItem {
        let Value::Object(fields) = value else {
            return Err(vec![FieldError::new("", "type", "an event must be a JSON object")]);
        };
        let mut errors = Vec::new();

        for name in fields.keys() {
            if !matches!(name.as_str(), "id" | "source" | "type" | "timestamp" | "user_id" | "payload" | "data") {
                errors.push(FieldError::new(name, "unknown_field", "is not a known field"));
            }
        }

        let id = string_field(fields, "id", &mut errors, EventId::parse);
        let source = string_field(fields, "source", &mut errors, Source::parse);
        let event_type = string_field(fields, "type", &mut errors, EventType::parse);
        let user_id = string_field(fields, "user_id", &mut errors, UserId::parse);
        let payload = string_field(fields, "payload", &mut errors, Ok::<_, &'static str>);
        let data = match present(fields, "data") {
            None => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(_) => {
                errors.push(FieldError::new("data", "type", "must be a JSON object"));
                None
            }
        };
        let timestamp = match present(fields, "timestamp") {
            None => Some(now),
            Some(value) => match parse_timestamp(value) {
                Ok(ts) => Some(ts),
                Err(message) => {
                    errors.push(FieldError::new("timestamp", "format", message));
                    None
                }
            },
        };

        if let Some(ts) = timestamp
            && ts - now > rules.max_future_skew
        {
            errors.push(FieldError::new(
                "timestamp",
                "future",
                format!("must not be more than {} seconds in the future", rules.max_future_skew.whole_seconds()),
            ));
        }
        if let Some(Some(t)) = &event_type
            && !rules.type_allowed(t)
        {
            errors.push(FieldError::new("type", "not_allowed", "is not in the allowed types"));
        }
        if let Some(Some(s)) = &source
            && !rules.source_allowed(s)
        {
            errors.push(FieldError::new("source", "not_allowed", "is not in the allowed sources"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let event = Event {
            id: id.flatten().unwrap_or_else(EventId::generate),
            source: source.flatten().unwrap_or_else(Source::default_source),
            event_type: event_type.flatten().unwrap_or_else(EventType::default_type),
            timestamp: timestamp.unwrap_or(now),
            user_id: user_id.flatten(),
            payload: payload.flatten(),
            data,
        };
        let size = event.serialized_len();
        if size > MAX_EVENT_BYTES {
            return Err(vec![FieldError::new(
                "",
                "size",
                format!("event is {size} bytes serialized; the limit is {MAX_EVENT_BYTES}"),
            )]);
        }
        Ok(event)
    }

    pub fn serialized_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |bytes| bytes.len())
    }
}

/// A field that is present and not null; null is treated as absent.
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// `None` when absent, `Some(None)` when present but invalid (the error is recorded).
fn string_field<T>(
    fields: &Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(String) -> Result<T, &'static str>,
) -> Option<Option<T>> {
    let value = present(fields, name)?;
    let Value::String(text) = value else {
        errors.push(FieldError::new(name, "type", "must be a string"));
        return Some(None);
    };
    match parse(text.clone()) {
        Ok(parsed) => Some(Some(parsed)),
        Err(rule) => {
            errors.push(FieldError::new(name, "format", rule));
            Some(None)
        }
    }
}

/// Integers at or above this are read as epoch milliseconds; below, as seconds
/// (10^11 seconds is the year 5138, 10^11 milliseconds is 1973).
const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

fn parse_timestamp(value: &Value) -> Result<OffsetDateTime, String> {
    const RULE: &str = "must be an RFC 3339 string or Unix epoch seconds or milliseconds";
    match value {
        Value::String(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(|ts| ts.to_offset(time::UtcOffset::UTC))
            .map_err(|_| RULE.to_owned()),
        Value::Number(number) => {
            let Some(epoch) = number.as_i64().filter(|n| *n >= 0) else {
                return Err(format!("{RULE} (a non-negative integer)"));
            };
            let nanos = if epoch >= EPOCH_MILLIS_THRESHOLD {
                i128::from(epoch) * 1_000_000
            } else {
                i128::from(epoch) * 1_000_000_000
            };
            OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| format!("{RULE} (out of range)"))
        }
        _ => Err(RULE.to_owned()),
    }
}

/// Formats a time as RFC 3339 in UTC, the one text form the pipeline writes.
pub fn format_rfc3339(ts: OffsetDateTime) -> String {
    ts.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| ts.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);

    fn parse(value: Value) -> ParsedItem {
        Event::from_json(&value, &Rules::default(), NOW)
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        parse(value).expect_err("should be rejected").into_iter().map(|e| (e.field, e.rule)).collect()
    }

    #[test]
    fn when_fields_are_absent_should_fill_defaults() {
        let event = parse(json!({})).unwrap();
        assert_eq!(event.source.as_str(), "api");
        assert_eq!(event.event_type.as_str(), "event");
        assert_eq!(event.timestamp, NOW);
        assert!(uuid::Uuid::parse_str(event.id.as_str()).is_ok());
        assert_eq!(event.user_id, None);
    }

    #[test]
    fn when_all_fields_valid_should_keep_them() {
        let event = parse(json!({
            "id": "A-1.b_2:c", "source": "iot_device", "type": "sensor_data",
            "timestamp": "2026-11-23T13:00:00+01:00", "user_id": "ü-1", "payload": "hi",
            "data": {"k": [1, 2]}
        }))
        .unwrap();
        assert_eq!(event.id.as_str(), "A-1.b_2:c");
        assert_eq!(event.timestamp, NOW);
        assert_eq!(event.user_id.unwrap().as_str(), "ü-1");
        assert_eq!(event.data.unwrap()["k"], json!([1, 2]));
    }

    #[test]
    fn id_length_boundaries() {
        assert!(parse(json!({"id": "a".repeat(128)})).is_ok());
        assert_eq!(errors(json!({"id": "a".repeat(129)})), [("id".into(), "format".into())]);
        assert_eq!(errors(json!({"id": ""})), [("id".into(), "format".into())]);
        assert_eq!(errors(json!({"id": "a b"})), [("id".into(), "format".into())]);
        assert_eq!(errors(json!({"id": "a#b"})), [("id".into(), "format".into())]);
    }

    #[test]
    fn source_and_type_rules() {
        assert!(parse(json!({"source": "a".repeat(64), "type": "x.y-z_1"})).is_ok());
        assert_eq!(errors(json!({"source": "a".repeat(65)})), [("source".into(), "format".into())]);
        assert_eq!(errors(json!({"source": "Web"})), [("source".into(), "format".into())]);
        assert_eq!(errors(json!({"type": ""})), [("type".into(), "format".into())]);
        assert_eq!(errors(json!({"type": "a/b"})), [("type".into(), "format".into())]);
    }

    #[test]
    fn user_id_rules() {
        assert!(parse(json!({"user_id": "é".repeat(128)})).is_ok());
        assert_eq!(errors(json!({"user_id": "é".repeat(129)})), [("user_id".into(), "format".into())]);
        assert_eq!(errors(json!({"user_id": "a\u{7}b"})), [("user_id".into(), "format".into())]);
        assert_eq!(errors(json!({"user_id": ""})), [("user_id".into(), "format".into())]);
    }

    #[test]
    fn when_field_has_wrong_type_should_name_it() {
        let got = errors(json!({"id": 5, "payload": 1, "data": [1], "source": true}));
        assert_eq!(
            got,
            [
                ("id".into(), "type".into()),
                ("source".into(), "type".into()),
                ("payload".into(), "type".into()),
                ("data".into(), "type".into()),
            ]
        );
    }

    #[test]
    fn when_unknown_field_should_reject_naming_it() {
        let err = parse(json!({"colour": "red"})).unwrap_err();
        assert_eq!(err[0].field, "colour");
        assert_eq!(err[0].rule, "unknown_field");
    }

    #[test]
    fn when_not_an_object_should_reject() {
        assert_eq!(errors(json!("text")), [("".into(), "type".into())]);
    }

    #[test]
    fn null_is_treated_as_absent() {
        let event = parse(json!({"user_id": null, "source": null})).unwrap();
        assert_eq!(event.user_id, None);
        assert_eq!(event.source.as_str(), "api");
    }

    #[test]
    fn timestamp_accepts_epoch_seconds_and_millis() {
        let secs = parse(json!({"timestamp": 1_700_000_000})).unwrap();
        let millis = parse(json!({"timestamp": 1_700_000_000_123_i64})).unwrap();
        assert_eq!(secs.timestamp.unix_timestamp(), 1_700_000_000);
        assert_eq!(millis.timestamp.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
    }

    #[test]
    fn timestamp_rejects_bad_forms() {
        for bad in [json!("yesterday"), json!(-1), json!(1.5), json!({}), json!("2026-11-23")] {
            assert_eq!(errors(json!({"timestamp": bad})), [("timestamp".into(), "format".into())]);
        }
    }

    #[test]
    fn timestamp_future_skew_boundary() {
        assert!(parse(json!({"timestamp": "2026-11-23T12:05:00Z"})).is_ok());
        assert_eq!(errors(json!({"timestamp": "2026-11-23T12:05:01Z"})), [("timestamp".into(), "future".into())]);
        assert!(parse(json!({"timestamp": "1999-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn when_event_over_256_kib_should_reject_with_size_rule() {
        let fits = MAX_EVENT_BYTES - 200;
        assert!(parse(json!({"id": "x", "payload": "a".repeat(fits)})).is_ok());
        let err = parse(json!({"payload": "a".repeat(MAX_EVENT_BYTES)})).unwrap_err();
        assert_eq!(err[0].rule, "size");
    }

    #[test]
    fn allow_lists_restrict_types_and_sources() {
        let rules = Rules {
            allowed_types: vec![EventType::parse("click").unwrap()],
            allowed_sources: vec![Source::parse("web").unwrap()],
            ..Rules::default()
        };
        assert!(Event::from_json(&json!({"type": "click", "source": "web"}), &rules, NOW).is_ok());
        let err = Event::from_json(&json!({"type": "view", "source": "app"}), &rules, NOW).unwrap_err();
        let rules: Vec<_> = err.iter().map(|e| (e.field.as_str(), e.rule.as_str())).collect();
        assert_eq!(rules, [("type", "not_allowed"), ("source", "not_allowed")]);
    }

    #[test]
    fn partition_key_prefers_user() {
        let with_user = parse(json!({"user_id": "u1", "id": "e1"})).unwrap();
        let without = parse(json!({"id": "e1", "source": "web"})).unwrap();
        assert_eq!(with_user.partition_key(), "u1");
        assert_eq!(without.partition_key(), "web/e1");
    }

    #[test]
    fn serialized_event_round_trips() {
        let event = parse(json!({"id": "e1", "payload": "x", "data": {"a": 1}})).unwrap();
        let back: Event = serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }
}

//! Validating client input: one event, as raw JSON, into an [`Event`], collecting every
//! problem rather than the first; the rules deployments tune; and the error a client sees
//! for one field.

use serde::Serialize;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::event::{
    Event, EventId, EventType, MAX_EVENT_BYTES, RawObject, Source, TIMESTAMP_RANGE_RULE, UserId, checked_utc,
};
use crate::json::{JsonError, Members, check_unique_keys};

/// Longest field name echoed back in an error; longer names are cut, so a response stays
/// small whatever a client sends.
pub const MAX_ECHOED_NAME_CHARS: usize = 64;

/// Stable codes of the rules a field can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The JSON type is wrong (a number where a string belongs).
    Type,
    /// The value's form is wrong.
    Format,
    /// The value is well-formed but outside the range the pipeline can store.
    Range,
    UnknownField,
    DuplicateKey,
    /// A timestamp too far in the future.
    Future,
    /// A type or source outside the deployment's allow-list.
    NotAllowed,
    /// The event, or the item it would be stored as, is too large.
    Size,
    /// A member that has no default is missing (a Segment call's `userId` or `event`).
    Required,
}

/// One problem with one field: `field` names it (empty for the event as a whole),
/// `rule` is a stable code, `message` says what the rule is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub rule: Rule,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, rule: Rule, message: impl Into<String>) -> Self {
        Self { field: echo(field, MAX_ECHOED_NAME_CHARS), rule, message: message.into() }
    }
}

/// Client text cut to `max` characters (with an ellipsis), for echoing in responses.
pub fn echo(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{} {}", self.field, self.message) }
    }
}

/// Deployment-specific rules; the defaults accept any type and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How far in the future a timestamp may be (clock-skew guard).
    pub max_future_skew: Duration,
    /// Empty means any type.
    pub allowed_types: Vec<EventType>,
    /// Empty means any source.
    pub allowed_sources: Vec<Source>,
}

impl Default for Rules {
    fn default() -> Self {
        Self { max_future_skew: Duration::minutes(5), allowed_types: Vec::new(), allowed_sources: Vec::new() }
    }
}

impl Rules {
    pub fn type_allowed(&self, event_type: &EventType) -> bool {
        self.allowed_types.is_empty() || self.allowed_types.contains(event_type)
    }

    pub fn source_allowed(&self, source: &Source) -> bool {
        self.allowed_sources.is_empty() || self.allowed_sources.contains(source)
    }

    /// The rules a record already in ingest's shape must still meet, so that a producer
    /// writing that shape to the stream directly gets past nothing ingest enforces: the
    /// allow-lists, a timestamp within the skew of when it was received, and a receipt time
    /// within the skew of when the stream took the record (`arrived`, when known).
    pub fn check_received(
        &self,
        event: &Event,
        received_at: OffsetDateTime,
        arrived: Option<OffsetDateTime>,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let future = |field: &str| {
            FieldError::new(
                field,
                Rule::Future,
                format!("must not be more than {} seconds in the future", self.max_future_skew.whole_seconds()),
            )
        };
        if event.timestamp - received_at > self.max_future_skew {
            errors.push(future("timestamp"));
        }
        if arrived.is_some_and(|arrived| received_at - arrived > self.max_future_skew) {
            errors.push(future("received_at"));
        }
        if !self.type_allowed(&event.event_type) {
            errors.push(FieldError::new("type", Rule::NotAllowed, "is not in the allowed types"));
        }
        if !self.source_allowed(&event.source) {
            errors.push(FieldError::new("source", Rule::NotAllowed, "is not in the allowed sources"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// An event, or every problem found with it.
pub type ParsedItem = Result<Event, Vec<FieldError>>;

const FIELDS: [&str; 7] = ["id", "source", "type", "timestamp", "user_id", "payload", "data"];

/// Validates one JSON value as an event: unknown fields and repeated keys anywhere are
/// errors, `null` counts as absent, `data` is kept byte for byte.
pub fn parse_event(raw: &RawValue, rules: &Rules, now: OffsetDateTime) -> ParsedItem {
    parse_event_with_id(raw, rules, now, EventId::generate)
}

/// [`parse_event`] with `default_id` naming an event that names none, for callers that must
/// give the same event the same id every time they read it.
pub fn parse_event_with_id(
    raw: &RawValue,
    rules: &Rules,
    now: OffsetDateTime,
    default_id: impl FnOnce() -> EventId,
) -> ParsedItem {
    let members = match Members::parse(raw) {
        Ok(members) => members,
        Err(JsonError::DuplicateKey(key)) => {
            return Err(vec![FieldError::new(&key, Rule::DuplicateKey, "appears more than once")]);
        }
        Err(_) => return Err(vec![FieldError::new("", Rule::Type, "an event must be a JSON object")]),
    };
    let mut errors = Vec::new();
    for (name, _) in &members.0 {
        if !FIELDS.contains(&name.as_ref()) {
            errors.push(FieldError::new(name, Rule::UnknownField, "is not a known field"));
        }
    }
    let present = |name: &str| members.get(name).filter(|raw| raw.get() != "null");

    let id = string_field(present("id"), "id", &mut errors, EventId::parse);
    let source = string_field(present("source"), "source", &mut errors, Source::parse);
    let event_type = string_field(present("type"), "type", &mut errors, EventType::parse);
    let user_id = string_field(present("user_id"), "user_id", &mut errors, UserId::parse);
    let payload = string_field(present("payload"), "payload", &mut errors, Ok::<_, &'static str>);
    let data = match present("data") {
        None => None,
        Some(raw) if !raw.get().starts_with('{') => {
            errors.push(FieldError::new("data", Rule::Type, "must be a JSON object"));
            None
        }
        Some(raw) => match check_unique_keys(raw, "data") {
            Ok(()) => Some(RawObject::new_unchecked(raw.to_owned())),
            Err(JsonError::DuplicateKey(path)) => {
                errors.push(FieldError::new(&path, Rule::DuplicateKey, "appears more than once"));
                None
            }
            Err(error) => {
                errors.push(FieldError::new("data", Rule::Format, echo(&error.to_string(), 200)));
                None
            }
        },
    };
    let timestamp = match present("timestamp") {
        None => Some(now),
        Some(raw) => match parse_timestamp(raw) {
            Ok(ts) => Some(ts),
            Err((rule, message)) => {
                errors.push(FieldError::new("timestamp", rule, message));
                None
            }
        },
    };

    if let Some(ts) = timestamp
        && ts - now > rules.max_future_skew
    {
        errors.push(FieldError::new(
            "timestamp",
            Rule::Future,
            format!("must not be more than {} seconds in the future", rules.max_future_skew.whole_seconds()),
        ));
    }
    if let Some(Some(t)) = &event_type
        && !rules.type_allowed(t)
    {
        errors.push(FieldError::new("type", Rule::NotAllowed, "is not in the allowed types"));
    }
    if let Some(Some(s)) = &source
        && !rules.source_allowed(s)
    {
        errors.push(FieldError::new("source", Rule::NotAllowed, "is not in the allowed sources"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let event = Event {
        id: id.flatten().unwrap_or_else(default_id),
        source: source.flatten().unwrap_or_else(Source::default_source),
        event_type: event_type.flatten().unwrap_or_else(EventType::default_type),
        timestamp: timestamp.unwrap_or(now),
        user_id: user_id.flatten(),
        payload: payload.flatten(),
        data,
    };
    // The stored form is the event's own text at most, plus what defaults and a timestamp
    // written as a number add: only an event near the limit is measured.
    if raw.get().len() + SERIALIZED_GROWTH_BOUND <= MAX_EVENT_BYTES {
        return Ok(event);
    }
    let size = event.serialized_len();
    if size > MAX_EVENT_BYTES {
        return Err(vec![FieldError::new(
            "",
            Rule::Size,
            format!("event is {size} bytes serialized; the limit is {MAX_EVENT_BYTES}"),
        )]);
    }
    Ok(event)
}

/// The most an event's stored form can exceed the text it was read from: a generated id,
/// the default source and type with their names, and a timestamp added or rewritten from a
/// number as RFC 3339 (every string is written no longer than a client can write it).
const SERIALIZED_GROWTH_BOUND: usize = 512;

/// `None` when absent, `Some(None)` when present but invalid (the error is recorded).
fn string_field<T>(
    raw: Option<&RawValue>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(String) -> Result<T, &'static str>,
) -> Option<Option<T>> {
    let raw = raw?;
    let Ok(text) = serde_json::from_str::<String>(raw.get()) else {
        errors.push(FieldError::new(name, Rule::Type, "must be a string"));
        return Some(None);
    };
    match parse(text) {
        Ok(parsed) => Some(Some(parsed)),
        Err(rule) => {
            errors.push(FieldError::new(name, Rule::Format, rule));
            Some(None)
        }
    }
}

/// Integers at or above this are read as epoch milliseconds; below, as seconds
/// (10^11 seconds is the year 5138, 10^11 milliseconds is 1973).
const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

const TIMESTAMP_RULE: &str = "must be an RFC 3339 string or Unix epoch seconds or milliseconds";

/// A timestamp in UTC, within the years every stored form can hold.
pub fn parse_timestamp(raw: &RawValue) -> Result<OffsetDateTime, (Rule, String)> {
    let text = raw.get();
    let parsed = if text.starts_with('"') {
        let Ok(text) = serde_json::from_str::<String>(text) else {
            return Err((Rule::Format, TIMESTAMP_RULE.to_owned()));
        };
        OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| (Rule::Format, TIMESTAMP_RULE.to_owned()))?
    } else {
        let Some(epoch) = serde_json::from_str::<i64>(text).ok().filter(|n| *n >= 0) else {
            return Err((Rule::Format, format!("{TIMESTAMP_RULE} (a non-negative integer)")));
        };
        let nanos = if epoch >= EPOCH_MILLIS_THRESHOLD {
            i128::from(epoch) * 1_000_000
        } else {
            i128::from(epoch) * 1_000_000_000
        };
        OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| (Rule::Range, TIMESTAMP_RANGE_RULE.to_owned()))?
    };
    checked_utc(parsed).ok_or_else(|| (Rule::Range, TIMESTAMP_RANGE_RULE.to_owned()))
}

/// Parses a JSON text the tests write with `json!`.
#[cfg(test)]
pub(crate) fn parse_value(value: &serde_json::Value, rules: &Rules, now: OffsetDateTime) -> ParsedItem {
    let raw = RawValue::from_string(value.to_string()).unwrap();
    parse_event(&raw, rules, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);

    fn parse(value: Value) -> ParsedItem {
        parse_value(&value, &Rules::default(), NOW)
    }

    fn parse_text(text: &str) -> ParsedItem {
        parse_event(&RawValue::from_string(text.to_owned()).unwrap(), &Rules::default(), NOW)
    }

    fn errors(value: Value) -> Vec<(String, Rule)> {
        parse(value).expect_err("should be rejected").into_iter().map(|e| (e.field, e.rule)).collect()
    }

    #[test]
    fn an_events_stored_form_outgrows_its_text_by_less_than_the_bound() {
        let texts = [
            "{}".to_owned(),
            r#"{"timestamp":0}"#.to_owned(),
            r#"{"timestamp":1700000000123,"payload":"\n\u0001\/"}"#.to_owned(),
            r#"{"timestamp":"2026-11-23T11:00:00.123456789+05:00","user_id":"u"}"#.to_owned(),
        ];
        for text in texts {
            let event = parse_text(&text).unwrap();
            assert!(event.serialized_len() <= text.len() + SERIALIZED_GROWTH_BOUND, "{text}");
        }
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
        assert_eq!(event.data.unwrap().get(), r#"{"k":[1,2]}"#);
    }

    #[test]
    fn data_is_carried_byte_for_byte() {
        let text = r#"{"a":1e15,"b":12345678901234567890123,"c":-0, "d" : "\u00e9"}"#;
        let event = parse_text(&format!(r#"{{"id":"x","data":{text}}}"#)).unwrap();
        assert_eq!(event.data.as_ref().unwrap().get(), text);
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(text), "{json}");
    }

    #[test]
    fn when_a_key_repeats_should_reject_naming_it() {
        let err = parse_text(r#"{"id":"a1","id":"a2"}"#).unwrap_err();
        assert_eq!((err[0].field.as_str(), err[0].rule), ("id", Rule::DuplicateKey));
        let err = parse_text(r#"{"id":"a1","data":{"x":{"y":1,"y":2}}}"#).unwrap_err();
        assert_eq!((err[0].field.as_str(), err[0].rule), ("data.x.y", Rule::DuplicateKey));
    }

    #[test]
    fn id_length_boundaries() {
        assert!(parse(json!({"id": "a".repeat(128)})).is_ok());
        assert_eq!(errors(json!({"id": "a".repeat(129)})), [("id".into(), Rule::Format)]);
        assert_eq!(errors(json!({"id": ""})), [("id".into(), Rule::Format)]);
        assert_eq!(errors(json!({"id": "a b"})), [("id".into(), Rule::Format)]);
        assert_eq!(errors(json!({"id": "a#b"})), [("id".into(), Rule::Format)]);
    }

    #[test]
    fn source_and_type_rules() {
        assert!(parse(json!({"source": "a".repeat(64), "type": "x.y-z_1"})).is_ok());
        assert_eq!(errors(json!({"source": "a".repeat(65)})), [("source".into(), Rule::Format)]);
        assert_eq!(errors(json!({"source": "Web"})), [("source".into(), Rule::Format)]);
        assert_eq!(errors(json!({"type": ""})), [("type".into(), Rule::Format)]);
        assert_eq!(errors(json!({"type": "a/b"})), [("type".into(), Rule::Format)]);
    }

    #[test]
    fn user_id_rules() {
        assert!(parse(json!({"user_id": "é".repeat(128)})).is_ok());
        assert_eq!(errors(json!({"user_id": "é".repeat(129)})), [("user_id".into(), Rule::Format)]);
        assert_eq!(errors(json!({"user_id": "a\u{7}b"})), [("user_id".into(), Rule::Format)]);
        assert_eq!(errors(json!({"user_id": ""})), [("user_id".into(), Rule::Format)]);
    }

    #[test]
    fn when_field_has_wrong_type_should_name_it() {
        let got = errors(json!({"id": 5, "payload": 1, "data": [1], "source": true}));
        assert_eq!(
            got,
            [
                ("id".into(), Rule::Type),
                ("source".into(), Rule::Type),
                ("payload".into(), Rule::Type),
                ("data".into(), Rule::Type),
            ]
        );
    }

    #[test]
    fn when_unknown_field_should_reject_naming_it() {
        let err = parse(json!({"colour": "red"})).unwrap_err();
        assert_eq!(err[0].field, "colour");
        assert_eq!(err[0].rule, Rule::UnknownField);
    }

    #[test]
    fn long_unknown_field_names_are_cut_when_echoed() {
        let err = parse(json!({"k".repeat(40_000): 1})).unwrap_err();
        assert_eq!(err[0].field.chars().count(), MAX_ECHOED_NAME_CHARS + 1);
    }

    #[test]
    fn when_not_an_object_should_reject() {
        assert_eq!(errors(json!("text")), [("".into(), Rule::Type)]);
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
        for bad in [json!("yesterday"), json!(-1), json!(1.5), json!({}), json!("2026-11-23"), json!(1e3)] {
            assert_eq!(errors(json!({"timestamp": bad})), [("timestamp".into(), Rule::Format)]);
        }
    }

    #[test]
    fn timestamps_beyond_four_digit_years_are_a_range_error_not_a_panic() {
        for bad in [json!("9999-12-31T23:30:00-01:00"), json!("0000-01-01T00:00:00+01:00"), json!(i64::MAX)] {
            assert_eq!(errors(json!({"timestamp": bad})), [("timestamp".into(), Rule::Range)], "{bad}");
        }
        let rules = Rules { max_future_skew: Duration::days(10_000_000), ..Rules::default() };
        assert!(parse_value(&json!({"timestamp": "9999-12-31T23:59:59Z"}), &rules, NOW).is_ok());
        assert!(parse(json!({"timestamp": "0001-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn timestamp_future_skew_boundary() {
        assert!(parse(json!({"timestamp": "2026-11-23T12:05:00Z"})).is_ok());
        assert_eq!(errors(json!({"timestamp": "2026-11-23T12:05:01Z"})), [("timestamp".into(), Rule::Future)]);
        assert!(parse(json!({"timestamp": "1999-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn when_event_over_256_kib_should_reject_with_size_rule() {
        let fits = MAX_EVENT_BYTES - 200;
        assert!(parse(json!({"id": "x", "payload": "a".repeat(fits)})).is_ok());
        let err = parse(json!({"payload": "a".repeat(MAX_EVENT_BYTES)})).unwrap_err();
        assert_eq!(err[0].rule, Rule::Size);
    }

    #[test]
    fn an_event_of_exactly_the_size_limit_is_accepted_and_one_byte_more_is_refused() {
        let with_payload = |len: usize| parse(json!({"id": "x", "payload": "a".repeat(len)}));
        let overhead = with_payload(0).unwrap().serialized_len();
        let at_limit = with_payload(MAX_EVENT_BYTES - overhead).unwrap();
        assert_eq!(at_limit.serialized_len(), MAX_EVENT_BYTES);
        let err = with_payload(MAX_EVENT_BYTES - overhead + 1).unwrap_err();
        assert_eq!((err[0].field.as_str(), err[0].rule), ("", Rule::Size));
    }

    #[test]
    fn allow_lists_restrict_types_and_sources() {
        let rules = Rules {
            allowed_types: vec![EventType::parse("click").unwrap()],
            allowed_sources: vec![Source::parse("web").unwrap()],
            ..Rules::default()
        };
        assert!(parse_value(&json!({"type": "click", "source": "web"}), &rules, NOW).is_ok());
        let err = parse_value(&json!({"type": "view", "source": "app"}), &rules, NOW).unwrap_err();
        let rules: Vec<_> = err.iter().map(|e| (e.field.as_str(), e.rule)).collect();
        assert_eq!(rules, [("type", Rule::NotAllowed), ("source", Rule::NotAllowed)]);
    }

    #[test]
    fn partition_key_prefers_user() {
        let with_user = parse(json!({"user_id": "u1", "id": "e1"})).unwrap();
        let without = parse(json!({"id": "e1", "source": "web"})).unwrap();
        assert_eq!(with_user.partition_key(), "u1");
        assert_eq!(without.partition_key(), "web/e1");
    }
}

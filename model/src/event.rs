//! The event, made of types that cannot hold invalid values. Parsing and validating client
//! input lives in [`crate::validation`].

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Largest serialized event, in bytes.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

pub const ID_RULE: &str = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";
pub const TOKEN_RULE: &str = "must be 1-64 characters of a-z 0-9 _ . -";
pub const USER_ID_RULE: &str = "must be 1-128 characters without control characters";
pub const INGEST_ID_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 -";
pub const TIMESTAMP_RANGE_RULE: &str = "must lie between 0001-01-01 and 9999-12-31 UTC";

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// As a plain string, written from the value in place.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
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
string_newtype!(
    /// Names one stream record as ingest wrote it. Ingest may put a record twice when a
    /// PutRecords answer is lost; both copies carry the same id, so the transform can tell
    /// such a copy from a client sending the same event again.
    IngestId
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

    /// A UUID like [`EventId::generate`]'s, made from a hash of `name` instead of at random:
    /// the same name always gives the same id.
    pub fn derived_from(name: &str) -> Self {
        use std::hash::Hasher;
        let half = |seed: u64| {
            let mut hasher = wyhash::WyHash::with_seed(seed);
            hasher.write(name.as_bytes());
            hasher.finish().to_be_bytes()
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&half(0x6576_656e_7469_6431));
        bytes[8..].copy_from_slice(&half(0x6576_656e_7469_6432));
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
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

impl IngestId {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        let ok = (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok { Ok(Self(value)) } else { Err(INGEST_ID_RULE) }
    }

    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// A JSON object exactly as the client wrote it: numbers, escapes and spacing are kept byte
/// for byte from the request to the stored item and the output record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawObject(Box<RawValue>);

impl RawObject {
    /// Takes a value already checked to be an object with unique keys.
    pub(crate) fn new_unchecked(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// Reads stored JSON text back; it must be an object with unique keys.
    pub fn from_text(text: String) -> Result<Self, crate::json::JsonError> {
        let raw = RawValue::from_string(text).map_err(|e| crate::json::JsonError::Syntax(e.to_string()))?;
        crate::json::Members::parse(&raw)?;
        crate::json::check_unique_keys(&raw, "data")?;
        Ok(Self(raw))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawObject {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A valid event with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub source: Source,
    pub event_type: EventType,
    /// In UTC, within [`TIMESTAMP_RANGE_RULE`].
    pub timestamp: OffsetDateTime,
    pub user_id: Option<UserId>,
    pub payload: Option<String>,
    pub data: Option<RawObject>,
}

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

    pub fn serialized_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |bytes| bytes.len())
    }

    /// Writes the event's members into a JSON object being serialized, so the stream record
    /// and the processed event can add theirs beside them.
    pub(crate) fn serialize_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.event_type)?;
        map.serialize_entry("timestamp", &format_rfc3339(self.timestamp))?;
        if let Some(user) = &self.user_id {
            map.serialize_entry("user_id", user)?;
        }
        if let Some(payload) = &self.payload {
            map.serialize_entry("payload", payload)?;
        }
        if let Some(data) = &self.data {
            map.serialize_entry("data", data)?;
        }
        Ok(())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_members(&mut map)?;
        map.end()
    }
}

/// The time in UTC if it lies in the range every stored form can represent (four-digit
/// years), else `None`. Offsets near the ends of the range can push a time out of it.
pub fn checked_utc(ts: OffsetDateTime) -> Option<OffsetDateTime> {
    ts.checked_to_offset(UtcOffset::UTC).filter(|utc| (1..=9999).contains(&utc.year()))
}

/// Formats a time as RFC 3339 in UTC, the one text form the pipeline writes. Times come
/// from [`checked_utc`] or the clock, so formatting cannot fail; the epoch-seconds text
/// is only a last resort that keeps a log line readable.
pub fn format_rfc3339(ts: OffsetDateTime) -> String {
    checked_utc(ts).and_then(|utc| utc.format(&Rfc3339).ok()).unwrap_or_else(|| ts.unix_timestamp().to_string())
}

/// A Kinesis `approximateArrivalTimestamp`: epoch seconds with a fraction, as a number (Lambda)
/// or as text (some event libraries write it so), read exactly (`…465.46` is 460 ms). None
/// for 0 or less, which a producer writes when it does not know, or outside years 0001-9999.
pub fn arrival_time(value: &serde_json::Value) -> Option<OffsetDateTime> {
    let text = match value {
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::String(text) => text.clone(),
        _ => return None,
    };
    let nanos = decimal_nanos(&text).or_else(|| {
        // Exponent notation: milliseconds are all Kinesis keeps, and rounding there drops
        // the float's noise.
        let seconds: f64 = text.parse().ok().filter(|s: &f64| s.is_finite())?;
        ((seconds * 1000.0).round() as i128).checked_mul(1_000_000)
    })?;
    if nanos <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(checked_utc)
}

/// `123.456` as nanoseconds, exactly.
fn decimal_nanos(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 20 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let fraction = format!("{:0<9}", &fraction[..fraction.len().min(9)]);
    whole.parse::<i128>().ok()?.checked_mul(1_000_000_000)?.checked_add(fraction.parse().ok()?)
}

/// A fixed-width UTC form (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`) whose text order is time order,
/// for sort keys. RFC 3339's optional fraction digits would sort `…00.5Z` before `…00Z`.
pub fn sortable_timestamp(ts: OffsetDateTime) -> String {
    let utc = checked_utc(ts).unwrap_or(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn arrival_times_are_read_exactly_from_numbers_or_text() {
        let at = datetime!(2025-11-30 10:00:00.125 UTC);
        assert_eq!(arrival_time(&serde_json::json!(1_764_496_800.125)), Some(at));
        assert_eq!(arrival_time(&serde_json::json!("1764496800.125")), Some(at));
        assert_eq!(arrival_time(&serde_json::json!("1764496800")), Some(datetime!(2025-11-30 10:00:00 UTC)));
        assert_eq!(arrival_time(&serde_json::json!(1.764_496_800_125e9)), Some(at));
        assert_eq!(arrival_time(&serde_json::json!(1_764_496_800.46)), Some(datetime!(2025-11-30 10:00:00.46 UTC)));
        assert_eq!(arrival_time(&serde_json::json!(1_764_496_800.4)), Some(datetime!(2025-11-30 10:00:00.4 UTC)));
    }

    #[test]
    fn unknown_or_zero_arrival_times_are_none() {
        use serde_json::json;
        for value in
            [json!(0), json!(0.0), json!("0"), json!(-5), json!(1e300), json!(f64::MAX), json!("soon"), json!(null)]
        {
            assert_eq!(arrival_time(&value), None, "{value}");
        }
        assert_eq!(arrival_time(&json!("99999999999999999999999999.5")), None);
        assert!(arrival_time(&json!(1.5)).is_some());
    }

    #[test]
    fn sortable_timestamps_sort_by_time_whatever_the_fraction() {
        let times = [
            datetime!(2026-11-23 12:00:00 UTC),
            datetime!(2026-11-23 12:00:00.000000001 UTC),
            datetime!(2026-11-23 12:00:00.5 UTC),
            datetime!(2026-11-23 12:00:01 UTC),
            datetime!(0001-01-01 00:00:00 UTC),
            datetime!(9999-12-31 23:59:59.999999999 UTC),
        ];
        let mut by_text: Vec<_> = times.iter().map(|t| (sortable_timestamp(*t), *t)).collect();
        by_text.sort();
        let mut by_time = times.to_vec();
        by_time.sort();
        assert_eq!(by_text.into_iter().map(|(_, t)| t).collect::<Vec<_>>(), by_time);
        assert_eq!(sortable_timestamp(times[2]), "2026-11-23T12:00:00.500000000Z");
    }

    #[test]
    fn times_outside_four_digit_years_are_refused() {
        assert!(checked_utc(datetime!(9999-12-31 23:30:00 -01:00)).is_none());
        assert!(checked_utc(datetime!(0001-01-01 00:00:00 +01:00)).is_none());
        assert!(checked_utc(datetime!(0001-01-01 00:00:00 -01:00)).is_some());
    }

    #[test]
    fn derived_ids_are_valid_uuids_that_depend_only_on_the_name() {
        let id = EventId::derived_from("shardId-000000000000:42");
        assert_eq!(id, EventId::derived_from("shardId-000000000000:42"));
        assert_ne!(id, EventId::derived_from("shardId-000000000000:43"));
        assert_eq!(EventId::parse(id.as_str()), Ok(id.clone()));
        let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
        // Pinned: a hash that changed with a dependency update would give a record delivered
        // before and after a deployment two identities.
        assert_eq!(id.as_str(), "33a570e1-0c1c-4d87-be62-ed87b6523fce");
    }

    #[test]
    fn ingest_ids_are_generated_valid() {
        let id = IngestId::generate();
        assert_eq!(IngestId::parse(id.as_str()), Ok(id));
        assert!(IngestId::parse("a b").is_err());
    }
}

//! The user reference table: plan and region per user, replaced as a whole.
//!
//! A table is stored as one generation: its users packed into buckets (a user's bucket is a
//! hash of its id, modulo the generation's bucket count), each bucket one item, plus a
//! pointer to the current generation. Replacing the table writes a new generation's buckets,
//! then moves the pointer in one conditional write, so a reader that reads the pointer and
//! then buckets of that generation sees the old table or the new one, never a mix.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{TOKEN_RULE, UserId, checked_utc};
use crate::json::{JsonError, Members};
use crate::validation::{FieldError, Rule, echo};

/// Why the reference table could not be read or replaced, whatever stores it.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The table is not newer than the current one.
    #[error("the reference table's ts is not newer than the current generation's")]
    Stale(Generation),
    #[error("the reference table could not be read or written")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a stored reference item is malformed: {0}")]
    Malformed(String),
}

/// Most users one table may hold.
pub const MAX_USERS: usize = 100_000;
/// What enrichment says when the user is absent, or the event has no user.
pub const UNKNOWN: &str = "unknown";
/// A bucket's users are packed up to about this many bytes, so reading the few buckets a
/// batch needs stays cheap (an item is read in 4 KB units) and an item stays far below
/// DynamoDB's 400 KB.
pub const BUCKET_TARGET_BYTES: usize = 32 * 1024;
/// No bucket may exceed this; packing uses more buckets until none does.
pub const BUCKET_MAX_BYTES: usize = 128 * 1024;
/// Most buckets a generation is packed into (a bucket still stays under DynamoDB's item
/// limit, which is three times `BUCKET_MAX_BYTES`).
pub const MAX_BUCKETS: u32 = 1 << 16;

/// A plan or region: 1-64 characters of `[a-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        let ok = (1..=64).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if ok { Ok(Self(value)) } else { Err(TOKEN_RULE) }
    }

    pub fn unknown() -> Self {
        Self(UNKNOWN.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the table says about one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserMeta {
    pub plan: Label,
    pub region: Label,
}

/// A whole table as a client sends it: `{"user_metadata": {...}, "ts": RFC 3339}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceTable {
    pub users: BTreeMap<UserId, UserMeta>,
    /// The table's version time: a replacement must be newer than the current table.
    pub ts: OffsetDateTime,
}

/// Most errors reported for one body; the rest are summarised.
const MAX_ERRORS: usize = 20;

impl ReferenceTable {
    /// Validates a request body, collecting the first problems with field paths such as
    /// `user_metadata.u-1.plan`.
    pub fn parse(body: &str) -> Result<Self, Vec<FieldError>> {
        let one = |field: &str, rule, message: &str| vec![FieldError::new(field, rule, message)];
        let raw: &RawValue = serde_json::from_str(body)
            .map_err(|e| one("", Rule::Format, &format!("the body is not valid JSON: {e}")))?;
        let members = match Members::parse(raw) {
            Ok(members) => members,
            Err(JsonError::DuplicateKey(key)) => return Err(one(&key, Rule::DuplicateKey, "appears more than once")),
            Err(_) => return Err(one("", Rule::Type, "the body must be a JSON object")),
        };
        let mut errors = Vec::new();
        for (name, _) in &members.0 {
            if name != "user_metadata" && name != "ts" {
                errors.push(FieldError::new(name, Rule::UnknownField, "is not a known field"));
            }
        }
        let ts = match members.get("ts").map(|raw| serde_json::from_str::<String>(raw.get())) {
            None => {
                errors.push(FieldError::new("ts", Rule::Format, "is required: the table's RFC 3339 version time"));
                None
            }
            Some(Err(_)) => {
                errors.push(FieldError::new("ts", Rule::Type, "must be an RFC 3339 string"));
                None
            }
            Some(Ok(text)) => match OffsetDateTime::parse(&text, &Rfc3339).ok().and_then(checked_utc) {
                Some(ts) => Some(ts),
                None => {
                    errors.push(FieldError::new(
                        "ts",
                        Rule::Format,
                        "must be an RFC 3339 timestamp in years 0001-9999",
                    ));
                    None
                }
            },
        };
        let users = match members.get("user_metadata") {
            None => {
                errors.push(FieldError::new("user_metadata", Rule::Format, "is required: an object of user ids"));
                BTreeMap::new()
            }
            Some(raw) => parse_users(raw, &mut errors),
        };
        if errors.len() > MAX_ERRORS {
            let more = errors.len() - MAX_ERRORS;
            errors.truncate(MAX_ERRORS);
            errors.push(FieldError::new("", Rule::Format, format!("and {more} more problems")));
        }
        match ts {
            Some(ts) if errors.is_empty() => Ok(Self { users, ts }),
            _ => Err(errors),
        }
    }
}

fn parse_users(raw: &RawValue, errors: &mut Vec<FieldError>) -> BTreeMap<UserId, UserMeta> {
    let members = match Members::parse(raw) {
        Ok(members) => members,
        Err(JsonError::DuplicateKey(key)) => {
            errors.push(FieldError::new(&format!("user_metadata.{key}"), Rule::DuplicateKey, "appears more than once"));
            return BTreeMap::new();
        }
        Err(_) => {
            errors.push(FieldError::new("user_metadata", Rule::Type, "must be an object of user ids"));
            return BTreeMap::new();
        }
    };
    if members.0.len() > MAX_USERS {
        errors.push(FieldError::new(
            "user_metadata",
            Rule::Size,
            format!("holds {} users; the limit is {MAX_USERS}", members.0.len()),
        ));
        return BTreeMap::new();
    }
    let mut users = BTreeMap::new();
    for (key, value) in &members.0 {
        let path = format!("user_metadata.{}", echo(key, 128));
        if errors.len() > MAX_ERRORS {
            errors.push(FieldError::new("user_metadata", Rule::Format, "more problems not listed"));
            break;
        }
        let user = UserId::parse(key.as_ref());
        if let Err(rule) = &user {
            errors.push(FieldError::new(&path, Rule::Format, format!("is not a valid user id: {rule}")));
        }
        let fields = match Members::parse(value) {
            Ok(fields) => fields,
            Err(JsonError::DuplicateKey(k)) => {
                errors.push(FieldError::new(&format!("{path}.{k}"), Rule::DuplicateKey, "appears more than once"));
                continue;
            }
            Err(_) => {
                errors.push(FieldError::new(&path, Rule::Type, "must be an object {\"plan\", \"region\"}"));
                continue;
            }
        };
        for (name, _) in &fields.0 {
            if name != "plan" && name != "region" {
                errors.push(FieldError::new(&format!("{path}.{name}"), Rule::UnknownField, "is not a known field"));
            }
        }
        let mut label = |name: &str| -> Option<Label> {
            let field = format!("{path}.{name}");
            let Some(raw) = fields.get(name) else {
                errors.push(FieldError::new(&field, Rule::Format, "is required"));
                return None;
            };
            let Ok(text) = serde_json::from_str::<String>(raw.get()) else {
                errors.push(FieldError::new(&field, Rule::Type, "must be a string"));
                return None;
            };
            Label::parse(text).map_err(|rule| errors.push(FieldError::new(&field, Rule::Format, rule))).ok()
        };
        let (plan, region) = (label("plan"), label("region"));
        if let (Ok(user), Some(plan), Some(region)) = (user, plan, region) {
            users.insert(user, UserMeta { plan, region });
        }
    }
    users
}

/// One stored generation of the table, as its pointer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// 1 for the first table, then one more per replacement.
    #[serde(rename = "generation")]
    pub number: u64,
    /// Names this generation's bucket items (unique, so concurrent writers never collide).
    #[serde(skip)]
    pub key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub users: u64,
    #[serde(skip)]
    pub buckets: u32,
}

/// A stable 64-bit hash (FNV-1a): bucket placement must not change between versions.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

pub fn bucket_of(user: &str, buckets: u32) -> u32 {
    (stable_hash(user) % u64::from(buckets.max(1))) as u32
}

/// A bucket's stored text: one `user\tplan\tregion` line per user. User ids have no control
/// characters and labels no tabs, so the lines cannot be misread.
pub fn bucket_text(entries: &[(&UserId, &UserMeta)]) -> String {
    let mut text = String::new();
    for (user, meta) in entries {
        text.push_str(user.as_str());
        text.push('\t');
        text.push_str(meta.plan.as_str());
        text.push('\t');
        text.push_str(meta.region.as_str());
        text.push('\n');
    }
    text
}

/// Reads a bucket's text back; a malformed line means the stored data drifted.
pub fn parse_bucket(text: &str) -> Result<Vec<(UserId, UserMeta)>, String> {
    text.lines()
        .map(|line| {
            let mut parts = line.split('\t');
            let (Some(user), Some(plan), Some(region), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed bucket line {line:?}"));
            };
            let bad = |what: &str, rule: &str| format!("bucket line {line:?}: {what} {rule}");
            Ok((
                UserId::parse(user).map_err(|r| bad("user", r))?,
                UserMeta {
                    plan: Label::parse(plan).map_err(|r| bad("plan", r))?,
                    region: Label::parse(region).map_err(|r| bad("region", r))?,
                },
            ))
        })
        .collect()
}

/// The table packed into buckets: the bucket count, and each bucket's text by index.
pub fn pack(table: &ReferenceTable) -> (u32, Vec<String>) {
    let total: usize = table.users.iter().map(|(u, m)| u.as_str().len() + m.plan.0.len() + m.region.0.len() + 3).sum();
    let mut buckets = (total.div_ceil(BUCKET_TARGET_BYTES)).max(1) as u32;
    loop {
        let mut grouped: Vec<Vec<(&UserId, &UserMeta)>> = vec![Vec::new(); buckets as usize];
        for (user, meta) in &table.users {
            grouped[bucket_of(user.as_str(), buckets) as usize].push((user, meta));
        }
        let texts: Vec<String> = grouped.iter().map(|entries| bucket_text(entries)).collect();
        // A table within MAX_USERS and the id and label limits fits long before the cap;
        // ids that hash alike could otherwise double the count without end.
        if texts.iter().all(|t| t.len() <= BUCKET_MAX_BYTES) || buckets >= MAX_BUCKETS {
            return (buckets, texts);
        }
        buckets *= 2;
    }
}

/// The plan, region and reference generation an event is enriched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrichment {
    pub plan: Label,
    pub region: Label,
    /// 0 when no table has been stored yet.
    pub generation: u64,
}

impl Enrichment {
    pub fn unknown(generation: u64) -> Self {
        Self { plan: Label::unknown(), region: Label::unknown(), generation }
    }

    /// Whether the table knew the user.
    pub fn is_known(&self) -> bool {
        self.plan.as_str() != UNKNOWN || self.region.as_str() != UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(users: usize) -> ReferenceTable {
        let metadata: serde_json::Map<String, serde_json::Value> = (0..users)
            .map(|i| (format!("user-{i:06}"), json!({"plan": if i % 2 == 0 { "free" } else { "pro" }, "region": "eu"})))
            .collect();
        ReferenceTable::parse(&json!({"user_metadata": metadata, "ts": "2026-11-30T12:00:00Z"}).to_string()).unwrap()
    }

    #[test]
    fn a_valid_table_parses() {
        let t = table(3);
        assert_eq!(t.users.len(), 3);
        assert_eq!(t.users[&UserId::parse("user-000001").unwrap()].plan.as_str(), "pro");
    }

    #[test]
    fn problems_are_named_by_their_path() {
        let body = r#"{"user_metadata": {"u-1": {"plan": "Pro", "region": "eu", "tier": 1}, "u-2": 5, "": {"plan":"a","region":"b"}}, "ts": "yesterday", "x": 1}"#;
        let errors = ReferenceTable::parse(body).unwrap_err();
        let fields: Vec<(&str, Rule)> = errors.iter().map(|e| (e.field.as_str(), e.rule)).collect();
        assert!(fields.contains(&("x", Rule::UnknownField)), "{fields:?}");
        assert!(fields.contains(&("ts", Rule::Format)), "{fields:?}");
        assert!(fields.contains(&("user_metadata.u-1.plan", Rule::Format)), "{fields:?}");
        assert!(fields.contains(&("user_metadata.u-1.tier", Rule::UnknownField)), "{fields:?}");
        assert!(fields.contains(&("user_metadata.u-2", Rule::Type)), "{fields:?}");
        assert!(fields.contains(&("user_metadata.", Rule::Format)), "{fields:?}");
    }

    #[test]
    fn repeated_users_and_too_many_users_are_refused() {
        let body = r#"{"user_metadata": {"u": {"plan":"a","region":"b"}, "u": {"plan":"c","region":"d"}}, "ts": "2026-01-01T00:00:00Z"}"#;
        assert_eq!(ReferenceTable::parse(body).unwrap_err()[0].rule, Rule::DuplicateKey);
        let many: serde_json::Map<String, serde_json::Value> =
            (0..=MAX_USERS).map(|i| (format!("u{i}"), json!({"plan": "a", "region": "b"}))).collect();
        let errors = ReferenceTable::parse(&json!({"user_metadata": many, "ts": "2026-01-01T00:00:00Z"}).to_string())
            .unwrap_err();
        assert_eq!(errors[0].rule, Rule::Size);
    }

    #[test]
    fn packing_keeps_every_user_in_its_bucket_within_the_size_bound() {
        let t = table(100_000);
        let (buckets, texts) = pack(&t);
        assert!(buckets > 1 && texts.len() == buckets as usize);
        let mut seen = 0;
        for (index, text) in texts.iter().enumerate() {
            assert!(text.len() <= BUCKET_MAX_BYTES);
            for (user, meta) in parse_bucket(text).unwrap() {
                assert_eq!(bucket_of(user.as_str(), buckets), index as u32);
                assert_eq!(&t.users[&user], &meta);
                seen += 1;
            }
        }
        assert_eq!(seen, 100_000);
    }

    #[test]
    fn the_hash_is_stable() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}

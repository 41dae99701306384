//! Who sent an event and what exactly they sent: the two facts that tell a client's retry
//! (a duplicate) from someone else's event under the same `(source, id)` (a conflict).
//!
//! - The [`Sender`] is stable across a client's retries: an IAM caller's role without its
//!   session name, a JWT's issuer and subject, `stream` for records written to the ingest
//!   stream directly, `anonymous` on a public collector.
//! - The [`Digest`] covers the client's own members in a canonical form, before defaults
//!   are filled in: members whose value is `null` are left out (they count as absent), and
//!   so is `id`, which a copy of an identity repeats by definition (a missing id is derived
//!   from the stream position, or a fresh UUID, which never collides). Objects have their
//!   keys sorted (by their unescaped text) at every depth; whitespace between tokens is
//!   dropped; strings and numbers are kept as written, so `1.0` and `1`, or `"\u0041"` and
//!   `"A"`, are different content, as they are stored byte for byte. The same bytes from a
//!   client always give the same digest, and so does the same object with its keys in
//!   another order or other spacing.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::event::Source;
use crate::json::{Members, array_elements};

/// Longest sender kept; longer names (a very long JWT subject) keep their start and a hash
/// of the whole, so a stored item stays small whatever a token carries.
pub const MAX_SENDER_CHARS: usize = 512;

/// Who sent an event, as stored beside it and carried in the stream record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Sender(String);

impl Sender {
    /// Records written to the ingest stream directly, without ingest's envelope.
    pub const STREAM: &'static str = "stream";
    /// Requests without an authorizer (`IngestAuthorization=NONE`): one public sender.
    pub const ANONYMOUS: &'static str = "anonymous";

    pub fn stream() -> Self {
        Self(Self::STREAM.to_owned())
    }

    pub fn anonymous() -> Self {
        Self(Self::ANONYMOUS.to_owned())
    }

    /// An IAM caller by the ARN API Gateway reports (`userArn`): an assumed role's session
    /// name is dropped, since each retry may run in a new session
    /// (`arn:aws:sts::123456789012:assumed-role/Writer/i-0abc` is `...:assumed-role/Writer`);
    /// users, roles and anything else are kept as they are.
    pub fn iam(arn: &str) -> Self {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("sts"), Some(_region), Some(_account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Self::bounded(arn.to_owned());
        };
        match resource.strip_prefix("assumed-role/").and_then(|rest| rest.split_once('/')) {
            Some((role, _session)) => {
                let prefix = &arn[..arn.len() - resource.len()];
                Self::bounded(format!("{prefix}assumed-role/{role}"))
            }
            None => Self::bounded(arn.to_owned()),
        }
    }

    /// A JWT caller: its issuer and subject (`jwt:{iss} {sub}`; an issuer is a URL and holds
    /// no space).
    pub fn jwt(issuer: &str, subject: &str) -> Self {
        Self::bounded(format!("jwt:{issuer} {subject}"))
    }

    /// A write key's events: the key's source, so a rotated key of the same source is the
    /// same sender (`key:{source}`).
    pub fn write_key(source: &Source) -> Self {
        Self(format!("key:{source}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name as stored: never empty, no control characters (a token's subject can hold
    /// any), and at most [`MAX_SENDER_CHARS`].
    fn bounded(name: String) -> Self {
        let name = match name.as_str() {
            "" => "unknown".to_owned(),
            text if text.chars().any(char::is_control) => {
                text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
            }
            _ => name,
        };
        match name.char_indices().nth(MAX_SENDER_CHARS - 33) {
            None => Self(name),
            Some((cut, _)) => {
                let hash = hex(&Sha256::digest(name.as_bytes())[..16]);
                Self(format!("{}#{hash}", &name[..cut]))
            }
        }
    }
}

impl TryFrom<String> for Sender {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.is_empty() || value.chars().count() > MAX_SENDER_CHARS || value.chars().any(char::is_control) {
            return Err("a sender must be 1-512 characters without control characters");
        }
        Ok(Self(value))
    }
}

impl Serialize for Sender {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of an event's canonical form, its first 128 bits as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of one event as the client wrote it (a JSON object already validated).
    pub fn of_event(raw: &RawValue) -> Self {
        Self::of_object_without(raw, &["id"])
    }

    /// The digest of a JSON object without the members named in `skipped`: those a client
    /// changes from one try to the next, or that name the identity rather than its content.
    pub fn of_object_without(raw: &RawValue, skipped: &[&str]) -> Self {
        let mut canonical = String::with_capacity(raw.get().len());
        match Members::parse(raw) {
            Ok(members) => {
                let kept =
                    members.0.iter().filter(|(key, value)| !skipped.contains(&key.as_ref()) && value.get() != "null");
                write_object(kept.map(|(key, value)| (key.as_ref(), *value)), &mut canonical);
            }
            // Not an object: never an event, but the digest is still of its bytes.
            Err(_) => canonical.push_str(raw.get()),
        }
        Self::of_canonical(&canonical)
    }

    fn of_canonical(canonical: &str) -> Self {
        Self(hex(&Sha256::digest(canonical.as_bytes())[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Digest {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.len() == 32 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(value))
        } else {
            Err("a digest must be 32 lowercase hex digits")
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who sent a record and the digest of what they sent; the two always travel together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub sender: Sender,
    pub digest: Digest,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `{"key":value,...}` with keys sorted by their unescaped text, values canonical.
fn write_object<'a>(members: impl Iterator<Item = (&'a str, &'a RawValue)>, out: &mut String) {
    let mut members: Vec<(&str, &RawValue)> = members.collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (index, (key, value)) in members.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        // A key re-escaped one way: `"\u0069d"` and `"id"` are the same key.
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

/// Objects and arrays rebuilt canonically; strings, numbers and literals as written.
fn write_value(raw: &RawValue, out: &mut String) {
    match raw.get().as_bytes().first() {
        Some(b'{') => match Members::parse(raw) {
            Ok(members) => write_object(members.0.iter().map(|(key, value)| (key.as_ref(), *value)), out),
            Err(_) => out.push_str(raw.get()),
        },
        Some(b'[') => match array_elements(raw) {
            Ok(elements) => {
                out.push('[');
                for (index, element) in elements.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_value(element, out);
                }
                out.push(']');
            }
            Err(_) => out.push_str(raw.get()),
        },
        _ => out.push_str(raw.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> Digest {
        Digest::of_event(&RawValue::from_string(text.to_owned()).unwrap())
    }

    fn canonical(text: &str) -> String {
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let members = Members::parse(&raw).unwrap();
        let mut out = String::new();
        let kept = members.0.iter().filter(|(key, value)| key != "id" && value.get() != "null");
        write_object(kept.map(|(key, value)| (key.as_ref(), *value)), &mut out);
        out
    }

    #[test]
    fn the_canonical_form_sorts_keys_at_every_depth_and_drops_spacing() {
        assert_eq!(
            canonical(r#"{ "type" : "t", "data": {"b": [ {"y":1, "x":2} ], "a": 1.50}, "id": "e-1" }"#),
            r#"{"data":{"a":1.50,"b":[{"x":2,"y":1}]},"type":"t"}"#
        );
        assert_eq!(canonical(r#"{"payload":null,"source":"web"}"#), r#"{"source":"web"}"#);
        assert_eq!(canonical(r#"{"\u0073ource":"web"}"#), r#"{"source":"web"}"#);
    }

    #[test]
    fn the_same_content_in_another_order_or_spacing_has_the_same_digest() {
        let first = digest(r#"{"id":"e-1","source":"web","data":{"a":1,"b":"x"}}"#);
        assert_eq!(first, digest(r#"{ "data" : { "b":"x" , "a":1 }, "source":"web", "id":"e-1" }"#));
        assert_eq!(first, digest(r#"{"id":"e-1","source":"web","payload":null,"data":{"a":1,"b":"x"}}"#));
        assert_eq!(first.as_str().len(), 32);
        // Pinned: a digest that changed with a dependency update would turn retries into conflicts.
        assert_eq!(digest("{}").as_str(), "44136fa355b3678a1146ad16f7e8649e");
    }

    #[test]
    fn other_content_has_another_digest() {
        let base = digest(r#"{"id":"e-1","source":"web","data":{"a":1}}"#);
        for other in [
            r#"{"id":"e-1","source":"web","data":{"a":1.0}}"#,
            r#"{"id":"e-1","source":"web","data":{"a":"1"}}"#,
            r#"{"id":"e-1","source":"web","data":{"a":1,"b":null}}"#,
            r#"{"id":"e-1","source":"web","data":{"a":1},"payload":"x"}"#,
            r#"{"id":"e-1","data":{"a":1}}"#,
        ] {
            assert_ne!(digest(other), base, "{other}");
        }
    }

    #[test]
    fn the_id_is_not_part_of_the_digest() {
        assert_eq!(digest(r#"{"id":"e-1","payload":"x"}"#), digest(r#"{"payload":"x"}"#));
    }

    #[test]
    fn an_assumed_role_is_the_role_without_its_session() {
        let one = Sender::iam("arn:aws:sts::123456789012:assumed-role/Writer/i-0abc");
        let two = Sender::iam("arn:aws:sts::123456789012:assumed-role/Writer/i-0def");
        assert_eq!(one, two);
        assert_eq!(one.as_str(), "arn:aws:sts::123456789012:assumed-role/Writer");
        assert_ne!(one, Sender::iam("arn:aws:sts::123456789012:assumed-role/Reader/i-0abc"));
        assert_eq!(
            Sender::iam("arn:aws-cn:sts::123456789012:assumed-role/Writer/s").as_str(),
            "arn:aws-cn:sts::123456789012:assumed-role/Writer"
        );
    }

    #[test]
    fn users_and_other_arns_are_kept_as_they_are() {
        for arn in [
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:iam::123456789012:role/Writer",
            "not an arn",
        ] {
            assert_eq!(Sender::iam(arn).as_str(), arn);
        }
    }

    #[test]
    fn jwt_senders_are_issuer_and_subject() {
        let sender = Sender::jwt("https://issuer.example", "device-7");
        assert_eq!(sender.as_str(), "jwt:https://issuer.example device-7");
        assert_ne!(sender, Sender::jwt("https://other.example", "device-7"));
        assert_eq!(Sender::write_key(&Source::parse("web").unwrap()).as_str(), "key:web");
    }

    #[test]
    fn long_senders_are_bounded_and_stay_distinct() {
        let long = |tail: &str| Sender::jwt("https://issuer.example", &format!("{}{tail}", "s".repeat(2000)));
        let (a, b) = (long("a"), long("b"));
        assert!(a.as_str().chars().count() <= MAX_SENDER_CHARS);
        assert_ne!(a, b);
        assert_eq!(Sender::try_from(a.as_str().to_owned()), Ok(a));
    }

    #[test]
    fn any_caller_gives_a_sender_the_stream_record_can_carry() {
        for sender in [Sender::iam(""), Sender::jwt("https://issuer.example", "a\nb\u{0}"), Sender::iam("x\ty")] {
            assert_eq!(Sender::try_from(sender.as_str().to_owned()).as_ref(), Ok(&sender));
        }
    }

    #[test]
    fn stored_forms_are_checked_when_read() {
        assert!(Digest::try_from("ABC".to_owned()).is_err());
        assert!(Sender::try_from(String::new()).is_err());
        assert!(Sender::try_from("a\nb".to_owned()).is_err());
    }
}

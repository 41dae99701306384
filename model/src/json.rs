//! Reading client JSON without changing it: the members of an object as the client wrote
//! them (raw values, byte for byte), and a check that no object anywhere repeats a key.
//! `serde_json::Value` would let the last duplicate win silently and rewrite numbers.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("is not valid JSON: {0}")]
    Syntax(String),
    #[error("must be a JSON object")]
    NotAnObject,
    /// The path of the repeated key, e.g. `data.a[0].b`.
    #[error("{0} appears more than once")]
    DuplicateKey(String),
}

/// The members of one JSON object, in the order written, each value untouched; a key is
/// borrowed from the text unless it had escapes to decode.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key as serde reads it with borrowing allowed.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// The first key of `keys` that an earlier one repeats. Events have a handful of members,
/// where comparing each with those before it is quicker than hashing; large objects hash.
fn first_repeated<'k>(keys: impl ExactSizeIterator<Item = &'k str> + Clone) -> Option<&'k str> {
    const LINEAR_UP_TO: usize = 16;
    if keys.len() <= LINEAR_UP_TO {
        return keys
            .clone()
            .enumerate()
            .find(|&(i, key)| keys.clone().take(i).any(|earlier| earlier == key))
            .map(|(_, k)| k);
    }
    let mut seen = HashSet::with_capacity(keys.len());
    keys.into_iter().find(|key| !seen.insert(*key))
}

impl<'a> Members<'a> {
    /// Reads `raw` as an object; a key that appears twice is an error naming it.
    pub fn parse(raw: &'a RawValue) -> Result<Self, JsonError> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(JsonError::NotAnObject);
        }
        let members: Members<'a> = serde_json::from_str(raw.get()).map_err(|e| JsonError::Syntax(e.to_string()))?;
        match first_repeated(members.0.iter().map(|(key, _)| key.as_ref())) {
            Some(key) => Err(JsonError::DuplicateKey(key.to_owned())),
            None => Ok(members),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| *value)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

/// The elements of a JSON array, each untouched.
pub fn array_elements(raw: &RawValue) -> Result<Vec<&RawValue>, JsonError> {
    serde_json::from_str(raw.get()).map_err(|e| JsonError::Syntax(e.to_string()))
}

/// Deepest nesting checked; deeper `data` is refused rather than walked.
pub const MAX_DEPTH: usize = 128;

/// Fails with the path of the first key that an object inside `raw` repeats.
/// `prefix` names `raw` itself, e.g. `data`. Values are walked as raw text, so numbers of
/// any size and strings with any escapes pass through unconverted.
pub fn check_unique_keys(raw: &RawValue, prefix: &str) -> Result<(), JsonError> {
    check_value(raw, prefix, 0)
}

fn is_container(raw: &RawValue) -> bool {
    matches!(raw.get().as_bytes().first(), Some(b'{' | b'['))
}

fn check_value(raw: &RawValue, path: &str, depth: usize) -> Result<(), JsonError> {
    let syntax = |e: serde_json::Error| JsonError::Syntax(e.to_string());
    match raw.get().as_bytes().first() {
        Some(b'{') | Some(b'[') if depth >= MAX_DEPTH => {
            Err(JsonError::Syntax(format!("{path} nests deeper than {MAX_DEPTH} levels")))
        }
        Some(b'{') => {
            let members: Members<'_> = serde_json::from_str(raw.get()).map_err(syntax)?;
            if let Some(key) = first_repeated(members.0.iter().map(|(key, _)| key.as_ref())) {
                return Err(JsonError::DuplicateKey(format!("{path}.{key}")));
            }
            // Only an object or an array inside has keys to check, and a path to give them.
            for (key, value) in members.0.iter().filter(|(_, value)| is_container(value)) {
                check_value(value, &format!("{path}.{key}"), depth + 1)?;
            }
            Ok(())
        }
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(syntax)?;
            for (index, element) in elements.iter().enumerate().filter(|(_, element)| is_container(element)) {
                check_value(element, &format!("{path}[{index}]"), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn members_keep_order_and_exact_bytes() {
        let value = raw(r#"{"b": 1e15, "a": {"x":-0}}"#);
        let members = Members::parse(&value).unwrap();
        let got: Vec<(&str, &str)> = members.0.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(got, [("b", "1e15"), ("a", r#"{"x":-0}"#)]);
    }

    #[test]
    fn when_object_repeats_a_key_should_name_it() {
        assert_eq!(Members::parse(&raw(r#"{"id":"a1","id":"a2"}"#)).unwrap_err(), JsonError::DuplicateKey("id".into()));
        assert_eq!(Members::parse(&raw("[1]")).unwrap_err(), JsonError::NotAnObject);
    }

    #[test]
    fn nested_duplicates_are_found_with_their_path() {
        let err = check_unique_keys(&raw(r#"{"a":[{"b":1},{"c":1,"c":2}]}"#), "data").unwrap_err();
        assert_eq!(err, JsonError::DuplicateKey("data.a[1].c".into()));
        assert!(check_unique_keys(&raw(r#"{"a":{"a":{"a":1}},"b":[1,"x",null,true]}"#), "data").is_ok());
    }

    #[test]
    fn numbers_beyond_f64_and_lone_surrogates_in_values_are_carried() {
        assert!(
            check_unique_keys(&raw(r#"{"a":1e400,"b":"\ud800","c":[123456789012345678901234567890]}"#), "data").is_ok()
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_not_walked() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH + 5), "]".repeat(MAX_DEPTH + 5));
        assert!(matches!(check_unique_keys(&raw(&deep), "data"), Err(JsonError::Syntax(_))));
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(check_unique_keys(&raw(&fine), "data").is_ok());
    }

    #[test]
    fn escaped_keys_are_compared_after_unescaping() {
        let err = Members::parse(&raw(r#"{"id":1,"\u0069d":2}"#)).unwrap_err();
        assert_eq!(err, JsonError::DuplicateKey("id".into()));
    }

    #[test]
    fn array_elements_are_each_element_as_written() {
        let value = raw(r#"[1e400, {"a":[-0]}, "\u00e9", null]"#);
        let got: Vec<&str> = array_elements(&value).unwrap().iter().map(|element| element.get()).collect();
        assert_eq!(got, ["1e400", r#"{"a":[-0]}"#, r#""\u00e9""#, "null"]);
        assert!(array_elements(&raw("[]")).unwrap().is_empty());
        assert!(matches!(array_elements(&raw(r#"{"a":1}"#)), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn objects_nested_deeper_than_the_limit_are_refused() {
        let nested = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        let err = check_unique_keys(&raw(&nested(MAX_DEPTH + 1)), "data").unwrap_err();
        assert!(matches!(&err, JsonError::Syntax(m) if m.contains("nests deeper than")), "{err:?}");
        assert!(check_unique_keys(&raw(&nested(MAX_DEPTH)), "data").is_ok());
    }

    #[test]
    fn reading_members_from_anything_but_an_object_says_an_object_was_expected() {
        let err = serde_json::from_str::<Members<'_>>("[1]").unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn a_repeat_among_many_keys_is_named() {
        let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        assert_eq!(Members::parse(&raw(&format!("{{{}}}", keys.join(",")))).unwrap().0.len(), 40);
        let repeated = format!(r#"{{{},"k7":0,"k3":0}}"#, keys.join(","));
        assert_eq!(Members::parse(&raw(&repeated)).unwrap_err(), JsonError::DuplicateKey("k7".into()));
    }

    /// A client controls how many keys an object has: checking them must not compare every
    /// key with every other. Checked against a deadline far above the linear time (well under
    /// a second) and far below the quadratic one (minutes).
    #[test]
    fn an_object_with_very_many_keys_is_checked_in_linear_time() {
        const KEYS: usize = 100_000;
        let text = format!("{{{}}}", (0..KEYS).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(","));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let value = raw(&text);
            let _ = done.send(check_unique_keys(&value, "data").and(Members::parse(&value).map(|m| m.0.len())));
        });
        match finished.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(checked) => assert_eq!(checked, Ok(KEYS)),
            Err(_) => {
                // The check cannot be stopped, and the test binary would wait for it: end the
                // process with the failure, said on stderr itself (test output is captured).
                let message = format!("checking an object of {KEYS} keys took over 30 s: the check is quadratic\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                std::process::abort();
            }
        }
    }
}

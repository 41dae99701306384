//! Reading client JSON without changing it: the members of an object as the client wrote
//! them (raw values, byte for byte), and a check that no object anywhere repeats a key.
//! `serde_json::Value` would let the last duplicate win silently and rewrite numbers.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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

/// The members of one JSON object, in the order written, each value untouched.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// Reads `raw` as an object; a key that appears twice is an error naming it.
    pub fn parse(raw: &'a RawValue) -> Result<Self, JsonError> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(JsonError::NotAnObject);
        }
        let members: Members<'a> = serde_json::from_str(raw.get()).map_err(|e| JsonError::Syntax(e.to_string()))?;
        let mut seen = HashSet::with_capacity(members.0.len());
        for (key, _) in &members.0 {
            if !seen.insert(key.as_str()) {
                return Err(JsonError::DuplicateKey(key.clone()));
            }
        }
        Ok(members)
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
                while let Some(key) = map.next_key::<String>()? {
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

/// Fails with the path of the first key that an object inside `raw` repeats.
/// `prefix` names `raw` itself, e.g. `data`.
pub fn check_unique_keys(raw: &RawValue, prefix: &str) -> Result<(), JsonError> {
    let found = RefCell::new(None);
    let seed = Unique { path: prefix.to_owned(), found: &found };
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    match seed.deserialize(&mut deserializer) {
        Ok(()) => Ok(()),
        Err(error) => {
            Err(found.into_inner().map_or_else(|| JsonError::Syntax(error.to_string()), JsonError::DuplicateKey))
        }
    }
}

/// Walks a value, remembering the path of the first repeated key in `found`.
struct Unique<'f> {
    path: String,
    found: &'f RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq.next_element_seed(Unique { path: format!("{}[{index}]", self.path), found: self.found })?.is_some() {
            index += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}.{key}", self.path);
            if !keys.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Unique { path, found: self.found })?;
        }
        Ok(())
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
        let got: Vec<(&str, &str)> = members.0.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
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
    fn escaped_keys_are_compared_after_unescaping() {
        let err = Members::parse(&raw(r#"{"id":1,"\u0069d":2}"#)).unwrap_err();
        assert_eq!(err, JsonError::DuplicateKey("id".into()));
    }
}

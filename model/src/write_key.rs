//! Write keys: public keys a web page, an app or a collector sends events with, each bound to
//! one source. The one code that reads a key from a request and decides what it may send,
//! used by the authorizer (a key in the `Authorization` header) and by ingest (a key in the
//! body, which an authorizer never sees).
//!
//! A key is `wk_{key_id}_{secret}`: the id names the stored key, the secret (256 random bits)
//! is shown once and stored only as its SHA-256. A key of that strength needs no slow hash:
//! nobody can guess a preimage, whatever the table leaks.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::event::Source;

const PREFIX: &str = "wk_";
const KEY_ID_HEX: usize = 16;
const SECRET_BYTES: usize = 32;
/// A key's secret in base64url without padding.
const SECRET_CHARS: usize = 43;

/// The rate a key gets when it names none.
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 1_000;
/// The most origins one key may name.
pub const MAX_ALLOWED_ORIGINS: usize = 20;

/// The id of a stored key: 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(value: impl Into<String>) -> Result<Self, &'static str> {
        let value = value.into();
        let ok = value.len() == KEY_ID_HEX && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok { Ok(Self(value)) } else { Err("must be 16 lowercase hex digits") }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key as a client sends it. Its `Debug` hides the secret, so a key never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteKey {
    pub id: KeyId,
    secret: String,
}

impl fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl WriteKey {
    /// A new key with a random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES + KEY_ID_HEX / 2];
        rand::rng().fill_bytes(&mut bytes);
        let id = bytes[..KEY_ID_HEX / 2].iter().map(|b| format!("{b:02x}")).collect();
        Self { id: KeyId(id), secret: URL_SAFE_NO_PAD.encode(&bytes[KEY_ID_HEX / 2..]) }
    }

    /// A key as a client wrote it, or `None` when it cannot be one (such a key is unknown,
    /// which is all a client is told).
    pub fn parse(text: &str) -> Option<Self> {
        let (id, secret) = text.strip_prefix(PREFIX)?.split_once('_')?;
        let secret_ok = secret.len() == SECRET_CHARS
            && secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !secret_ok {
            return None;
        }
        Some(Self { id: KeyId::parse(id).ok()?, secret: secret.to_owned() })
    }

    /// The key as the client sends it; shown once, when the key is made.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }

    /// What is stored of the secret.
    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The key from a Basic `Authorization` header, as Segment's SDKs send it: the key as the
    /// user name, the password empty (anything after `:` is ignored).
    pub fn from_basic(header: &str) -> Option<Self> {
        let (scheme, encoded) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = std::str::from_utf8(&decoded).ok()?;
        Self::parse(text.split(':').next().unwrap_or_default())
    }
}

/// SHA-256 of a key's secret, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(pub String);

impl SecretHash {
    /// Whether `key` is the key this hash was made from, compared in constant time.
    pub fn matches(&self, key: &WriteKey) -> bool {
        let other = key.hash();
        self.0.len() == other.0.len() && self.0.bytes().zip(other.0.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A stored key: what it may send, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub key_id: KeyId,
    pub source: Source,
    /// Origins a browser may send from; empty means those the deployment allows.
    pub allowed_origins: Vec<String>,
    pub events_per_second: u32,
    pub created_at: String,
}

/// Why a key may not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no write key: send it as the Basic user name or as writeKey in the body")]
    Missing,
    /// Malformed, unknown, revoked, or a wrong secret: a client is told no more.
    #[error("the write key is not valid")]
    Invalid,
    #[error("origin {0} may not send with this write key")]
    Origin(String),
}

/// Whether a request from `origin` may send with a key: the deployment must allow the origin
/// (`CorsAllowedOrigins`), and so must the key when it names origins of its own (a key
/// narrows, never widens). `*` allows any. A request without an `Origin` header is not a
/// browser's and passes (`Origin` can be forged outside browsers; the key's rate bounds what
/// a copied key sends).
pub fn origin_allowed(origin: Option<&str>, key_origins: &[String], deployment_origins: &[String]) -> bool {
    let Some(origin) = origin.map(str::trim).filter(|o| !o.is_empty()) else { return true };
    let listed = |list: &[String]| {
        list.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin.trim_end_matches('/')))
    };
    listed(deployment_origins) && (key_origins.is_empty() || listed(key_origins))
}

/// An origin as a key may name it: `scheme://host[:port]`, no path, or `*`.
pub fn parse_origin(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    let ok = rest.is_some_and(|host| {
        !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    if ok { Ok(text.to_ascii_lowercase()) } else { Err(format!("{text:?} is not an origin (scheme://host[:port])")) }
}

impl KeyGrant {
    /// The grant as an authorizer's context (HTTP API simple responses): flat strings and
    /// numbers, which API Gateway hands the function in `requestContext.authorizer.lambda`.
    pub fn to_context(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut context = serde_json::Map::new();
        context.insert("key_id".into(), self.key_id.as_str().into());
        context.insert("source".into(), self.source.as_str().into());
        context.insert("allowed_origins".into(), self.allowed_origins.join(" ").into());
        context.insert("events_per_second".into(), self.events_per_second.into());
        context
    }

    /// The grant an authorizer put in the request's context, if it is one.
    pub fn from_context(context: &std::collections::HashMap<String, serde_json::Value>) -> Option<Self> {
        let text = |name: &str| context.get(name).and_then(serde_json::Value::as_str);
        Some(Self {
            key_id: KeyId::parse(text("key_id")?).ok()?,
            source: Source::parse(text("source")?).ok()?,
            allowed_origins: text("allowed_origins")?.split_whitespace().map(str::to_owned).collect(),
            events_per_second: context.get("events_per_second")?.as_u64()?.try_into().ok()?,
            created_at: String::new(),
        })
    }
}

/// A key as stored: what it may send, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub grant: KeyGrant,
    pub secret_hash: SecretHash,
}

/// The store of keys could not be read or written; the last error, as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the write keys are not available now: {0}")]
pub struct KeyStoreError(pub String);

/// Where keys are kept.
pub trait KeyStore: Send + Sync {
    fn get(&self, id: &KeyId) -> impl Future<Output = Result<Option<StoredKey>, KeyStoreError>> + Send;
    /// Stores a new key (its id is new: 64 random bits).
    fn put(&self, key: &StoredKey) -> impl Future<Output = Result<(), KeyStoreError>> + Send;
    /// Every key, by id.
    fn list(&self) -> impl Future<Output = Result<Vec<KeyGrant>, KeyStoreError>> + Send;
    /// Removes a key; `false` when there was none.
    fn delete(&self, id: &KeyId) -> impl Future<Output = Result<bool, KeyStoreError>> + Send;
}

/// What a key may send, or why it may send nothing: the one check of a key, wherever it
/// came from.
pub async fn check_key(
    store: &impl KeyStore,
    key: Option<&WriteKey>,
) -> Result<Result<KeyGrant, Denied>, KeyStoreError> {
    let Some(key) = key else { return Ok(Err(Denied::Missing)) };
    Ok(match store.get(&key.id).await? {
        Some(stored) if stored.secret_hash.matches(key) => Ok(stored.grant),
        _ => Err(Denied::Invalid),
    })
}

/// A call a key sent that can never be stored (no user, too large, a type the deployment
/// does not take): answered in the batch's `refused` list, and kept for someone to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCall {
    pub key_id: KeyId,
    pub source: Source,
    pub message_id: Option<String>,
    pub received_at: time::OffsetDateTime,
    pub errors: Vec<crate::FieldError>,
    /// The call as the client wrote it (at most 32 KB, or its first 32 KB when larger).
    pub call: String,
    /// Of the call's content: the same call sent again is kept once.
    pub digest: crate::Digest,
}

/// Where refused calls are kept.
pub trait RefusalLog: Send + Sync {
    fn keep(&self, calls: &[RefusedCall]) -> impl Future<Output = Result<(), KeyStoreError>> + Send;
}

/// A [`KeyStore`] read through a cache of `ttl`, as API Gateway caches an authorizer's
/// answers: a revoked key stops working within `ttl`. The secret is checked on every call;
/// unknown ids are cached too, so a flood of made-up keys costs one read each per `ttl`.
pub struct CachedKeys<S> {
    store: S,
    ttl: Duration,
    entries: Mutex<HashMap<KeyId, (Instant, Option<StoredKey>)>>,
}

/// Entries a cache keeps: past it, the older half goes, or everything when that is not enough.
const MAX_CACHED_KEYS: usize = 10_000;

impl<S: KeyStore> CachedKeys<S> {
    pub fn new(store: S, ttl: Duration) -> Self {
        Self { store, ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn cached(&self, id: &KeyId) -> Option<Option<StoredKey>> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(id).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, stored)| stored.clone())
    }
}

impl<S: RefusalLog> RefusalLog for CachedKeys<S> {
    async fn keep(&self, calls: &[RefusedCall]) -> Result<(), KeyStoreError> {
        self.store.keep(calls).await
    }
}

impl<S: KeyStore> KeyStore for CachedKeys<S> {
    async fn get(&self, id: &KeyId) -> Result<Option<StoredKey>, KeyStoreError> {
        if let Some(stored) = self.cached(id) {
            return Ok(stored);
        }
        let stored = self.store.get(id).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_CACHED_KEYS {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl / 2);
            // A flood of made-up ids: forget them all rather than grow.
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
        }
        entries.insert(id.clone(), (Instant::now(), stored.clone()));
        Ok(stored)
    }

    async fn put(&self, key: &StoredKey) -> Result<(), KeyStoreError> {
        self.store.put(key).await
    }

    async fn list(&self) -> Result<Vec<KeyGrant>, KeyStoreError> {
        self.store.list().await
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, KeyStoreError> {
        let deleted = self.store.delete(id).await?;
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_its_hash_only() {
        let key = WriteKey::generate();
        let text = key.reveal();
        assert!(text.starts_with("wk_"), "{text}");
        let parsed = WriteKey::parse(&text).unwrap();
        assert_eq!(parsed, key);
        assert!(key.hash().matches(&parsed));
        let other = WriteKey::generate();
        assert!(!key.hash().matches(&other));
        let same_id_other_secret = WriteKey { id: key.id.clone(), secret: other.secret.clone() };
        assert!(!key.hash().matches(&same_id_other_secret));
        assert!(!format!("{key:?}").contains(&key.secret), "Debug hides the secret");
    }

    #[test]
    fn malformed_keys_are_none() {
        let good = WriteKey::generate().reveal();
        for bad in ["", "wk_", "wk_0123_abc", &good[..good.len() - 1], &format!("{good}x"), &good.replace("wk_", "pk_")]
        {
            assert!(WriteKey::parse(bad).is_none(), "{bad}");
        }
        let upper = format!("wk_{}_{}", "ABCDEF0123456789", &good[good.len() - SECRET_CHARS..]);
        assert!(WriteKey::parse(&upper).is_none(), "key ids are lowercase");
    }

    #[test]
    fn basic_auth_carries_the_key_as_user_name() {
        let key = WriteKey::generate();
        let header = |user_pass: &str| format!("Basic {}", STANDARD.encode(user_pass));
        assert_eq!(WriteKey::from_basic(&header(&format!("{}:", key.reveal()))), Some(key.clone()));
        assert_eq!(WriteKey::from_basic(&header(&key.reveal())), Some(key.clone()), "no colon at all");
        assert_eq!(WriteKey::from_basic(&header(&format!("{}:ignored", key.reveal()))), Some(key.clone()));
        assert_eq!(WriteKey::from_basic(&format!("basic {}", STANDARD.encode(key.reveal()))), Some(key.clone()));
        assert_eq!(WriteKey::from_basic(&format!("Bearer {}", key.reveal())), None);
        assert_eq!(WriteKey::from_basic("Basic !!!"), None);
    }

    #[test]
    fn origins_narrow_from_the_deployment_to_the_key() {
        let deployment = vec!["https://a.example".to_owned(), "https://b.example".to_owned()];
        let key = vec!["https://a.example".to_owned()];
        assert!(origin_allowed(None, &key, &deployment), "no Origin: not a browser");
        assert!(origin_allowed(Some("https://a.example"), &key, &deployment));
        assert!(!origin_allowed(Some("https://b.example"), &key, &deployment), "the key narrows");
        assert!(origin_allowed(Some("https://b.example"), &[], &deployment), "no key origins: the deployment's");
        assert!(!origin_allowed(Some("https://c.example"), &[], &deployment));
        assert!(!origin_allowed(Some("https://a.example"), &[], &[]), "no CORS: no browser may send");
        assert!(origin_allowed(Some("https://c.example"), &[], &["*".to_owned()]));
        let anywhere = vec!["*".to_owned()];
        assert!(!origin_allowed(Some("https://c.example"), &anywhere, &deployment), "a key's * never widens");
        assert!(!origin_allowed(Some("https://a.example"), &key, &[]), "no CORS: a key's origins are not enough");
        assert!(origin_allowed(Some("HTTPS://A.example"), &key, &deployment), "case-insensitive");
    }

    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(parse_origin("https://Shop.example:8443").unwrap(), "https://shop.example:8443");
        assert_eq!(parse_origin("*").unwrap(), "*");
        for bad in ["shop.example", "https://", "https://a.example/path", "ftp://a.example", "https://a b"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_key_is_checked_against_its_stored_hash_and_a_revoked_one_stops_within_the_ttl() {
        let store = crate::memory::MemoryKeys::default();
        let key = WriteKey::generate();
        let grant = KeyGrant {
            key_id: key.id.clone(),
            source: Source::parse("web").unwrap(),
            allowed_origins: Vec::new(),
            events_per_second: 10,
            created_at: "2026-12-07T00:00:00Z".into(),
        };
        store.put(&StoredKey { grant: grant.clone(), secret_hash: key.hash() }).await.unwrap();
        assert_eq!(check_key(&store, Some(&key)).await.unwrap(), Ok(grant.clone()));
        assert_eq!(check_key(&store, None).await.unwrap(), Err(Denied::Missing));
        let forged = WriteKey::parse(&format!("wk_{}_{}", key.id, WriteKey::generate().secret)).unwrap();
        assert_eq!(check_key(&store, Some(&forged)).await.unwrap(), Err(Denied::Invalid));

        let cached = CachedKeys::new(store, Duration::from_millis(200));
        assert!(check_key(&cached, Some(&key)).await.unwrap().is_ok());
        assert!(cached.store().delete(&key.id).await.unwrap(), "revoked behind the cache's back");
        assert!(check_key(&cached, Some(&key)).await.unwrap().is_ok(), "still cached");
        assert_eq!(
            check_key(&cached, Some(&forged)).await.unwrap(),
            Err(Denied::Invalid),
            "the secret is checked each time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(check_key(&cached, Some(&key)).await.unwrap(), Err(Denied::Invalid), "gone after the ttl");
    }
}

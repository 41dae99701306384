//! Reading typed configuration from environment variables, once, at cold start.

/// A missing or malformed setting: the function refuses to start rather than misbehave later.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Looks settings up by name; the process environment in Lambda, a map in the local stack.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Name and value pairs, as tests write settings: `&[("EVENTS_TABLE", "t")]`.
impl<const N: usize> Lookup for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }
}

pub fn required(env: &impl Lookup, name: &'static str) -> Result<String, ConfigError> {
    env.get(name).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name))
}

/// An optional setting parsed with `FromStr`; empty counts as unset.
pub fn parsed_or<T: std::str::FromStr>(env: &impl Lookup, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string() }),
    }
}

/// How far in the future a timestamp may be (`MAX_FUTURE_SKEW_SECONDS`, 300 s unless set).
pub fn max_future_skew(env: &impl Lookup) -> Result<time::Duration, ConfigError> {
    let seconds: u32 = parsed_or(env, names::MAX_FUTURE_SKEW_SECONDS, 300)?;
    Ok(time::Duration::seconds(i64::from(seconds)))
}

/// The rules events are held to, read by ingest and the transform from the same variables,
/// so a record written to the stream directly meets what an API request must.
pub fn rules(env: &impl Lookup) -> Result<crate::Rules, ConfigError> {
    Ok(crate::Rules {
        max_future_skew: max_future_skew(env)?,
        allowed_types: list(env, names::ALLOWED_TYPES, crate::EventType::parse)?,
        allowed_sources: list(env, names::ALLOWED_SOURCES, crate::Source::parse)?,
    })
}

/// A comma-separated list, each item parsed; empty means an empty list.
pub fn list<T>(
    env: &impl Lookup,
    name: &'static str,
    parse: impl Fn(String) -> Result<T, &'static str>,
) -> Result<Vec<T>, ConfigError> {
    env.get(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse(item.to_owned()).map_err(|rule| ConfigError::Invalid { name, reason: format!("{item:?} {rule}") })
        })
        .collect()
}

/// Environment variable names, shared by the functions, `template.yaml` and the local stack.
pub mod names {
    pub const EVENTS_TABLE: &str = "EVENTS_TABLE";
    pub const INGEST_STREAM: &str = "INGEST_STREAM";
    pub const OUTPUT_STREAM: &str = "OUTPUT_STREAM";
    pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
    /// The failure bucket, where the transform keeps poison records too large for a message.
    pub const DEAD_LETTER_BUCKET: &str = "DEAD_LETTER_BUCKET";
    pub const MAX_FUTURE_SKEW_SECONDS: &str = "MAX_FUTURE_SKEW_SECONDS";
    pub const ALLOWED_TYPES: &str = "ALLOWED_TYPES";
    pub const ALLOWED_SOURCES: &str = "ALLOWED_SOURCES";
    pub const AGGREGATE_MEASURES: &str = "AGGREGATE_MEASURES";
    pub const MAX_BREAKDOWN_KEYS: &str = "MAX_BREAKDOWN_KEYS";
    /// Days events are kept from when they were received (`EventRetentionDays`); 0 or unset
    /// keeps them forever.
    pub const EVENT_RETENTION_DAYS: &str = "EVENT_RETENTION_DAYS";
    /// How long the streams keep records (`StreamRetentionHours`).
    pub const STREAM_RETENTION_HOURS: &str = "STREAM_RETENTION_HOURS";
    /// The token claim a JWT caller's events must name as their `user_id`.
    pub const JWT_USER_CLAIM: &str = "JWT_USER_CLAIM";
    /// Origins browsers may send events from with a write key (`CorsAllowedOrigins`).
    pub const CORS_ALLOWED_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
    /// Seconds a write key's check is cached (the authorizer's cache TTL).
    pub const WRITE_KEY_CACHE_SECONDS: &str = "WRITE_KEY_CACHE_SECONDS";
    /// Events a second a write key gets when it names no rate.
    pub const WRITE_KEY_EVENTS_PER_SECOND: &str = "WRITE_KEY_EVENTS_PER_SECOND";
    /// The stack's name, the `Stack` dimension of the pipeline's own metrics.
    pub const STACK_NAME: &str = "STACK_NAME";
    /// Another endpoint for every AWS client (a local emulator); empty means AWS itself.
    pub const ENDPOINT_URL: &str = "ENDPOINT_URL";
    /// The certificates the AWS clients trust: `amazon` (default) or `system`.
    pub const TLS_ROOTS: &str = "TLS_ROOTS";
}

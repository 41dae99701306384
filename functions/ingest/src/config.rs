//! Settings the ingest function reads once, from the variables `template.yaml` sets.

use eventline_model::Rules;
use eventline_model::config::{ConfigError, Lookup, list, names, parsed_or, required, rules};
use eventline_model::write_key::parse_origin;

#[derive(Debug, Clone)]
pub struct Config {
    pub stream_name: String,
    pub table_name: String,
    pub rules: Rules,
    /// The token claim a JWT caller's `user_id` is bound to.
    pub user_claim: String,
    /// Origins browsers may send from with a write key; empty: none.
    pub cors_origins: Vec<String>,
    /// How long a write key's check is trusted, as the authorizer's answers are cached.
    pub key_cache: std::time::Duration,
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            stream_name: required(env, names::INGEST_STREAM)?,
            table_name: required(env, names::EVENTS_TABLE)?,
            rules: rules(env)?,
            user_claim: env.get(names::JWT_USER_CLAIM).filter(|c| !c.is_empty()).unwrap_or_else(|| "sub".to_owned()),
            cors_origins: list(env, names::CORS_ALLOWED_ORIGINS, |origin| {
                parse_origin(&origin).map_err(|_| "is not an origin (scheme://host[:port] or *)")
            })?,
            key_cache: std::time::Duration::from_secs(parsed_or(env, names::WRITE_KEY_CACHE_SECONDS, 300)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_template_variables() {
        let config = Config::from_lookup(&[
            ("INGEST_STREAM", "s"),
            ("EVENTS_TABLE", "t"),
            ("MAX_FUTURE_SKEW_SECONDS", "60"),
            ("ALLOWED_TYPES", "click, view"),
            ("ALLOWED_SOURCES", ""),
        ])
        .unwrap();
        assert_eq!(config.rules.max_future_skew, time::Duration::seconds(60));
        assert_eq!(config.rules.allowed_types.len(), 2);
        assert!(config.rules.allowed_sources.is_empty());
        assert_eq!(config.user_claim, "sub", "the template's default");
    }

    #[test]
    fn when_stream_missing_or_list_invalid_should_fail_fast() {
        assert!(Config::from_lookup(&[("EVENTS_TABLE", "t")]).is_err());
        let bad = [("INGEST_STREAM", "s"), ("EVENTS_TABLE", "t"), ("ALLOWED_TYPES", "Bad Type")];
        assert!(Config::from_lookup(&bad).unwrap_err().to_string().contains("ALLOWED_TYPES"));
    }
}

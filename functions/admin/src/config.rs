//! Settings the administrator function reads once, from the variables `template.yaml` sets.

use eventline_model::config::{ConfigError, Lookup, list, max_future_skew, names, parsed_or, required};
use eventline_model::write_key::{DEFAULT_EVENTS_PER_SECOND, parse_origin};

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    /// How far in the future a table's `ts` may be: the setting ingest holds timestamps to.
    pub max_future_skew: time::Duration,
    /// The rate a write key gets when it asks for none.
    pub default_events_per_second: u32,
    /// The origins the deployment's CORS allows; a key's origins must be among them.
    pub cors_origins: Vec<String>,
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, names::EVENTS_TABLE)?,
            max_future_skew: max_future_skew(env)?,
            default_events_per_second: parsed_or(env, names::WRITE_KEY_EVENTS_PER_SECOND, DEFAULT_EVENTS_PER_SECOND)?,
            cors_origins: list(env, names::CORS_ALLOWED_ORIGINS, |origin| {
                parse_origin(&origin).map_err(|_| "is not an origin (scheme://host[:port] or *)")
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_template_variables() {
        let config = Config::from_lookup(&[("EVENTS_TABLE", "t"), ("MAX_FUTURE_SKEW_SECONDS", "60")]).unwrap();
        assert_eq!((config.table_name.as_str(), config.max_future_skew), ("t", time::Duration::seconds(60)));
        let defaulted = Config::from_lookup(&[("EVENTS_TABLE", "t")]).unwrap();
        assert_eq!(defaulted.max_future_skew, time::Duration::minutes(5));
    }

    #[test]
    fn when_table_missing_or_skew_invalid_should_fail_fast() {
        assert!(Config::from_lookup(&std::collections::HashMap::new()).is_err());
        let bad = [("EVENTS_TABLE", "t"), ("MAX_FUTURE_SKEW_SECONDS", "-1")];
        assert!(Config::from_lookup(&bad).unwrap_err().to_string().contains("MAX_FUTURE_SKEW_SECONDS"));
    }
}

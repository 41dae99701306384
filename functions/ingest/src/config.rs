//! Settings the ingest function reads once, from the variables `template.yaml` sets.

use eventline_model::Rules;
use eventline_model::config::{ConfigError, Lookup, names, required, rules};

#[derive(Debug, Clone)]
pub struct Config {
    pub stream_name: String,
    pub table_name: String,
    pub rules: Rules,
    /// The token claim a JWT caller's `user_id` is bound to.
    pub user_claim: String,
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            stream_name: required(env, names::INGEST_STREAM)?,
            table_name: required(env, names::EVENTS_TABLE)?,
            rules: rules(env)?,
            user_claim: env.get(names::JWT_USER_CLAIM).filter(|c| !c.is_empty()).unwrap_or_else(|| "sub".to_owned()),
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

//! Settings the transform function reads once, from the variables `template.yaml` sets.

use eventline_model::Rules;
use eventline_model::aggregate::{DEFAULT_BREAKDOWN_KEYS, DEFAULT_MEASURES};
use eventline_model::config::{ConfigError, Lookup, list, names, parsed_or, required, rules};

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    pub output_stream: String,
    pub dead_letter_queue_url: String,
    /// The failure bucket: poison records too large for a queue message are kept there.
    pub dead_letter_bucket: String,
    /// Numeric `data` fields the day and month aggregates sum.
    pub aggregate_measures: Vec<String>,
    /// The rules ingest applies, applied again to records other producers write.
    pub rules: Rules,
    /// Distinct keys each breakdown of a shared counter item keeps; later ones are folded.
    pub max_breakdown_keys: u32,
}

/// A measure names a top-level `data` field: 1-64 characters, no control characters.
fn measure(name: String) -> Result<String, &'static str> {
    let ok = (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control);
    if ok { Ok(name) } else { Err("must be 1-64 characters without control characters") }
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, names::EVENTS_TABLE)?,
            output_stream: required(env, names::OUTPUT_STREAM)?,
            dead_letter_queue_url: required(env, names::DEAD_LETTER_QUEUE_URL)?,
            dead_letter_bucket: required(env, names::DEAD_LETTER_BUCKET)?,
            aggregate_measures: match env.get(names::AGGREGATE_MEASURES) {
                None => DEFAULT_MEASURES.split(',').map(str::to_owned).collect(),
                Some(_) => list(env, names::AGGREGATE_MEASURES, measure)?,
            },
            rules: rules(env)?,
            max_breakdown_keys: match parsed_or(env, names::MAX_BREAKDOWN_KEYS, DEFAULT_BREAKDOWN_KEYS)? {
                0 => {
                    return Err(ConfigError::Invalid {
                        name: names::MAX_BREAKDOWN_KEYS,
                        reason: "must be at least 1".into(),
                    });
                }
                keys => keys,
            },
        })
    }
}

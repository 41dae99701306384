//! Settings the transform function reads once, from the variables `template.yaml` sets.

use eventline_model::config::{ConfigError, Lookup, names, required};

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    pub output_stream: String,
    pub dead_letter_queue_url: String,
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, names::EVENTS_TABLE)?,
            output_stream: required(env, names::OUTPUT_STREAM)?,
            dead_letter_queue_url: required(env, names::DEAD_LETTER_QUEUE_URL)?,
        })
    }
}

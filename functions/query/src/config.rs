//! Settings the query function reads once, from the variables `template.yaml` sets.

use eventline_model::config::{ConfigError, Lookup, names, required};

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    pub ingest_stream: String,
}

impl Config {
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, names::EVENTS_TABLE)?,
            ingest_stream: required(env, names::INGEST_STREAM)?,
        })
    }
}

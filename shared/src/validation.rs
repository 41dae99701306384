//! Validation rules that deployments tune, and the error a client sees for one field.

use serde::Serialize;
use time::Duration;

use crate::event::{EventType, Source};

/// One problem with one field: `field` names it (empty for the event as a whole),
/// `rule` is a stable code, `message` says what the rule is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub rule: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, rule: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), rule: rule.to_owned(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{} {}", self.field, self.message) }
    }
}

/// Deployment-specific rules; the defaults accept any type and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How far in the future a timestamp may be (clock-skew guard).
    pub max_future_skew: Duration,
    /// Empty means any type.
    pub allowed_types: Vec<EventType>,
    /// Empty means any source.
    pub allowed_sources: Vec<Source>,
}

impl Default for Rules {
    fn default() -> Self {
        Self { max_future_skew: Duration::minutes(5), allowed_types: Vec::new(), allowed_sources: Vec::new() }
    }
}

impl Rules {
    pub fn type_allowed(&self, event_type: &EventType) -> bool {
        self.allowed_types.is_empty() || self.allowed_types.contains(event_type)
    }

    pub fn source_allowed(&self, source: &Source) -> bool {
        self.allowed_sources.is_empty() || self.allowed_sources.contains(source)
    }
}

//! Settings the transform function reads once, from the variables `template.yaml` sets.

use eventline_model::Rules;
use eventline_model::aggregate::{DEFAULT_BREAKDOWN_KEYS, DEFAULT_MEASURES};
use eventline_model::config::{ConfigError, Lookup, list, names, parsed_or, required, rules};
use time::Duration;

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
    /// How long events (with their index copies and markers) are kept from when they were
    /// received; `None` keeps them forever.
    pub event_retention: Option<Duration>,
}

/// How much longer than the stream events must be kept: a record can be delivered again
/// until the stream drops it, and is recognised as a redelivery, a duplicate or a conflict
/// only while the first copy is kept.
pub const RETENTION_MARGIN: Duration = Duration::days(1);

/// `EVENT_RETENTION_DAYS`, refused unless it outlasts the stream's retention by
/// [`RETENTION_MARGIN`] (the template's rules refuse the same values before deploying).
fn event_retention(env: &impl Lookup) -> Result<Option<Duration>, ConfigError> {
    let days: u32 = parsed_or(env, names::EVENT_RETENTION_DAYS, 0)?;
    if days == 0 {
        return Ok(None);
    }
    let retention = Duration::days(i64::from(days));
    let stream_hours: u32 = parsed_or(env, names::STREAM_RETENTION_HOURS, 24)?;
    let least = Duration::hours(i64::from(stream_hours)) + RETENTION_MARGIN;
    if retention < least {
        return Err(ConfigError::Invalid {
            name: names::EVENT_RETENTION_DAYS,
            reason: format!(
                "{days} days does not outlast the stream's {stream_hours} hours by a day: keep events at least {} days, or 0 for ever",
                (least.whole_hours() as u64).div_ceil(24)
            ),
        });
    }
    Ok(Some(retention))
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
            event_retention: event_retention(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn retention(days: &str, stream_hours: &str) -> Result<Option<Duration>, ConfigError> {
        let env: HashMap<String, String> = HashMap::from([
            (names::EVENT_RETENTION_DAYS.to_owned(), days.to_owned()),
            (names::STREAM_RETENTION_HOURS.to_owned(), stream_hours.to_owned()),
        ]);
        event_retention(&env)
    }

    #[test]
    fn events_are_kept_forever_or_at_least_a_day_longer_than_the_stream_keeps_records() {
        assert_eq!(retention("0", "168").unwrap(), None);
        assert_eq!(retention("", "24").unwrap(), None);
        assert_eq!(retention("2", "24").unwrap(), Some(Duration::days(2)));
        assert_eq!(retention("8", "168").unwrap(), Some(Duration::days(8)));
        for (days, hours) in [("1", "24"), ("7", "168"), ("2", "48"), ("365", "8760")] {
            let error = retention(days, hours).unwrap_err().to_string();
            assert!(
                error.contains("EVENT_RETENTION_DAYS") && error.contains("does not outlast"),
                "{days}/{hours}: {error}"
            );
        }
        assert!(retention("8", "168").is_ok() && retention("366", "8760").is_ok());
        assert!(retention("-1", "24").is_err(), "not a number of days");
    }
}

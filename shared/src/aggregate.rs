//! Day and month aggregates, per user and for everyone: the periods, and what one period
//! holds (a count, counts by type and source, sums of numeric `data` fields).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use time::{Date, Month, OffsetDateTime};

use crate::event::RawObject;

/// Measures are numbers of magnitude below 10^18: larger ones (and other values) add
/// nothing to the sums.
pub const MAX_MEASURE: u64 = 1_000_000_000_000_000_000;

/// The measures summed when the deployment names none.
pub const DEFAULT_MEASURES: &str = "duration_seconds,bytes_up,bytes_down";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Day,
    Month,
}

impl Granularity {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }
}

/// One UTC day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day(Date),
    Month(i32, Month),
}

impl Period {
    pub fn of(time: OffsetDateTime, granularity: Granularity) -> Self {
        let date = time.to_offset(time::UtcOffset::UTC).date();
        match granularity {
            Granularity::Day => Period::Day(date),
            Granularity::Month => Period::Month(date.year(), date.month()),
        }
    }

    /// `2025-01-07` or `2025-01`: the label clients see, and (with a prefix) the sort key.
    pub fn label(self) -> String {
        match self {
            Period::Day(date) => format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()),
            Period::Month(year, month) => format!("{year:04}-{:02}", u8::from(month)),
        }
    }

    pub fn granularity(self) -> Granularity {
        match self {
            Period::Day(_) => Granularity::Day,
            Period::Month(..) => Granularity::Month,
        }
    }
}

/// A sum of numbers: exact while every input is an integer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    pub integer: i128,
    pub fraction: f64,
    pub has_fraction: bool,
}

impl Sum {
    /// The text of a DynamoDB number: digits only when exact.
    pub fn to_number_text(self) -> String {
        if self.has_fraction { format!("{}", self.integer as f64 + self.fraction) } else { self.integer.to_string() }
    }

    /// A JSON number as the client wrote it, if it is a measure: its magnitude below
    /// [`MAX_MEASURE`], so that sums of any number of events stay within DynamoDB's 38
    /// digits and i128. `None` for anything else, which adds nothing.
    pub fn parse(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        if let Ok(integer) = text.parse::<i128>() {
            return (integer.unsigned_abs() < MAX_MEASURE as u128).then_some(Sum { integer, ..Sum::default() });
        }
        let value: f64 = serde_json::from_str::<serde_json::Number>(text).ok()?.as_f64()?;
        (value.is_finite() && value.abs() < MAX_MEASURE as f64).then_some(Sum {
            integer: 0,
            fraction: value,
            has_fraction: true,
        })
    }

    /// Adds, saturating: only a sum beyond what the measures' bound allows for 10^19
    /// events could reach the limit.
    pub fn saturating_add(&mut self, other: &Sum) {
        self.integer = self.integer.saturating_add(other.integer);
        self.fraction += other.fraction;
        self.has_fraction |= other.has_fraction;
    }
}

/// What one aggregate item adds up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateTally {
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    pub sums: BTreeMap<String, Sum>,
}

impl AggregateTally {
    pub fn add(&mut self, other: &AggregateTally) {
        self.events += other.events;
        for (mine, theirs) in [(&mut self.by_type, &other.by_type), (&mut self.by_source, &other.by_source)] {
            for (key, count) in theirs {
                *mine.entry(key.clone()).or_default() += count;
            }
        }
        for (name, sum) in &other.sums {
            self.sums.entry(name.clone()).or_default().saturating_add(sum);
        }
    }
}

/// The numeric top-level fields of `data` named by `measures`.
pub fn measures_of(data: Option<&RawObject>, measures: &[String]) -> BTreeMap<String, Sum> {
    let Some(data) = data else { return BTreeMap::new() };
    let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(data.get()) else {
        return BTreeMap::new();
    };
    measures
        .iter()
        .filter_map(|name| fields.get(name).and_then(|raw| Sum::parse(raw)).map(|sum| (name.clone(), sum)))
        .collect()
}

/// One period in an aggregates answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodView {
    pub period: String,
    pub count: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    pub sums: BTreeMap<String, serde_json::Value>,
}

impl PeriodView {
    pub fn of(period: String, tally: AggregateTally) -> Self {
        let sums = tally
            .sums
            .into_iter()
            .map(|(name, sum)| {
                let value = if sum.has_fraction {
                    serde_json::Number::from_f64(sum.integer as f64 + sum.fraction)
                        .map_or(serde_json::Value::Null, Into::into)
                } else if let Ok(small) = i64::try_from(sum.integer) {
                    small.into()
                } else {
                    // Beyond 64 bits JSON readers lose digits: the exact sum as text.
                    sum.integer.to_string().into()
                };
                (name, value)
            })
            .collect();
        Self { period, count: tally.events, by_type: tally.by_type, by_source: tally.by_source, sums }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_are_utc_days_and_months() {
        let t = datetime!(2025-01-07 23:30:00 -02:00);
        assert_eq!(Period::of(t, Granularity::Day).label(), "2025-01-08");
        assert_eq!(Period::of(t, Granularity::Month).label(), "2025-01");
    }

    #[test]
    fn numbers_too_large_to_sum_safely_add_nothing() {
        let data = RawObject::from_text(
            r#"{"duration_seconds": 1000000000000000000, "bytes_up": 9e125, "bytes_down": 150000000000000000000000000000000000000}"#.into(),
        )
        .unwrap();
        let names: Vec<String> = DEFAULT_MEASURES.split(',').map(str::to_owned).collect();
        assert!(measures_of(Some(&data), &names).is_empty());
    }

    #[test]
    fn only_named_numeric_fields_are_summed_exactly() {
        let data = RawObject::from_text(
            r#"{"duration_seconds": 123456789012345678, "bytes_up": "12", "bytes_down": 1.5, "other": 3}"#.into(),
        )
        .unwrap();
        let names: Vec<String> = DEFAULT_MEASURES.split(',').map(str::to_owned).collect();
        let sums = measures_of(Some(&data), &names);
        assert_eq!(sums.len(), 2, "a string is not numeric, an unnamed field is not a measure");
        let mut total = sums["duration_seconds"];
        total.saturating_add(&sums["duration_seconds"]);
        assert_eq!(total.to_number_text(), "246913578024691356");
        assert_eq!(sums["bytes_down"].to_number_text(), "1.5");
    }
}

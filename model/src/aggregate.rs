//! Day and month aggregates, per user and for everyone: the periods, and what one period
//! holds (a count, counts by type and source, sums of numeric `data` fields).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use time::{Date, Month, OffsetDateTime};

use crate::event::RawObject;

/// Measures are numbers of magnitude below 10^18 with at most [`MEASURE_DECIMALS`] places
/// after the point: other values (and anything not a number) add nothing to the sums.
pub const MAX_MEASURE: u64 = 1_000_000_000_000_000_000;

/// Places a measure may have after the decimal point. Sums are kept as whole millionths, so
/// they are exact, and a stored sum has at most 38 significant digits (DynamoDB's limit)
/// until it passes 10^32.
pub const MEASURE_DECIMALS: u32 = 6;
const MICROS_PER_UNIT: i128 = 10_i128.pow(MEASURE_DECIMALS);

/// The measures summed when the deployment names none.
pub const DEFAULT_MEASURES: &str = "duration_seconds,bytes_up,bytes_down";

/// Distinct keys each breakdown (`by_type`, `by_source`, ...) of a shared counter item keeps
/// a counter of its own when the deployment sets no other number: later keys are counted
/// under [`OTHER_KEY`], so an item stays far below DynamoDB's 400 KB whatever producers send.
pub const DEFAULT_BREAKDOWN_KEYS: u32 = 100;

/// The key a breakdown counts folded keys under (with events whose key is literally this).
pub const OTHER_KEY: &str = "other";

/// Keys a breakdown shows in one answer's period or window: the largest counts (ties by
/// key), the rest added to [`OTHER_KEY`]. Items read from several shards can together hold
/// more keys than one item keeps; this bounds an answer (366 days of two breakdowns stay
/// near 3 MB at worst) whatever the deployment's `MaxBreakdownKeys`.
pub const ANSWER_KEYS: usize = 50;

/// Folds a breakdown to at most [`ANSWER_KEYS`] keys besides [`OTHER_KEY`]; returns the
/// count it moved.
pub fn fold_for_answer(counts: &mut BTreeMap<String, u64>) -> u64 {
    let other = counts.remove(OTHER_KEY);
    let mut folded = 0;
    if counts.len() > ANSWER_KEYS {
        let mut ranked: Vec<(String, u64)> = std::mem::take(counts).into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        folded = ranked[ANSWER_KEYS..].iter().map(|(_, count)| count).sum();
        ranked.truncate(ANSWER_KEYS);
        counts.extend(ranked);
    }
    if other.is_some() || folded > 0 {
        counts.insert(OTHER_KEY.to_owned(), other.unwrap_or(0) + folded);
    }
    folded
}

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

/// A sum of measures, exact: a whole number of millionths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    micros: i128,
}

/// Sums stop growing here, 10^38 - 1 millionths: the most a DynamoDB number holds exactly.
const MAX_SUM_MICROS: i128 = 10_i128.pow(38) - 1;

impl Sum {
    /// The sum as DynamoDB number text: exact, without an exponent.
    pub fn to_number_text(self) -> String {
        let sign = if self.micros < 0 { "-" } else { "" };
        let magnitude = self.micros.unsigned_abs();
        let (whole, fraction) = (magnitude / MICROS_PER_UNIT as u128, magnitude % MICROS_PER_UNIT as u128);
        if fraction == 0 {
            format!("{sign}{whole}")
        } else {
            let places = format!("{fraction:0width$}", width = MEASURE_DECIMALS as usize);
            format!("{sign}{whole}.{}", places.trim_end_matches('0'))
        }
    }

    /// A JSON number as the client wrote it, if it is a measure: of magnitude below
    /// [`MAX_MEASURE`] and with at most [`MEASURE_DECIMALS`] places, however it is written
    /// (`1.5`, `15e-1`, `1.50`). `None` for anything else, which adds nothing.
    pub fn parse(raw: &RawValue) -> Option<Self> {
        let micros = exact_micros(raw.get())?;
        (micros.unsigned_abs() < u128::from(MAX_MEASURE) * MICROS_PER_UNIT as u128).then_some(Sum { micros })
    }

    /// A sum as it was stored ([`Sum::to_number_text`], or any exact form of it).
    pub fn parse_stored(text: &str) -> Option<Self> {
        exact_micros(text).map(|micros| Sum { micros })
    }

    /// Adds, saturating at the largest sum DynamoDB can hold exactly: only sums of more
    /// than 10^14 measures near their bound could reach it.
    pub fn saturating_add(&mut self, other: &Sum) {
        self.micros = self.micros.saturating_add(other.micros).clamp(-MAX_SUM_MICROS, MAX_SUM_MICROS);
    }

    /// The sum in an answer: a JSON number when a JSON reader gets it back exactly (64-bit
    /// integers, and decimals a double holds), otherwise its exact text.
    pub fn to_json(self) -> serde_json::Value {
        let text = self.to_number_text();
        if self.micros % MICROS_PER_UNIT == 0
            && let Ok(whole) = i64::try_from(self.micros / MICROS_PER_UNIT)
        {
            return whole.into();
        }
        match text.parse::<f64>() {
            Ok(value)
                if exact_micros(&value.to_string()) == Some(self.micros) && self.micros % MICROS_PER_UNIT != 0 =>
            {
                serde_json::Number::from_f64(value).map_or_else(|| text.clone().into(), Into::into)
            }
            _ => text.into(),
        }
    }
}

/// A decimal number (JSON's or DynamoDB's form, with an optional exponent) as a whole number
/// of millionths, if it is one exactly and fits 38 digits.
fn exact_micros(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    let trailing_zeros = digits.trim_start_matches('0').len() - significant.len();
    // The value is `significant` × 10^power millionths.
    let power = exponent
        .checked_add(trailing_zeros as i64)?
        .checked_sub(fraction.len() as i64)?
        .checked_add(i64::from(MEASURE_DECIMALS))?;
    if power < 0 || significant.len() > 38 {
        return None;
    }
    let mut micros: i128 = significant.parse().ok()?;
    for _ in 0..power {
        micros = micros.checked_mul(10)?;
    }
    (micros <= MAX_SUM_MICROS).then_some(if negative { -micros } else { micros })
}

/// What one aggregate item adds up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateTally {
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    pub sums: BTreeMap<String, Sum>,
    /// Events whose type or source this item counted under [`OTHER_KEY`] because the
    /// breakdown already held its most keys.
    pub folded: u64,
}

impl AggregateTally {
    /// Folds each breakdown to what one answer shows ([`fold_for_answer`]).
    pub fn fold_for_answer(&mut self) {
        self.folded += fold_for_answer(&mut self.by_type) + fold_for_answer(&mut self.by_source);
    }

    pub fn add(&mut self, other: &AggregateTally) {
        self.events += other.events;
        self.folded += other.folded;
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
        let sums = tally.sums.into_iter().map(|(name, sum)| (name, sum.to_json())).collect();
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

    fn measure(text: &str) -> Option<Sum> {
        Sum::parse(&RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn measures_with_more_places_than_kept_add_nothing() {
        for text in ["1e-100", "0.0000001", "1.2345678", "-3.0000005", "1e999999", "-1e-7"] {
            assert_eq!(measure(text), None, "{text}");
        }
    }

    #[test]
    fn decimal_measures_sum_exactly_however_they_are_written() {
        let mut total = Sum::default();
        for text in ["0.1", "0.2", "15e-1", "1.50", "-0.25", "2E+3", "0.000001", "1e-6"] {
            total.saturating_add(&measure(text).unwrap_or_else(|| panic!("{text} is a measure")));
        }
        assert_eq!(total.to_number_text(), "2003.050002");
        assert_eq!(Sum::parse_stored("2003.050002"), Some(total));
        assert_eq!(total.to_json(), serde_json::json!(2003.050002));
    }

    #[test]
    fn a_stored_sum_stays_within_dynamodbs_38_digits() {
        let largest = measure("999999999999999999.999999").unwrap();
        let mut total = Sum::default();
        for _ in 0..200_000 {
            total.saturating_add(&largest);
        }
        let text = total.to_number_text();
        let digits = text.chars().filter(char::is_ascii_digit).count();
        assert!(digits <= 38 && !text.contains(['e', 'E']), "{text}");
        assert_eq!(Sum::parse_stored(&text), Some(total));
        // Past 10^32 it stops growing rather than need a 39th digit.
        let mut huge = Sum::parse_stored(&"9".repeat(38)).unwrap_or_default();
        assert_eq!(huge, Sum::default(), "more than 38 digits in millionths is not a stored sum");
        huge = Sum::parse_stored(&"9".repeat(32)).unwrap();
        huge.saturating_add(&largest);
        assert_eq!(huge.to_number_text().chars().filter(char::is_ascii_digit).count(), 38);
    }

    #[test]
    fn sums_a_json_reader_would_round_are_answered_as_text() {
        assert_eq!(Sum::parse_stored("12345678901234567.123456").unwrap().to_json(), "12345678901234567.123456");
        assert_eq!(Sum::parse_stored("-7").unwrap().to_json(), serde_json::json!(-7));
        assert_eq!(Sum::parse_stored("100000000000000000000").unwrap().to_json(), "100000000000000000000");
    }

    #[test]
    fn an_answer_shows_the_largest_keys_and_the_rest_as_other() {
        let mut counts: BTreeMap<String, u64> =
            (0..ANSWER_KEYS as u64 + 10).map(|i| (format!("k{i:03}"), i + 1)).collect();
        counts.insert(OTHER_KEY.into(), 7);
        let total: u64 = counts.values().sum();
        let folded = fold_for_answer(&mut counts);
        assert_eq!(folded, (1..=10).sum::<u64>(), "the ten smallest fold");
        assert_eq!(counts.len(), ANSWER_KEYS + 1);
        assert_eq!(counts.values().sum::<u64>(), total);
        assert_eq!(counts[OTHER_KEY], 7 + folded);
        assert!(!counts.contains_key("k000") && counts.contains_key("k059"));
        let mut few = BTreeMap::from([("a".to_owned(), 1)]);
        assert_eq!(fold_for_answer(&mut few), 0);
        assert_eq!(few, BTreeMap::from([("a".to_owned(), 1)]), "nothing to fold adds no other");
    }
}

//! `GET /users/{user_id}/events`, `GET /users/{user_id}/aggregates` and `GET /aggregates`:
//! the parameters, the opaque page cursor, and the ranges they turn into.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};

use eventline_aws::keys;
use std::collections::BTreeMap;

use eventline_model::aggregate::{AggregateTally, Granularity, Period};
use eventline_model::event::{checked_utc, sortable_timestamp};

/// Events per page: default and most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Most periods one aggregates answer covers: a leap year of days, or ten years of months.
/// A read costs one item per period per partition (per shard for everyone's), so a span
/// bounds both the read and the answer.
pub const MAX_DAYS: i64 = 366;
pub const MAX_MONTHS: i64 = 120;

/// Why a parameter was refused: its name and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter {
    pub field: &'static str,
    pub rule: &'static str,
}

const TIME_RULE: &str = "must be an RFC 3339 timestamp or Unix epoch seconds or milliseconds";

/// A time parameter: RFC 3339, or epoch seconds or milliseconds as for events.
pub fn time_param(field: &'static str, text: &str) -> Result<OffsetDateTime, BadParameter> {
    let bad = BadParameter { field, rule: TIME_RULE };
    let raw = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.to_owned()
    } else {
        serde_json::to_string(text).map_err(|_| bad.clone())?
    };
    let raw = serde_json::value::RawValue::from_string(raw).map_err(|_| bad.clone())?;
    eventline_model::validation::parse_timestamp(&raw).map_err(|_| bad)
}

pub fn limit_param(text: Option<&str>) -> Result<usize, BadParameter> {
    let Some(text) = text else { return Ok(DEFAULT_LIMIT) };
    text.parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n) && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(BadParameter { field: "limit", rule: "must be an integer from 1 to 1000" })
}

pub fn granularity_param(text: Option<&str>) -> Result<Granularity, BadParameter> {
    match text {
        None => Ok(Granularity::Day),
        Some(text) => {
            Granularity::parse(text).ok_or(BadParameter { field: "granularity", rule: "must be day or month" })
        }
    }
}

/// A user's events from `from` (inclusive) to `to` (exclusive) as a range of `user_sk`.
pub fn user_sk_range(from: OffsetDateTime, to: OffsetDateTime) -> (String, String) {
    // `~` sorts after every character a source or id may hold.
    let last = to - Duration::nanoseconds(1);
    (sortable_timestamp(from), format!("{}#~", sortable_timestamp(last)))
}

/// Where the next page starts: the last event returned, by its index key and table key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub user_sk: String,
    pub pk: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{}", self.user_sk, self.pk))
    }

    /// Reads a cursor back; anything this service did not write is refused.
    pub fn decode(text: &str) -> Result<Self, BadParameter> {
        let bad = BadParameter { field: "cursor", rule: "is not a cursor this service gave" };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad.clone())?;
        let text = String::from_utf8(bytes).map_err(|_| bad.clone())?;
        let (user_sk, pk) = text.split_once('\n').ok_or(bad.clone())?;
        let well_formed = user_sk.len() > 31
            && user_sk.as_bytes().get(30) == Some(&b'#')
            && time::OffsetDateTime::parse(&user_sk[..30], &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(checked_utc)
                .is_some()
            && pk.starts_with("EVENT#")
            && pk.matches('#').count() == 2;
        if well_formed { Ok(Self { user_sk: user_sk.to_owned(), pk: pk.to_owned() }) } else { Err(bad) }
    }
}

/// The aggregate periods asked for: defaults are the last 31 days or 12 months.
pub fn period_range(
    granularity: Granularity,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> (Period, Period) {
    let to = to.unwrap_or(now + Duration::nanoseconds(1));
    let from = from.unwrap_or_else(|| match granularity {
        Granularity::Day => to - Duration::days(31),
        Granularity::Month => to - Duration::days(365),
    });
    let last = to - Duration::nanoseconds(1);
    (Period::of(from, granularity), Period::of(last, granularity))
}

/// How many periods `first..=last` holds (0 or less when `last` comes first).
pub fn periods_between(first: Period, last: Period) -> i64 {
    match (first, last) {
        (Period::Day(first), Period::Day(last)) => (last - first).whole_days() + 1,
        (Period::Month(first_year, first_month), Period::Month(last_year, last_month)) => {
            let index = |year: i32, month: time::Month| i64::from(year) * 12 + i64::from(u8::from(month));
            index(last_year, last_month) - index(first_year, first_month) + 1
        }
        // Both ends come from one granularity.
        _ => 0,
    }
}

/// The most periods an answer of this granularity may cover, and the unit's name.
pub fn span_limit(granularity: Granularity) -> (i64, &'static str) {
    match granularity {
        Granularity::Day => (MAX_DAYS, "day"),
        Granularity::Month => (MAX_MONTHS, "month"),
    }
}

/// Bytes a JSON text takes inside Lambda's response to API Gateway, where the body travels
/// as a JSON string: quotes and backslashes gain a backslash (JSON text holds no raw
/// control characters, but they are counted as `\u00XX` all the same).
pub fn invocation_bytes(json: &[u8]) -> usize {
    json.iter()
        .map(|&b| match b {
            b'"' | b'\\' => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum()
}

pub fn period_sk_range(first: Period, last: Period) -> (String, String) {
    (keys::period_sk(first), keys::period_sk(last))
}

/// The day items of the months `first` to `last`, as a range of sort keys (`-31` bounds
/// every month: sort keys compare as text).
pub fn days_of_months_sk_range(first: Period, last: Period) -> (String, String) {
    let day = |month: Period, day: &str| format!("D#{}-{day}", month.label());
    (day(first, "01"), day(last, "31"))
}

/// Day tallies (by `yyyy-mm-dd` label) added up into their months (`yyyy-mm`).
pub fn months_of_days(days: BTreeMap<String, AggregateTally>) -> BTreeMap<String, AggregateTally> {
    let mut months: BTreeMap<String, AggregateTally> = BTreeMap::new();
    for (label, tally) in days {
        months.entry(label.get(..7).unwrap_or(&label).to_owned()).or_default().add(&tally);
    }
    months
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_users_months_are_read_as_their_days_and_added_up() {
        let month = |t| Period::of(t, Granularity::Month);
        let range =
            days_of_months_sk_range(month(datetime!(2026-02-10 0:00 UTC)), month(datetime!(2026-04-01 0:00 UTC)));
        assert_eq!(range, ("D#2026-02-01".to_owned(), "D#2026-04-31".to_owned()));
        let (first, last) = (range.0.as_str(), range.1.as_str());
        assert!(first <= "D#2026-02-28" && "D#2026-04-30" <= last);
        assert!("D#2026-05-01" > last && "D#2026-01-31" < first);
        let tally = |events, kind: &str| AggregateTally {
            events,
            by_type: BTreeMap::from([(kind.to_owned(), events)]),
            ..AggregateTally::default()
        };
        let days = BTreeMap::from([
            ("2026-02-01".to_owned(), tally(2, "a")),
            ("2026-02-28".to_owned(), tally(3, "b")),
            ("2026-04-30".to_owned(), tally(1, "a")),
        ]);
        let months = months_of_days(days);
        assert_eq!(months.keys().collect::<Vec<_>>(), ["2026-02", "2026-04"]);
        assert_eq!(months["2026-02"].events, 5);
        assert_eq!(months["2026-02"].by_type, BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 3)]));
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let cursor = Cursor { user_sk: "2026-11-30T12:00:00.000000000Z#web#e1".into(), pk: "EVENT#web#e1".into() };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for forged in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("x\nEVENT#a#b"),
            &URL_SAFE_NO_PAD.encode("2026-11-30T12:00:00.000000000Z#web#e1\nUSER#x"),
        ] {
            assert_eq!(Cursor::decode(forged).unwrap_err().field, "cursor", "{forged}");
        }
    }

    #[test]
    fn parameters_follow_their_rules() {
        assert_eq!(limit_param(None), Ok(100));
        assert_eq!(limit_param(Some("1000")), Ok(1000));
        for bad in ["0", "1001", "-1", "x", "1e2"] {
            assert_eq!(limit_param(Some(bad)).unwrap_err().field, "limit");
        }
        assert_eq!(time_param("from", "1700000000").unwrap().unix_timestamp(), 1_700_000_000);
        assert_eq!(time_param("from", "2026-11-30T12:00:00+01:00").unwrap(), datetime!(2026-11-30 11:00 UTC));
        assert_eq!(time_param("to", "yesterday").unwrap_err().field, "to");
        assert_eq!(granularity_param(Some("week")).unwrap_err().field, "granularity");
    }

    #[test]
    fn the_to_bound_is_exclusive() {
        let (from, to) = user_sk_range(datetime!(2026-11-30 12:00 UTC), datetime!(2026-11-30 13:00 UTC));
        let at = |t: OffsetDateTime| format!("{}#web#e1", sortable_timestamp(t));
        assert!(from <= at(datetime!(2026-11-30 12:00 UTC)));
        assert!(at(datetime!(2026-11-30 12:59:59.999999999 UTC)) <= to);
        assert!(at(datetime!(2026-11-30 13:00 UTC)) > to);
    }

    #[test]
    fn spans_count_the_periods_they_touch() {
        let days = |from, to| {
            let (first, last) = period_range(Granularity::Day, Some(from), Some(to), datetime!(2030-01-01 0:00 UTC));
            periods_between(first, last)
        };
        assert_eq!(days(datetime!(2024-01-01 0:00 UTC), datetime!(2025-01-01 0:00 UTC)), 366);
        assert_eq!(days(datetime!(2024-01-01 0:00 UTC), datetime!(2025-01-01 0:00:00.000000001 UTC)), 367);
        assert_eq!(days(datetime!(2024-01-01 12:00 UTC), datetime!(2024-01-01 13:00 UTC)), 1);
        assert!(days(datetime!(2024-01-02 0:00 UTC), datetime!(2024-01-01 0:00 UTC)) <= 0);
        let (first, last) = period_range(
            Granularity::Month,
            Some(datetime!(0001-01-01 0:00 UTC)),
            Some(datetime!(9999-12-31 0:00 UTC)),
            datetime!(2030-01-01 0:00 UTC),
        );
        assert_eq!(periods_between(first, last), 9999 * 12);
    }

    #[test]
    fn invocation_bytes_count_the_escapes_a_json_string_adds() {
        let body = serde_json::json!({"payload": "say \"hi\" \\ \u{1}", "n": 1}).to_string();
        let embedded = serde_json::to_string(&body).unwrap();
        assert_eq!(invocation_bytes(body.as_bytes()), embedded.len() - 2);
        assert_eq!(invocation_bytes(b"abc"), 3);
    }

    #[test]
    fn default_periods_are_the_last_31_days_or_12_months() {
        let now = datetime!(2026-11-30 12:00 UTC);
        let (first, last) = period_range(Granularity::Day, None, None, now);
        assert_eq!((first.label(), last.label()), ("2026-10-30".into(), "2026-11-30".into()));
        let (first, last) = period_range(Granularity::Month, None, None, now);
        assert_eq!((first.label(), last.label()), ("2025-11".into(), "2026-11".into()));
    }
}

//! Sliding-window metrics by event time: what one bucket holds, which buckets a window
//! reads, and the distinct-users sketch.
//!
//! Each shard keeps a bucket per second and per minute of event time. A window of N seconds
//! reads the whole minutes inside it and the seconds at its edges: at most 59 + 59 + 30
//! items per shard for N = 1800, whatever the traffic. Bucket counts commit in the
//! transaction that stores their events; the users sketch is merged after the commit, which
//! is safe to repeat (adding a user twice changes nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use cardinality_estimator::CardinalityEstimator;

/// Longest window a read may ask for, in seconds.
pub const MAX_WINDOW_SECONDS: i64 = 1800;
/// The window when `window` is given without a value.
pub const DEFAULT_WINDOW_SECONDS: i64 = 300;
/// Events older than this (by event time, when processed) are not bucketed: no window
/// can reach them. A minute more than the longest window covers the read's own delay.
pub const BUCKETED_AGE_SECONDS: i64 = MAX_WINDOW_SECONDS + 60;
/// Bucket items live this long past their second, then TTL removes them.
pub const BUCKET_TTL_SECONDS: i64 = 2 * 60 * 60;
/// Up to this many distinct users a bucket, and a window, count exactly.
pub const EXACT_USERS: usize = 1000;

/// A bucket: one second, or one whole minute (keyed by its first second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Second(i64),
    Minute(i64),
}

impl Bucket {
    /// The second and minute buckets an event at `second` is counted in.
    pub fn of(second: i64) -> [Bucket; 2] {
        [Bucket::Second(second), Bucket::Minute(second - second.rem_euclid(60))]
    }

    /// The epoch second the bucket starts at.
    pub fn start(self) -> i64 {
        match self {
            Bucket::Second(s) | Bucket::Minute(s) => s,
        }
    }
}

/// Whether an event at `event_second`, processed at `now`, is counted in buckets.
pub fn is_bucketed(event_second: i64, now: i64) -> bool {
    now - event_second <= BUCKETED_AGE_SECONDS
}

/// The buckets to read for the `seconds` seconds ending with second `last` (inclusive):
/// second ranges at the edges, a minute range for the whole minutes between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub seconds: Vec<RangeInclusive<i64>>,
    /// First seconds of the whole minutes, inclusive.
    pub minutes: Option<RangeInclusive<i64>>,
}

impl ReadPlan {
    pub fn new(last: i64, seconds: i64) -> Self {
        let first = last - seconds + 1;
        let first_minute = first + (60 - first.rem_euclid(60)) % 60;
        let end_of_minutes = (last + 1) - (last + 1).rem_euclid(60);
        if first_minute >= end_of_minutes {
            return Self { seconds: vec![first..=last], minutes: None };
        }
        let mut ranges = Vec::new();
        if first < first_minute {
            ranges.push(first..=first_minute - 1);
        }
        if end_of_minutes <= last {
            ranges.push(end_of_minutes..=last);
        }
        Self { seconds: ranges, minutes: Some(first_minute..=end_of_minutes - 60) }
    }

    /// Items this plan reads per shard at most.
    pub fn items(&self) -> usize {
        let seconds: i64 = self.seconds.iter().map(|r| r.end() - r.start() + 1).sum();
        let minutes = self.minutes.as_ref().map_or(0, |r| (r.end() - r.start()) / 60 + 1);
        (seconds + minutes) as usize
    }
}

/// What one bucket, or a whole window, counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub events: u64,
    /// Events whose user the reference table did not know (or that had no user).
    pub unknown: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    pub by_plan: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    /// Increments counted under `other` because a breakdown of the bucket was full.
    pub folded: u64,
}

impl Tally {
    /// Folds each breakdown to what one answer shows.
    pub fn fold_for_answer(&mut self) {
        use crate::aggregate::fold_for_answer;
        self.folded += fold_for_answer(&mut self.by_type)
            + fold_for_answer(&mut self.by_source)
            + fold_for_answer(&mut self.by_plan)
            + fold_for_answer(&mut self.by_region);
    }

    pub fn add(&mut self, other: &Tally) {
        self.events += other.events;
        self.unknown += other.unknown;
        self.folded += other.folded;
        for (mine, theirs) in [
            (&mut self.by_type, &other.by_type),
            (&mut self.by_source, &other.by_source),
            (&mut self.by_plan, &other.by_plan),
            (&mut self.by_region, &other.by_region),
        ] {
            for (key, count) in theirs {
                *mine.entry(key.clone()).or_default() += count;
            }
        }
    }
}

type Hll = CardinalityEstimator<u64, wyhash::WyHash, 14, 6>;

/// Distinct users: exact while there are at most [`EXACT_USERS`], a HyperLogLog++ sketch
/// (precision 14, about 0.8 % standard error) beyond. Both merge by union, so merging
/// sketches of overlapping buckets, or the same users twice, counts each user once.
#[derive(Debug, Clone)]
pub struct Distinct {
    /// `None` once more than [`EXACT_USERS`] users were seen.
    exact: Option<BTreeSet<u64>>,
    hll: Hll,
}

impl Default for Distinct {
    fn default() -> Self {
        Self { exact: Some(BTreeSet::new()), hll: Hll::new() }
    }
}

/// A user's 64-bit hash: stable, so sketches written by any version merge.
pub fn user_hash(user: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = wyhash::WyHash::with_seed(0x6576_656e_746c_696e);
    hasher.write(user.as_bytes());
    hasher.finish()
}

const ENCODING_VERSION: u8 = 1;

impl Distinct {
    pub fn insert_hash(&mut self, hash: u64) {
        self.hll.insert_hash(hash);
        if let Some(exact) = &mut self.exact {
            exact.insert(hash);
            if exact.len() > EXACT_USERS {
                self.exact = None;
            }
        }
    }

    pub fn merge(&mut self, other: &Distinct) {
        self.hll.merge(&other.hll);
        self.exact = match (self.exact.take(), &other.exact) {
            (Some(mut mine), Some(theirs)) => {
                mine.extend(theirs);
                (mine.len() <= EXACT_USERS).then_some(mine)
            }
            _ => None,
        };
    }

    pub fn count(&self) -> u64 {
        match &self.exact {
            Some(exact) => exact.len() as u64,
            None => self.hll.estimate() as u64,
        }
    }

    /// Bytes for a binary attribute: version, the exact hashes (or none), the sketch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION];
        match &self.exact {
            Some(exact) => {
                out.extend_from_slice(&(exact.len() as u32).to_le_bytes());
                exact.iter().for_each(|h| out.extend_from_slice(&h.to_le_bytes()));
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        // The sketch's own serde form is (word, optional registers).
        let (data, registers): (u64, Option<Vec<u32>>) =
            serde_json::from_value(serde_json::to_value(&self.hll).unwrap_or_default()).unwrap_or((0, None));
        out.extend_from_slice(&data.to_le_bytes());
        let registers = registers.unwrap_or_default();
        out.extend_from_slice(&(registers.len() as u32).to_le_bytes());
        registers.iter().for_each(|r| out.extend_from_slice(&r.to_le_bytes()));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if rest.len() < n {
                return Err("users sketch is truncated".into());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        if take(1)? != [ENCODING_VERSION] {
            return Err("users sketch has an unknown version".into());
        }
        let exact = match u32_of(take(4)?) {
            u32::MAX => None,
            n if n as usize > EXACT_USERS => return Err("users sketch holds too many exact users".into()),
            n => Some((0..n).map(|_| take(8).map(u64_of)).collect::<Result<BTreeSet<u64>, String>>()?),
        };
        let data = u64_of(take(8)?);
        let len = u32_of(take(4)?) as usize;
        if len > 1 << 16 {
            return Err("users sketch has too many registers".into());
        }
        let registers: Vec<u32> = (0..len).map(|_| take(4).map(u32_of)).collect::<Result<_, _>>()?;
        let registers = (!registers.is_empty()).then_some(registers);
        let hll: Hll =
            serde_json::from_value(serde_json::json!([data, registers])).map_err(|e| format!("users sketch: {e}"))?;
        Ok(Self { exact, hll })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_whole_minutes_and_edge_seconds_at_most_148_items() {
        // 12:00:30 back to 11:30:31: 29 + 31 edge seconds and 29 whole minutes.
        let last = 1_795_435_230;
        let plan = ReadPlan::new(last, 1800);
        assert_eq!(plan.seconds, vec![last - 1799..=last - 1771, last - 30..=last]);
        assert_eq!(plan.minutes, Some(last - 1770..=last - 90));
        for seconds in 1..=MAX_WINDOW_SECONDS {
            for offset in 0..60 {
                let plan = ReadPlan::new(last + offset, seconds);
                assert!(plan.items() <= 148, "{seconds} s: {} items", plan.items());
                let covered: i64 = plan.seconds.iter().map(|r| r.end() - r.start() + 1).sum::<i64>()
                    + plan.minutes.as_ref().map_or(0, |r| r.end() - r.start() + 60);
                assert_eq!(covered, seconds, "every second once");
            }
        }
        assert_eq!(ReadPlan::new(last, 1), ReadPlan { seconds: vec![last..=last], minutes: None });
    }

    #[test]
    fn buckets_of_an_event_are_its_second_and_minute() {
        assert_eq!(Bucket::of(125), [Bucket::Second(125), Bucket::Minute(120)]);
        assert!(is_bucketed(1000, 1000 + BUCKETED_AGE_SECONDS));
        assert!(!is_bucketed(1000, 1001 + BUCKETED_AGE_SECONDS));
    }

    #[test]
    fn seven_users_are_counted_exactly_however_often_they_appear() {
        let mut a = Distinct::default();
        let mut b = Distinct::default();
        for i in 0..7 {
            a.insert_hash(user_hash(&format!("u{i}")));
            b.insert_hash(user_hash(&format!("u{i}")));
        }
        a.merge(&b);
        assert_eq!(a.count(), 7);
    }

    #[test]
    fn a_thousand_users_spread_over_buckets_are_exact() {
        let mut total = Distinct::default();
        for bucket in 0..10 {
            let mut d = Distinct::default();
            for i in (bucket * 100)..(bucket * 100 + 150).min(1000) {
                d.insert_hash(user_hash(&format!("user-{i}")));
            }
            total.merge(&Distinct::decode(&d.encode()).unwrap());
        }
        assert_eq!(total.count(), 1000);
    }

    #[test]
    fn a_hundred_thousand_users_are_within_two_percent_after_merging_stored_sketches() {
        let mut total = Distinct::default();
        for bucket in 0..150 {
            let mut d = Distinct::default();
            // Overlapping buckets: users appear in several.
            for i in (bucket * 700)..(bucket * 700 + 1400).min(100_000) {
                d.insert_hash(user_hash(&format!("subscriber-{i}")));
            }
            total.merge(&Distinct::decode(&d.encode()).unwrap());
        }
        let error = (total.count() as f64 - 100_000.0).abs() / 100_000.0;
        assert!(error <= 0.02, "{} is {:.2} % off", total.count(), error * 100.0);
    }

    #[test]
    fn sketches_round_trip_at_every_size() {
        for n in [0, 1, 2, 100, 1001, 20_000] {
            let mut d = Distinct::default();
            (0..n).for_each(|i| d.insert_hash(user_hash(&i.to_string())));
            let back = Distinct::decode(&d.encode()).unwrap();
            assert_eq!(back.count(), d.count(), "{n}");
            let mut merged = back.clone();
            merged.merge(&d);
            assert_eq!(merged.count(), d.count(), "{n}: a sketch merged with itself is unchanged");
        }
        assert!(Distinct::decode(&[9, 0]).is_err());
        assert!(Distinct::decode(&[]).is_err());
    }
}

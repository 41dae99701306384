//! A log-linear latency histogram that sums across shards and answers percentiles.
//!
//! Values below 8 ms have a bucket each; above, every power of two is cut into 8 buckets,
//! so a reported percentile is within 1/16 of the true value. An hour fits in 160 buckets.

use std::collections::BTreeMap;

const SUB_BUCKETS: u64 = 8;
const SUB_BITS: u32 = 3;

/// Bucket index of a latency in milliseconds.
pub fn bucket_of(ms: u64) -> u32 {
    if ms < SUB_BUCKETS {
        return ms as u32;
    }
    let exponent = 63 - ms.leading_zeros(); // >= SUB_BITS
    let sub = (ms >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    SUB_BUCKETS as u32 * (exponent - SUB_BITS + 1) + sub as u32
}

/// Smallest and largest latency that fall in a bucket.
pub fn bucket_bounds(index: u32) -> (u64, u64) {
    let index = u64::from(index);
    if index < SUB_BUCKETS {
        return (index, index);
    }
    let exponent = index / SUB_BUCKETS + u64::from(SUB_BITS) - 1;
    let width = 1u64 << (exponent - u64::from(SUB_BITS));
    let low = (SUB_BUCKETS + index % SUB_BUCKETS) * width;
    (low, low + width - 1)
}

/// Counts per bucket index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub counts: BTreeMap<u32, u64>,
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        *self.counts.entry(bucket_of(ms)).or_default() += 1;
    }

    pub fn add_bucket(&mut self, index: u32, count: u64) {
        *self.counts.entry(index).or_default() += count;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The latency at quantile `q` (0 < q <= 1), as the middle of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (&index, &count) in &self.counts {
            seen += count;
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                return Some(low + (high - low) / 2);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        let mut previous_high = None;
        for index in 0..170 {
            let (low, high) = bucket_bounds(index);
            if let Some(prev) = previous_high {
                assert_eq!(low, prev + 1, "gap before bucket {index}");
            }
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high), index);
            previous_high = Some(high);
        }
    }

    #[test]
    fn relative_error_is_small() {
        for ms in [9, 100, 1_234, 65_000, 3_600_000] {
            let (low, high) = bucket_bounds(bucket_of(ms));
            assert!((high - low) as f64 / low as f64 <= 0.125, "{ms}");
        }
        assert!(bucket_of(3_600_000) < 160);
    }

    #[test]
    fn quantiles_of_known_distribution() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((46..=54).contains(&p50), "{p50}");
        assert!((92..=104).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn exact_for_small_values() {
        let mut h = Histogram::default();
        h.record(3);
        h.record(3);
        h.record(5);
        assert_eq!(h.quantile(0.5), Some(3));
        assert_eq!(h.quantile(1.0), Some(5));
    }
}

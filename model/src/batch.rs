//! Splitting a list, in order, into the batches an AWS batch API takes.

use std::ops::Range;

/// Consecutive ranges of `items` with at most `max_count` items and `max_bytes` of weight
/// each. An item heavier than `max_bytes` gets a range of its own (the API then refuses
/// that item alone).
pub fn split<T>(items: &[T], max_count: usize, max_bytes: usize, weight: impl Fn(&T) -> usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        let item_bytes = weight(item);
        if index > start && (index - start == max_count || bytes + item_bytes > max_bytes) {
            groups.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        groups.push(start..items.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_count() {
        assert_eq!(split(&[1; 1001], 500, usize::MAX, |_| 1), [0..500, 500..1000, 1000..1001]);
        assert!(split::<u8>(&[], 10, 10, |_| 1).is_empty());
    }

    #[test]
    fn splits_by_bytes_and_isolates_oversized_items() {
        assert_eq!(split(&[4, 4, 4, 4, 4, 4], 100, 16, |w| *w), [0..4, 4..6]);
        assert_eq!(split(&[1, 50, 1], 100, 16, |w| *w), [0..1, 1..2, 2..3]);
    }
}

//! Splitting a batch's entries into transactions DynamoDB takes: at most 100 actions and
//! 4 MB each, and no item written twice in one.

use std::collections::HashSet;
use std::ops::Range;

use eventline_model::EventId;
use eventline_model::Source;

use crate::store::Entry;

/// DynamoDB takes 100 actions per transaction; two are the counter items.
pub const MAX_ENTRIES_PER_COMMIT: usize = 98;
/// DynamoDB takes 4 MB per transaction; leave room for keys and counters.
pub const MAX_BYTES_PER_COMMIT: usize = 3_500_000;

/// Rough size of an entry in a transaction, for splitting batches.
pub fn entry_weight(entry: &Entry) -> usize {
    match entry {
        Entry::Event { event, .. } => event.to_json().len() + 512,
        Entry::Poison { .. } | Entry::Copy => 512,
    }
}

/// Splits entries, in order, into groups that each fit one commit: with the shard's totals
/// and throughput second at most 100 actions and 3.5 MB.
pub fn commit_groups(entries: &[Entry]) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    // One transaction cannot write an item twice, and a later copy of an identity is judged
    // against the stored event: it waits for the next group.
    let mut identities: HashSet<(&Source, &EventId)> = HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let identity = match entry {
            Entry::Event { event, .. } => Some(event.event.identity()),
            _ => None,
        };
        let weight = entry_weight(entry);
        let fits = index - start < MAX_ENTRIES_PER_COMMIT
            && bytes + weight <= MAX_BYTES_PER_COMMIT
            && identity.is_none_or(|identity| !identities.contains(&identity));
        if index > start && !fits {
            groups.push(start..index);
            start = index;
            bytes = 0;
            identities.clear();
        }
        identities.extend(identity);
        bytes += weight;
    }
    if start < entries.len() {
        groups.push(start..entries.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_entries::{event_at, event_from, poison};

    #[test]
    fn groups_hold_at_most_98_entries() {
        let entries: Vec<Entry> = (0..200).map(poison).collect();
        assert_eq!(commit_groups(&entries), vec![0..98, 98..196, 196..200]);
        assert!(commit_groups(&[]).is_empty());
    }

    #[test]
    fn events_in_distinct_seconds_or_of_many_types_share_a_group_their_analytics_follow_it() {
        // The window buckets and aggregates are updated after the commit, so neither the
        // seconds nor the breakdown keys of the events cut a group.
        let seconds: Vec<Entry> = (0..100).map(|i| event_at(i, 1_795_435_199 - i as i64, "t")).collect();
        assert_eq!(commit_groups(&seconds), vec![0..98, 98..100]);
        let types: Vec<Entry> =
            (0..98).map(|i| event_from(i, 1_795_435_100, &format!("type-{i}"), &format!("src-{i}"))).collect();
        assert_eq!(commit_groups(&types), vec![0..98]);
    }

    #[test]
    fn a_later_copy_of_an_identity_waits_for_the_next_group() {
        let entries =
            [event_at(1, 1_795_435_100, "a"), event_at(2, 1_795_435_100, "a"), event_at(1, 1_795_435_100, "b")];
        assert_eq!(commit_groups(&entries), vec![0..2, 2..3]);
    }
}

//! Splitting a batch's entries into transactions DynamoDB takes: at most 100 actions and
//! 4 MB each, bucket expressions within 4 KB, and no item written twice in one.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use eventline_model::EventId;
use eventline_model::Source;
use eventline_model::window::Bucket;

use crate::store::{AggregateItem, Entry, aggregate_items, aggregate_tally_of, tally_of};

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

/// DynamoDB's limit on the actions of one transaction.
pub const MAX_ACTIONS_PER_COMMIT: usize = 100;
/// Counter updates every commit may add: the shard's totals and its throughput second.
const FIXED_COUNTER_ACTIONS: usize = 2;
/// Most counters one bucket update adds (it must fit DynamoDB's 4 KB expression limit).
pub const MAX_TERMS_PER_BUCKET: usize = 150;

/// Splits entries, in order, into groups that each fit one commit: with their counter and
/// window-bucket updates at most 100 actions, 3.5 MB, and bucket expressions that fit.
pub fn commit_groups(entries: &[Entry], measures: &[String]) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    let mut terms: HashMap<CounterItem, HashSet<(u8, String)>> = HashMap::new();
    // One transaction cannot write an item twice, and a later copy of an identity is judged
    // against the stored event: it waits for the next group.
    let mut identities: HashSet<(&Source, &EventId)> = HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let identity = match entry {
            Entry::Event { event, .. } => Some(event.event.identity()),
            _ => None,
        };
        let weight = entry_weight(entry);
        let adds = counter_terms(entry, measures);
        let mut trial = terms.clone();
        for (bucket, term) in &adds {
            trial.entry(bucket.clone()).or_default().insert(term.clone());
        }
        let actions = index + 1 - start + FIXED_COUNTER_ACTIONS + trial.len();
        let widest = trial.values().map(|t| t.len() + 2).max().unwrap_or(0);
        let fits = index - start < MAX_ENTRIES_PER_COMMIT
            && bytes + weight <= MAX_BYTES_PER_COMMIT
            && actions <= MAX_ACTIONS_PER_COMMIT
            && widest <= MAX_TERMS_PER_BUCKET
            && identity.is_none_or(|identity| !identities.contains(&identity));
        if index > start && !fits {
            groups.push(start..index);
            start = index;
            bytes = 0;
            identities.clear();
            terms = HashMap::new();
            for (bucket, term) in adds {
                terms.entry(bucket).or_default().insert(term);
            }
        } else {
            terms = trial;
        }
        identities.extend(identity);
        bytes += weight;
    }
    if start < entries.len() {
        groups.push(start..entries.len());
    }
    groups
}

/// An item a commit's counter updates write, besides the event items.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CounterItem {
    Window(Bucket),
    Aggregate(AggregateItem),
}

/// The counters an entry may add to each item it updates.
fn counter_terms(entry: &Entry, measures: &[String]) -> Vec<(CounterItem, (u8, String))> {
    let Entry::Event { event, buckets } = entry else { return Vec::new() };
    let tally = tally_of(event);
    let names: Vec<(u8, String)> =
        [(b't', &tally.by_type), (b's', &tally.by_source), (b'p', &tally.by_plan), (b'r', &tally.by_region)]
            .into_iter()
            .flat_map(|(kind, map)| map.keys().map(move |k| (kind, k.clone())))
            .collect();
    let mut terms: Vec<(CounterItem, (u8, String))> =
        buckets.iter().flat_map(|b| names.iter().map(move |n| (CounterItem::Window(*b), n.clone()))).collect();
    let aggregate = aggregate_tally_of(event, measures);
    let aggregate_names: Vec<(u8, String)> = [(b't', &aggregate.by_type), (b's', &aggregate.by_source)]
        .into_iter()
        .flat_map(|(kind, map)| map.keys().map(move |k| (kind, k.clone())))
        .chain(aggregate.sums.keys().map(|k| (b'm', k.clone())))
        .collect();
    for item in aggregate_items(event) {
        terms.extend(aggregate_names.iter().map(|n| (CounterItem::Aggregate(item.clone()), n.clone())));
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_entries::{event_at, event_from, poison};

    #[test]
    fn groups_hold_at_most_98_entries() {
        let entries: Vec<Entry> = (0..200).map(poison).collect();
        assert_eq!(commit_groups(&entries, &[]), vec![0..98, 98..196, 196..200]);
        assert!(commit_groups(&[], &[]).is_empty());
    }

    #[test]
    fn events_in_distinct_seconds_make_smaller_groups_within_100_actions() {
        // Each event in its own second, all in one minute and day: 47 events, 2 counters,
        // 47 second buckets, 1 minute bucket and the shard's day and month aggregates make
        // 99 actions; one more event would make 101.
        let entries: Vec<Entry> = (0..100).map(|i| event_at(i, 1_795_435_199 - i as i64, "t")).collect();
        let groups = commit_groups(&entries, &[]);
        assert_eq!(groups[0], 0..47);
        // Events of one second share their two buckets and the shard's day and month.
        let same: Vec<Entry> = (0..100).map(|i| event_at(i, 1_795_435_100, "t")).collect();
        assert_eq!(commit_groups(&same, &[]), vec![0..94, 94..100]);
        // Events too old for any window add no bucket, only the shard's day and month.
        let old: Vec<Entry> = (0..100).map(|i| event_at(i, 1_000_000_000 + i as i64, "t")).collect();
        assert_eq!(commit_groups(&old, &[]), vec![0..96, 96..100]);
    }

    #[test]
    fn many_distinct_types_split_a_group_before_its_bucket_expression_grows_too_long() {
        let entries: Vec<Entry> =
            (0..98).map(|i| event_from(i, 1_795_435_100, &format!("type-{i}"), &format!("src-{i}"))).collect();
        let groups = commit_groups(&entries, &[]);
        // Per bucket: count, unknown, plan and region, and a type and a source per event.
        assert_eq!(groups[0], 0..((MAX_TERMS_PER_BUCKET - 4) / 2));
    }

    #[test]
    fn a_later_copy_of_an_identity_waits_for_the_next_group() {
        let entries =
            [event_at(1, 1_795_435_100, "a"), event_at(2, 1_795_435_100, "a"), event_at(1, 1_795_435_100, "b")];
        assert_eq!(commit_groups(&entries, &[]), vec![0..2, 2..3]);
    }
}

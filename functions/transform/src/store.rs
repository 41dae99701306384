//! Storing processed events exactly once, and counting them in the same commit.

use std::future::Future;

use eventline_model::latency::Histogram;
use eventline_model::{EventId, ProcessedEvent, Source};

/// One thing to commit for one stream record.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A decoded event: store it unless its identity is already stored.
    Event(ProcessedEvent),
    /// A later record of an identity that appeared earlier in the same batch.
    Duplicate { source: Source, id: EventId, shard_id: String, sequence_number: String },
    /// A record that could not be processed and went to the dead-letter queue.
    Poison { shard_id: String, sequence_number: String },
}

/// What a commit made of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now and counted as processed.
    Stored,
    /// This very record was stored by an earlier delivery; not counted again.
    Redelivered,
    /// Another record already holds this identity; counted as a duplicate now.
    Duplicate,
    /// A duplicate or poison record an earlier delivery already counted.
    AlreadyCounted,
    /// A poison record, counted as failed now.
    Failed,
}

impl Outcome {
    /// Stored events go to the output stream, and so do redeliveries, because the earlier
    /// delivery may have stopped between storing and publishing.
    pub fn publishes(self) -> bool {
        matches!(self, Outcome::Stored | Outcome::Redelivered)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the commit did not go through after retries: {0}")]
    Unavailable(String),
}

/// Commits entries of one shard atomically with the counters they change.
pub trait EventStore: Send + Sync {
    /// `entries` fit one transaction (see [`MAX_ENTRIES_PER_COMMIT`]); the result has an
    /// outcome per entry, in order.
    fn commit(
        &self,
        shard_id: &str,
        entries: &[Entry],
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;
}

/// DynamoDB takes 100 actions per transaction; two are the counter items.
pub const MAX_ENTRIES_PER_COMMIT: usize = 98;
/// DynamoDB takes 4 MB per transaction; leave room for keys and counters.
pub const MAX_BYTES_PER_COMMIT: usize = 3_500_000;

/// What a commit adds to the shard's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterDelta {
    pub processed: u64,
    pub duplicate: u64,
    pub failed: u64,
    pub latency_sum_ms: u64,
    pub latency: Histogram,
}

impl CounterDelta {
    pub fn count(&mut self, entry: &Entry, outcome: Outcome) {
        match (entry, outcome) {
            (Entry::Event(event), Outcome::Stored) => {
                self.processed += 1;
                self.latency_sum_ms += event.latency_ms;
                self.latency.record(event.latency_ms);
            }
            (_, Outcome::Duplicate) => self.duplicate += 1,
            (_, Outcome::Failed) => self.failed += 1,
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processed == 0 && self.duplicate == 0 && self.failed == 0
    }
}

/// Rough size of an entry in a transaction, for splitting batches.
pub fn entry_weight(entry: &Entry) -> usize {
    match entry {
        Entry::Event(event) => event.to_json().len() + 512,
        Entry::Duplicate { .. } | Entry::Poison { .. } => 512,
    }
}

/// Splits entries, in order, into groups that each fit one commit.
pub fn commit_groups(entries: &[Entry]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, entry) in entries.iter().enumerate() {
        let weight = entry_weight(entry);
        if index > start && (index - start == MAX_ENTRIES_PER_COMMIT || bytes + weight > MAX_BYTES_PER_COMMIT) {
            groups.push(start..index);
            start = index;
            bytes = 0;
        }
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

    fn poison(i: usize) -> Entry {
        Entry::Poison { shard_id: "s".into(), sequence_number: i.to_string() }
    }

    #[test]
    fn groups_hold_at_most_98_entries() {
        let entries: Vec<Entry> = (0..200).map(poison).collect();
        assert_eq!(commit_groups(&entries), vec![0..98, 98..196, 196..200]);
        assert!(commit_groups(&[]).is_empty());
    }

    #[test]
    fn counts_only_what_was_committed_now() {
        let mut delta = CounterDelta::default();
        delta.count(&poison(1), Outcome::Failed);
        delta.count(&poison(2), Outcome::AlreadyCounted);
        delta.count(&poison(3), Outcome::Duplicate);
        assert_eq!((delta.processed, delta.duplicate, delta.failed), (0, 1, 1));
    }
}

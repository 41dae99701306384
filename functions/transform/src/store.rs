//! Storing processed events exactly once, and counting them in the same commit.

use std::future::Future;

use eventline_model::batch;
use eventline_model::latency::Histogram;
use eventline_model::{EventId, IngestId, ProcessedEvent, Source};

/// One thing to commit for one stream record.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A decoded event: store it unless its identity is already stored.
    Event(ProcessedEvent),
    /// A later record of an identity that appeared earlier in the same batch.
    Duplicate { source: Source, id: EventId, ingest_id: Option<IngestId>, shard_id: String, sequence_number: String },
    /// A second copy of an earlier record of the same batch, put twice by ingest (same
    /// ingest id): nothing to write or count.
    Copy,
    /// A record that could not be processed and went to the dead-letter queue.
    Poison { ingest_id: Option<IngestId>, shard_id: String, sequence_number: String },
}

impl Entry {
    /// Whether ingest wrote the record (and so counted it received).
    pub fn came_through_ingest(&self) -> bool {
        match self {
            Entry::Event(event) => event.ingest_id.is_some(),
            Entry::Duplicate { ingest_id, .. } | Entry::Poison { ingest_id, .. } => ingest_id.is_some(),
            Entry::Copy => true,
        }
    }
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
    /// A decoded event the table refused for what it holds (a `ValidationError`): a
    /// deterministic failure, so it is counted as failed now and must go to the dead-letter
    /// queue instead of being retried.
    Refused,
    /// Such an event, refused and counted by an earlier delivery; it still goes to the
    /// dead-letter queue, since that delivery may have stopped before sending it.
    RefusedBefore,
}

impl Outcome {
    /// Stored events go to the output stream, and so do redeliveries, because the earlier
    /// delivery may have stopped between storing and publishing.
    pub fn publishes(self) -> bool {
        matches!(self, Outcome::Stored | Outcome::Redelivered)
    }

    /// The record goes to the dead-letter queue (at least once).
    pub fn dead_letters(self) -> bool {
        matches!(self, Outcome::Refused | Outcome::RefusedBefore)
    }
}

/// Why a commit did not go through. Either way the records are retried from the first one
/// not committed; the variants say whether waiting could help, for logs and alarms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling, conflicts, timeouts, server errors: still failing when the budget ran out.
    #[error("the table did not take the commit within the retry budget")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Not tied to one record and not cured by waiting: a missing table, no permission, a
    /// request the code built wrong.
    #[error("the table refused the commit")]
    Permanent(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// Records that did not come through ingest (another producer wrote them to the
    /// stream), so nothing counted them received: they are counted here, once, with their
    /// outcome, and the queue depth still drains to 0.
    pub received_direct: u64,
    pub processed: u64,
    pub duplicate: u64,
    pub failed: u64,
    pub latency_sum_ms: u64,
    pub latency: Histogram,
}

impl CounterDelta {
    pub fn count(&mut self, entry: &Entry, outcome: Outcome) {
        let counted_now = matches!(outcome, Outcome::Stored | Outcome::Duplicate | Outcome::Failed | Outcome::Refused);
        if counted_now && !entry.came_through_ingest() {
            self.received_direct += 1;
        }
        match (entry, outcome) {
            (Entry::Event(event), Outcome::Stored) => {
                self.processed += 1;
                self.latency_sum_ms += event.latency_ms;
                self.latency.record(event.latency_ms);
            }
            (_, Outcome::Duplicate) => self.duplicate += 1,
            (_, Outcome::Failed | Outcome::Refused) => self.failed += 1,
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
        Entry::Duplicate { .. } | Entry::Poison { .. } | Entry::Copy => 512,
    }
}

/// Splits entries, in order, into groups that each fit one commit.
pub fn commit_groups(entries: &[Entry]) -> Vec<std::ops::Range<usize>> {
    batch::split(entries, MAX_ENTRIES_PER_COMMIT, MAX_BYTES_PER_COMMIT, entry_weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poison(i: usize) -> Entry {
        Entry::Poison { ingest_id: None, shard_id: "s".into(), sequence_number: i.to_string() }
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
        assert_eq!(delta.received_direct, 2, "records no ingest counted are counted received once, here");
    }
}

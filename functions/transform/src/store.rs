//! Storing processed events exactly once, and counting them in the same commit.

use std::future::Future;

use std::collections::BTreeMap;

use eventline_model::aggregate::{AggregateTally, Granularity, Period, measures_of};
use eventline_model::outcomes::Outcomes;
use eventline_model::window::{Bucket, Tally, is_bucketed};
use eventline_model::{IngestId, Position, ProcessedEvent, UserId};

/// One thing to commit for one stream record.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A decoded event: store it unless its identity is already stored. (Boxed, so that a
    /// poison record or a copy does not take an event's room.)
    Event {
        event: Box<ProcessedEvent>,
        /// The window buckets it counts in, computed once (see [`Entry::event`]).
        buckets: Vec<Bucket>,
    },
    /// A second copy of an earlier record of the same batch, put twice by ingest (same
    /// ingest id): nothing to write or count.
    Copy,
    /// A record (or a user record of an aggregated record) that could not be processed and
    /// went to the dead-letter queue.
    Poison { ingest_id: Option<IngestId>, position: Position },
}

impl Entry {
    /// The entry of a decoded event, with the window buckets it counts in: none when it is
    /// too old for any window.
    pub fn event(event: ProcessedEvent) -> Self {
        let second = event.event.timestamp.unix_timestamp();
        let buckets = if is_bucketed(second, event.processed_at.unix_timestamp()) {
            Bucket::of(second).to_vec()
        } else {
            Vec::new()
        };
        Entry::Event { event: Box::new(event), buckets }
    }

    /// Whether ingest wrote the record (and so counted it received).
    pub fn came_through_ingest(&self) -> bool {
        match self {
            Entry::Event { event, .. } => event.ingest_id.is_some(),
            Entry::Poison { ingest_id, .. } => ingest_id.is_some(),
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
    /// Another sender, or other content, already holds this identity: the copy is kept as a
    /// conflict item (not stored over the first) and counted as a conflict now.
    Conflict,
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

/// What committing a batch's entries did: an outcome per entry committed, in order, and the
/// error that stopped the commit before the end, if one did (the entries from there on are
/// not committed, and are retried with their records).
#[derive(Debug, Default)]
pub struct Committed {
    pub outcomes: Vec<Outcome>,
    pub error: Option<StoreError>,
}

/// Commits entries of one shard atomically with the counters they change.
pub trait EventStore: Send + Sync {
    /// Commits a batch's entries in order, in as many atomic commits as the store needs,
    /// each entry with its counters; stops at the first commit that fails.
    fn commit(&self, shard_id: &str, entries: &[Entry]) -> impl Future<Output = Committed> + Send;

    /// Adds user hashes to the distinct-users sketches of the shard's window buckets.
    /// Idempotent: adding a user again changes nothing. Analytics never cost an event nor
    /// hold up a shard, so this does not fail: it returns how many hashes it gave up on
    /// (refused by the table, or still failing past the retry budget), which the store has
    /// counted as lost analytics.
    fn merge_users(&self, shard_id: &str, users: &BTreeMap<Bucket, Vec<u64>>) -> impl Future<Output = u64> + Send;
}

/// What a commit adds to the shard's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterDelta {
    pub outcomes: Outcomes,
    /// Window buckets of the events stored now, by event time.
    pub windows: BTreeMap<Bucket, Tally>,
    /// Day and month aggregates of the events stored now, per user and for the shard.
    pub aggregates: BTreeMap<AggregateItem, AggregateTally>,
}

/// An aggregate item a stored event adds to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateItem {
    User(UserId, Period),
    Shard(Period),
}

/// The aggregate items of an event: its user's day and month (when it has a user) and the
/// shard's day and month.
pub fn aggregate_items(event: &ProcessedEvent) -> Vec<AggregateItem> {
    let periods = [Granularity::Day, Granularity::Month].map(|g| Period::of(event.event.timestamp, g));
    let mut items: Vec<AggregateItem> = periods.iter().map(|p| AggregateItem::Shard(*p)).collect();
    if let Some(user) = &event.event.user_id {
        items.extend(periods.iter().map(|p| AggregateItem::User(user.clone(), *p)));
    }
    items
}

/// One event as an aggregate counts it.
pub fn aggregate_tally_of(event: &ProcessedEvent, measures: &[String]) -> AggregateTally {
    let one = |key: &str| BTreeMap::from([(key.to_owned(), 1)]);
    AggregateTally {
        events: 1,
        by_type: one(event.event.event_type.as_str()),
        by_source: one(event.event.source.as_str()),
        sums: measures_of(event.event.data.as_ref(), measures),
        folded: 0,
    }
}

impl CounterDelta {
    pub fn count(&mut self, entry: &Entry, outcome: Outcome, measures: &[String]) {
        let counted_now = matches!(
            outcome,
            Outcome::Stored | Outcome::Duplicate | Outcome::Conflict | Outcome::Failed | Outcome::Refused
        );
        if counted_now && !entry.came_through_ingest() {
            self.outcomes.received_direct += 1;
        }
        match (entry, outcome) {
            (Entry::Event { event, buckets }, Outcome::Stored) => {
                self.outcomes.processed += 1;
                self.outcomes.latency_sum_ms += event.latency_ms;
                self.outcomes.latency.record(event.latency_ms);
                for bucket in buckets {
                    let tally = self.windows.entry(*bucket).or_default();
                    tally.add(&tally_of(event));
                }
                let aggregate = aggregate_tally_of(event, measures);
                for item in aggregate_items(event) {
                    self.aggregates.entry(item).or_default().add(&aggregate);
                }
            }
            (_, Outcome::Duplicate) => self.outcomes.duplicate += 1,
            (_, Outcome::Conflict) => self.outcomes.conflict += 1,
            (_, Outcome::Failed | Outcome::Refused) => self.outcomes.failed += 1,
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.processed == 0
            && self.outcomes.duplicate == 0
            && self.outcomes.conflict == 0
            && self.outcomes.failed == 0
    }
}

/// One event as a bucket counts it.
pub(crate) fn tally_of(event: &ProcessedEvent) -> Tally {
    let one = |key: &str| BTreeMap::from([(key.to_owned(), 1)]);
    let (plan, region, known) = match &event.enrichment {
        Some(e) => (e.plan.as_str(), e.region.as_str(), e.is_known()),
        None => (eventline_model::reference::UNKNOWN, eventline_model::reference::UNKNOWN, false),
    };
    Tally {
        events: 1,
        unknown: u64::from(!known),
        by_type: one(event.event.event_type.as_str()),
        by_source: one(event.event.source.as_str()),
        by_plan: one(plan),
        by_region: one(region),
        folded: 0,
    }
}

/// Entries for the tests of the store and its adapters.
#[cfg(test)]
pub(crate) mod test_entries {
    use super::*;

    pub fn poison(i: usize) -> Entry {
        Entry::Poison { ingest_id: None, position: Position::of_record("s", i.to_string()) }
    }

    pub fn event_at(id: usize, second: i64, event_type: &str) -> Entry {
        event_from(id, second, event_type, "web")
    }

    pub fn event_from(id: usize, second: i64, event_type: &str, source: &str) -> Entry {
        let now = time::OffsetDateTime::from_unix_timestamp(1_795_435_200).unwrap();
        let text = format!(r#"{{"id":"e{id}","type":"{event_type}","source":"{source}","timestamp":{second}}}"#);
        let raw = serde_json::value::RawValue::from_string(text).unwrap();
        let event = eventline_model::parse_event(&raw, &eventline_model::Rules::default(), now).unwrap();
        let record = eventline_model::StreamRecord { event, received_at: now, ingest_id: None, provenance: None };
        let position = Position::of_record("s", id.to_string());
        Entry::event(ProcessedEvent::from_record(record, position, now))
    }
}

#[cfg(test)]
mod tests {
    use super::test_entries::{event_at, poison};
    use super::*;

    #[test]
    fn an_event_counts_in_its_second_and_minute_unless_too_old_for_any_window() {
        let Entry::Event { buckets, .. } = event_at(1, 1_795_435_100, "a") else { panic!("an event") };
        assert_eq!(buckets, [Bucket::Second(1_795_435_100), Bucket::Minute(1_795_435_080)]);
        let Entry::Event { buckets, .. } = event_at(2, 1_000_000_000, "a") else { panic!("an event") };
        assert!(buckets.is_empty());
    }

    #[test]
    fn window_counts_come_from_events_stored_now() {
        let mut delta = CounterDelta::default();
        delta.count(&event_at(1, 1_795_435_100, "a"), Outcome::Stored, &[]);
        delta.count(&event_at(2, 1_795_435_100, "b"), Outcome::Redelivered, &[]);
        delta.count(&event_at(3, 1_795_435_101, "a"), Outcome::Duplicate, &[]);
        let second = &delta.windows[&Bucket::Second(1_795_435_100)];
        assert_eq!((second.events, second.unknown), (1, 1));
        assert_eq!(second.by_type, BTreeMap::from([("a".to_owned(), 1)]));
        assert_eq!(delta.windows[&Bucket::Minute(1_795_435_080)].events, 1);
        assert_eq!(delta.windows.len(), 2);
    }

    #[test]
    fn counts_only_what_was_committed_now() {
        let mut delta = CounterDelta::default();
        delta.count(&poison(1), Outcome::Failed, &[]);
        delta.count(&poison(2), Outcome::AlreadyCounted, &[]);
        delta.count(&poison(3), Outcome::Duplicate, &[]);
        delta.count(&event_at(4, 1_795_435_100, "a"), Outcome::Conflict, &[]);
        assert_eq!(
            (delta.outcomes.processed, delta.outcomes.duplicate, delta.outcomes.conflict, delta.outcomes.failed),
            (0, 1, 1, 1)
        );
        assert_eq!(delta.outcomes.received_direct, 3, "records no ingest counted are counted received once, here");
        assert!(delta.windows.is_empty() && delta.aggregates.is_empty(), "a conflict adds to no analytics");
    }
}

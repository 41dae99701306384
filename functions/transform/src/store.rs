//! Storing processed events exactly once, counting them in the same commit, and adding them
//! to the analytics (window buckets, day and month aggregates) once per record after it.

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
    /// This very record was stored by an earlier delivery; not counted again. Its analytics
    /// are added again, and each item takes them unless that delivery added them already.
    Redelivered,
    /// A copy of a stored record that ingest put twice (same ingest id, another position):
    /// published again, counted nowhere.
    IngestCopy,
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
        matches!(self, Outcome::Stored | Outcome::Redelivered | Outcome::IngestCopy)
    }

    /// The event adds to the analytics: stored now, or by an earlier delivery of this very
    /// record (which may have stopped before adding it).
    pub fn adds_analytics(self) -> bool {
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

/// What adding a batch's analytics did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AnalyticsAdded {
    /// Events whose additions to some item the table refused for good: counted as lost
    /// analytics in the shard's totals, never retried.
    pub lost: u64,
    /// The first entry (by index) with an addition still failing past the retry budget:
    /// the batch is retried from its record, and the items that took it skip it then.
    pub unfinished: Option<usize>,
}

/// Commits entries of one shard atomically with the counters they change.
pub trait EventStore: Send + Sync {
    /// Commits a batch's entries in order, in as many atomic commits as the store needs,
    /// each entry with its counters; stops at the first commit that fails.
    fn commit(&self, shard_id: &str, entries: &[Entry]) -> impl Future<Output = Committed> + Send;

    /// Adds the events whose outcome [adds analytics](Outcome::adds_analytics) to the
    /// shard's window buckets and to the day and month aggregates, once per record: each
    /// item keeps the position of the last record of this shard it took, and takes only
    /// records after it. `outcomes` may be shorter than `entries` (a commit that stopped).
    fn add_analytics(
        &self,
        shard_id: &str,
        entries: &[Entry],
        outcomes: &[Outcome],
    ) -> impl Future<Output = AnalyticsAdded> + Send;

    /// Adds user hashes to the distinct-users sketches of the shard's window buckets.
    /// Idempotent: adding a user again changes nothing. Analytics never cost an event nor
    /// hold up a shard, so this does not fail: it returns how many hashes it gave up on
    /// (refused by the table, or still failing past the retry budget), which the store has
    /// counted as lost analytics.
    fn merge_users(&self, shard_id: &str, users: &BTreeMap<Bucket, Vec<u64>>) -> impl Future<Output = u64> + Send;
}

/// What a commit adds to the shard's totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterDelta {
    pub outcomes: Outcomes,
}

/// An aggregate item a stored event adds to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateItem {
    User(UserId, Period),
    Shard(Period),
}

/// The aggregate items of an event: the shard's day and month, and its user's day (when it
/// has a user). A user's months are added up from their days when read: one write less per
/// event.
pub fn aggregate_items(event: &ProcessedEvent) -> Vec<AggregateItem> {
    let day = Period::of(event.event.timestamp, Granularity::Day);
    let month = Period::of(event.event.timestamp, Granularity::Month);
    let mut items = vec![AggregateItem::Shard(day), AggregateItem::Shard(month)];
    if let Some(user) = &event.event.user_id {
        items.push(AggregateItem::User(user.clone(), day));
    }
    items
}

/// What one record adds to one analytics item: the record's entry index and position in
/// the shard's order ([`Position::order_key`]), and its tally.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution<T> {
    pub index: usize,
    pub position: String,
    pub tally: T,
}

/// What a batch's stored events add to each window bucket and aggregate item, record by
/// record in stream order, so that an item can skip the records it already took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analytics {
    pub windows: BTreeMap<Bucket, Vec<Contribution<Tally>>>,
    pub aggregates: BTreeMap<AggregateItem, Vec<Contribution<AggregateTally>>>,
}

impl Analytics {
    /// The additions of the entries whose outcome adds analytics, summing `measures`.
    pub fn of(entries: &[Entry], outcomes: &[Outcome], measures: &[String]) -> Self {
        let mut analytics = Analytics::default();
        for (index, (entry, outcome)) in entries.iter().zip(outcomes).enumerate() {
            let Entry::Event { event, buckets } = entry else { continue };
            if !outcome.adds_analytics() {
                continue;
            }
            let position = event.position().order_key();
            for bucket in buckets {
                let add = Contribution { index, position: position.clone(), tally: tally_of(event) };
                analytics.windows.entry(*bucket).or_default().push(add);
            }
            let aggregate = aggregate_tally_of(event, measures);
            for item in aggregate_items(event) {
                let add = Contribution { index, position: position.clone(), tally: aggregate.clone() };
                analytics.aggregates.entry(item).or_default().push(add);
            }
        }
        analytics
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.aggregates.is_empty()
    }
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
    pub fn count(&mut self, entry: &Entry, outcome: Outcome) {
        let counted_now = matches!(
            outcome,
            Outcome::Stored | Outcome::Duplicate | Outcome::Conflict | Outcome::Failed | Outcome::Refused
        );
        if counted_now && !entry.came_through_ingest() {
            self.outcomes.received_direct += 1;
        }
        match (entry, outcome) {
            (Entry::Event { event, .. }, Outcome::Stored) => {
                self.outcomes.processed += 1;
                self.outcomes.latency_sum_ms += event.latency_ms;
                self.outcomes.latency.record(event.latency_ms);
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
    fn analytics_come_from_events_stored_now_or_by_an_earlier_delivery_record_by_record() {
        let entries = [
            event_at(1, 1_795_435_100, "a"),
            event_at(2, 1_795_435_100, "b"),
            event_at(3, 1_795_435_101, "a"),
            event_at(4, 1_795_435_101, "a"),
            event_at(5, 1_795_435_101, "a"),
        ];
        let outcomes = [Outcome::Stored, Outcome::Redelivered, Outcome::Duplicate, Outcome::IngestCopy];
        let analytics = Analytics::of(&entries, &outcomes, &[]);
        let second = &analytics.windows[&Bucket::Second(1_795_435_100)];
        assert_eq!(
            second.iter().map(|c| c.index).collect::<Vec<_>>(),
            [0, 1],
            "stored now, and by an earlier delivery"
        );
        assert_eq!(second[1].tally.by_type, BTreeMap::from([("b".to_owned(), 1)]));
        assert!(second[0].position < second[1].position, "in the shard's order");
        assert_eq!(analytics.windows.len(), 2, "no duplicate, no copy of ingest's, nothing past the outcomes");
        let day = Period::of(time::OffsetDateTime::from_unix_timestamp(1_795_435_100).unwrap(), Granularity::Day);
        assert_eq!(analytics.aggregates[&AggregateItem::Shard(day)].len(), 2);
    }

    #[test]
    fn an_event_adds_to_its_users_day_but_not_to_a_users_month() {
        let Entry::Event { mut event, .. } = event_at(1, 1_795_435_100, "a") else { panic!("an event") };
        event.event.user_id = Some(UserId::parse("u-1".to_owned()).unwrap());
        let items = aggregate_items(&event);
        let day = Period::of(event.event.timestamp, Granularity::Day);
        let month = Period::of(event.event.timestamp, Granularity::Month);
        let user = event.event.user_id.clone().unwrap();
        assert_eq!(items, [AggregateItem::Shard(day), AggregateItem::Shard(month), AggregateItem::User(user, day)]);
    }

    #[test]
    fn counts_only_what_was_committed_now() {
        let mut delta = CounterDelta::default();
        delta.count(&poison(1), Outcome::Failed);
        delta.count(&poison(2), Outcome::AlreadyCounted);
        delta.count(&poison(3), Outcome::Duplicate);
        delta.count(&event_at(4, 1_795_435_100, "a"), Outcome::Conflict);
        assert_eq!(
            (delta.outcomes.processed, delta.outcomes.duplicate, delta.outcomes.conflict, delta.outcomes.failed),
            (0, 1, 1, 1)
        );
        assert_eq!(delta.outcomes.received_direct, 3, "records no ingest counted are counted received once, here");
        let entries = [poison(1), event_at(4, 1_795_435_100, "a")];
        assert!(
            Analytics::of(&entries, &[Outcome::Failed, Outcome::Conflict], &[]).is_empty(),
            "a conflict adds to no analytics"
        );
    }
}

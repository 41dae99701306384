//! In-memory adapters of the transform's ports, for tests, benches and tools that need no
//! AWS: an event store that stores each identity once and counts per outcome, a dead-letter
//! queue that keeps what it is sent, and a reference table. Each refuses what it is told to.
//! The output stream's adapter is the model's [`eventline_model::memory::MemoryStream`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use eventline_model::reference::ReferenceError;
use eventline_model::reference::UserMeta;
use eventline_model::window::Bucket;
use eventline_model::{IngestId, Position, Provenance, UserId};

use crate::dead_letter::{DeadLetterError, DeadLetters, PoisonMessage};
use crate::enrich::{Enricher, Lookup};
use crate::store::{Analytics, AnalyticsAdded, Committed, Entry, EventStore, Outcome, StoreError};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The record that stored an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAt {
    pub position: Position,
    pub ingest_id: Option<IngestId>,
}

/// What a store counted, per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub processed: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub failed: u64,
}

/// Stores identities once, like the conditional puts in DynamoDB, with markers keyed like
/// the real ones (so a duplicate, a conflict or a poison record is counted once however
/// often it arrives), and counts per outcome. Commits the whole batch at once.
#[derive(Default)]
pub struct MemoryStore {
    events: Mutex<HashMap<String, (StoredAt, Option<Provenance>)>>,
    markers: Mutex<HashSet<String>>,
    counts: Mutex<Counts>,
    failures: Mutex<Failures>,
    refused_ids: Vec<String>,
    refuse_sketches: bool,
    sketch_users: Mutex<BTreeMap<Bucket, HashSet<u64>>>,
    /// Each analytics item, named by its key (e.g. `Second(..)` or `User(..)`).
    analytics: Mutex<BTreeMap<String, AnalyticsItem>>,
    /// Calls of `add_analytics` still to fail before they add anything.
    analytics_failures: Mutex<u32>,
}

/// An analytics item as the table keeps it: the events it counted, and per shard the
/// position of the last record it took.
#[derive(Default)]
struct AnalyticsItem {
    events: u64,
    taken: HashMap<String, String>,
}

/// Commits told to fail.
#[derive(Default)]
struct Failures {
    /// Commits that fail before they write anything.
    whole: u32,
    /// A commit that writes this many entries, then fails.
    after: Option<usize>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses the events with these ids as DynamoDB refuses an invalid item.
    pub fn refusing_ids(ids: &[&str]) -> Self {
        Self { refused_ids: ids.iter().map(|id| (*id).to_owned()).collect(), ..Self::default() }
    }

    /// Gives up on every users sketch, as the table does with one it refuses.
    pub fn refusing_sketches() -> Self {
        Self { refuse_sketches: true, ..Self::default() }
    }

    /// The next `commits` commits fail, transiently, before they write anything.
    pub fn fail_next_commits(&self, commits: u32) {
        lock(&self.failures).whole = commits;
    }

    /// The next commit writes its first `entries` entries, then fails transiently, as a
    /// batch does whose later transaction fails.
    pub fn fail_next_commit_after(&self, entries: usize) {
        lock(&self.failures).after = Some(entries);
    }

    /// The next `calls` additions of analytics fail, transiently, before they add anything.
    pub fn fail_next_analytics(&self, calls: u32) {
        *lock(&self.analytics_failures) = calls;
    }

    /// The events each analytics item counted, by the item's name.
    pub fn analytics(&self) -> BTreeMap<String, u64> {
        lock(&self.analytics).iter().map(|(name, item)| (name.clone(), item.events)).collect()
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    /// The record that stored the event `source`/`id`, if one did.
    pub fn stored_at(&self, source: &str, id: &str) -> Option<StoredAt> {
        lock(&self.events).get(&format!("{source}#{id}")).map(|(at, _)| at.clone())
    }

    /// How many identities are stored.
    pub fn stored_events(&self) -> usize {
        lock(&self.events).len()
    }

    /// The user hashes merged into each bucket's sketch.
    pub fn sketch_users(&self) -> BTreeMap<Bucket, HashSet<u64>> {
        lock(&self.sketch_users).clone()
    }

    /// How many entries the next commit writes before it fails, if it is told to fail.
    fn next_failure(&self) -> Option<usize> {
        let mut failures = lock(&self.failures);
        if failures.whole > 0 {
            failures.whole -= 1;
            return Some(0);
        }
        failures.after.take()
    }

    /// Stores or marks one entry; what the commit made of it.
    fn commit_entry(&self, entry: &Entry) -> Outcome {
        let (outcome, marker) = match entry {
            Entry::Event { event, .. } if self.refused_ids.iter().any(|id| id == event.event.id.as_str()) => {
                (Outcome::Refused, Some(format!("poison {}", marker_key(&event.ingest_id, &event.position()))))
            }
            Entry::Event { event, .. } => {
                let key = format!("{}#{}", event.event.source, event.event.id);
                let mut events = lock(&self.events);
                match events.get(&key) {
                    None => {
                        let at = StoredAt { position: event.position(), ingest_id: event.ingest_id.clone() };
                        events.insert(key, (at, event.provenance.clone()));
                        (Outcome::Stored, None)
                    }
                    Some((at, _)) if at.position == event.position() => (Outcome::Redelivered, None),
                    Some((at, _)) if at.ingest_id.is_some() && event.ingest_id == at.ingest_id => {
                        (Outcome::IngestCopy, None)
                    }
                    Some((_, stored)) => {
                        let other = matches!((stored, &event.provenance), (Some(a), Some(b)) if a != b);
                        (
                            if other { Outcome::Conflict } else { Outcome::Duplicate },
                            Some(format!("dup {}", marker_key(&event.ingest_id, &event.position()))),
                        )
                    }
                }
            }
            Entry::Poison { ingest_id, position } => {
                (Outcome::Failed, Some(format!("poison {}", marker_key(ingest_id, position))))
            }
            Entry::Copy => (Outcome::AlreadyCounted, None),
        };
        let fresh = marker.is_none_or(|m| lock(&self.markers).insert(m));
        let outcome = match outcome {
            Outcome::Refused if !fresh => Outcome::RefusedBefore,
            _ if !fresh => Outcome::AlreadyCounted,
            _ => outcome,
        };
        let mut counts = lock(&self.counts);
        match outcome {
            Outcome::Stored => counts.processed += 1,
            Outcome::Duplicate => counts.duplicate += 1,
            Outcome::Conflict => counts.conflict += 1,
            Outcome::Failed | Outcome::Refused => counts.failed += 1,
            _ => {}
        }
        outcome
    }
}

/// A marker's key, as in the table: the ingest id, or the stream position of a record
/// another producer wrote (a user record's with its index in the aggregate).
fn marker_key(ingest_id: &Option<IngestId>, position: &Position) -> String {
    match ingest_id {
        Some(id) => id.to_string(),
        None => format!("{}#{}#{:?}", position.shard_id, position.sequence_number, position.sub_sequence_number),
    }
}

impl EventStore for MemoryStore {
    async fn commit(&self, _shard_id: &str, entries: &[Entry]) -> Committed {
        let written = self.next_failure().unwrap_or(entries.len()).min(entries.len());
        let outcomes = entries[..written].iter().map(|entry| self.commit_entry(entry)).collect();
        let error = (written < entries.len()).then(|| StoreError::Transient("throttled".into()));
        Committed { outcomes, error }
    }

    /// As the table's conditional updates: an item takes the records after the last it took.
    async fn add_analytics(&self, shard_id: &str, entries: &[Entry], outcomes: &[Outcome]) -> AnalyticsAdded {
        let analytics = Analytics::of(entries, outcomes, &[]);
        {
            let mut failures = lock(&self.analytics_failures);
            if *failures > 0 {
                *failures -= 1;
                let first = analytics.windows.values().flatten().map(|add| add.index);
                let first = first.chain(analytics.aggregates.values().flatten().map(|add| add.index)).min();
                return AnalyticsAdded { lost: 0, unfinished: first };
            }
        }
        let mut items = lock(&self.analytics);
        let windows = analytics.windows.iter().map(|(bucket, adds)| {
            (format!("{bucket:?}"), adds.iter().map(|add| (&add.position, add.tally.events)).collect::<Vec<_>>())
        });
        let aggregates = analytics.aggregates.iter().map(|(item, adds)| {
            (format!("{item:?}"), adds.iter().map(|add| (&add.position, add.tally.events)).collect::<Vec<_>>())
        });
        for (name, adds) in windows.chain(aggregates) {
            let item = items.entry(name).or_default();
            for (position, added) in adds {
                let last = item.taken.entry(shard_id.to_owned()).or_default();
                if last.as_str() < position.as_str() {
                    item.events += added;
                    *last = position.clone();
                }
            }
        }
        AnalyticsAdded::default()
    }

    async fn merge_users(&self, _shard_id: &str, users: &BTreeMap<Bucket, Vec<u64>>) -> u64 {
        if self.refuse_sketches {
            return users.values().map(|hashes| hashes.len() as u64).sum();
        }
        let mut merged = lock(&self.sketch_users);
        for (bucket, hashes) in users {
            merged.entry(*bucket).or_default().extend(hashes);
        }
        0
    }
}

/// A dead-letter queue in memory: keeps every message it takes, or refuses them all.
#[derive(Default)]
pub struct MemoryDeadLetters {
    sent: Mutex<Vec<PoisonMessage>>,
    refuse: bool,
}

impl MemoryDeadLetters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses every message, as a queue that is unavailable.
    pub fn refusing() -> Self {
        Self { refuse: true, ..Self::default() }
    }

    /// The messages taken, in order.
    pub fn sent(&self) -> Vec<PoisonMessage> {
        lock(&self.sent).clone()
    }
}

impl DeadLetters for MemoryDeadLetters {
    async fn send(&self, messages: &[PoisonMessage]) -> Vec<Result<(), DeadLetterError>> {
        if self.refuse {
            return messages.iter().map(|_| Err(DeadLetterError::unavailable("queue unavailable"))).collect();
        }
        lock(&self.sent).extend_from_slice(messages);
        messages.iter().map(|_| Ok(())).collect()
    }
}

/// A reference table in memory: the current generation and its users, or a failure.
#[derive(Default)]
pub struct MemoryReference {
    generation: u64,
    users: HashMap<UserId, UserMeta>,
    down: bool,
}

impl MemoryReference {
    /// No table yet: generation 0, every user unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table of `generation`, with no users yet.
    pub fn at_generation(generation: u64) -> Self {
        Self { generation, ..Self::default() }
    }

    pub fn with_user(mut self, user: UserId, meta: UserMeta) -> Self {
        self.users.insert(user, meta);
        self
    }

    /// A table that cannot be read.
    pub fn down() -> Self {
        Self { down: true, ..Self::default() }
    }
}

impl Enricher for MemoryReference {
    async fn lookup(&self, users: &[&UserId]) -> Result<Lookup, ReferenceError> {
        if self.down {
            return Err(ReferenceError::Unavailable("down".into()));
        }
        let users = users.iter().filter_map(|u| self.users.get(*u).map(|m| ((*u).clone(), m.clone()))).collect();
        Ok(Lookup { generation: self.generation, users })
    }
}

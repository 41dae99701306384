//! The read port in memory, for tests that need no AWS: it answers from what it is given,
//! and counts what it was asked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use eventline_model::aggregate::AggregateTally;
use eventline_model::reference::{Generation, UserMeta};
use eventline_model::window::ReadPlan;
use eventline_model::{EventId, ProcessedEvent, Source, UserId};

use crate::reader::{Counters, ReadError, Reader, WindowRead};
use crate::timeline::Cursor;

/// A table and stream in memory.
#[derive(Debug, Default)]
pub struct MemoryReader {
    /// The one processed event stored: found by its identity, and the whole of every user's
    /// timeline.
    pub event: Option<ProcessedEvent>,
    pub counters: Counters,
    /// Events processed in any span of seconds asked.
    pub recent: u64,
    /// The table's check fails, as when the table is missing.
    pub table_down: bool,
    /// What one shard's window buckets hold, whatever the plan: a read of N shards finds N
    /// times the items and this tally.
    pub window: WindowRead,
    /// One partition's aggregates by period label, the same in every partition, whatever
    /// the range asked.
    pub aggregates: BTreeMap<String, AggregateTally>,
    pub reference: Option<Generation>,
    /// The users of every generation.
    pub reference_users: BTreeMap<String, UserMeta>,
    health_checks: AtomicUsize,
    spans: Mutex<Vec<i64>>,
}

impl MemoryReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Table checks made (each health check makes one).
    pub fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }

    /// The length in seconds of each span `processed_between` was asked, in order.
    pub fn spans_asked(&self) -> Vec<i64> {
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Reader for MemoryReader {
    async fn event(&self, source: &Source, id: &EventId) -> Result<Option<ProcessedEvent>, ReadError> {
        Ok(self.event.clone().filter(|e| &e.event.source == source && &e.event.id == id))
    }

    async fn counters(&self) -> Result<Counters, ReadError> {
        Ok(self.counters.clone())
    }

    async fn processed_between(&self, from: i64, to: i64) -> Result<u64, ReadError> {
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(to - from);
        Ok(self.recent)
    }

    async fn check_table(&self) -> Result<(), ReadError> {
        self.health_checks.fetch_add(1, Ordering::SeqCst);
        if self.table_down { Err(ReadError::new("the table", "ResourceNotFoundException")) } else { Ok(()) }
    }

    async fn check_stream(&self) -> Result<(), ReadError> {
        Ok(())
    }

    async fn user_events(
        &self,
        _: &UserId,
        _: (String, String),
        _: usize,
        _: Option<Cursor>,
    ) -> Result<(Vec<ProcessedEvent>, Option<Cursor>), ReadError> {
        Ok((self.event.clone().into_iter().collect(), None))
    }

    async fn aggregates(
        &self,
        partitions: &[String],
        _: (String, String),
    ) -> Result<BTreeMap<String, AggregateTally>, ReadError> {
        // Every partition holds the same periods: each period sums one tally per partition.
        Ok(self
            .aggregates
            .iter()
            .map(|(period, tally)| {
                let mut sum = AggregateTally::default();
                partitions.iter().for_each(|_| sum.add(tally));
                (period.clone(), sum)
            })
            .collect())
    }

    async fn window(&self, shards: &[String], plan: &ReadPlan) -> Result<WindowRead, ReadError> {
        Ok(WindowRead { items_read: plan.items() * shards.len(), ..self.window.clone() })
    }

    async fn reference(&self) -> Result<Option<Generation>, ReadError> {
        Ok(self.reference.clone())
    }

    async fn reference_user(&self, _: &Generation, user: &UserId) -> Result<Option<UserMeta>, ReadError> {
        Ok(self.reference_users.get(user.as_str()).cloned())
    }
}

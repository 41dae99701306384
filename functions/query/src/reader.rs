//! What the query function reads, as a port; `dynamo.rs` is its adapter over DynamoDB and Kinesis.

use std::future::Future;

use crate::timeline::Cursor;
use eventline_model::UserId;
use eventline_model::aggregate::AggregateTally;
use eventline_model::outcomes::Outcomes;
use eventline_model::reference::{Generation, UserMeta};
use eventline_model::window::{Distinct, ReadPlan, Tally};
use eventline_model::{EventId, ProcessedEvent, Source};
use std::collections::BTreeMap;

/// The counters of one shard of the ingest stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardCounters {
    pub shard_id: String,
    pub outcomes: Outcomes,
    /// Events whose analytics updates the table refused or that were given up on.
    pub analytics_lost: u64,
    pub first_processed_ms: Option<i64>,
    pub last_active_ms: Option<i64>,
}

/// Everything the totals are made of: one item per shard and per ingest counter slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub shards: Vec<ShardCounters>,
    pub received: u64,
    pub first_received_ms: Option<i64>,
}

/// A read that failed: what was being read, and the SDK's error (or what was wrong with
/// an item) as the source, for the log.
#[derive(Debug, thiserror::Error)]
#[error("could not read {what}")]
pub struct ReadError {
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ReadError {
    pub fn new(what: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { what, source: source.into() }
    }
}

pub trait Reader: Send + Sync {
    fn event(
        &self,
        source: &Source,
        id: &EventId,
    ) -> impl Future<Output = Result<Option<ProcessedEvent>, ReadError>> + Send;
    fn counters(&self) -> impl Future<Output = Result<Counters, ReadError>> + Send;
    /// Events processed in the whole seconds `from..to` (epoch seconds), over all shards.
    fn processed_between(&self, from: i64, to: i64) -> impl Future<Output = Result<u64, ReadError>> + Send;
    fn check_table(&self) -> impl Future<Output = Result<(), ReadError>> + Send;
    /// Up to `limit` of a user's events with `user_sk` in `range` (inclusive), in order,
    /// after `after`; and where the next page starts when there are more.
    fn user_events(
        &self,
        user: &UserId,
        range: (String, String),
        limit: usize,
        after: Option<Cursor>,
    ) -> impl Future<Output = Result<(Vec<ProcessedEvent>, Option<Cursor>), ReadError>> + Send;
    /// The aggregate items of the given partitions with sort keys in `range`, summed by
    /// period label (one item per period per partition).
    fn aggregates(
        &self,
        partitions: &[String],
        range: (String, String),
    ) -> impl Future<Output = Result<BTreeMap<String, AggregateTally>, ReadError>> + Send;
    /// The window buckets a plan names, summed over the given shards.
    fn window(&self, shards: &[String], plan: &ReadPlan) -> impl Future<Output = Result<WindowRead, ReadError>> + Send;
    /// The current reference generation, `None` before the first table.
    fn reference(&self) -> impl Future<Output = Result<Option<Generation>, ReadError>> + Send;
    /// One user's entry in a generation.
    fn reference_user(
        &self,
        generation: &Generation,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<UserMeta>, ReadError>> + Send;
    fn check_stream(&self) -> impl Future<Output = Result<(), ReadError>> + Send;
}

/// Bytes of events one timeline page may hold, counted as they travel in Lambda's response
/// to API Gateway (the body is a JSON string there): well inside Lambda's 6 MB response.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What a window read found, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct WindowRead {
    pub tally: Tally,
    pub users: Distinct,
    pub items_read: usize,
}

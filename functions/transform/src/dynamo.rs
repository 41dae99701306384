//! The event store in DynamoDB: a batch's entries split into groups that fit a transaction
//! ([`groups`]), and one TransactWriteItems per group, holding every conditional put and the
//! shard's totals, so an event and its count commit together or not at all. The analytics
//! (window buckets, day and month aggregates) follow as plain updates, one per item per
//! batch, each conditional on the position of the last record of the shard the item took:
//! exactly once without a transaction's doubled price.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use futures_util::StreamExt;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use eventline_aws::batch_get::{BoxError, batch_get};
use eventline_aws::item::{Item, n, s, to_item};
use eventline_aws::keys::{self, attr};
use eventline_aws::{error_chain, refused_for_good};
use eventline_model::retry::Backoff;
use eventline_model::window::{BUCKET_TTL_SECONDS, Bucket, Distinct, Tally};
use eventline_model::{ProcessedEvent, format_rfc3339};
use time::OffsetDateTime;

use crate::breakdown::{self, Guard, Known};
use crate::store::{
    AggregateItem, Analytics, AnalyticsAdded, Committed, Contribution, CounterDelta, Entry, EventStore, Outcome,
    StoreError,
};
use eventline_model::aggregate::{AggregateTally, DEFAULT_BREAKDOWN_KEYS, DEFAULT_MEASURES};
use groups::commit_groups;

pub mod groups;

#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    backoff: Backoff,
    measures: Vec<String>,
    max_breakdown_keys: u32,
    /// How long the items of events are kept from when they were received (their TTL);
    /// `None` keeps them forever.
    retention: Option<time::Duration>,
    /// What this environment knows of the shared counter items' breakdowns, so that most
    /// commits need no read; every commit checks what it relied on.
    known: Arc<Mutex<HashMap<ItemKey, Known>>>,
}

/// A shared counter item's `(pk, sk)`.
type ItemKey = (String, String);

/// Items remembered in [`DynamoEventStore::known`] before it starts afresh: window buckets
/// come and go every second, so it would otherwise only grow.
const MAX_KNOWN_ITEMS: usize = 20_000;

/// Times one analytics item is read again after its condition failed before the next try
/// waits as for any other conflict.
const MAX_REREADS: u32 = 8;

/// Updates of analytics items in flight at once.
const CONCURRENT_UPDATES: usize = 16;

/// How long a batch's analytics may take, retries included: what is not added by then is
/// added when the batch is retried (within the transform's 120 s timeout, beside the commit's
/// and the publish's budgets).
const ANALYTICS_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Most counters one analytics update adds: its expression must stay within DynamoDB's 4 KB.
pub const MAX_TERMS_PER_UPDATE: usize = 150;

/// The breakdowns a counter item may hold, by attribute prefix.
const BREAKDOWNS: [&str; 4] = [attr::TYPE_PREFIX, attr::SOURCE_PREFIX, attr::PLAN_PREFIX, attr::REGION_PREFIX];

impl DynamoEventStore {
    /// A store that sums the default measures into the aggregates.
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>, backoff: Backoff) -> Self {
        let measures = DEFAULT_MEASURES.split(',').map(str::to_owned).collect();
        Self {
            client,
            table_name: table_name.into(),
            backoff,
            measures,
            max_breakdown_keys: DEFAULT_BREAKDOWN_KEYS,
            retention: None,
            known: Arc::default(),
        }
    }

    pub fn with_measures(self, measures: Vec<String>) -> Self {
        Self { measures, ..self }
    }

    /// Events, their index copies and their markers expire this long after they were
    /// received (by the table's TTL); `None` keeps them forever. Aggregates never expire.
    pub fn with_retention(self, retention: Option<time::Duration>) -> Self {
        Self { retention, ..self }
    }

    /// At most `keys` distinct keys per breakdown of a shared counter item (at least 1).
    pub fn with_breakdown_limit(self, keys: u32) -> Self {
        Self { max_breakdown_keys: keys.max(1), ..self }
    }
}

/// Where an entry stands while its group is being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    StoreEvent,
    MarkDuplicate,
    /// A copy from another sender or with other content: its conflict item counts it once.
    MarkConflict,
    MarkPoison,
    /// An event the table refused: its poison marker counts it as failed once.
    MarkRefused,
    Done(Outcome),
}

impl Step {
    fn outcome_if_written(self) -> Outcome {
        match self {
            Step::StoreEvent => Outcome::Stored,
            Step::MarkDuplicate => Outcome::Duplicate,
            Step::MarkConflict => Outcome::Conflict,
            Step::MarkPoison => Outcome::Failed,
            Step::MarkRefused => Outcome::Refused,
            Step::Done(outcome) => outcome,
        }
    }

    fn first(entry: &Entry) -> Self {
        match entry {
            Entry::Event { .. } => Step::StoreEvent,
            Entry::Poison { .. } => Step::MarkPoison,
            Entry::Copy => Step::Done(Outcome::AlreadyCounted),
        }
    }
}

/// What one failed transaction means for the entries it held.
enum Failure {
    /// Some entries' conditions failed or their items were invalid: their steps changed,
    /// retry the rest at once.
    Resolved,
    /// The request as a whole was invalid (no reason per item): split the group.
    Invalid(SdkError<TransactWriteItemsError>),
    Transient(SdkError<TransactWriteItemsError>),
    Permanent(SdkError<TransactWriteItemsError>),
}

impl EventStore for DynamoEventStore {
    /// One transaction per group of entries that fits DynamoDB's limits, in order.
    async fn commit(&self, shard_id: &str, entries: &[Entry]) -> Committed {
        let mut committed = Committed { outcomes: Vec::with_capacity(entries.len()), error: None };
        for group in commit_groups(entries) {
            match self.commit_group(shard_id, &entries[group]).await {
                Ok(outcomes) => committed.outcomes.extend(outcomes),
                Err(error) => {
                    committed.error = Some(error);
                    break;
                }
            }
        }
        committed
    }

    /// One update per window bucket and aggregate item, [`CONCURRENT_UPDATES`] at a time.
    async fn add_analytics(&self, shard_id: &str, entries: &[Entry], outcomes: &[Outcome]) -> AnalyticsAdded {
        let analytics = Analytics::of(entries, outcomes, &self.measures);
        if analytics.is_empty() {
            return AnalyticsAdded::default();
        }
        // One budget for the whole stage, so that a batch of many items cannot outlast the
        // function's timeout while updates are throttled.
        let deadline = tokio::time::Instant::now() + ANALYTICS_BUDGET;
        let mut updates: Vec<Pin<Box<dyn Future<Output = AnalyticsAdded> + Send + '_>>> = Vec::new();
        for (bucket, adds) in &analytics.windows {
            let expires_at = bucket.start() + BUCKET_TTL_SECONDS;
            let key = window_key(shard_id, *bucket);
            updates.push(Box::pin(self.add_to_item(shard_id, key, adds, Some(expires_at), deadline)));
        }
        for (item, adds) in &analytics.aggregates {
            updates.push(Box::pin(self.add_to_item(shard_id, aggregate_key(shard_id, item), adds, None, deadline)));
        }
        let results: Vec<AnalyticsAdded> =
            futures_util::stream::iter(updates).buffer_unordered(CONCURRENT_UPDATES).collect().await;
        let added = AnalyticsAdded {
            lost: results.iter().map(|r| r.lost).sum(),
            unfinished: results.iter().filter_map(|r| r.unfinished).min(),
        };
        if added.lost > 0 {
            eventline_aws::telemetry::analytics_lost(added.lost);
            self.count_lost_analytics(shard_id, added.lost).await;
        }
        added
    }

    async fn merge_users(&self, shard_id: &str, users: &BTreeMap<Bucket, Vec<u64>>) -> u64 {
        DynamoEventStore::merge_users(self, shard_id, users).await
    }
}

impl DynamoEventStore {
    /// Commits entries that fit one transaction (see [`commit_groups`]); an outcome per
    /// entry, in order.
    #[tracing::instrument(skip(self, entries), fields(entries = entries.len()))]
    async fn commit_group(&self, shard_id: &str, entries: &[Entry]) -> Result<Vec<Outcome>, StoreError> {
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let mut retries = self.backoff.start();
        // Groups still to commit; a group the table refuses as a whole is split in two until
        // the entry that makes it invalid stands alone.
        let mut groups: Vec<Vec<usize>> = vec![(0..entries.len()).collect()];
        while let Some(group) = groups.pop() {
            loop {
                let pending: Vec<usize> =
                    group.iter().copied().filter(|&i| !matches!(steps[i], Step::Done(_))).collect();
                if pending.is_empty() {
                    break;
                }
                match self.try_commit(shard_id, entries, &pending, &mut steps).await? {
                    None => break,
                    Some(Failure::Resolved) => {}
                    Some(Failure::Invalid(error)) if pending.len() > 1 => {
                        tracing::warn!(error = %error_chain(&error), entries = pending.len(), "table refused a group; splitting it");
                        let (first, second) = pending.split_at(pending.len() / 2);
                        groups.push(second.to_vec());
                        groups.push(first.to_vec());
                        break;
                    }
                    Some(Failure::Invalid(error)) => {
                        let index = pending[0];
                        if steps[index] != Step::StoreEvent {
                            return Err(StoreError::Permanent(error.into()));
                        }
                        tracing::warn!(error = %error_chain(&error), "table refused an event; dead-lettering it");
                        steps[index] = Step::MarkRefused;
                    }
                    Some(Failure::Transient(error)) => {
                        tracing::warn!(error = %error_chain(&error), retries = retries.count(), "transaction failed; retrying");
                        eventline_aws::telemetry::commit_retried();
                        if !retries.wait().await {
                            return Err(StoreError::Transient(error.into()));
                        }
                    }
                    Some(Failure::Permanent(error)) => return Err(StoreError::Permanent(error.into())),
                }
            }
        }
        Ok(steps.into_iter().map(Step::outcome_if_written).collect())
    }

    /// One transaction of the pending entries with the shard's totals. `None` when it went
    /// through (the steps are then done).
    async fn try_commit(
        &self,
        shard_id: &str,
        entries: &[Entry],
        pending: &[usize],
        steps: &mut [Step],
    ) -> Result<Option<Failure>, StoreError> {
        let mut delta = CounterDelta::default();
        for &i in pending {
            delta.count(&entries[i], steps[i].outcome_if_written());
        }
        let mut actions: Vec<TransactWriteItem> =
            pending.iter().map(|&i| self.put_action(&entries[i], steps[i])).collect::<Result<_, _>>()?;
        actions.extend(self.counter_actions(shard_id, &delta, OffsetDateTime::now_utc())?);

        let error = match self.client.transact_write_items().set_transact_items(Some(actions)).send().await {
            Ok(_) => {
                for &i in pending {
                    steps[i] = Step::Done(steps[i].outcome_if_written());
                }
                return Ok(None);
            }
            Err(error) => error,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() {
            let reasons = cancelled.cancellation_reasons();
            // The totals carry no condition: a reason against them means a request built wrong.
            if reasons.iter().skip(pending.len()).any(|reason| reason.code() == Some("ValidationError")) {
                return Ok(Some(Failure::Permanent(error)));
            }
            if resolve(reasons, entries, pending, steps) {
                return Ok(Some(Failure::Resolved));
            }
        }
        Ok(Some(classify(error)))
    }

    /// Remembers what is known of shared items.
    fn learn(&self, items: impl IntoIterator<Item = (ItemKey, Known)>) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() > MAX_KNOWN_ITEMS {
            known.clear();
        }
        known.extend(items);
    }

    fn known(&self, key: &ItemKey) -> Known {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned().unwrap_or_default()
    }

    /// A conditional put: the event item, or a marker that makes a count happen once; with
    /// the retention's expiry, counted from when the record was received (the marker of a
    /// poison record, which has no time of its own, from now).
    fn put_action(&self, entry: &Entry, step: Step) -> Result<TransactWriteItem, StoreError> {
        let mut item: Item = match (entry, step) {
            (Entry::Event { event, .. }, Step::StoreEvent) => to_item(event),
            (Entry::Event { event, .. }, Step::MarkRefused) => {
                marker(keys::poison_pk(event.ingest_id.as_ref(), &event.position()), keys::POISON_SK.to_owned())
            }
            (Entry::Event { event, .. }, Step::MarkConflict) => conflict_item(event),
            (Entry::Event { event, .. }, _) => marker(
                keys::event_pk(&event.event.source, &event.event.id),
                keys::duplicate_sk(event.ingest_id.as_ref(), &event.position()),
            ),
            (Entry::Poison { ingest_id, position }, _) => {
                marker(keys::poison_pk(ingest_id.as_ref(), position), keys::POISON_SK.to_owned())
            }
            (Entry::Copy, _) => {
                return Err(StoreError::Permanent("nothing to write for this entry at this step".into()));
            }
        };
        if let Some(retention) = self.retention {
            // From when it was received; but a record put back on the stream long after (a
            // redrive, another producer's old `received_at`) is kept at least the retention
            // less its margin from now, which outlasts any stay on the stream.
            let now = OffsetDateTime::now_utc();
            let least = now + retention - crate::config::RETENTION_MARGIN;
            let expires = match entry {
                Entry::Event { event, .. } => (event.received_at + retention).max(least),
                _ => now + retention,
            };
            item.insert(keys::EXPIRES_AT.to_owned(), n(expires.unix_timestamp()));
        }
        let put = Put::builder()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Permanent(e.into()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The shard's totals, and its throughput in this second.
    fn counter_actions(
        &self,
        shard_id: &str,
        delta: &CounterDelta,
        now: OffsetDateTime,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        // Attribute names go through placeholders: several are DynamoDB reserved words.
        let mut adds = vec![
            "#received_direct :r".to_owned(),
            "#processed :p".to_owned(),
            "#duplicate :d".to_owned(),
            "#conflict :c".to_owned(),
            "#failed :f".to_owned(),
            "#latency_sum :ls".to_owned(),
        ];
        let mut totals = Update::builder()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::shard_sk(shard_id)))
            .expression_attribute_names("#received_direct", attr::RECEIVED_DIRECT)
            .expression_attribute_names("#processed", attr::PROCESSED)
            .expression_attribute_names("#duplicate", attr::DUPLICATE)
            .expression_attribute_names("#conflict", attr::CONFLICT)
            .expression_attribute_names("#failed", attr::FAILED)
            .expression_attribute_names("#latency_sum", attr::LATENCY_SUM_MS)
            .expression_attribute_names("#last_active", attr::LAST_ACTIVE_MS)
            .expression_attribute_names("#first_processed", attr::FIRST_PROCESSED_MS)
            .expression_attribute_values(":r", n(delta.outcomes.received_direct))
            .expression_attribute_values(":p", n(delta.outcomes.processed))
            .expression_attribute_values(":d", n(delta.outcomes.duplicate))
            .expression_attribute_values(":c", n(delta.outcomes.conflict))
            .expression_attribute_values(":f", n(delta.outcomes.failed))
            .expression_attribute_values(":ls", n(delta.outcomes.latency_sum_ms))
            .expression_attribute_values(":now", n(now_ms));
        for (bucket, count) in &delta.outcomes.latency.counts {
            adds.push(format!("#h{bucket} :h{bucket}"));
            totals = totals
                .expression_attribute_names(format!("#h{bucket}"), format!("{}{bucket}", keys::LATENCY_BUCKET_PREFIX))
                .expression_attribute_values(format!(":h{bucket}"), n(count));
        }
        let totals = totals
            .update_expression(format!(
                "ADD {} SET #last_active = :now, #first_processed = if_not_exists(#first_processed, :now)",
                adds.join(", ")
            ))
            .build()
            .map_err(|e| StoreError::Permanent(e.into()))?;
        let mut actions = vec![TransactWriteItem::builder().update(totals).build()];

        if delta.outcomes.processed > 0 {
            let second = now.unix_timestamp();
            let rate = Update::builder()
                .table_name(&self.table_name)
                .key(keys::PK, s(keys::RATE_PK))
                .key(keys::SK, s(keys::rate_sk(second, shard_id)))
                .update_expression("ADD #processed :p SET #ttl = :ttl")
                .expression_attribute_names("#processed", attr::PROCESSED)
                .expression_attribute_names("#ttl", keys::EXPIRES_AT)
                .expression_attribute_values(":p", n(delta.outcomes.processed))
                .expression_attribute_values(":ttl", n(second + keys::RATE_ITEM_TTL_SECONDS))
                .build()
                .map_err(|e| StoreError::Permanent(e.into()))?;
            actions.push(TransactWriteItem::builder().update(rate).build());
        }
        Ok(actions)
    }
}

/// What an analytics item counts: a window bucket's tally or an aggregate's.
trait Counting: Clone + Default + Send + Sync {
    fn add(&mut self, other: &Self);
    /// The events it counts.
    fn events(&self) -> u64;
    /// Its plain counters, as `(attribute, number)`.
    fn terms(&self) -> Vec<(String, String)>;
    /// Its breakdowns, by attribute prefix.
    fn breakdowns(&self) -> Vec<(&'static str, &BTreeMap<String, u64>)>;
}

impl Counting for Tally {
    fn add(&mut self, other: &Self) {
        Tally::add(self, other);
    }

    fn events(&self) -> u64 {
        self.events
    }

    fn terms(&self) -> Vec<(String, String)> {
        vec![(attr::EVENTS.to_owned(), self.events.to_string()), (attr::UNKNOWN.to_owned(), self.unknown.to_string())]
    }

    fn breakdowns(&self) -> Vec<(&'static str, &BTreeMap<String, u64>)> {
        vec![
            (attr::TYPE_PREFIX, &self.by_type),
            (attr::SOURCE_PREFIX, &self.by_source),
            (attr::PLAN_PREFIX, &self.by_plan),
            (attr::REGION_PREFIX, &self.by_region),
        ]
    }
}

impl Counting for AggregateTally {
    fn add(&mut self, other: &Self) {
        AggregateTally::add(self, other);
    }

    fn events(&self) -> u64 {
        self.events
    }

    /// The count, and one sum per measure.
    fn terms(&self) -> Vec<(String, String)> {
        std::iter::once((attr::EVENTS.to_owned(), self.events.to_string()))
            .chain(self.sums.iter().map(|(k, sum)| (format!("{}{k}", attr::MEASURE_PREFIX), sum.to_number_text())))
            .collect()
    }

    fn breakdowns(&self) -> Vec<(&'static str, &BTreeMap<String, u64>)> {
        vec![(attr::TYPE_PREFIX, &self.by_type), (attr::SOURCE_PREFIX, &self.by_source)]
    }
}

/// How many of `adds`, from the first, one update takes: as many as keep its counters within
/// [`MAX_TERMS_PER_UPDATE`] (at least one).
fn first_update<T: Counting>(adds: &[Contribution<T>]) -> usize {
    let mut merged = T::default();
    for (taken, add) in adds.iter().enumerate() {
        let mut trial = merged.clone();
        trial.add(&add.tally);
        let terms = trial.terms().len() + trial.breakdowns().iter().map(|(_, keys)| keys.len()).sum::<usize>();
        if taken > 0 && terms > MAX_TERMS_PER_UPDATE {
            return taken;
        }
        merged = trial;
    }
    adds.len()
}

impl DynamoEventStore {
    /// Adds a batch's contributions to one item, in stream order, each update conditional
    /// on the item not having taken them yet (and on the breakdown keys its plan relied
    /// on). When the condition fails, the item is read: the contributions it took already
    /// are dropped, and the rest planned again from what it holds.
    async fn add_to_item<T: Counting>(
        &self,
        shard_id: &str,
        key: ItemKey,
        adds: &[Contribution<T>],
        expires_at: Option<i64>,
        deadline: tokio::time::Instant,
    ) -> AnalyticsAdded {
        let taken = keys::taken_attribute(shard_id);
        let mut rest = adds;
        let mut retries = self.backoff.start();
        let mut rereads = 0;
        while let Some(first) = rest.first() {
            if tokio::time::Instant::now() >= deadline {
                // The batch's time is up: what is left is added when it is retried.
                return AnalyticsAdded { lost: 0, unfinished: Some(first.index) };
            }
            let count = first_update(rest);
            let mut merged = T::default();
            rest[..count].iter().for_each(|add| merged.add(&add.tally));
            let marks = Taken { attribute: &taken, first: &first.position, last: &rest[count - 1].position };
            let (update, after) = self.counting_update(&key, merged.terms(), &merged.breakdowns(), expires_at, marks);
            let failed = match update.send().await {
                Ok(_) => {
                    self.learn([(key.clone(), after)]);
                    rest = &rest[count..];
                    continue;
                }
                Err(error) => error,
            };
            if failed.code() == Some("ConditionalCheckFailedException") {
                // Its key counts are not what this environment knew, or it took some of these
                // records already (a redelivery): read what it holds.
                match self.read_item(&key, &taken).await {
                    Ok(last) => {
                        let done = last.map_or(0, |last| rest.iter().take_while(|add| add.position <= last).count());
                        rest = &rest[done..];
                    }
                    Err(error) => tracing::warn!(%error, pk = %key.0, sk = %key.1, "analytics item not read; retrying"),
                }
                rereads += 1;
                if rereads <= MAX_REREADS || rest.is_empty() {
                    continue;
                }
            } else if failed.code() == Some("ValidationException") {
                // Grown past a limit or holding a number the table refuses: its counts are
                // lost, never the events.
                tracing::error!(error = %error_chain(&failed), pk = %key.0, sk = %key.1, "table refused an analytics update; its counts are lost");
                return AnalyticsAdded { lost: rest.iter().map(|add| add.tally.events()).sum(), unfinished: None };
            } else if refused_for_good(&failed) {
                // No permission, no table: waiting does not help, and nothing is lost: the batch
                // is retried from here until the cause is fixed.
                tracing::error!(error = %error_chain(&failed), pk = %key.0, sk = %key.1, "analytics update refused; the batch is retried from its first record");
                return AnalyticsAdded { lost: 0, unfinished: rest.first().map(|add| add.index) };
            } else {
                tracing::warn!(error = %error_chain(&failed), pk = %key.0, sk = %key.1, "analytics update failed; retrying");
            }
            if !retries.wait().await {
                tracing::error!(pk = %key.0, sk = %key.1, "analytics update still failing; the batch is retried from its first record");
                return AnalyticsAdded { lost: 0, unfinished: rest.first().map(|add| add.index) };
            }
        }
        AnalyticsAdded::default()
    }

    /// Reads an analytics item (strongly consistent): learns its breakdowns, and returns the
    /// position of the last record of this shard it took (`taken`), if it took any.
    async fn read_item(&self, key: &ItemKey, taken: &str) -> Result<Option<String>, BoxError> {
        let keys = vec![Item::from([(keys::PK.to_owned(), s(&key.0)), (keys::SK.to_owned(), s(&key.1))])];
        let item = batch_get(&self.client, &self.table_name, keys, true, self.backoff).await?.pop().unwrap_or_default();
        let counts: Vec<(&'static str, String)> =
            BREAKDOWNS.iter().map(|prefix| (*prefix, keys::key_count_attribute(prefix))).collect();
        let attributes =
            item.iter().map(|(name, value)| (name.as_str(), value.as_n().ok().and_then(|n| n.parse().ok())));
        // An absent item is known to hold nothing.
        self.learn([(key.clone(), breakdown::known_from(attributes, &counts))]);
        Ok(item.get(taken).and_then(|v| v.as_s().ok()).cloned())
    }

    /// An update that adds `terms` and the breakdowns to an analytics item, each breakdown
    /// bounded as [`breakdown::plan`] decides, and marks the records it takes; conditional on
    /// what the plan relied on and on the item not having taken them. Returns it with what
    /// is known of the item once it went through.
    fn counting_update(
        &self,
        key: &ItemKey,
        mut terms: Vec<(String, String)>,
        breakdowns: &[(&'static str, &BTreeMap<String, u64>)],
        expires_at: Option<i64>,
        taken: Taken<'_>,
    ) -> (UpdateItemFluentBuilder, Known) {
        let plan = breakdown::plan(&self.known(key), breakdowns, self.max_breakdown_keys);
        for (prefix, counts) in &plan.counts {
            terms.extend(counts.iter().map(|(k, c)| (format!("{prefix}{k}"), c.to_string())));
        }
        if plan.folded > 0 {
            terms.push((attr::FOLDED.to_owned(), plan.folded.to_string()));
        }
        for (prefix, added) in &plan.new_keys {
            terms.push((keys::key_count_attribute(prefix), added.to_string()));
        }
        let mut names = HashMap::from([("#taken".to_owned(), taken.attribute.to_owned())]);
        let mut values = HashMap::from([(":first".to_owned(), s(taken.first)), (":last".to_owned(), s(taken.last))]);
        let mut adds = Vec::with_capacity(terms.len());
        for (index, (name, number)) in terms.into_iter().enumerate() {
            adds.push(format!("#a{index} :a{index}"));
            names.insert(format!("#a{index}"), name);
            values.insert(format!(":a{index}"), AttributeValue::N(number));
        }
        let mut expression = format!("ADD {} SET #taken = :last", adds.join(", "));
        if let Some(expires_at) = expires_at {
            names.insert("#ttl".to_owned(), keys::EXPIRES_AT.to_owned());
            values.insert(":ttl".to_owned(), n(expires_at));
            expression.push_str(", #ttl = :ttl");
        }
        let mut conditions = vec!["(attribute_not_exists(#taken) OR #taken < :first)".to_owned()];
        match &plan.guard {
            Guard::Absent => {
                names.insert("#events".to_owned(), attr::EVENTS.to_owned());
                conditions.push("attribute_not_exists(#events)".to_owned());
            }
            Guard::Counts(counts) => {
                for (index, (prefix, count)) in counts.iter().enumerate() {
                    names.insert(format!("#k{index}"), keys::key_count_attribute(prefix));
                    conditions.push(match count {
                        None => format!("attribute_not_exists(#k{index})"),
                        Some(count) => {
                            values.insert(format!(":k{index}"), n(count));
                            format!("#k{index} = :k{index}")
                        }
                    });
                }
            }
        }
        let update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(&key.0))
            .key(keys::SK, s(&key.1))
            .update_expression(expression)
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        (update, plan.after)
    }
}

/// The records one update of an analytics item takes: the attribute that keeps the last one
/// of this shard, and the first and last positions of the update.
#[derive(Clone, Copy)]
struct Taken<'a> {
    attribute: &'a str,
    first: &'a str,
    last: &'a str,
}

impl DynamoEventStore {
    /// Merges users into the sketches of window buckets: read, merge, write back unless
    /// another write came in between (then again). Merging is idempotent, so this runs after
    /// the commit and again on redelivery without counting a user twice. A bucket the table
    /// refuses to update is given up at once, and any still failing when the retry budget
    /// runs out: their hashes are counted as lost analytics, in the shard's totals.
    #[tracing::instrument(skip_all, fields(buckets = users.len()))]
    pub async fn merge_users(&self, shard_id: &str, users: &BTreeMap<Bucket, Vec<u64>>) -> u64 {
        let mut retries = self.backoff.start();
        let mut pending: Vec<Bucket> = users.keys().copied().collect();
        let mut given_up: Vec<Bucket> = Vec::new();
        while !pending.is_empty() {
            let stored = match self.read_sketches(shard_id, &pending).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "users sketches not read; retrying");
                    if !retries.wait().await {
                        given_up.append(&mut pending);
                        break;
                    }
                    continue;
                }
            };
            let mut again = Vec::new();
            for bucket in pending {
                let (mut sketch, version) = match stored.get(&bucket) {
                    Some(Ok(found)) => found.clone(),
                    Some(Err(error)) => {
                        tracing::error!(%error, sk = %keys::window_users_sk(bucket), "stored users sketch unreadable; not merging into it");
                        given_up.push(bucket);
                        continue;
                    }
                    None => (Distinct::default(), 0),
                };
                let before = sketch.encode();
                users[&bucket].iter().for_each(|hash| sketch.insert_hash(*hash));
                if sketch.encode() == before && version > 0 {
                    continue;
                }
                let mut write = self
                    .client
                    .update_item()
                    .table_name(&self.table_name)
                    .key(keys::PK, s(keys::window_pk(shard_id)))
                    .key(keys::SK, s(keys::window_users_sk(bucket)))
                    .update_expression("SET #sketch = :sketch, #version = :next, #ttl = if_not_exists(#ttl, :ttl)")
                    .expression_attribute_names("#sketch", attr::USERS_SKETCH)
                    .expression_attribute_names("#version", attr::SKETCH_VERSION)
                    .expression_attribute_names("#ttl", keys::EXPIRES_AT)
                    .expression_attribute_values(":sketch", AttributeValue::B(Blob::new(sketch.encode())))
                    .expression_attribute_values(":next", n(version + 1))
                    .expression_attribute_values(":ttl", n(bucket.start() + BUCKET_TTL_SECONDS));
                write = if version == 0 {
                    write.condition_expression("attribute_not_exists(#version)")
                } else {
                    write
                        .condition_expression("#version = :version")
                        .expression_attribute_values(":version", n(version))
                };
                match write.send().await {
                    Ok(_) => {}
                    Err(error) if error.code() == Some("ConditionalCheckFailedException") => again.push(bucket),
                    Err(error) if refused_for_good(&error) => {
                        tracing::error!(error = %error_chain(&error), sk = %keys::window_users_sk(bucket), "table refused a users sketch; its users are lost");
                        given_up.push(bucket);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "users sketch not written; retrying");
                        again.push(bucket);
                    }
                }
            }
            pending = again;
            if !pending.is_empty() && !retries.wait().await {
                tracing::error!(
                    buckets = pending.len(),
                    "users sketches not written within the retry budget; their users are lost"
                );
                given_up.append(&mut pending);
            }
        }
        let lost: u64 = given_up.iter().map(|bucket| users[bucket].len() as u64).sum();
        if lost > 0 {
            eventline_aws::telemetry::analytics_lost(lost);
            self.count_lost_analytics(shard_id, lost).await;
        }
        lost
    }

    /// Adds to the shard's count of lost analytics, once: it follows a failure the batch does
    /// not retry, so nothing counts it again.
    async fn count_lost_analytics(&self, shard_id: &str, lost: u64) {
        let added = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::shard_sk(shard_id)))
            .update_expression("ADD #lost :lost")
            .expression_attribute_names("#lost", attr::ANALYTICS_LOST)
            .expression_attribute_values(":lost", n(lost))
            .send()
            .await;
        if let Err(error) = added {
            tracing::error!(error = %error_chain(&error), lost, "lost analytics not counted in the table");
        }
    }

    /// The stored sketch and its version (0 when none) of each bucket found; a sketch that
    /// does not decode is an error for its bucket alone.
    async fn read_sketches(
        &self,
        shard_id: &str,
        buckets: &[Bucket],
    ) -> Result<HashMap<Bucket, Result<(Distinct, u64), String>>, BoxError> {
        let by_sort_key: HashMap<String, Bucket> = buckets.iter().map(|b| (keys::window_users_sk(*b), *b)).collect();
        let keys: Vec<Item> = by_sort_key
            .keys()
            .map(|sk| Item::from([(keys::PK.to_owned(), s(keys::window_pk(shard_id))), (keys::SK.to_owned(), s(sk))]))
            .collect();
        let mut found = HashMap::new();
        for item in batch_get(&self.client, &self.table_name, keys, true, self.backoff).await? {
            let sort_key = item.get(keys::SK).and_then(|v| v.as_s().ok());
            let Some(bucket) = sort_key.and_then(|sk| by_sort_key.get(sk)) else { continue };
            let version = item.get(attr::SKETCH_VERSION).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
            let sketch = match item.get(attr::USERS_SKETCH).and_then(|v| v.as_b().ok()) {
                Some(bytes) => Distinct::decode(bytes.as_ref()).map_err(|e| e.to_string()),
                None => Ok(Distinct::default()),
            };
            found.insert(*bucket, sketch.map(|sketch| (sketch, version.unwrap_or(0))));
        }
        Ok(found)
    }
}

/// Reads the cancellation reasons, one per action in order: an entry whose condition failed
/// is resolved (a redelivery, ingest's copy of a stored record, or a duplicate to count
/// instead), and an entry whose item the table calls invalid is refused. Returns whether
/// any entry changed; if none did, the cancellation was transient (a conflict, throttling).
fn resolve(reasons: &[CancellationReason], entries: &[Entry], pending: &[usize], steps: &mut [Step]) -> bool {
    let mut resolved = false;
    for (slot, reason) in reasons.iter().enumerate() {
        let Some(&index) = pending.get(slot) else {
            continue; // a counter update; those carry no condition
        };
        match reason.code() {
            Some("ConditionalCheckFailed") => {
                resolved = true;
                steps[index] = match (&entries[index], steps[index]) {
                    (Entry::Event { event, .. }, Step::StoreEvent) => {
                        let old = reason.item();
                        let field = |name: &str| old.and_then(|item| item.get(name)).and_then(|v| v.as_s().ok());
                        // The user records of an aggregate share its sequence number.
                        let sub_sequence_number = old
                            .and_then(|item| item.get(attr::SUB_SEQUENCE_NUMBER))
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let same_record = field(attr::SHARD_ID) == Some(&event.shard_id)
                            && field(attr::SEQUENCE_NUMBER) == Some(&event.sequence_number)
                            && sub_sequence_number == event.sub_sequence_number;
                        let same_ingest =
                            event.ingest_id.as_ref().is_some_and(|id| field(attr::INGEST_ID) == Some(&id.to_string()));
                        if same_record {
                            Step::Done(Outcome::Redelivered)
                        } else if same_ingest {
                            Step::Done(Outcome::IngestCopy)
                        } else if same_provenance(event, field(attr::SENDER), field(attr::DIGEST)) {
                            Step::MarkDuplicate
                        } else {
                            Step::MarkConflict
                        }
                    }
                    (_, Step::MarkRefused) => Step::Done(Outcome::RefusedBefore),
                    _ => Step::Done(Outcome::AlreadyCounted),
                };
            }
            Some("ValidationError") if steps[index] == Step::StoreEvent => {
                resolved = true;
                steps[index] = Step::MarkRefused;
            }
            _ => {}
        }
    }
    resolved
}

/// Whether a copy comes from the sender of the stored event with the same content. An event
/// stored before senders were recorded, or a record without them, is judged by its identity
/// alone, as it was then: a duplicate.
fn same_provenance(copy: &ProcessedEvent, stored_sender: Option<&String>, stored_digest: Option<&String>) -> bool {
    match (&copy.provenance, stored_sender, stored_digest) {
        (Some(copy), Some(sender), Some(digest)) => copy.sender.as_str() == sender && copy.digest.as_str() == digest,
        _ => true,
    }
}

/// The largest copy a conflict item keeps; a larger one is kept by its stream position.
pub const MAX_CONFLICT_COPY_BYTES: usize = 64 * 1024;

/// A conflicting copy, kept for inspection under the event's partition (on the record's
/// marker key, so it is counted once) and listed through the `ByUser` index.
fn conflict_item(copy: &ProcessedEvent) -> Item {
    let e = &copy.event;
    let mut item =
        marker(keys::event_pk(&e.source, &e.id), keys::duplicate_sk(copy.ingest_id.as_ref(), &copy.position()));
    let json = copy.to_json();
    item.extend([
        (attr::KIND.to_owned(), s(attr::KIND_CONFLICT)),
        (attr::SOURCE.to_owned(), s(e.source.as_str())),
        (attr::ID.to_owned(), s(e.id.as_str())),
        (attr::RECEIVED_AT.to_owned(), s(format_rfc3339(copy.received_at))),
        (attr::PROCESSED_AT.to_owned(), s(format_rfc3339(copy.processed_at))),
        (attr::SHARD_ID.to_owned(), s(&copy.shard_id)),
        (attr::SEQUENCE_NUMBER.to_owned(), s(&copy.sequence_number)),
        (attr::COPY_BYTES.to_owned(), n(json.len())),
        (keys::USER_PK.to_owned(), s(keys::CONFLICTS_INDEX_PK)),
        (keys::USER_SK.to_owned(), s(keys::conflict_index_sk(copy.processed_at, &e.source, &e.id))),
    ]);
    if let Some(sub_sequence_number) = copy.sub_sequence_number {
        item.insert(attr::SUB_SEQUENCE_NUMBER.to_owned(), n(sub_sequence_number));
    }
    if json.len() <= MAX_CONFLICT_COPY_BYTES {
        item.insert(attr::COPY.to_owned(), s(String::from_utf8_lossy(&json).into_owned()));
    }
    if let Some(ingest_id) = &copy.ingest_id {
        item.insert(attr::INGEST_ID.to_owned(), s(ingest_id.as_str()));
    }
    if let Some(provenance) = &copy.provenance {
        item.insert(attr::SENDER.to_owned(), s(provenance.sender.as_str()));
        item.insert(attr::DIGEST.to_owned(), s(provenance.digest.as_str()));
    }
    item
}

fn window_key(shard_id: &str, bucket: Bucket) -> ItemKey {
    (keys::window_pk(shard_id), keys::window_sk(bucket))
}

fn aggregate_key(shard_id: &str, item: &AggregateItem) -> ItemKey {
    match item {
        AggregateItem::User(user, period) => (keys::user_aggregate_pk(user), keys::period_sk(*period)),
        AggregateItem::Shard(period) => (keys::shard_aggregate_pk(shard_id), keys::period_sk(*period)),
    }
}

fn marker(pk: String, sk: String) -> Item {
    Item::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

/// Throttling, conflicts, timeouts and server errors are transient; a request the table
/// calls invalid says so by its code; anything else the service refuses is permanent.
fn classify(error: SdkError<TransactWriteItemsError>) -> Failure {
    match &error {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::ResourceNotFoundException(_) => Failure::Permanent(error),
            TransactWriteItemsError::TransactionCanceledException(_)
            | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::TransactionInProgressException(_)
            | TransactWriteItemsError::InternalServerError(_) => Failure::Transient(error),
            other if other.code() == Some("ValidationException") => Failure::Invalid(error),
            other if service.raw().status().is_server_error() || is_throttling_code(other.code()) => {
                Failure::Transient(error)
            }
            _ => Failure::Permanent(error),
        },
        SdkError::ConstructionFailure(_) => Failure::Permanent(error),
        _ => Failure::Transient(error),
    }
}

fn is_throttling_code(code: Option<&str>) -> bool {
    matches!(code, Some("ThrottlingException" | "Throttling" | "LimitExceededException"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use eventline_model::{IngestId, Position, ProcessedEvent, Rules, StreamRecord};
    use time::macros::datetime;

    fn event(id: &str, sequence_number: &str, ingest_id: Option<&IngestId>) -> Entry {
        sent(id, sequence_number, ingest_id, None)
    }

    const DIGEST_A: &str = "0000000000000000000000000000000a";
    const DIGEST_B: &str = "0000000000000000000000000000000b";

    /// An event from `sender` with content of digest `digest`.
    fn sent(id: &str, sequence_number: &str, ingest_id: Option<&IngestId>, from: Option<(&str, &str)>) -> Entry {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let raw = serde_json::value::RawValue::from_string(format!(r#"{{"id":"{id}","source":"web"}}"#)).unwrap();
        let event = eventline_model::parse_event(&raw, &Rules::default(), now).unwrap();
        let provenance = from.map(|(sender, digest)| eventline_model::Provenance {
            sender: eventline_model::Sender::iam(sender),
            digest: eventline_model::Digest::try_from(digest.to_owned()).unwrap(),
        });
        Entry::event(ProcessedEvent::from_record(
            StreamRecord { event, received_at: now, ingest_id: ingest_id.cloned(), provenance },
            Position::of_record("shardId-0", sequence_number),
            now,
        ))
    }

    /// [`event`], as user record `index` of the aggregated record at `sequence_number`.
    fn user_record(id: &str, sequence_number: &str, index: u64) -> Entry {
        let Entry::Event { mut event, buckets } = event(id, sequence_number, None) else { unreachable!() };
        event.sub_sequence_number = Some(index);
        Entry::Event { event, buckets }
    }

    fn conflict(old: Option<&[(&str, &str)]>) -> CancellationReason {
        let mut reason = CancellationReason::builder().code("ConditionalCheckFailed");
        if let Some(fields) = old {
            reason = reason.set_item(Some(
                fields.iter().map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string()))).collect(),
            ));
        }
        reason.build()
    }

    fn none() -> CancellationReason {
        CancellationReason::builder().code("None").build()
    }

    #[test]
    fn a_stored_identity_is_a_redelivery_a_copy_or_a_duplicate() {
        let ingest_id = IngestId::generate();
        let entries = [event("a", "1", None), event("b", "2", Some(&ingest_id)), event("c", "3", Some(&ingest_id))];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let reasons = [
            conflict(Some(&[("shard_id", "shardId-0"), ("sequence_number", "1")])),
            conflict(Some(&[("shard_id", "shardId-0"), ("sequence_number", "9"), ("ingest_id", ingest_id.as_str())])),
            conflict(Some(&[("shard_id", "shardId-0"), ("sequence_number", "9"), ("ingest_id", "other")])),
            none(),
        ];
        assert!(resolve(&reasons, &entries, &[0, 1, 2], &mut steps));
        // A copy ingest put twice is published again but adds to no analytics: only this
        // very record's redelivery does.
        assert_eq!(steps, [Step::Done(Outcome::Redelivered), Step::Done(Outcome::IngestCopy), Step::MarkDuplicate]);
    }

    #[test]
    fn a_sibling_in_the_same_aggregate_is_a_duplicate_not_a_redelivery() {
        let entries = [user_record("a", "5", 0), user_record("a", "5", 1), event("a", "5", None)];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let stored = |sub: Option<&str>| {
            let mut item: HashMap<String, AttributeValue> = [("shard_id", "shardId-0"), ("sequence_number", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
                .collect();
            if let Some(sub) = sub {
                item.insert("sub_sequence_number".into(), AttributeValue::N(sub.into()));
            }
            CancellationReason::builder().code("ConditionalCheckFailed").set_item(Some(item)).build()
        };
        // Stored by user record 0: itself redelivered, its sibling a duplicate, and so is an
        // ordinary record at the same sequence number.
        let reasons = [stored(Some("0")), stored(Some("0")), stored(Some("0"))];
        assert!(resolve(&reasons, &entries, &[0, 1, 2], &mut steps));
        assert_eq!(steps, [Step::Done(Outcome::Redelivered), Step::MarkDuplicate, Step::MarkDuplicate]);
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        assert!(resolve(&[stored(None), stored(None), stored(None)], &entries, &[0, 1, 2], &mut steps));
        assert_eq!(steps, [Step::MarkDuplicate, Step::MarkDuplicate, Step::Done(Outcome::Redelivered)]);
        // Each sibling's marker is its own, so each is counted.
        let Entry::Event { event: copy, .. } = &entries[1] else { unreachable!() };
        let item = conflict_item(copy);
        assert_eq!(item["sk"].as_s().unwrap(), "DUP#shardId-0#5#1");
        assert_eq!(item["sub_sequence_number"].as_n().unwrap(), "1");
    }

    #[test]
    fn a_copy_from_another_sender_or_with_other_content_is_a_conflict() {
        let (alice, bob) = ("arn:aws:iam::1:user/alice", "arn:aws:iam::1:user/bob");
        let entries = [
            sent("a", "1", Some(&IngestId::generate()), Some((alice, DIGEST_A))),
            sent("b", "2", Some(&IngestId::generate()), Some((bob, DIGEST_A))),
            sent("c", "3", Some(&IngestId::generate()), Some((alice, DIGEST_B))),
            sent("d", "4", Some(&IngestId::generate()), Some((alice, DIGEST_A))),
        ];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let stored = [("shard_id", "shardId-0"), ("sequence_number", "0"), ("sender", alice), ("digest", DIGEST_A)];
        let reasons =
            [conflict(Some(&stored)), conflict(Some(&stored)), conflict(Some(&stored)), conflict(Some(&stored))];
        assert!(resolve(&reasons, &entries, &[0, 1, 2, 3], &mut steps));
        assert_eq!(steps, [Step::MarkDuplicate, Step::MarkConflict, Step::MarkConflict, Step::MarkDuplicate]);
        // Redelivery is recognised first, whoever the sender.
        let mut steps = vec![Step::StoreEvent];
        let same_position =
            [("shard_id", "shardId-0"), ("sequence_number", "2"), ("sender", alice), ("digest", DIGEST_A)];
        assert!(resolve(&[conflict(Some(&same_position))], &entries[1..2], &[0], &mut steps));
        assert_eq!(steps, [Step::Done(Outcome::Redelivered)]);
    }

    #[test]
    fn without_a_sender_on_either_side_a_copy_is_a_duplicate_as_before() {
        let alice = "arn:aws:iam::1:user/alice";
        let entries = [sent("a", "1", None, Some((alice, DIGEST_B))), sent("b", "2", None, None)];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let stored_before = [("shard_id", "shardId-0"), ("sequence_number", "0")];
        let stored_now = [("shard_id", "shardId-0"), ("sequence_number", "0"), ("sender", alice), ("digest", DIGEST_A)];
        assert!(resolve(&[conflict(Some(&stored_before)), conflict(Some(&stored_now))], &entries, &[0, 1], &mut steps));
        assert_eq!(steps, [Step::MarkDuplicate, Step::MarkDuplicate]);
    }

    #[test]
    fn items_expire_a_retention_after_they_were_received_or_nearly_that_long_from_now_when_sent_back_late() {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        let store = DynamoEventStore::new(aws_sdk_dynamodb::Client::from_conf(config), "t", Backoff::default())
            .with_retention(Some(time::Duration::days(30)));
        let expires = |entry: &Entry| {
            let action = store.put_action(entry, Step::first(entry)).unwrap();
            let item = action.put().unwrap().item().clone();
            item[keys::EXPIRES_AT].as_n().unwrap().parse::<i64>().unwrap()
        };
        let Entry::Event { event: mut stored, buckets } = event("fresh", "1", None) else { unreachable!() };
        let received = OffsetDateTime::now_utc() - time::Duration::minutes(5);
        stored.received_at = received;
        let fresh = Entry::Event { event: stored, buckets };
        assert_eq!(expires(&fresh), (received + time::Duration::days(30)).unix_timestamp());
        // Received on 2026-11-23 and only stored now: kept 29 days from now, longer than any
        // stream keeps it with a retention of 30 days.
        let late = event("late", "2", None);
        let least = (OffsetDateTime::now_utc() + time::Duration::days(29)).unix_timestamp();
        assert!((least - 5..=least + 5).contains(&expires(&late)), "{}", expires(&late));
        let store = store.with_retention(None);
        let action = store.put_action(&fresh, Step::StoreEvent).unwrap();
        assert!(!action.put().unwrap().item().contains_key(keys::EXPIRES_AT), "kept forever by default");
    }

    #[test]
    fn a_conflict_item_keeps_the_copy_its_sender_and_where_it_was() {
        let Entry::Event { event: copy, .. } = sent("a", "7", None, Some(("arn:aws:iam::1:user/bob", DIGEST_B))) else {
            panic!()
        };
        let item = conflict_item(&copy);
        assert_eq!(item["pk"].as_s().unwrap(), "EVENT#web#a");
        assert_eq!(item["sk"].as_s().unwrap(), "DUP#shardId-0#7", "the record's marker key: counted once");
        assert_eq!(item["kind"].as_s().unwrap(), "conflict");
        assert_eq!(item["sender"].as_s().unwrap(), "arn:aws:iam::1:user/bob");
        assert_eq!(item["digest"].as_s().unwrap(), DIGEST_B);
        assert_eq!(item["user_pk"].as_s().unwrap(), "CONFLICTS");
        assert!(item["copy"].as_s().unwrap().contains(r#""id":"a""#));
        let mut large = copy.clone();
        large.event.payload = Some("x".repeat(MAX_CONFLICT_COPY_BYTES));
        let item = conflict_item(&large);
        assert!(!item.contains_key("copy"), "too large: kept by its stream position");
        assert_eq!(item["sequence_number"].as_s().unwrap(), "7");
        assert!(eventline_aws::item::item_size(&item) < 2048);
    }

    #[test]
    fn conflict_items_that_exist_were_counted_before() {
        let entries = [event("a", "1", None)];
        let mut steps = vec![Step::MarkConflict];
        assert!(resolve(&[conflict(None)], &entries, &[0], &mut steps));
        assert_eq!(steps, [Step::Done(Outcome::AlreadyCounted)]);
    }

    #[test]
    fn markers_that_exist_were_counted_before() {
        let entries = [event("a", "1", None), event("b", "2", None)];
        let mut steps = vec![Step::MarkDuplicate, Step::MarkRefused];
        assert!(resolve(&[conflict(None), conflict(None)], &entries, &[0, 1], &mut steps));
        assert_eq!(steps, [Step::Done(Outcome::AlreadyCounted), Step::Done(Outcome::RefusedBefore)]);
    }

    #[test]
    fn an_invalid_item_is_refused_and_the_rest_retried() {
        let entries = [event("a", "1", None), event("b", "2", None)];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let reasons = [none(), CancellationReason::builder().code("ValidationError").build(), none()];
        assert!(resolve(&reasons, &entries, &[0, 1], &mut steps));
        assert_eq!(steps, [Step::StoreEvent, Step::MarkRefused]);
    }

    #[test]
    fn a_conflict_alone_changes_nothing_and_is_retried() {
        let entries = [event("a", "1", None)];
        let mut steps: Vec<Step> = entries.iter().map(Step::first).collect();
        let reasons = [CancellationReason::builder().code("TransactionConflict").build(), none()];
        assert!(!resolve(&reasons, &entries, &[0], &mut steps));
        assert_eq!(steps, [Step::StoreEvent]);
    }

    /// DynamoDB answering every transaction: with success, or with the status and error
    /// code scripted for the n-th (0-based); the number of actions of each is noted.
    #[derive(Debug, Clone, Default)]
    struct FakeTable {
        transactions: Arc<Mutex<Vec<usize>>>,
        refuse: Option<(usize, u16, &'static str)>,
    }

    impl HttpConnector for FakeTable {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body: serde_json::Value = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
            let mut transactions = self.transactions.lock().unwrap();
            transactions.push(body["TransactItems"].as_array().unwrap().len());
            let (status, answer) = match self.refuse {
                Some((n, status, code)) if n == transactions.len() - 1 => {
                    (status, format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"no"}}"#))
                }
                _ => (200, "{}".to_owned()),
            };
            HttpConnectorFuture::ready(Ok(HttpResponse::new(status.try_into().unwrap(), SdkBody::from(answer))))
        }
    }

    impl HttpClient for FakeTable {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    fn store_on(table: &FakeTable) -> DynamoEventStore {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url("http://dynamodb.test")
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .http_client(table.clone())
            .build();
        DynamoEventStore::new(aws_sdk_dynamodb::Client::from_conf(config), "events", Backoff::default())
    }

    fn poison_records(count: usize) -> Vec<Entry> {
        (0..count).map(crate::store::test_entries::poison).collect()
    }

    #[tokio::test]
    async fn a_batch_is_committed_in_transactions_of_at_most_98_entries_and_their_counters() {
        let table = FakeTable::default();
        let committed = store_on(&table).commit("shardId-0", &poison_records(200)).await;
        assert!(committed.error.is_none(), "{:?}", committed.error);
        assert_eq!(committed.outcomes, vec![Outcome::Failed; 200]);
        // Each with the update of the shard's totals.
        assert_eq!(*table.transactions.lock().unwrap(), [99, 99, 5]);
    }

    #[tokio::test]
    async fn a_failing_transaction_ends_the_commit_with_the_outcomes_of_those_before_it() {
        let table = FakeTable { refuse: Some((1, 400, "AccessDeniedException")), ..FakeTable::default() };
        let committed = store_on(&table).commit("shardId-0", &poison_records(200)).await;
        assert!(matches!(committed.error, Some(StoreError::Permanent(_))), "{:?}", committed.error);
        assert_eq!(committed.outcomes, vec![Outcome::Failed; 98], "the first transaction's entries");
        assert_eq!(table.transactions.lock().unwrap().len(), 2, "nothing tried after the failure");
    }

    fn service_error(error: TransactWriteItemsError, status: u16) -> SdkError<TransactWriteItemsError> {
        let raw = aws_smithy_runtime_api::http::Response::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(error, raw)
    }

    fn coded(code: &str) -> TransactWriteItemsError {
        TransactWriteItemsError::generic(aws_sdk_dynamodb::error::ErrorMetadata::builder().code(code).build())
    }

    #[test]
    fn errors_are_classified_by_type_and_code_not_by_message() {
        use aws_sdk_dynamodb::types::error::{ResourceNotFoundException, ThrottlingException};
        let throttled = TransactWriteItemsError::ThrottlingException(ThrottlingException::builder().build());
        assert!(matches!(classify(service_error(throttled, 400)), Failure::Transient(_)));
        let missing = TransactWriteItemsError::ResourceNotFoundException(ResourceNotFoundException::builder().build());
        assert!(matches!(classify(service_error(missing, 400)), Failure::Permanent(_)));
        assert!(matches!(classify(service_error(coded("ValidationException"), 400)), Failure::Invalid(_)));
        assert!(matches!(classify(service_error(coded("InternalFailure"), 500)), Failure::Transient(_)));
        assert!(matches!(classify(service_error(coded("AccessDeniedException"), 400)), Failure::Permanent(_)));
        let timeout = SdkError::timeout_error("no answer");
        assert!(matches!(classify(timeout), Failure::Transient(_)));
    }
}

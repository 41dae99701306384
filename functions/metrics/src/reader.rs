//! What the metrics function reads, as a port, and its DynamoDB and Kinesis adapter.

use std::future::Future;

use crate::timeline::Cursor;
use eventline_model::UserId;
use eventline_model::aggregate::{AggregateTally, Sum};
use eventline_model::aws::error_chain;
use eventline_model::aws::item::{Item, from_item, s};
use eventline_model::aws::reference::ReferenceStore;
use eventline_model::keys::attr;
use eventline_model::latency::Histogram;
use eventline_model::reference::{Generation, UserMeta};
use eventline_model::retry::Backoff;
use eventline_model::window::{Bucket, Distinct, ReadPlan, Tally};
use eventline_model::{EventId, ProcessedEvent, Source, keys};
use std::collections::BTreeMap;

/// The counters of one shard of the ingest stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardCounters {
    pub shard_id: String,
    /// Records that reached the stream without ingest, counted received by the transform.
    pub received_direct: u64,
    pub processed: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub failed: u64,
    pub latency_sum_ms: u64,
    pub latency: Histogram,
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

pub trait MetricsReader: Send + Sync {
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

/// Bytes of events one timeline page may hold, well inside Lambda's 6 MB response.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What a window read found, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct WindowRead {
    pub tally: Tally,
    pub users: Distinct,
    pub items_read: usize,
}

#[derive(Debug, Clone)]
pub struct AwsMetricsReader {
    dynamodb: aws_sdk_dynamodb::Client,
    kinesis: aws_sdk_kinesis::Client,
    table_name: String,
    stream_name: String,
    reference: ReferenceStore,
}

impl AwsMetricsReader {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        kinesis: aws_sdk_kinesis::Client,
        table_name: impl Into<String>,
        stream_name: impl Into<String>,
    ) -> Self {
        let table_name = table_name.into();
        // Reads retry briefly: the caller is waiting on an HTTP answer.
        let backoff = Backoff::default().with_budget(std::time::Duration::from_secs(3));
        let reference = ReferenceStore::new(dynamodb.clone(), table_name.clone(), backoff);
        Self { dynamodb, kinesis, table_name, stream_name: stream_name.into(), reference }
    }

    /// Every item of one partition (optionally a sort-key range), following pages.
    async fn query_all(&self, pk: &str, sk_range: Option<(String, String)>) -> Result<Vec<Item>, ReadError> {
        let mut query = self
            .dynamodb
            .query()
            .table_name(&self.table_name)
            .consistent_read(true)
            .expression_attribute_values(":pk", s(pk));
        query = match sk_range {
            None => query.key_condition_expression("pk = :pk"),
            Some((from, to)) => query
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to)),
        };
        let mut pages = query.into_paginator().items().send();
        let mut items = Vec::new();
        while let Some(item) = pages.next().await {
            items.push(item.map_err(|e| ReadError::new("a partition", error_chain(&e)))?);
        }
        Ok(items)
    }
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// A counter every write of its item sets: missing or malformed means the layout drifted.
fn counter(item: &Item, name: &'static str) -> Result<u64, ReadError> {
    number(item, name).ok_or_else(|| ReadError::new("the counters", format!("counter item lacks a valid {name}")))
}

/// One aggregate item's counts and sums.
fn aggregate_of(item: &Item) -> Result<AggregateTally, ReadError> {
    let mut tally = AggregateTally { events: counter(item, attr::EVENTS)?, ..AggregateTally::default() };
    for (name, value) in item {
        let bad = || ReadError::new("an aggregate", format!("{name} is not a number"));
        let number = value.as_n().map_err(|_| bad());
        if let Some(key) = name.strip_prefix(attr::TYPE_PREFIX) {
            tally.by_type.insert(key.to_owned(), number?.parse().map_err(|_| bad())?);
        } else if let Some(key) = name.strip_prefix(attr::SOURCE_PREFIX) {
            tally.by_source.insert(key.to_owned(), number?.parse().map_err(|_| bad())?);
        } else if let Some(key) = name.strip_prefix(attr::MEASURE_PREFIX) {
            let raw = serde_json::value::RawValue::from_string(number?.clone()).map_err(|_| bad())?;
            tally.sums.insert(key.to_owned(), Sum::parse(&raw).ok_or_else(bad)?);
        }
    }
    Ok(tally)
}

/// Adds one window bucket item to a read.
fn add_bucket(read: &mut WindowRead, item: &Item) -> Result<(), ReadError> {
    let tally = &mut read.tally;
    tally.events += counter(item, attr::EVENTS)?;
    tally.unknown += counter(item, attr::UNKNOWN)?;
    for (name, value) in item {
        let dimension = [
            (attr::TYPE_PREFIX, &mut tally.by_type),
            (attr::SOURCE_PREFIX, &mut tally.by_source),
            (attr::PLAN_PREFIX, &mut tally.by_plan),
            (attr::REGION_PREFIX, &mut tally.by_region),
        ]
        .into_iter()
        .find_map(|(prefix, map)| name.strip_prefix(prefix).map(|key| (key, map)));
        if let Some((key, map)) = dimension {
            let count: u64 = value
                .as_n()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ReadError::new("a window bucket", format!("{name} is not a count")))?;
            *map.entry(key.to_owned()).or_default() += count;
        }
    }
    if let Some(bytes) = item.get(attr::USERS_SKETCH).and_then(|v| v.as_b().ok()) {
        let sketch = Distinct::decode(bytes.as_ref()).map_err(|e| ReadError::new("a window bucket", e))?;
        read.users.merge(&sketch);
    }
    Ok(())
}

fn shard_counters(shard_id: &str, item: &Item) -> Result<ShardCounters, ReadError> {
    let mut latency = Histogram::default();
    for (name, value) in item {
        if let Some(bucket) = name.strip_prefix(keys::LATENCY_BUCKET_PREFIX).and_then(|b| b.parse().ok())
            && let Some(count) = value.as_n().ok().and_then(|c| c.parse().ok())
        {
            latency.add_bucket(bucket, count);
        }
    }
    Ok(ShardCounters {
        shard_id: shard_id.to_owned(),
        // Absent on items written before it existed: counted from 0.
        received_direct: number(item, attr::RECEIVED_DIRECT).unwrap_or(0),
        processed: counter(item, attr::PROCESSED)?,
        duplicate: counter(item, attr::DUPLICATE)?,
        // Absent on items written before conflicts were counted: counted from 0.
        conflict: number(item, attr::CONFLICT).unwrap_or(0),
        failed: counter(item, attr::FAILED)?,
        latency_sum_ms: counter(item, attr::LATENCY_SUM_MS)?,
        latency,
        first_processed_ms: number(item, attr::FIRST_PROCESSED_MS),
        last_active_ms: number(item, attr::LAST_ACTIVE_MS),
    })
}

impl MetricsReader for AwsMetricsReader {
    #[tracing::instrument(skip(self))]
    async fn event(&self, source: &Source, id: &EventId) -> Result<Option<ProcessedEvent>, ReadError> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::event_pk(source, id)))
            .key(keys::SK, s(keys::EVENT_SK))
            .send()
            .await
            .map_err(|e| ReadError::new("an event", error_chain(&e)))?;
        output.item.as_ref().map(from_item).transpose().map_err(|e| ReadError::new("an event", e))
    }

    #[tracing::instrument(skip(self))]
    async fn counters(&self) -> Result<Counters, ReadError> {
        let mut counters = Counters::default();
        for item in self.query_all(keys::METRICS_PK, None).await? {
            let Some(sk) = item.get(keys::SK).and_then(|v| v.as_s().ok()) else { continue };
            if let Some(shard_id) = sk.strip_prefix(keys::SHARD_PREFIX) {
                counters.shards.push(shard_counters(shard_id, &item)?);
            } else if sk.starts_with(keys::INGEST_PREFIX) {
                counters.received += counter(&item, attr::RECEIVED)?;
                if let Some(first) = number::<i64>(&item, attr::FIRST_RECEIVED_MS) {
                    counters.first_received_ms = Some(counters.first_received_ms.map_or(first, |f| f.min(first)));
                }
            }
        }
        Ok(counters)
    }

    #[tracing::instrument(skip(self))]
    async fn processed_between(&self, from: i64, to: i64) -> Result<u64, ReadError> {
        // Sort keys are `{second}#{shard}`: `{to}#` sorts after every shard of second to-1.
        let items = self.query_all(keys::RATE_PK, Some((keys::rate_sk_from(from), keys::rate_sk_from(to)))).await?;
        items.iter().map(|item| counter(item, attr::PROCESSED)).sum()
    }

    async fn check_table(&self) -> Result<(), ReadError> {
        let output = self
            .dynamodb
            .describe_table()
            .table_name(&self.table_name)
            .send()
            .await
            .map_err(|e| ReadError::new("the table's status", error_chain(&e)))?;
        match output.table().and_then(|t| t.table_status()) {
            Some(status) if status.as_str() == "ACTIVE" || status.as_str() == "UPDATING" => Ok(()),
            other => Err(ReadError::new("the table's status", format!("table status {other:?}"))),
        }
    }

    #[tracing::instrument(skip(self, plan), fields(shards = shards.len()))]
    async fn window(&self, shards: &[String], plan: &ReadPlan) -> Result<WindowRead, ReadError> {
        let mut read = WindowRead::default();
        for shard in shards {
            let pk = keys::window_pk(shard);
            let mut ranges: Vec<(String, String)> = plan
                .seconds
                .iter()
                .map(|r| (keys::window_sk(Bucket::Second(*r.start())), keys::window_sk(Bucket::Second(*r.end()))))
                .collect();
            if let Some(minutes) = &plan.minutes {
                ranges.push((
                    keys::window_sk(Bucket::Minute(*minutes.start())),
                    keys::window_sk(Bucket::Minute(*minutes.end())),
                ));
            }
            for range in ranges {
                for item in self.query_all(&pk, Some(range)).await? {
                    read.items_read += 1;
                    add_bucket(&mut read, &item)?;
                }
            }
        }
        Ok(read)
    }

    #[tracing::instrument(skip(self, range, after))]
    async fn user_events(
        &self,
        user: &UserId,
        range: (String, String),
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<(Vec<ProcessedEvent>, Option<Cursor>), ReadError> {
        let user_pk = keys::user_pk(user);
        let mut start: Option<Item> = after.map(|c| {
            Item::from([
                (keys::USER_PK.to_owned(), s(&user_pk)),
                (keys::USER_SK.to_owned(), s(c.user_sk)),
                (keys::PK.to_owned(), s(c.pk)),
                (keys::SK.to_owned(), s(keys::EVENT_SK)),
            ])
        });
        // One more than asked: its presence says whether there is a next page.
        let mut items: Vec<Item> = Vec::new();
        loop {
            let output = self
                .dynamodb
                .query()
                .table_name(&self.table_name)
                .index_name(keys::BY_USER_INDEX)
                .key_condition_expression("#upk = :upk AND #usk BETWEEN :from AND :to")
                .expression_attribute_names("#upk", keys::USER_PK)
                .expression_attribute_names("#usk", keys::USER_SK)
                .expression_attribute_values(":upk", s(&user_pk))
                .expression_attribute_values(":from", s(&range.0))
                .expression_attribute_values(":to", s(&range.1))
                .limit((limit + 1 - items.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ReadError::new("a user's events", error_chain(&e)))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if items.len() <= limit => start = Some(key),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let mut events: Vec<ProcessedEvent> =
            items.iter().map(from_item).collect::<Result<_, _>>().map_err(|e| ReadError::new("a user's events", e))?;
        // A page also stops before its answer would outgrow Lambda's 6 MB response (events
        // can be hundreds of KB each); it always holds at least one event.
        let mut bytes = 0;
        let keep = events
            .iter()
            .position(|e| {
                bytes += e.to_json().len() + 1;
                bytes > MAX_PAGE_BYTES
            })
            .map_or(events.len(), |i| i.max(1));
        let next = (more || keep < events.len()).then(|| {
            let last = &items[keep - 1];
            let text = |name: &str| last.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            Cursor { user_sk: text(keys::USER_SK), pk: text(keys::PK) }
        });
        events.truncate(keep);
        Ok((events, next))
    }

    #[tracing::instrument(skip(self, range))]
    async fn aggregates(
        &self,
        partitions: &[String],
        range: (String, String),
    ) -> Result<BTreeMap<String, AggregateTally>, ReadError> {
        let mut periods: BTreeMap<String, AggregateTally> = BTreeMap::new();
        for pk in partitions {
            for item in self.query_all(pk, Some(range.clone())).await? {
                let sk = item.get(keys::SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let label = sk.get(2..).unwrap_or_default().to_owned();
                periods.entry(label).or_default().add(&aggregate_of(&item)?);
            }
        }
        Ok(periods)
    }

    async fn reference(&self) -> Result<Option<Generation>, ReadError> {
        self.reference.current().await.map_err(|e| ReadError::new("the reference generation", e))
    }

    async fn reference_user(&self, generation: &Generation, user: &UserId) -> Result<Option<UserMeta>, ReadError> {
        self.reference.user(generation, user).await.map_err(|e| ReadError::new("a reference entry", e))
    }

    async fn check_stream(&self) -> Result<(), ReadError> {
        let output = self
            .kinesis
            .describe_stream_summary()
            .stream_name(&self.stream_name)
            .send()
            .await
            .map_err(|e| ReadError::new("the stream's status", error_chain(&e)))?;
        match output.stream_description_summary().map(|d| d.stream_status().as_str().to_owned()) {
            Some(status) if status == "ACTIVE" || status == "UPDATING" => Ok(()),
            other => Err(ReadError::new("the stream's status", format!("stream status {other:?}"))),
        }
    }
}

//! The read port over DynamoDB and Kinesis: counters, events, a user's timeline, aggregates,
//! window buckets and the reference table, each read with GetItem, Query or BatchGetItem.

use std::future::Future;

use crate::reader::{Counters, MAX_PAGE_BYTES, ReadError, Reader, ShardCounters, WindowRead};
use crate::timeline::{self, Cursor};
use eventline_aws::error_chain;
use eventline_aws::item::{Item, from_item, s};
use eventline_aws::keys;
use eventline_aws::keys::attr;
use eventline_aws::reference::ReferenceStore;
use eventline_model::UserId;
use eventline_model::aggregate::{AggregateTally, Sum};
use eventline_model::latency::Histogram;
use eventline_model::outcomes::Outcomes;
use eventline_model::reference::{Generation, UserMeta};
use eventline_model::retry::Backoff;
use eventline_model::window::{Bucket, Distinct, ReadPlan};
use eventline_model::{EventId, ProcessedEvent, Source};
use std::collections::BTreeMap;

/// One page of a DynamoDB Query: its items, and where the next page starts if there may be one.
struct QueryPage {
    items: Vec<Item>,
    last_evaluated_key: Option<Item>,
}

/// A timeline page read from Query pages, in order: up to `limit` events and up to
/// `max_bytes` of them (always at least one), with the cursor of the last event returned when
/// more follow. Reading stops where the page does: beyond what it returns, it reads at most
/// the rest of the Query page (1 MB at most) it stopped in, or one item to learn that more
/// follow. `query(start, n)` reads up to `n` items after the key `start`.
async fn timeline_page<Q, F>(
    mut query: Q,
    mut start: Option<Item>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<ProcessedEvent>, Option<Cursor>), ReadError>
where
    Q: FnMut(Option<Item>, i32) -> F,
    F: Future<Output = Result<QueryPage, ReadError>>,
{
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut last: Option<Cursor> = None;
    loop {
        // The items still wanted, and one more: its presence says that there is a next page.
        let wanted = i32::try_from(limit + 1 - events.len()).unwrap_or(i32::MAX);
        let page = query(start.take(), wanted).await?;
        for item in &page.items {
            if events.len() == limit {
                return Ok((events, last));
            }
            let event = from_item(item).map_err(|e| ReadError::new("a user's events", e))?;
            // `,` between events.
            let size = timeline::invocation_bytes(&event.to_json()) + 1;
            if !events.is_empty() && bytes + size > max_bytes {
                return Ok((events, last));
            }
            bytes += size;
            last = Some(cursor_of(item)?);
            events.push(event);
        }
        match page.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return Ok((events, None)),
        }
    }
}

/// Where a page that ends with this event item resumes.
fn cursor_of(item: &Item) -> Result<Cursor, ReadError> {
    let text = |name: &'static str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| ReadError::new("a user's events", format!("an indexed event lacks {name}")))
    };
    Ok(Cursor { user_sk: text(keys::USER_SK)?, pk: text(keys::PK)? })
}

#[derive(Debug, Clone)]
pub struct AwsReader {
    dynamodb: aws_sdk_dynamodb::Client,
    kinesis: aws_sdk_kinesis::Client,
    table_name: String,
    stream_name: String,
    reference: ReferenceStore,
}

impl AwsReader {
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
    let mut tally = AggregateTally {
        events: counter(item, attr::EVENTS)?,
        // Absent until a breakdown of the item is full.
        folded: number(item, attr::FOLDED).unwrap_or(0),
        ..AggregateTally::default()
    };
    for (name, value) in item {
        let bad = || ReadError::new("an aggregate", format!("{name} is not a number"));
        let number = value.as_n().map_err(|_| bad());
        if let Some(key) = name.strip_prefix(attr::TYPE_PREFIX) {
            tally.by_type.insert(key.to_owned(), number?.parse().map_err(|_| bad())?);
        } else if let Some(key) = name.strip_prefix(attr::SOURCE_PREFIX) {
            tally.by_source.insert(key.to_owned(), number?.parse().map_err(|_| bad())?);
        } else if let Some(key) = name.strip_prefix(attr::MEASURE_PREFIX) {
            tally.sums.insert(key.to_owned(), Sum::parse_stored(number?).ok_or_else(bad)?);
        }
    }
    Ok(tally)
}

/// Adds one window bucket item to a read: a bucket's counts, or its users
/// ([`keys::window_users_sk`]; buckets written before users had an item of their own hold
/// both).
fn add_bucket(read: &mut WindowRead, item: &Item) -> Result<(), ReadError> {
    let sort_key = item.get(keys::SK).and_then(|v| v.as_s().ok()).map_or("", String::as_str);
    if !sort_key.ends_with(keys::WINDOW_USERS_SUFFIX) {
        add_counts(read, item)?;
    }
    if let Some(bytes) = item.get(attr::USERS_SKETCH).and_then(|v| v.as_b().ok()) {
        let sketch = Distinct::decode(bytes.as_ref()).map_err(|e| ReadError::new("a window bucket", e))?;
        read.users.merge(&sketch);
    }
    Ok(())
}

/// Adds a window bucket's counts to a read.
fn add_counts(read: &mut WindowRead, item: &Item) -> Result<(), ReadError> {
    let tally = &mut read.tally;
    tally.events += counter(item, attr::EVENTS)?;
    tally.unknown += counter(item, attr::UNKNOWN)?;
    tally.folded += number(item, attr::FOLDED).unwrap_or(0);
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
        outcomes: Outcomes {
            // Absent on items written before it existed: counted from 0.
            received_direct: number(item, attr::RECEIVED_DIRECT).unwrap_or(0),
            processed: counter(item, attr::PROCESSED)?,
            duplicate: counter(item, attr::DUPLICATE)?,
            // Absent on items written before conflicts were counted: counted from 0.
            conflict: number(item, attr::CONFLICT).unwrap_or(0),
            failed: counter(item, attr::FAILED)?,
            latency_sum_ms: counter(item, attr::LATENCY_SUM_MS)?,
            latency,
        },
        // Absent until the first analytics update is lost.
        analytics_lost: number(item, attr::ANALYTICS_LOST).unwrap_or(0),
        first_processed_ms: number(item, attr::FIRST_PROCESSED_MS),
        last_active_ms: number(item, attr::LAST_ACTIVE_MS),
    })
}

impl Reader for AwsReader {
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
                .map(|r| (keys::window_sk(Bucket::Second(*r.start())), keys::window_users_sk(Bucket::Second(*r.end()))))
                .collect();
            if let Some(minutes) = &plan.minutes {
                ranges.push((
                    keys::window_sk(Bucket::Minute(*minutes.start())),
                    keys::window_users_sk(Bucket::Minute(*minutes.end())),
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
        let start = after.map(|c| {
            Item::from([
                (keys::USER_PK.to_owned(), s(&user_pk)),
                (keys::USER_SK.to_owned(), s(c.user_sk)),
                (keys::PK.to_owned(), s(c.pk)),
                (keys::SK.to_owned(), s(keys::EVENT_SK)),
            ])
        });
        let (user_pk, range) = (&user_pk, &range);
        let query = move |start: Option<Item>, items: i32| async move {
            let output = self
                .dynamodb
                .query()
                .table_name(&self.table_name)
                .index_name(keys::BY_USER_INDEX)
                .key_condition_expression("#upk = :upk AND #usk BETWEEN :from AND :to")
                .expression_attribute_names("#upk", keys::USER_PK)
                .expression_attribute_names("#usk", keys::USER_SK)
                .expression_attribute_values(":upk", s(user_pk))
                .expression_attribute_values(":from", s(&range.0))
                .expression_attribute_values(":to", s(&range.1))
                .limit(items)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| ReadError::new("a user's events", error_chain(&e)))?;
            Ok(QueryPage { items: output.items.unwrap_or_default(), last_evaluated_key: output.last_evaluated_key })
        };
        timeline_page(query, start, limit, MAX_PAGE_BYTES).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_aws::item::{item_size, to_item};
    use eventline_model::{Position, Rules, StreamRecord, parse_event};
    use std::cell::Cell;
    use time::OffsetDateTime;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);

    /// A user's event as the transform stores it, one second after the one before.
    fn stored(i: usize, payload: &str) -> Item {
        let raw = serde_json::value::RawValue::from_string(
            serde_json::json!({
                "id": format!("e-{i:03}"), "source": "web", "user_id": "u-1",
                "timestamp": 1_795_000_000 + i, "payload": payload,
            })
            .to_string(),
        )
        .unwrap();
        let event = parse_event(&raw, &Rules::default(), NOW).unwrap();
        let position = Position::of_record("shardId-000000000000", i.to_string());
        to_item(&ProcessedEvent::from_record(
            StreamRecord { event, received_at: NOW, ingest_id: None, provenance: None },
            position,
            NOW,
        ))
    }

    fn text(item: &Item, name: &str) -> String {
        item[name].as_s().unwrap().clone()
    }

    /// The user index in memory, paged as DynamoDB pages a Query: at most `n` items and
    /// about 1 MB per page, with a last evaluated key whenever either bound stopped the page
    /// (even when nothing follows).
    struct FakeIndex {
        items: Vec<Item>,
        page_bytes: usize,
        pages: Cell<usize>,
        items_read: Cell<usize>,
    }

    impl FakeIndex {
        fn new(items: Vec<Item>) -> Self {
            Self { items, page_bytes: 1024 * 1024, pages: Cell::new(0), items_read: Cell::new(0) }
        }

        fn query(&self, start: Option<Item>, n: i32) -> std::future::Ready<Result<QueryPage, ReadError>> {
            let key = |item: &Item| (text(item, keys::USER_SK), text(item, keys::PK));
            let after = start.as_ref().map(key);
            let mut items = Vec::new();
            let mut bytes = 0;
            let mut stopped = false;
            for item in self.items.iter().filter(|item| after.as_ref().is_none_or(|a| key(item) > *a)) {
                items.push(item.clone());
                bytes += item_size(item);
                if items.len() == n as usize || bytes >= self.page_bytes {
                    stopped = true;
                    break;
                }
            }
            self.pages.set(self.pages.get() + 1);
            self.items_read.set(self.items_read.get() + items.len());
            let last_evaluated_key = items.last().filter(|_| stopped).map(|last| {
                [keys::USER_PK, keys::USER_SK, keys::PK, keys::SK]
                    .into_iter()
                    .map(|name| (name.to_owned(), last[name].clone()))
                    .collect()
            });
            std::future::ready(Ok(QueryPage { items, last_evaluated_key }))
        }

        /// Every page from the first, following cursors: each page's ids.
        async fn pages(&self, limit: usize, max_bytes: usize) -> Vec<Vec<String>> {
            let mut pages = Vec::new();
            let mut start = None;
            loop {
                let (events, next) =
                    timeline_page(|start, n| self.query(start, n), start, limit, max_bytes).await.unwrap();
                let bytes: usize = events.iter().map(|e| timeline::invocation_bytes(&e.to_json()) + 1).sum();
                assert!(events.len() == 1 || bytes <= max_bytes, "a page of {bytes} bytes");
                assert!(!events.is_empty() && events.len() <= limit);
                pages.push(events.iter().map(|e| e.event.id.to_string()).collect());
                let Some(next) = next else { return pages };
                start = Some(Item::from([
                    (keys::USER_PK.to_owned(), s(keys::user_pk(&UserId::parse("u-1").unwrap()))),
                    (keys::USER_SK.to_owned(), s(next.user_sk)),
                    (keys::PK.to_owned(), s(next.pk)),
                    (keys::SK.to_owned(), s(keys::EVENT_SK)),
                ]));
            }
        }
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("e-{i:03}")).collect()
    }

    #[tokio::test]
    async fn a_page_of_large_events_stops_reading_at_its_byte_cap() {
        // 100,000 quotes: 100 KB stored, 200 KB in the body, 400 KB once the body is a string.
        let quotes = "\"".repeat(100_000);
        let index = FakeIndex::new((0..40).map(|i| stored(i, &quotes)).collect());
        let (events, next) = timeline_page(|start, n| index.query(start, n), None, 1000, MAX_PAGE_BYTES).await.unwrap();
        assert_eq!(events.len(), 10, "4 MiB of 400 KB events");
        assert_eq!(next.unwrap().pk, "EVENT#web#e-009");
        // What it read beyond its events: the rest of the 1 MB Query page it stopped in.
        let per_page = index.page_bytes / item_size(&index.items[0]) + 1;
        assert!(index.items_read.get() <= events.len() + per_page, "read {} items", index.items_read.get());
        assert!(index.pages.get() <= events.len().div_ceil(per_page) + 1);
    }

    #[tokio::test]
    async fn following_cursors_returns_every_event_once_in_order() {
        // Small and large events mixed, so that limits and the byte cap both end pages.
        let items: Vec<Item> =
            (0..30).map(|i| stored(i, &if i % 4 == 0 { "\"".repeat(400) } else { "x".repeat(i * 10) })).collect();
        for (limit, max_bytes) in [(1, MAX_PAGE_BYTES), (7, MAX_PAGE_BYTES), (1000, 3000), (4, 2500), (1000, 10)] {
            let mut index = FakeIndex::new(items.clone());
            index.page_bytes = 2000;
            let pages = index.pages(limit, max_bytes).await;
            assert_eq!(pages.concat(), ids(0..30), "limit {limit}, cap {max_bytes}");
            if max_bytes == 10 {
                assert_eq!(pages.len(), 30, "an event larger than the cap is a page of its own");
            }
        }
    }

    #[tokio::test]
    async fn a_page_that_ends_with_the_last_event_has_no_cursor() {
        // DynamoDB may hand back a last evaluated key with nothing after it.
        let mut index = FakeIndex::new((0..6).map(|i| stored(i, "x")).collect());
        index.page_bytes = item_size(&index.items[0]) * 3;
        assert_eq!(index.pages(3, MAX_PAGE_BYTES).await, [ids(0..3), ids(3..6)]);
        assert_eq!(index.pages(6, MAX_PAGE_BYTES).await, [ids(0..6)]);
        assert_eq!(index.pages(1000, MAX_PAGE_BYTES).await, [ids(0..6)]);
    }
}

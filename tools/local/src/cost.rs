//! What the functions' AWS calls cost, counted on the SDK clients themselves: one
//! interceptor, given to a DynamoDB or Kinesis client, records every HTTP request sent (by
//! its `X-Amz-Target`, retries included), every DynamoDB write with its item's key and size,
//! and the items reads return. Write units follow DynamoDB's rules: 1 unit per started KB of
//! the item, 2 in a transaction; an update is charged for the item's size after it, taken
//! here from the table afterwards (its final, largest size: an upper bound).
//!
//! `make bench` (tools/bench) and `stack-tests/tests/cost.rs` count with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_kinesis::operation::put_record::PutRecordInput;
use aws_sdk_kinesis::operation::put_records::PutRecordsInput;
use aws_smithy_types::config_bag::ConfigBag;
use eventline_aws::item::{Item, item_size};
use serde_json::{Value, json};

/// One DynamoDB write: the item's key, whether it was part of a transaction, the item's
/// size when the request carried the whole item (a put), whether it adds to counters (an
/// update with `ADD`), and the size of the copy the `ByUser` index keeps of a put item that
/// carries the index's key (the index projects every attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub pk: String,
    pub sk: String,
    pub transactional: bool,
    pub put_size: Option<usize>,
    pub adds: bool,
    pub index_size: Option<usize>,
}

#[derive(Debug, Default)]
struct Recorded {
    /// HTTP requests by operation, e.g. `DynamoDB_20120810.TransactWriteItems`.
    requests: BTreeMap<String, usize>,
    writes: Vec<Write>,
    items_read: usize,
    /// Kinesis PUT payload units of the records put (25 KB each, at least one a record).
    put_payload_units: u64,
}

/// The interceptor. Clones share what they record.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // What was recorded stays usable even if a recording thread panicked.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A DynamoDB client for `sdk` that records through this recorder.
    pub fn dynamodb(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(self.clone()).build(),
        )
    }

    /// A Kinesis client for `sdk` that records through this recorder.
    pub fn kinesis(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(sdk).interceptor(self.clone()).build(),
        )
    }

    /// HTTP requests sent so far, by operation name (`PutRecords`, `TransactWriteItems`...).
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.recorded().requests.clone()
    }

    /// HTTP requests sent so far for one operation.
    pub fn requests_of(&self, operation: &str) -> usize {
        self.recorded().requests.get(operation).copied().unwrap_or(0)
    }

    pub fn writes(&self) -> Vec<Write> {
        self.recorded().writes.clone()
    }

    /// Items returned by Query, GetItem and BatchGetItem so far (a Query counts the items
    /// it examined).
    pub fn items_read(&self) -> usize {
        self.recorded().items_read
    }

    /// Kinesis PUT payload units of every record put so far, retries included.
    pub fn put_payload_units(&self) -> u64 {
        self.recorded().put_payload_units
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        *self.recorded() = Recorded::default();
    }
}

/// An item's `(pk, sk)`.
pub fn key_of(item: &Item) -> (String, String) {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    (text("pk"), text("sk"))
}

/// A put of a whole item.
fn put(item: &Item, transactional: bool) -> Write {
    let (pk, sk) = key_of(item);
    let index_size = item.contains_key(eventline_aws::keys::USER_PK).then(|| item_size(item));
    Write { pk, sk, transactional, put_size: Some(item_size(item)), adds: false, index_size }
}

/// An update of the item with key `key`.
fn update(key: &Item, transactional: bool, expression: Option<&str>) -> Write {
    let (pk, sk) = key_of(key);
    let adds = expression.is_some_and(|e| e.trim_start().starts_with("ADD") || e.contains(" ADD "));
    Write { pk, sk, transactional, put_size: None, adds, index_size: None }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "CostRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let mut writes = Vec::new();
        if let Some(input) = input.downcast_ref::<TransactWriteItemsInput>() {
            for action in input.transact_items() {
                if let Some(action) = action.put() {
                    writes.push(put(action.item(), true));
                } else if let Some(action) = action.update() {
                    writes.push(update(action.key(), true, Some(action.update_expression())));
                }
            }
        } else if let Some(input) = input.downcast_ref::<UpdateItemInput>() {
            writes.push(update(&input.key().cloned().unwrap_or_default(), false, input.update_expression()));
        } else if let Some(input) = input.downcast_ref::<PutItemInput>() {
            writes.push(put(&input.item().cloned().unwrap_or_default(), false));
        } else if let Some(input) = input.downcast_ref::<BatchWriteItemInput>() {
            for request in input.request_items().into_iter().flat_map(|items| items.values()).flatten() {
                if let Some(action) = request.put_request() {
                    writes.push(put(action.item(), false));
                }
            }
        }
        let units = |bytes: usize| (bytes as u64).div_ceil(PUT_PAYLOAD_UNIT_BYTES).max(1);
        let put_units: u64 = if let Some(input) = input.downcast_ref::<PutRecordsInput>() {
            input.records().iter().map(|r| units(r.data().as_ref().len() + r.partition_key().map_or(0, str::len))).sum()
        } else if let Some(input) = input.downcast_ref::<PutRecordInput>() {
            units(input.data().map_or(0, |d| d.as_ref().len()) + input.partition_key().map_or(0, str::len))
        } else {
            0
        };
        let mut recorded = self.recorded();
        recorded.writes.extend(writes);
        recorded.put_payload_units += put_units;
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Both services speak AWS JSON: the target header names the operation of every try.
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        *self.recorded().requests.entry(operation).or_default() += 1;
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else { return Ok(()) };
        let items = if let Some(query) = output.downcast_ref::<QueryOutput>() {
            usize::try_from(query.scanned_count()).unwrap_or(0)
        } else if let Some(get) = output.downcast_ref::<GetItemOutput>() {
            usize::from(get.item().is_some())
        } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
            batch.responses().map_or(0, |tables| tables.values().map(Vec::len).sum())
        } else {
            0
        };
        self.recorded().items_read += items;
        Ok(())
    }
}

/// Bytes in one Kinesis PUT payload unit (a record's data and partition key count).
pub const PUT_PAYLOAD_UNIT_BYTES: u64 = 25 * 1024;

/// Write units of one write of an item of `size` bytes.
pub fn write_units(size: usize, transactional: bool) -> f64 {
    let per_kb = if transactional { 2.0 } else { 1.0 };
    per_kb * size.div_ceil(1024).max(1) as f64
}

/// What a write updated: the part of the design it serves.
pub fn kind(write: &Write) -> &'static str {
    match write.pk.split('#').next().unwrap_or_default() {
        "EVENT" if write.sk == "EVENT" => "event item",
        "EVENT" | "POISON" => "duplicate and poison markers",
        "METRICS" | "RATE" => "shard totals and throughput",
        "WINDOW" if write.sk.ends_with(eventline_aws::keys::WINDOW_USERS_SUFFIX) => "window users sketches",
        "WINDOW" => "window buckets",
        "USERAGG" => "user day aggregates",
        "AGG" => "global day and month aggregates",
        _ => "other",
    }
}

/// The kinds that are the day and month aggregates, which the figures "without analytics"
/// leave out.
pub const AGGREGATE_KINDS: [&str; 2] = ["user day aggregates", "global day and month aggregates"];

/// Every item of the table, read with a Scan (fine for a measurement's own table).
pub async fn items(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>, BoxError> {
    Ok(dynamodb.scan().table_name(table).into_paginator().items().send().collect::<Result<_, _>>().await?)
}

/// Every item's size now, by key.
pub async fn item_sizes(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<HashMap<(String, String), usize>, BoxError> {
    Ok(items(dynamodb, table).await?.iter().map(|item| (key_of(item), item_size(item))).collect())
}

/// The kind of the index copies of put items, in [`units_by_kind`].
pub const INDEX_KIND: &str = "ByUser index copies";

/// Write units by kind: puts by the size they sent, updates by their item's size in `sizes`,
/// and each put item's index copy (1 unit per started KB, transaction or not) as
/// [`INDEX_KIND`].
pub fn units_by_kind(writes: &[Write], sizes: &HashMap<(String, String), usize>) -> BTreeMap<&'static str, f64> {
    let mut units: BTreeMap<&'static str, f64> = BTreeMap::new();
    for write in writes {
        let size = write.put_size.or_else(|| sizes.get(&(write.pk.clone(), write.sk.clone())).copied()).unwrap_or(0);
        *units.entry(kind(write)).or_default() += write_units(size, write.transactional);
        if let Some(index_size) = write.index_size {
            *units.entry(INDEX_KIND).or_default() += write_units(index_size, false);
        }
    }
    units
}

/// `count` live-looking call-detail events from 200 users, 17 a second over the minute
/// before `now` (epoch seconds), with the data measures the aggregates sum.
pub fn live_events(count: usize, now: i64) -> Vec<Value> {
    (0..count).map(|i| call_event(i, now - 60 + i as i64 / 17)).collect()
}

/// `count` events like [`live_events`], spread evenly over the `seconds` seconds from
/// `first` (epoch seconds): the same seconds for any count of at least `seconds`.
pub fn spread_events(count: usize, first: i64, seconds: i64) -> Vec<Value> {
    (0..count).map(|i| call_event(i, first + (i as i64 * seconds) / count.max(1) as i64)).collect()
}

fn call_event(i: usize, timestamp: i64) -> Value {
    let kind = ["call_out", "call_in", "sms", "data_session"][i % 4];
    json!({
        "id": format!("c-{i}"), "source": "switch-a", "type": kind,
        "user_id": format!("sub-{}", i % 200), "timestamp": timestamp,
        "payload": "cell 4711", "data": {"duration_seconds": i % 300, "bytes_up": i * 10, "bytes_down": i * 40},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_per_started_kb_and_double_in_transactions() {
        assert_eq!(write_units(0, false), 1.0);
        assert_eq!(write_units(1024, false), 1.0);
        assert_eq!(write_units(1025, false), 2.0);
        assert_eq!(write_units(1025, true), 4.0);
    }

    #[test]
    fn updates_are_charged_for_their_items_final_size() {
        let update = Write {
            pk: "WINDOW#s".into(),
            sk: "S#1".into(),
            transactional: false,
            put_size: None,
            adds: true,
            index_size: None,
        };
        let put = Write {
            pk: "EVENT#a#1".into(),
            sk: "EVENT".into(),
            transactional: true,
            put_size: Some(300),
            adds: false,
            index_size: Some(300),
        };
        let sizes = HashMap::from([(("WINDOW#s".to_owned(), "S#1".to_owned()), 3000)]);
        let units = units_by_kind(&[update, put], &sizes);
        assert_eq!(units["window buckets"], 3.0);
        assert_eq!(units["event item"], 2.0);
        assert_eq!(units[INDEX_KIND], 1.0, "the index copy: a plain write of the item's size");
    }

    #[test]
    fn spread_events_cover_the_same_seconds_for_any_count() {
        let seconds = |count| {
            let mut s: Vec<i64> =
                spread_events(count, 1000, 59).iter().map(|e| e["timestamp"].as_i64().unwrap()).collect();
            s.dedup();
            s
        };
        assert_eq!(seconds(1_000), (1000..1059).collect::<Vec<_>>());
        assert_eq!(seconds(100_000), seconds(1_000));
    }
}

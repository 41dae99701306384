//! The redrive itself, over ports: read failure objects and dead-letter messages, re-submit
//! their records with PutRecords, then clean up only what was re-submitted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use eventline_aws::keys::DEAD_LETTER_PREFIX;
use eventline_model::retry::Backoff;
use eventline_model::sink::{MAX_BYTES_PER_PUT, OutRecord, RecordSink, put_all};
use futures_util::future::join_all;
use time::OffsetDateTime;

use crate::dead_letter::{self, Data, DataObject, Unusable};
use crate::error::Error;
use crate::failure_record;
use crate::prepare::{Origin, prepare};
use crate::summary::{BucketSummary, ProblemKind, QueueSummary, Summary, reason_group};

/// Failure objects read at the same time.
const OBJECTS_READ_AT_ONCE: usize = 8;
/// Dead-letter messages gathered before their records are put: about one PutRecords call.
const MESSAGES_PER_ROUND: usize = 500;
/// Receives in a row that bring only messages already seen before reading stops.
const MAX_IDLE_RECEIVES: u32 = 3;
/// Kinesis limits for one record.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Which sources to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sources {
    S3,
    Dlq,
    #[default]
    Both,
}

impl Sources {
    pub fn bucket(self) -> bool {
        matches!(self, Sources::S3 | Sources::Both)
    }

    pub fn queue(self) -> bool {
        matches!(self, Sources::Dlq | Sources::Both)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub from: Sources,
    /// Only failure objects whose key starts with this.
    pub prefix: Option<String>,
    /// Only failure objects written at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Read and report; put, delete and change nothing.
    pub dry_run: bool,
    /// Delete each failure object whose records were all re-submitted (the bucket's
    /// lifecycle rule expires them otherwise).
    pub delete_failure_objects: bool,
    /// How long a received message stays hidden from other readers. A round of up to 500
    /// messages is put and deleted well within it.
    pub visibility_timeout: Duration,
    /// Retries of the entries PutRecords leaves unwritten.
    pub put_backoff: Backoff,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            from: Sources::Both,
            prefix: None,
            since: None,
            dry_run: false,
            delete_failure_objects: false,
            visibility_timeout: Duration::from_secs(300),
            // A command, not a request: it can wait out a throttled shard for longer.
            put_backoff: Backoff::default().with_budget(Duration::from_secs(60)),
        }
    }
}

/// A listed failure object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub last_modified: Option<OffsetDateTime>,
}

/// Where the event source mapping writes the batches it gives up on.
pub trait FailureBucket: Send + Sync {
    /// Every object under `prefix` (all when `None`), in key order.
    fn list(&self, prefix: Option<&str>) -> impl Future<Output = Result<Vec<ObjectInfo>, Error>> + Send;
    fn read(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;
    /// Deletes the objects; a result per key, in order.
    fn delete(&self, keys: &[String]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

/// Where the transform sends poison records.
pub trait DeadLetterQueue: Send + Sync {
    /// About how many messages wait (for progress only); fails when the queue cannot be read.
    fn depth(&self) -> impl Future<Output = Result<u64, Error>> + Send;
    /// Up to 10 messages, hidden from other readers for `visibility`; none when the queue is empty.
    fn receive(&self, visibility: Duration) -> impl Future<Output = Result<Vec<QueueMessage>, Error>> + Send;
    /// A result per receipt handle, in order.
    fn delete(&self, receipts: &[String]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
    /// Makes the messages visible again now; a result per receipt handle, in order.
    fn release(&self, receipts: &[String]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
    /// The data of a record too large for its message, from the object the message names.
    fn read_object(&self, object: &DataObject) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;
}

/// Progress of a long run, e.g. for a progress bar.
pub trait Progress: Send + Sync {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn finish(&self) {}
}

/// No progress report.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Reads the sources `options.from` names and re-submits their records to `sink`.
pub async fn redrive<B: FailureBucket, Q: DeadLetterQueue, S: RecordSink>(
    bucket: Option<&B>,
    queue: Option<&Q>,
    sink: &S,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Summary, Error> {
    let mut summary = Summary { dry_run: options.dry_run, ..Summary::default() };
    if options.from.bucket() {
        let bucket = bucket.ok_or_else(|| Error::Usage("reading failure objects needs --bucket".into()))?;
        from_bucket(bucket, sink, options, progress, &mut summary).await?;
    }
    if options.from.queue() {
        let queue = queue.ok_or_else(|| Error::Usage("reading dead-letter messages needs --queue-url".into()))?;
        from_queue(queue, sink, options, progress, &mut summary).await?;
    }
    Ok(summary)
}

/// A record checked against Kinesis's limits, so that one bad record is skipped rather than
/// failing a whole PutRecords call.
fn out_record(partition_key: String, data: Vec<u8>) -> Result<OutRecord, String> {
    let key_chars = partition_key.chars().count();
    if !(1..=MAX_PARTITION_KEY_CHARS).contains(&key_chars) {
        return Err(format!(
            "its partition key has {key_chars} characters; Kinesis takes 1 to {MAX_PARTITION_KEY_CHARS}"
        ));
    }
    let bytes = data.len() + partition_key.len();
    if bytes > MAX_RECORD_BYTES {
        return Err(format!("it is {bytes} bytes with its partition key; Kinesis takes {MAX_RECORD_BYTES}"));
    }
    Ok(OutRecord { partition_key, data })
}

async fn from_bucket<B: FailureBucket, S: RecordSink>(
    bucket: &B,
    sink: &S,
    options: &Options,
    progress: &dyn Progress,
    summary: &mut Summary,
) -> Result<(), Error> {
    let listed = bucket.list(options.prefix.as_deref()).await?;
    let objects: Vec<ObjectInfo> = listed
        .into_iter()
        .filter(|object| !object.key.ends_with('/'))
        // Dead-lettered records go back through the messages that name them.
        .filter(|object| !object.key.starts_with(DEAD_LETTER_PREFIX))
        .filter(|object| match (options.since, object.last_modified) {
            (Some(since), Some(modified)) => modified >= since,
            _ => true,
        })
        .collect();
    let mut counts = BucketSummary { objects: objects.len() as u64, ..BucketSummary::default() };
    progress.start("failure objects", objects.len() as u64);
    for group in objects.chunks(OBJECTS_READ_AT_ONCE) {
        let bodies = join_all(group.iter().map(|object| bucket.read(&object.key))).await;
        let mut records = Vec::new();
        // The object and record number of each record, for reports and clean-up.
        let mut owners: Vec<(usize, usize)> = Vec::new();
        // Whether all of an object's records can go back (and so it may be deleted after).
        let mut whole = vec![true; group.len()];
        for (index, (object, body)) in group.iter().zip(bodies).enumerate() {
            let item = format!("object {}", object.key);
            let body = match body {
                Ok(body) => body,
                // The next object would fail the same way.
                Err(error @ (Error::AccessDenied { .. } | Error::Setup { .. })) => return Err(error),
                Err(error) => {
                    counts.objects_failed += 1;
                    whole[index] = false;
                    summary.problem(item, ProblemKind::Failed, error.to_string());
                    continue;
                }
            };
            let parsed = match failure_record::parse(&body) {
                Ok(parsed) => parsed,
                Err(reason) => {
                    counts.objects_skipped += 1;
                    whole[index] = false;
                    summary.problem(item, ProblemKind::Skipped, reason);
                    continue;
                }
            };
            counts.objects_read += 1;
            *counts.conditions.entry(parsed.condition).or_default() += parsed.records.len() as u64;
            for (number, record) in parsed.records.into_iter().enumerate() {
                counts.records.found += 1;
                let checked = record.and_then(|record| {
                    let prepared = prepare(&record.data, Origin::GivenUp, record.position.as_ref(), record.arrival)?;
                    Ok((out_record(record.partition_key, prepared.data)?, prepared.adjustments))
                });
                match checked {
                    Ok((out, adjustments)) => {
                        counts.records.to_resubmit += 1;
                        summary.adjusted.add(adjustments);
                        records.push(out);
                        owners.push((index, number));
                    }
                    Err(reason) => {
                        counts.records.skipped += 1;
                        whole[index] = false;
                        summary.problem(format!("{item} record {number}"), ProblemKind::Skipped, reason);
                    }
                }
            }
        }
        if !options.dry_run {
            let results = put_all(sink, &records, options.put_backoff).await;
            for (result, &(index, number)) in results.into_iter().zip(&owners) {
                match result {
                    Ok(()) => counts.records.resubmitted += 1,
                    Err(failure) => {
                        counts.records.failed += 1;
                        whole[index] = false;
                        let item = format!("object {} record {number}", group[index].key);
                        summary.problem(item, ProblemKind::Failed, format!("PutRecords: {failure}"));
                    }
                }
            }
            if options.delete_failure_objects {
                let keys: Vec<String> =
                    group.iter().zip(&whole).filter(|(_, whole)| **whole).map(|(o, _)| o.key.clone()).collect();
                for (key, result) in keys.iter().zip(bucket.delete(&keys).await) {
                    match result {
                        Ok(()) => counts.objects_deleted += 1,
                        Err(reason) => {
                            counts.objects_not_deleted += 1;
                            summary.problem(
                                format!("object {key}"),
                                ProblemKind::Failed,
                                format!("not deleted: {reason}"),
                            );
                        }
                    }
                }
            }
        }
        progress.advance(group.len() as u64);
    }
    progress.finish();
    summary.bucket = Some(counts);
    Ok(())
}

async fn from_queue<Q: DeadLetterQueue, S: RecordSink>(
    queue: &Q,
    sink: &S,
    options: &Options,
    progress: &dyn Progress,
    summary: &mut Summary,
) -> Result<(), Error> {
    let depth = queue.depth().await?;
    let mut counts = QueueSummary::default();
    progress.start("dead-letter messages", depth);
    let mut seen: HashSet<String> = HashSet::new();
    let mut resubmitted: HashSet<u64> = HashSet::new();
    // Messages that stay in the queue, by id, with their latest receipt handle (only the
    // latest can change a message's visibility).
    let mut staying: HashMap<String, String> = HashMap::new();
    let mut empty = false;
    while !empty {
        let mut round: Vec<QueueMessage> = Vec::new();
        let mut round_bytes = 0;
        let mut idle = 0;
        while round.len() < MESSAGES_PER_ROUND && round_bytes < MAX_BYTES_PER_PUT {
            let received = match queue.receive(options.visibility_timeout).await {
                Ok(received) => received,
                Err(error) => {
                    counts.stopped = Some(error.to_string());
                    empty = true;
                    break;
                }
            };
            if received.is_empty() {
                empty = true;
                break;
            }
            let before = round.len();
            for message in received {
                if seen.insert(message.id.clone()) {
                    round_bytes += message.body.len();
                    round.push(message);
                } else if let Some(receipt) = staying.get_mut(&message.id) {
                    // A message kept hidden longer than the visibility timeout came round again.
                    *receipt = message.receipt;
                }
            }
            idle = if round.len() == before { idle + 1 } else { 0 };
            if idle >= MAX_IDLE_RECEIVES {
                empty = true;
                break;
            }
        }
        if round.is_empty() {
            break;
        }
        let state = RoundState { counts: &mut counts, staying: &mut staying, resubmitted: &mut resubmitted };
        redrive_round(&round, queue, sink, options, summary, state).await;
        progress.advance(round.len() as u64);
    }
    // What stays is visible again at once, not only after the visibility timeout.
    let receipts: Vec<String> = staying.into_values().collect();
    counts.left_in_queue = receipts.len() as u64;
    for result in queue.release(&receipts).await {
        if let Err(reason) = result {
            tracing::warn!(%reason, "a message stays hidden until its visibility timeout ends");
        }
    }
    progress.finish();
    summary.queue = Some(counts);
    Ok(())
}

/// What the rounds of one run share.
struct RoundState<'a> {
    counts: &'a mut QueueSummary,
    staying: &'a mut HashMap<String, String>,
    /// Hashes of the records put in this run. A record still poison comes back to the queue
    /// while the run goes on; it is put once per run, so the run cannot chase its own tail.
    /// Copies of one message (SQS delivers at least once) are put once too.
    resubmitted: &'a mut HashSet<u64>,
}

fn record_hash(record: &OutRecord) -> u64 {
    let mut hasher = DefaultHasher::new();
    record.partition_key.hash(&mut hasher);
    record.data.hash(&mut hasher);
    hasher.finish()
}

/// Re-submits the records of one round of messages and deletes the messages whose records
/// went; the others are added to `staying`.
async fn redrive_round<Q: DeadLetterQueue, S: RecordSink>(
    round: &[QueueMessage],
    queue: &Q,
    sink: &S,
    options: &Options,
    summary: &mut Summary,
    state: RoundState<'_>,
) {
    let RoundState { counts, staying, resubmitted } = state;
    let mut records = Vec::new();
    let mut owners = Vec::new();
    for (index, message) in round.iter().enumerate() {
        counts.messages += 1;
        counts.records.found += 1;
        let item = format!("message {}", message.id);
        let checked = match dead_letter::parse(&message.body) {
            Ok(letter) => {
                *counts.reasons.entry(reason_group(&letter.reason)).or_default() += 1;
                match letter_data(queue, letter.data).await {
                    Err(problem) => Err(problem),
                    Ok(data) => prepare(&data, Origin::DeadLettered, Some(&letter.position), None)
                        .and_then(|prepared| {
                            Ok((out_record(letter.partition_key, prepared.data)?, prepared.adjustments))
                        })
                        .and_then(|(out, adjustments)| {
                            // Dry runs put nothing, so nothing can come back.
                            if !options.dry_run && !resubmitted.insert(record_hash(&out)) {
                                return Err("holds the same record as a message re-submitted earlier in this run (a \
                                            duplicate message, or the record was dead-lettered again)"
                                    .to_owned());
                            }
                            Ok((out, adjustments))
                        })
                        .map_err(|reason| (ProblemKind::Skipped, reason)),
                }
            }
            Err(unusable) => {
                let group = unusable.reason().map_or_else(|| "(not a dead-lettered record)".to_owned(), reason_group);
                *counts.reasons.entry(group).or_default() += 1;
                Err((
                    ProblemKind::Skipped,
                    match unusable {
                        Unusable::Truncated { .. } => unusable.to_string(),
                        Unusable::Malformed(_) => format!("the message {unusable}"),
                    },
                ))
            }
        };
        match checked {
            Ok((out, adjustments)) => {
                counts.records.to_resubmit += 1;
                summary.adjusted.add(adjustments);
                records.push(out);
                owners.push(index);
            }
            Err((kind, reason)) => {
                match kind {
                    ProblemKind::Skipped => counts.records.skipped += 1,
                    ProblemKind::Failed => counts.records.failed += 1,
                }
                summary.problem(item, kind, format!("{reason}; left in the queue"));
                staying.insert(message.id.clone(), message.receipt.clone());
            }
        }
    }
    if options.dry_run {
        for &index in &owners {
            staying.insert(round[index].id.clone(), round[index].receipt.clone());
        }
        return;
    }
    let mut sent = Vec::new();
    for (result, &index) in put_all(sink, &records, options.put_backoff).await.into_iter().zip(&owners) {
        let message = &round[index];
        match result {
            Ok(()) => {
                counts.records.resubmitted += 1;
                sent.push(index);
            }
            Err(failure) => {
                counts.records.failed += 1;
                let reason = format!("PutRecords: {failure}; left in the queue");
                summary.problem(format!("message {}", message.id), ProblemKind::Failed, reason);
                staying.insert(message.id.clone(), message.receipt.clone());
            }
        }
    }
    // Deleted only now that the stream has the record: a crash before this point leaves the
    // message to a later run, which re-submits it harmlessly.
    let receipts: Vec<String> = sent.iter().map(|&index| round[index].receipt.clone()).collect();
    for (&index, result) in sent.iter().zip(queue.delete(&receipts).await) {
        match result {
            Ok(()) => counts.deleted += 1,
            Err(reason) => {
                counts.not_deleted += 1;
                let reason = format!("re-submitted but not deleted: {reason}");
                summary.problem(format!("message {}", round[index].id), ProblemKind::Failed, reason);
            }
        }
    }
}

/// A dead-lettered record's data: from the message, or read from the object it names
/// (which must hold as many bytes as the message says). Objects are left for the bucket's
/// lifecycle rule: a copy of the message (SQS delivers at least once) may still name one.
async fn letter_data<Q: DeadLetterQueue>(queue: &Q, data: Data) -> Result<Vec<u8>, (ProblemKind, String)> {
    let (object, bytes) = match data {
        Data::Inline(data) => return Ok(data),
        Data::Stored { object, bytes } => (object, bytes),
    };
    let name = format!("s3://{}/{}", object.bucket, object.key);
    if bytes > MAX_RECORD_BYTES {
        let reason = format!("names {name} of {bytes} bytes; a Kinesis record takes {MAX_RECORD_BYTES}");
        return Err((ProblemKind::Skipped, reason));
    }
    match queue.read_object(&object).await {
        Ok(data) if data.len() == bytes => Ok(data),
        Ok(data) => {
            let reason = format!("{name} holds {} bytes but the message says {bytes}", data.len());
            Err((ProblemKind::Skipped, reason))
        }
        // Gone, or not to be read: a later run cannot do better.
        Err(error @ (Error::NotFound { .. } | Error::Refused { .. })) => Err((ProblemKind::Skipped, error.to_string())),
        Err(error) => Err((ProblemKind::Failed, error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use eventline_model::memory::MemoryStream;
    use eventline_transform::dead_letter::{DataObject as Object, PoisonMessage};
    use serde_json::json;
    use time::macros::datetime;

    use crate::summary::Tally;

    const SHARD: &str = "shardId-000000000000";

    fn ingest_record(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","source":"web","type":"t","timestamp":"2026-11-30T10:00:00Z","received_at":"2026-11-30T10:00:01Z","ingest_id":"i-{id}"}}"#
        )
    }

    /// A failure object as Lambda writes it, with records of (partition key, data).
    fn failure_object(records: &[(&str, &[u8])]) -> Vec<u8> {
        let records: Vec<serde_json::Value> = records
            .iter()
            .enumerate()
            .map(|(n, (key, data))| {
                json!({
                    "kinesis": {
                        "partitionKey": key,
                        "sequenceNumber": format!("{n:056}"),
                        "data": STANDARD.encode(data),
                        "approximateArrivalTimestamp": 1_764_496_800.0,
                    },
                    "eventID": format!("{SHARD}:{n:056}"),
                })
            })
            .collect();
        json!({
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
            "KinesisBatchInfo": {"shardId": SHARD, "batchSize": records.len()},
            "payload": json!({"Records": records}).to_string(),
        })
        .to_string()
        .into_bytes()
    }

    const REASON: &str = "the stored item could be 411000 bytes";

    fn poison(key: &str, data: &[u8]) -> String {
        PoisonMessage::new(REASON.into(), SHARD, "77", key, None, data).body(None)
    }

    /// The message of a record kept in the bucket, at stream position `sequence_number`.
    fn stored_poison(key: &str, data: &[u8], sequence_number: &str) -> (String, Object) {
        let message = PoisonMessage::new(REASON.into(), SHARD, sequence_number, key, None, data);
        let object = Object { bucket: "failures".into(), key: message.object_key() };
        (message.body(Some(&object)), object)
    }

    /// A message from before records were kept whole, holding the first 96 KiB of 96 KiB + 1.
    fn truncated_poison(key: &str) -> String {
        json!({
            "reason": REASON, "shard_id": SHARD, "sequence_number": "78", "partition_key": key,
            "event_source_arn": null, "data_base64": STANDARD.encode(vec![b'x'; 98_304]),
            "data_bytes": 98_305, "truncated": true,
        })
        .to_string()
    }

    #[derive(Default)]
    struct FakeBucket {
        objects: BTreeMap<String, (Vec<u8>, OffsetDateTime)>,
        unreadable: Option<fn(&str) -> Error>,
        deleted: Mutex<Vec<String>>,
        listed_with: Mutex<Vec<Option<String>>>,
    }

    impl FakeBucket {
        fn with(objects: &[(&str, Vec<u8>)]) -> Self {
            let at = datetime!(2026-11-30 10:00:00 UTC);
            let objects = objects.iter().map(|(k, body)| (k.to_string(), (body.clone(), at))).collect();
            Self { objects, ..Self::default() }
        }
    }

    impl FailureBucket for FakeBucket {
        async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, Error> {
            self.listed_with.lock().unwrap().push(prefix.map(str::to_owned));
            Ok(self
                .objects
                .iter()
                .filter(|(key, _)| key.starts_with(prefix.unwrap_or_default()))
                .map(|(key, (_, at))| ObjectInfo { key: key.clone(), last_modified: Some(*at) })
                .collect())
        }

        async fn read(&self, key: &str) -> Result<Vec<u8>, Error> {
            if let Some(error) = self.unreadable.filter(|_| key.contains("unreadable")) {
                return Err(error(key));
            }
            Ok(self.objects[key].0.clone())
        }

        async fn delete(&self, keys: &[String]) -> Vec<Result<(), String>> {
            self.deleted.lock().unwrap().extend_from_slice(keys);
            vec![Ok(()); keys.len()]
        }
    }

    /// Messages with SQS's visibility rules, minus the clock: a received message stays hidden
    /// until it is released or deleted.
    #[derive(Default)]
    struct FakeQueue {
        /// (id, body, visible), in order.
        messages: Mutex<Vec<(String, String, bool)>>,
        receives: Mutex<u32>,
        /// Objects of records too large for their message, by (bucket, key).
        objects: BTreeMap<(String, String), Vec<u8>>,
    }

    impl FakeQueue {
        fn with(bodies: &[String]) -> Self {
            let messages = bodies.iter().enumerate().map(|(n, b)| (format!("m{n}"), b.clone(), true)).collect();
            Self { messages: Mutex::new(messages), ..Self::default() }
        }

        /// (id, visible) of the messages still in the queue.
        fn left(&self) -> Vec<(String, bool)> {
            self.messages.lock().unwrap().iter().map(|(id, _, visible)| (id.clone(), *visible)).collect()
        }

        fn receipt(id: &str, receive: u32) -> String {
            format!("{id}@{receive}")
        }

        fn id_of(receipt: &str) -> &str {
            receipt.split('@').next().unwrap_or_default()
        }
    }

    impl DeadLetterQueue for FakeQueue {
        async fn depth(&self) -> Result<u64, Error> {
            Ok(self.messages.lock().unwrap().len() as u64)
        }

        async fn receive(&self, _visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
            let receive = {
                let mut receives = self.receives.lock().unwrap();
                *receives += 1;
                *receives
            };
            let mut messages = self.messages.lock().unwrap();
            Ok(messages
                .iter_mut()
                .filter(|(_, _, visible)| *visible)
                .take(10)
                .map(|(id, body, visible)| {
                    *visible = false;
                    QueueMessage { id: id.clone(), receipt: Self::receipt(id, receive), body: body.clone() }
                })
                .collect())
        }

        async fn delete(&self, receipts: &[String]) -> Vec<Result<(), String>> {
            let mut messages = self.messages.lock().unwrap();
            messages.retain(|(id, _, _)| !receipts.iter().any(|r| Self::id_of(r) == id));
            vec![Ok(()); receipts.len()]
        }

        async fn release(&self, receipts: &[String]) -> Vec<Result<(), String>> {
            let mut messages = self.messages.lock().unwrap();
            for (id, _, visible) in messages.iter_mut() {
                if receipts.iter().any(|r| Self::id_of(r) == id) {
                    *visible = true;
                }
            }
            vec![Ok(()); receipts.len()]
        }

        async fn read_object(&self, object: &DataObject) -> Result<Vec<u8>, Error> {
            let what = format!("s3://{}/{}", object.bucket, object.key);
            self.objects
                .get(&(object.bucket.clone(), object.key.clone()))
                .cloned()
                .ok_or(Error::NotFound { what, hint: "it expired".into() })
        }
    }

    /// A stream that takes every record but those whose partition key is `refused`.
    fn refusing_stream() -> MemoryStream {
        MemoryStream::throttling_keys(&["refused"])
    }

    /// The data of the records the stream took, as text.
    fn data(stream: &MemoryStream) -> Vec<String> {
        stream.taken().iter().map(|r| String::from_utf8_lossy(&r.data).into_owned()).collect()
    }

    fn bucket() -> FakeBucket {
        let e1 = ingest_record("e-1");
        let e2 = ingest_record("e-2");
        FakeBucket::with(&[
            ("aws/lambda/m/shard/2026/11/30/a", failure_object(&[("u-1", e1.as_bytes()), ("u-2", e2.as_bytes())])),
            ("aws/lambda/m/shard/2026/11/30/b", b"{\"requestContext\":{}}".to_vec()),
        ])
    }

    fn queue() -> FakeQueue {
        FakeQueue::with(&[
            poison("u-3", ingest_record("e-3").as_bytes()),
            truncated_poison("u-4"),
            poison("u-5", b"not json"),
            "not a poison message".to_owned(),
        ])
    }

    async fn run(
        bucket: &FakeBucket,
        queue: &FakeQueue,
        stream: &MemoryStream,
        options: &Options,
    ) -> Result<Summary, Error> {
        redrive(Some(bucket), Some(queue), stream, options, &NoProgress).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_reads_everything_and_changes_nothing() {
        let (bucket, queue, stream) = (bucket(), queue(), MemoryStream::new());
        let options = Options { dry_run: true, delete_failure_objects: true, ..Options::default() };
        let summary = run(&bucket, &queue, &stream, &options).await.unwrap();

        assert!(stream.taken().is_empty());
        assert!(bucket.deleted.lock().unwrap().is_empty());
        let left = queue.left();
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(|(_, visible)| *visible), "every message is visible again: {left:?}");

        let objects = summary.bucket.as_ref().unwrap();
        assert_eq!((objects.objects, objects.objects_read, objects.objects_skipped), (2, 1, 1));
        assert_eq!(objects.conditions, BTreeMap::from([("RetryAttemptsExhausted".to_owned(), 2)]));
        assert_eq!(objects.records, Tally { found: 2, to_resubmit: 2, ..Tally::default() });
        let messages = summary.queue.as_ref().unwrap();
        assert_eq!(messages.records, Tally { found: 4, to_resubmit: 1, skipped: 3, ..Tally::default() });
        assert_eq!(messages.left_in_queue, 4);
        assert_eq!(messages.reasons["the stored item could be N bytes"], 3);
        assert_eq!(messages.reasons["(not a dead-lettered record)"], 1);
        assert!(!summary.has_failures());
        assert_eq!(summary.adjusted.ingest_ids_dropped, 1, "what the run would change is reported");
    }

    #[tokio::test(start_paused = true)]
    async fn records_go_back_and_only_messages_whose_record_went_are_deleted() {
        let (bucket, queue, stream) = (bucket(), queue(), MemoryStream::new());
        let summary = run(&bucket, &queue, &stream, &Options::default()).await.unwrap();

        let data = data(&stream);
        assert_eq!(&data[..2], [ingest_record("e-1"), ingest_record("e-2")], "byte for byte");
        assert_eq!(data[2], ingest_record("e-3").replace(r#","ingest_id":"i-e-3""#, ""));
        assert_eq!(data.len(), 3);
        let keys: Vec<String> = stream.taken().iter().map(|r| r.partition_key.clone()).collect();
        assert_eq!(keys, ["u-1", "u-2", "u-3"]);

        let left: Vec<String> = queue.left().into_iter().map(|(id, _)| id).collect();
        assert_eq!(left, ["m1", "m2", "m3"], "the truncated, non-JSON and foreign messages stay");
        assert!(queue.left().iter().all(|(_, visible)| *visible));
        assert!(bucket.deleted.lock().unwrap().is_empty(), "objects are kept unless asked");

        let total = summary.total();
        assert_eq!(total, Tally { found: 6, to_resubmit: 3, resubmitted: 3, skipped: 3, failed: 0 });
        assert_eq!(summary.queue.as_ref().unwrap().deleted, 1);
        let reasons: Vec<&str> = summary.problems.iter().map(|p| p.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.starts_with("holds only the first 98304 of 98305 bytes")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("the data is not JSON text")), "{reasons:?}");
        assert!(reasons.iter().all(|r| !r.contains("has no payload")
            || r.ends_with("payload (only a destination bucket receives the records themselves)")));
        assert!(!summary.has_failures());
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_stream_refuses_stays_where_it_was() {
        let e1 = ingest_record("e-1");
        let e2 = ingest_record("e-2");
        let bucket = FakeBucket::with(&[
            ("a", failure_object(&[("u-1", e1.as_bytes())])),
            ("b", failure_object(&[("u-1", e1.as_bytes()), ("refused", e2.as_bytes())])),
        ]);
        let queue = FakeQueue::with(&[poison("refused", ingest_record("e-3").as_bytes())]);
        let stream = refusing_stream();
        let options = Options { delete_failure_objects: true, ..Options::default() };
        let summary = run(&bucket, &queue, &stream, &options).await.unwrap();

        assert_eq!(*bucket.deleted.lock().unwrap(), ["a"], "b still holds a record the stream did not take");
        assert_eq!(queue.left(), [("m0".to_owned(), true)]);
        assert_eq!(summary.total().failed, 2);
        assert_eq!(summary.total().resubmitted, 2);
        assert!(summary.has_failures());
        let failed: Vec<&str> = summary.problems.iter().map(|p| p.item.as_str()).collect();
        assert_eq!(failed, ["object b record 1", "message m0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_is_put_once_per_run_however_many_messages_hold_it() {
        let copy = poison("u-3", ingest_record("e-3").as_bytes());
        let queue = FakeQueue::with(&[copy.clone(), copy]);
        let stream = MemoryStream::new();
        let options = Options { from: Sources::Dlq, ..Options::default() };
        let summary = redrive::<FakeBucket, _, _>(None, Some(&queue), &stream, &options, &NoProgress).await.unwrap();
        assert_eq!(stream.taken().len(), 1);
        assert_eq!(queue.left(), [("m1".to_owned(), true)], "the copy stays for a later run");
        assert!(summary.problems[0].reason.starts_with("holds the same record as a message re-submitted"));
        assert!(summary.bucket.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_that_cannot_be_read_fails_alone_but_denied_access_stops_the_run() {
        let e1 = ingest_record("e-1");
        let mut bucket =
            FakeBucket::with(&[("a", failure_object(&[("u-1", e1.as_bytes())])), ("unreadable", Vec::new())]);
        bucket.unreadable =
            Some(|key| Error::NotFound { what: key.to_owned(), hint: "it expired after it was listed".into() });
        let stream = MemoryStream::new();
        let options = Options { from: Sources::S3, delete_failure_objects: true, ..Options::default() };
        let summary = redrive::<_, FakeQueue, _>(Some(&bucket), None, &stream, &options, &NoProgress).await.unwrap();
        assert_eq!(stream.taken().len(), 1);
        assert_eq!(summary.bucket.as_ref().unwrap().objects_failed, 1);
        assert_eq!(*bucket.deleted.lock().unwrap(), ["a"]);
        assert!(summary.has_failures());

        bucket.unreadable = Some(|key| Error::AccessDenied { action: "s3:GetObject", what: key.to_owned() });
        let error = redrive::<_, FakeQueue, _>(Some(&bucket), None, &stream, &options, &NoProgress).await.unwrap_err();
        assert!(matches!(error, Error::AccessDenied { .. }), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn prefix_and_since_choose_the_objects() {
        let e1 = ingest_record("e-1");
        let mut bucket = FakeBucket::with(&[
            ("aws/lambda/m/s/2026/11/29/old", failure_object(&[("u-1", e1.as_bytes())])),
            ("aws/lambda/m/s/2026/11/30/new", failure_object(&[("u-1", e1.as_bytes())])),
            ("aws/lambda/m/s/", Vec::new()),
        ]);
        if let Some(old) = bucket.objects.get_mut("aws/lambda/m/s/2026/11/29/old") {
            old.1 = datetime!(2026-11-29 10:00:00 UTC);
        }
        let options = Options {
            from: Sources::S3,
            prefix: Some("aws/lambda/m/".into()),
            since: Some(datetime!(2026-11-30 00:00:00 UTC)),
            dry_run: true,
            ..Options::default()
        };
        let summary =
            redrive::<_, FakeQueue, _>(Some(&bucket), None, &MemoryStream::new(), &options, &NoProgress).await.unwrap();
        assert_eq!(*bucket.listed_with.lock().unwrap(), [Some("aws/lambda/m/".to_owned())]);
        assert_eq!(summary.bucket.as_ref().unwrap().objects, 1, "the older object and the folder are left out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_to_read_needs_its_resource() {
        let error =
            redrive::<FakeBucket, FakeQueue, _>(None, None, &MemoryStream::new(), &Options::default(), &NoProgress)
                .await
                .unwrap_err();
        assert!(matches!(error, Error::Usage(_)), "{error}");
    }

    /// A 200 KiB event another producer wrote, as JSON text.
    fn large_event(id: &str) -> Vec<u8> {
        let head = format!(r#"{{"id":"{id}","source":"web","type":"t","timestamp":"2026-11-30T10:00:00Z","payload":""#);
        let mut data = head.into_bytes();
        data.resize(200 * 1024 - 2, b'x');
        data.extend_from_slice(b"\"}");
        data
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_kept_in_the_bucket_goes_back_byte_for_byte_and_then_its_message_is_deleted() {
        let data = large_event("big-1");
        let (body, object) = stored_poison("u-9", &data, "79");
        let mut queue = FakeQueue::with(&[body.clone(), body]);
        queue.objects.insert((object.bucket, object.key), data.clone());
        let stream = MemoryStream::new();
        let options = Options { from: Sources::Dlq, ..Options::default() };
        let summary = redrive::<FakeBucket, _, _>(None, Some(&queue), &stream, &options, &NoProgress).await.unwrap();

        let records = stream.taken();
        assert_eq!(records, [OutRecord { partition_key: "u-9".into(), data }], "once, byte for byte");
        assert_eq!(queue.left(), [("m1".to_owned(), true)], "the copy stays for a later run, its object with it");
        let messages = summary.queue.as_ref().unwrap();
        assert_eq!((messages.deleted, messages.records.resubmitted, messages.records.skipped), (1, 1, 1));
        assert!(!summary.has_failures());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_whose_object_is_gone_or_differs_stays_in_the_queue() {
        let data = large_event("big-2");
        let (gone, _) = stored_poison("u-1", &data, "80");
        let (short, short_object) = stored_poison("u-2", &data, "81");
        let mut queue = FakeQueue::with(&[gone, short]);
        queue.objects.insert((short_object.bucket, short_object.key), data[1..].to_vec());
        let stream = MemoryStream::new();
        let options = Options { from: Sources::Dlq, ..Options::default() };
        let summary = redrive::<FakeBucket, _, _>(None, Some(&queue), &stream, &options, &NoProgress).await.unwrap();

        assert!(stream.taken().is_empty());
        assert_eq!(queue.left().len(), 2);
        let reasons: Vec<&str> = summary.problems.iter().map(|p| p.reason.as_str()).collect();
        assert!(
            reasons[0].starts_with("s3://failures/dead-letters/shardId-000000000000/80 does not exist"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("holds 204799 bytes but the message says 204800"), "{reasons:?}");
        assert_eq!(summary.queue.as_ref().unwrap().records.skipped, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn dead_lettered_objects_are_not_read_as_failure_records() {
        let e1 = ingest_record("e-1");
        let bucket = FakeBucket::with(&[
            ("aws/lambda/m/s/2026/11/30/a", failure_object(&[("u-1", e1.as_bytes())])),
            ("dead-letters/shardId-000000000000/79", large_event("big-1")),
        ]);
        let options = Options { from: Sources::S3, delete_failure_objects: true, ..Options::default() };
        let stream = MemoryStream::new();
        let summary = redrive::<_, FakeQueue, _>(Some(&bucket), None, &stream, &options, &NoProgress).await.unwrap();
        assert_eq!(summary.bucket.as_ref().unwrap().objects, 1);
        assert!(summary.problems.is_empty(), "{summary}");
        assert_eq!(*bucket.deleted.lock().unwrap(), ["aws/lambda/m/s/2026/11/30/a"]);
    }

    #[test]
    fn records_outside_kinesis_limits_are_refused_before_the_call() {
        assert!(out_record(String::new(), b"x".to_vec()).unwrap_err().contains("partition key has 0 characters"));
        assert!(out_record("k".repeat(257), b"x".to_vec()).is_err());
        assert!(out_record("é".repeat(256), b"x".to_vec()).is_ok(), "the limit counts characters");
        assert!(out_record("k".into(), vec![0; MAX_RECORD_BYTES]).unwrap_err().contains("1048577 bytes"));
    }
}

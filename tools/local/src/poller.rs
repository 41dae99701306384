//! Drives the transform from the ingest stream as Lambda's event source mapping does: real
//! `KinesisEvent` batches per shard, the template's batch size and batching window,
//! checkpoints from `batchItemFailures`, bisection on function errors, bounded retries,
//! a maximum record age, and the on-failure destination.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_aws::error_chain;
use serde_json::json;
use tokio::sync::watch;

use crate::manifest::EventSource;
use crate::on_failure::{Destination, FailedBatch};
use crate::{Error, Functions};

/// Pause between polls of an idle shard.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest pause between tries after GetRecords errors.
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Counts across all batches, for the shutdown summary and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    pub batches: u64,
    pub records: u64,
    pub retries: u64,
    pub sent_to_on_failure: u64,
    pub largest_batch: usize,
}

/// The function an event source mapping invokes. `Err` is a function error (a crash, a
/// timeout), which the mapping answers by bisecting and retrying the batch.
pub trait StreamFunction: Send + Sync + 'static {
    fn invoke(&self, event: KinesisEvent) -> impl Future<Output = Result<KinesisEventResponse, String>> + Send;
}

/// The transform handler, run as Lambda would run it.
impl StreamFunction for Arc<Functions> {
    async fn invoke(&self, event: KinesisEvent) -> Result<KinesisEventResponse, String> {
        let functions = Arc::clone(self);
        // A panic in the handler is a function error, as a crashed Lambda would be.
        tokio::spawn(async move { functions.transform.handle(event).await })
            .await
            .map_err(|e| format!("the transform crashed: {e}"))
    }
}

pub struct Poller<F = Arc<Functions>> {
    function: F,
    kinesis: aws_sdk_kinesis::Client,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    source: EventSource,
    region: String,
    stats: tokio::sync::Mutex<PollStats>,
    /// Per shard, the last record finished (processed or given up on): where a drain stands.
    finished: std::sync::Mutex<HashMap<String, String>>,
}

/// A batch waiting to be (re)invoked, with the attempts it has had.
struct Pending {
    records: Vec<Record>,
    attempts: i64,
}

impl<F: StreamFunction> Poller<F> {
    pub fn new(function: F, sdk: &aws_config::SdkConfig, source: EventSource, region: String) -> Self {
        Self {
            function,
            kinesis: aws_sdk_kinesis::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            // Path-style: bucket names as host names do not resolve to a local emulator.
            s3: aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build()),
            source,
            region,
            stats: tokio::sync::Mutex::new(PollStats::default()),
            finished: std::sync::Mutex::default(),
        }
    }

    pub async fn stats(&self) -> PollStats {
        self.stats.lock().await.clone()
    }

    fn stream_name(&self) -> &str {
        self.source.stream_arn.rsplit('/').next().unwrap_or(&self.source.stream_arn)
    }

    /// Polls every shard until `stop` turns true, then drains each shard to its tip so that
    /// every accepted event is processed before returning.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut retries = eventline_model::retry::Backoff::default().start();
        let shards = loop {
            match self.kinesis.list_shards().stream_name(self.stream_name()).send().await {
                Ok(shards) => break shards,
                Err(error) if retries.wait().await => {
                    tracing::warn!(error = %error_chain(&error), "ListShards failed; retrying");
                }
                Err(error) => return Err(Error::Aws(error_chain(&error))),
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for shard in shards.shards() {
            let poller = Arc::clone(&self);
            let shard_id = shard.shard_id().to_owned();
            let stop = stop.clone();
            tasks.spawn(async move { poller.poll_shard(shard_id, stop).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.map_err(|e| Error::Aws(format!("shard poller stopped: {e}")))??;
        }
        Ok(())
    }

    /// An iterator at the mapping's starting position, or just after the last record read.
    async fn iterator(&self, shard_id: &str, after: Option<&str>) -> Result<String, Error> {
        let request = self.kinesis.get_shard_iterator().stream_name(self.stream_name()).shard_id(shard_id);
        let request = match after {
            Some(sequence_number) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence_number),
            None if self.source.starting_position == "LATEST" => request.shard_iterator_type(ShardIteratorType::Latest),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        request
            .send()
            .await
            .map_err(|e| Error::Aws(error_chain(&e)))?
            .shard_iterator
            .ok_or_else(|| Error::Aws("no shard iterator".into()))
    }

    async fn poll_shard(&self, shard_id: String, stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut iterator = {
            let mut retries = eventline_model::retry::Backoff::default().start();
            loop {
                match self.iterator(&shard_id, None).await {
                    Ok(iterator) => break iterator,
                    Err(error) if retries.wait().await => {
                        tracing::warn!(%error, shard = %shard_id, "GetShardIterator failed; retrying")
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let window = Duration::from_secs(self.source.batching_window_seconds);
        let mut buffer: Vec<Record> = Vec::new();
        let mut first_buffered: Option<Instant> = None;
        // The last record read, to resume after it when an iterator is lost.
        let mut last_read: Option<String> = None;
        let mut errors_in_a_row = 0u32;

        loop {
            let stopping = *stop.borrow();
            let want = self.source.batch_size.saturating_sub(buffer.len()).clamp(1, 10_000) as i32;
            let output = match self.kinesis.get_records().shard_iterator(&iterator).limit(want).send().await {
                Ok(output) => output,
                Err(error) => {
                    // The iterator may have expired or be unusable after the error: back off,
                    // then take a fresh one just after the last record read.
                    errors_in_a_row += 1;
                    let pause = IDLE_POLL.saturating_mul(1 << errors_in_a_row.min(5)).min(MAX_ERROR_PAUSE);
                    tracing::warn!(error = %error_chain(&error), shard = %shard_id, errors_in_a_row, "GetRecords failed; retrying with a new iterator");
                    tokio::time::sleep(pause).await;
                    match self.iterator(&shard_id, last_read.as_deref()).await {
                        Ok(fresh) => iterator = fresh,
                        Err(error) => tracing::warn!(%error, shard = %shard_id, "GetShardIterator failed"),
                    }
                    continue;
                }
            };
            errors_in_a_row = 0;
            if let Some(last) = output.records().last() {
                last_read = Some(last.sequence_number().to_owned());
            }
            let got_nothing = output.records().is_empty();
            let caught_up = got_nothing && output.millis_behind_latest().unwrap_or(0) == 0;
            buffer.extend(output.records().iter().cloned());
            if !buffer.is_empty() {
                first_buffered.get_or_insert_with(Instant::now);
            }
            match output.next_shard_iterator {
                Some(next) => iterator = next,
                None => {
                    // A closed shard: hand over what is left and stop.
                    self.deliver(&shard_id, std::mem::take(&mut buffer)).await;
                    return Ok(());
                }
            }
            let full = buffer.len() >= self.source.batch_size;
            let waited = first_buffered.is_some_and(|t| t.elapsed() >= window);
            if !buffer.is_empty() && (full || waited || caught_up || stopping) {
                self.deliver(&shard_id, std::mem::take(&mut buffer)).await;
                first_buffered = None;
                continue;
            }
            if stopping && caught_up && buffer.is_empty() {
                return Ok(());
            }
            if got_nothing {
                tokio::time::sleep(IDLE_POLL.min(window.max(Duration::from_millis(50)))).await;
            }
        }
    }

    /// Invokes the function until the batch is finished or given up, as the mapping does:
    /// from the reported checkpoint after `batchItemFailures`, in halves after a function
    /// error, until the retries or the record age run out, then to the on-failure destination.
    pub async fn deliver(&self, shard_id: &str, records: Vec<Record>) {
        let last = records.last().map(|r| r.sequence_number().to_owned());
        self.deliver_batch(shard_id, records).await;
        if let Some(last) = last {
            self.finished.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(shard_id.to_owned(), last);
        }
    }

    /// How many records of the stream come after the last one finished on each shard: what a
    /// drain has yet to process (the batch the function is working on included).
    pub async fn unprocessed(&self) -> Result<u64, Error> {
        let shards = self
            .kinesis
            .list_shards()
            .stream_name(self.stream_name())
            .send()
            .await
            .map_err(|e| Error::Aws(error_chain(&e)))?;
        let finished = self.finished.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut count = 0;
        for shard in shards.shards() {
            let mut iterator =
                Some(self.iterator(shard.shard_id(), finished.get(shard.shard_id()).map(String::as_str)).await?);
            while let Some(current) = iterator {
                let output = self
                    .kinesis
                    .get_records()
                    .shard_iterator(current)
                    .limit(10_000)
                    .send()
                    .await
                    .map_err(|e| Error::Aws(error_chain(&e)))?;
                count += output.records().len() as u64;
                if output.records().is_empty() && output.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                iterator = output.next_shard_iterator;
            }
        }
        Ok(count)
    }

    async fn deliver_batch(&self, shard_id: &str, records: Vec<Record>) {
        let mut queue = VecDeque::from([Pending { records, attempts: 0 }]);
        while let Some(mut pending) = queue.pop_front() {
            if pending.records.is_empty() {
                continue;
            }
            if let Some(condition) = self.expired(&pending) {
                self.on_failure(shard_id, &pending, condition).await;
                continue;
            }
            {
                let mut stats = self.stats.lock().await;
                stats.batches += 1;
                stats.records += pending.records.len() as u64;
                stats.retries += u64::from(pending.attempts > 0);
                stats.largest_batch = stats.largest_batch.max(pending.records.len());
            }
            match self.invoke(shard_id, &pending.records).await {
                Ok(None) => {}
                Ok(Some(sequence_number)) => {
                    // A checkpoint: the named record and everything after it are retried.
                    let from = pending.records.iter().position(|r| r.sequence_number() == sequence_number);
                    if let Some(from) = from {
                        pending.records.drain(..from);
                    }
                    pending.attempts += 1;
                    tokio::time::sleep(retry_pause(pending.attempts)).await;
                    queue.push_front(pending);
                }
                Err(error) => {
                    tracing::error!(%error, shard = shard_id, "transform invocation failed");
                    pending.attempts += 1;
                    if self.source.bisect_on_error && pending.records.len() > 1 {
                        let second = pending.records.split_off(pending.records.len() / 2);
                        queue.push_front(Pending { records: second, attempts: pending.attempts });
                    }
                    tokio::time::sleep(retry_pause(pending.attempts)).await;
                    queue.push_front(pending);
                }
            }
        }
    }

    /// Why a batch must not be retried any more, if it must not.
    fn expired(&self, pending: &Pending) -> Option<&'static str> {
        let max_retries = self.source.maximum_retry_attempts;
        if max_retries >= 0 && pending.attempts > max_retries {
            return Some("RetryAttemptsExhausted");
        }
        let max_age = self.source.maximum_record_age_seconds;
        let oldest = pending.records.first().and_then(|r| r.approximate_arrival_timestamp());
        if max_age >= 0
            && let Some(arrival) = oldest
        {
            let age = time::OffsetDateTime::now_utc().unix_timestamp() - arrival.secs();
            if age > max_age {
                return Some("RecordAgeExceeded");
            }
        }
        None
    }

    /// The function's answer: `Ok(Some(seq))` to retry from `seq`, `Ok(None)` when done.
    async fn invoke(&self, shard_id: &str, records: &[Record]) -> Result<Option<String>, String> {
        let event = kinesis_event(records, shard_id, &self.source.stream_arn, &self.region)?;
        let response = self.function.invoke(event).await?;
        if !response.batch_item_failures.is_empty() && !self.source.report_batch_item_failures {
            return Err("batchItemFailures returned but ReportBatchItemFailures is off".into());
        }
        let failures: Vec<Option<&str>> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.as_deref()).collect();
        Ok(checkpoint(&failures, records))
    }

    /// Reports a batch given up on as Lambda does to the mapping's on-failure destination: the
    /// invocation record to a queue, the record with the whole invocation to a bucket.
    async fn on_failure(&self, shard_id: &str, pending: &Pending, condition: &str) {
        self.stats.lock().await.sent_to_on_failure += pending.records.len() as u64;
        let (Some(first), Some(last)) = (pending.records.first(), pending.records.last()) else { return };
        tracing::error!(
            condition,
            shard = shard_id,
            records = pending.records.len(),
            "batch sent to the on-failure destination"
        );
        let Some(arn) = &self.source.on_failure_destination else { return };
        let destination = match Destination::from_arn(arn) {
            Ok(destination) => destination,
            Err(error) => {
                tracing::error!(%error, "cannot report to the on-failure destination");
                return;
            }
        };
        let arrival = |r: &Record| {
            r.approximate_arrival_timestamp()
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok())
        };
        let batch = FailedBatch {
            condition,
            attempts: pending.attempts,
            function_arn: &self.source.function_arn,
            stream_arn: &self.source.stream_arn,
            shard_id,
            first_sequence_number: first.sequence_number(),
            last_sequence_number: last.sequence_number(),
            first_arrival: arrival(first),
            last_arrival: arrival(last),
            size: pending.records.len(),
            at: time::OffsetDateTime::now_utc(),
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let result = match destination {
            Destination::Queue { name } => {
                let body = batch.record(&request_id, None).to_string();
                self.send_with_retries(|| async {
                    let url = self.sqs.get_queue_url().queue_name(&name).send().await.map_err(|e| error_chain(&e))?;
                    self.sqs
                        .send_message()
                        .queue_url(url.queue_url().unwrap_or_default())
                        .message_body(body.clone())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| error_chain(&e))
                })
                .await
            }
            Destination::Bucket { name } => {
                let event = match kinesis_event(&pending.records, shard_id, &self.source.stream_arn, &self.region)
                    .and_then(|event| serde_json::to_string(&event).map_err(|e| e.to_string()))
                {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::error!(%error, "cannot build the failure record");
                        return;
                    }
                };
                let body = batch.record(&request_id, Some(&event)).to_string();
                let key = batch.object_key(&self.source.uuid, &request_id);
                self.send_with_retries(|| async {
                    self.s3
                        .put_object()
                        .bucket(&name)
                        .key(&key)
                        .content_type("application/json")
                        .body(body.clone().into_bytes().into())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| error_chain(&e))
                })
                .await
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "could not report to the on-failure destination");
        }
    }

    async fn send_with_retries<Fut>(&self, send: impl Fn() -> Fut) -> Result<(), String>
    where
        Fut: Future<Output = Result<(), String>>,
    {
        let mut retries = eventline_model::retry::Backoff::default().start();
        loop {
            match send().await {
                Ok(()) => return Ok(()),
                Err(error) if !retries.wait().await => return Err(error),
                Err(_) => {}
            }
        }
    }
}

/// The event exactly as Lambda builds it from GetRecords output.
pub fn kinesis_event(
    records: &[Record],
    shard_id: &str,
    stream_arn: &str,
    region: &str,
) -> Result<KinesisEvent, String> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let arrival = r.approximate_arrival_timestamp().map_or(0.0, |t| t.as_secs_f64());
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key(),
                    "sequenceNumber": r.sequence_number(),
                    "data": STANDARD.encode(r.data().as_ref()),
                    "approximateArrivalTimestamp": arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard_id}:{}", r.sequence_number()),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/eventline-local-transform",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            })
        })
        .collect();
    // Read as the deployed transform reads Lambda's event: arrival times exactly.
    serde_json::from_value(json!({ "Records": records }))
        .map(|eventline_transform::event::StreamEvent(event)| event)
        .map_err(|e| format!("cannot build KinesisEvent: {e}"))
}

/// Where Lambda resumes a batch after the function reported `failures` (item identifiers):
/// at the lowest failed sequence number, compared as numbers, or at the batch's first record
/// when any identifier is missing, empty or not one of the batch's. `None` when nothing failed.
fn checkpoint(failures: &[Option<&str>], records: &[Record]) -> Option<String> {
    let first = records.first()?.sequence_number();
    let mut lowest: Option<&str> = None;
    for failure in failures {
        match failure {
            Some(seq) if records.iter().any(|r| r.sequence_number() == *seq) => {
                if lowest.is_none_or(|low| sequence_order(seq, low).is_lt()) {
                    lowest = Some(seq);
                }
            }
            // Lambda takes such a response as a failure of the whole batch.
            _ => return Some(first.to_owned()),
        }
    }
    lowest.map(str::to_owned)
}

/// Kinesis sequence numbers are decimal numbers of up to 129 digits, beyond any machine
/// integer: the one with more significant digits is the larger, else the digits decide.
fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn retry_pause(attempts: i64) -> Duration {
    Duration::from_millis((100 * attempts.clamp(1, 20)) as u64)
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::primitives::{Blob, DateTime};

    use super::*;

    fn batch(sequence_numbers: &[&str]) -> Vec<Record> {
        sequence_numbers
            .iter()
            .map(|seq| {
                Record::builder().sequence_number(*seq).data(Blob::new("{}")).partition_key("k").build().unwrap()
            })
            .collect()
    }

    #[test]
    fn several_failures_resume_at_the_lowest_sequence_number_compared_as_numbers() {
        // Real sequence numbers differ in length once a shard has been split, so "9" < "10" as
        // numbers but not as text.
        let records = batch(&["9", "10", "49590338271490256608559692538361571095921575989136588898"]);
        let long = "49590338271490256608559692538361571095921575989136588898";
        assert_eq!(checkpoint(&[Some(long), Some("10"), Some("9")], &records), Some("9".into()));
        assert_eq!(checkpoint(&[Some(long), Some("10")], &records), Some("10".into()));
        assert_eq!(checkpoint(&[Some("10"), Some(long)], &records), Some("10".into()));
        assert_eq!(checkpoint(&[Some(long)], &records), Some(long.into()));
        assert_eq!(checkpoint(&[], &records), None);
    }

    #[test]
    fn a_missing_empty_or_unknown_identifier_among_failures_retries_the_whole_batch() {
        let records = batch(&["7", "8", "9"]);
        assert_eq!(checkpoint(&[Some("9"), None], &records), Some("7".into()));
        assert_eq!(checkpoint(&[Some("9"), Some("")], &records), Some("7".into()));
        assert_eq!(checkpoint(&[Some("8"), Some("12")], &records), Some("7".into()));
    }

    #[test]
    fn sequence_numbers_order_as_numbers() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(sequence_order("9", "10"), Less);
        assert_eq!(sequence_order("100", "99"), Greater);
        assert_eq!(sequence_order("0010", "10"), Equal);
        assert_eq!(sequence_order("12", "13"), Less);
    }

    #[test]
    fn arrival_times_keep_their_milliseconds() {
        // 460 and 400 ms print as `.46` and `.4`, which aws_lambda_events alone reads as 46 and 4 ms.
        for millis in
            [1_796_100_465_460_i64, 1_796_100_465_400, 1_796_100_465_416, 1_796_100_465_000, 1_796_100_465_001]
        {
            let record = Record::builder()
                .sequence_number("1")
                .data(Blob::new("{}"))
                .partition_key("k")
                .approximate_arrival_timestamp(DateTime::from_millis(millis))
                .build()
                .unwrap();
            let event =
                kinesis_event(&[record], "shardId-000000000000", "arn:aws:kinesis:us-east-1:1:stream/s", "us-east-1")
                    .unwrap();
            let arrival = event.records[0].kinesis.approximate_arrival_timestamp.0;
            assert_eq!(arrival.timestamp_millis(), millis);
            // As the on-failure destination writes it, and the redrive reads it back.
            let written = serde_json::to_value(&event).unwrap();
            let text = written["Records"][0]["kinesis"]["approximateArrivalTimestamp"].as_str().unwrap().to_owned();
            assert_eq!(text, format!("{}.{:03}", millis / 1000, millis % 1000).trim_end_matches(".000"), "{millis}");
        }
    }
}

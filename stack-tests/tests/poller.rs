//! The local event source mapping's delivery rules, with a stand-in function and the
//! emulator's real failure queue: retries running out, bisection on function errors, and
//! records too old to process.

use eventline_stack_tests as common;

use std::sync::Mutex;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record;
use common::stack;
use eventline_local::LocalStack;
use eventline_local::poller::{Poller, StreamFunction};
use serde_json::Value;

const SHARD: &str = "shardId-000000000000";

/// Records every batch it is given (as sequence numbers) and answers as `behaviour` says.
struct StandIn {
    batches: Mutex<Vec<Vec<String>>>,
    behaviour: Behaviour,
}

enum Behaviour {
    /// Reports the first record of every batch unfinished.
    CheckpointAtFirst,
    /// A function error whenever the batch holds this record.
    CrashOn(String),
    /// Reports these records failed on the first invocation, then finishes.
    FailOnce(Vec<String>),
}

impl StandIn {
    fn new(behaviour: Behaviour) -> Self {
        Self { batches: Mutex::new(Vec::new()), behaviour }
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

impl StreamFunction for &'static StandIn {
    async fn invoke(&self, event: KinesisEvent) -> Result<KinesisEventResponse, String> {
        let sequences: Vec<String> = event.records.iter().map(|r| r.kinesis.sequence_number.clone()).collect();
        self.batches.lock().unwrap().push(sequences.clone());
        let mut response = KinesisEventResponse::default();
        match &self.behaviour {
            Behaviour::CheckpointAtFirst => {
                let mut failure = KinesisBatchItemFailure::default();
                failure.item_identifier = sequences.first().cloned();
                response.batch_item_failures.push(failure);
                Ok(response)
            }
            Behaviour::CrashOn(bad) if sequences.contains(bad) => Err("crashed".into()),
            Behaviour::CrashOn(_) => Ok(response),
            Behaviour::FailOnce(failed) if self.batches.lock().unwrap().len() == 1 => {
                for seq in failed {
                    let mut failure = KinesisBatchItemFailure::default();
                    failure.item_identifier = Some(seq.clone());
                    response.batch_item_failures.push(failure);
                }
                Ok(response)
            }
            Behaviour::FailOnce(_) => Ok(response),
        }
    }
}

fn records(count: usize, arrived_seconds_ago: i64) -> Vec<Record> {
    let sequence_numbers: Vec<String> = (1..=count).map(|i| format!("{i:056}")).collect();
    records_numbered(&sequence_numbers, arrived_seconds_ago)
}

fn records_numbered(sequence_numbers: &[String], arrived_seconds_ago: i64) -> Vec<Record> {
    let arrival = time::OffsetDateTime::now_utc().unix_timestamp() - arrived_seconds_ago;
    sequence_numbers
        .iter()
        .zip(1..)
        .map(|(seq, i)| {
            Record::builder()
                .sequence_number(seq)
                .partition_key(format!("k{i}"))
                .data(Blob::new(format!("{{\"n\":{i}}}")))
                .approximate_arrival_timestamp(DateTime::from_secs(arrival))
                .build()
                .unwrap()
        })
        .collect()
}

fn poller(stack: &LocalStack, function: &'static StandIn) -> Poller<&'static StandIn> {
    let source = stack.manifest.event_sources[0].clone();
    Poller::new(function, &stack.sdk, source, stack.manifest.region.clone())
}

/// What the mapping wrote to the on-failure destination (the template's bucket), after
/// checking each object's key and that its payload is the invocation with every record.
async fn failure_reports(stack: &LocalStack) -> Vec<Value> {
    let s3 =
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&stack.sdk).force_path_style(true).build());
    let bucket = &stack.manifest.outputs["StreamFailureBucketName"];
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut reports = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap();
        let prefix = format!("aws/lambda/{}/{SHARD}/", stack.manifest.event_sources[0].uuid);
        assert!(key.starts_with(&prefix), "{key} is not under {prefix}");
        let body = s3.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap();
        let report: Value = serde_json::from_slice(&body.into_bytes()).unwrap();
        let event: KinesisEvent = serde_json::from_str(report["payload"].as_str().unwrap()).unwrap();
        assert_eq!(event.records.len() as u64, report["KinesisBatchInfo"]["batchSize"].as_u64().unwrap());
        assert_eq!(
            event.records.first().map(|r| r.kinesis.sequence_number.as_str()),
            report["KinesisBatchInfo"]["startSequenceNumber"].as_str()
        );
        reports.push(report);
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_retries_run_out_the_batch_goes_to_the_on_failure_destination() {
    let stack = stack(&[("TransformMaxRetries", "2")]).await;
    let function: &'static StandIn = Box::leak(Box::new(StandIn::new(Behaviour::CheckpointAtFirst)));
    let poller = poller(&stack, function);
    poller.deliver(SHARD, records(3, 0)).await;

    assert_eq!(function.batches().len(), 3, "the first try and two retries");
    let reports = failure_reports(&stack).await;
    assert_eq!(reports.len(), 1);
    let info = &reports[0]["KinesisBatchInfo"];
    assert_eq!(reports[0]["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!((info["batchSize"].as_u64(), info["shardId"].as_str()), (Some(3), Some(SHARD)));
    assert_eq!(info["startSequenceNumber"], format!("{:056}", 1));
    assert_eq!(info["endSequenceNumber"], format!("{:056}", 3));
    assert_eq!(poller.stats().await.sent_to_on_failure, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_bisects_the_batch_until_the_bad_record_stands_alone() {
    let stack = stack(&[("TransformMaxRetries", "2")]).await;
    let bad = format!("{:056}", 3);
    let function: &'static StandIn = Box::leak(Box::new(StandIn::new(Behaviour::CrashOn(bad.clone()))));
    poller(&stack, function).deliver(SHARD, records(4, 0)).await;

    let short = |batch: &Vec<String>| batch.iter().map(|s| s.trim_start_matches('0').to_owned()).collect::<Vec<_>>();
    let batches: Vec<Vec<String>> = function.batches().iter().map(short).collect();
    assert_eq!(batches, [vec!["1", "2", "3", "4"], vec!["1", "2"], vec!["3", "4"], vec!["3"], vec!["4"]]);
    let reports = failure_reports(&stack).await;
    assert_eq!(reports.len(), 1, "only the record that keeps failing is given up");
    assert_eq!(reports[0]["KinesisBatchInfo"]["startSequenceNumber"], bad);
    assert_eq!(reports[0]["KinesisBatchInfo"]["batchSize"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_maximum_age_are_reported_not_processed() {
    let stack = stack(&[("TransformMaxRecordAgeSeconds", "60")]).await;
    let function: &'static StandIn = Box::leak(Box::new(StandIn::new(Behaviour::CrashOn(String::new()))));
    poller(&stack, function).deliver(SHARD, records(2, 3_600)).await;

    assert!(function.batches().is_empty(), "expired records are not invoked");
    let reports = failure_reports(&stack).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(reports[0]["KinesisBatchInfo"]["batchSize"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_reported_failures_resume_the_batch_at_the_lowest_sequence_number() {
    let stack = stack(&[]).await;
    // Of different lengths, as after a resharding: 9 is lower than 10, though not as text.
    let numbered: Vec<String> = ["8", "9", "10", "11"].map(str::to_owned).to_vec();
    let failed = vec!["11".to_owned(), "10".to_owned(), "9".to_owned()];
    let function: &'static StandIn = Box::leak(Box::new(StandIn::new(Behaviour::FailOnce(failed))));
    let poller = poller(&stack, function);
    poller.deliver(SHARD, records_numbered(&numbered, 0)).await;

    assert_eq!(function.batches(), [vec!["8", "9", "10", "11"], vec!["9", "10", "11"]]);
    assert_eq!(poller.stats().await.sent_to_on_failure, 0);
}

//! Poison records go to an SQS queue with their raw data and the reason, so nothing is lost
//! and the shard moves on.

use std::future::Future;
use std::sync::{Arc, LazyLock};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_model::aws::error_chain;
use eventline_model::batch;
use eventline_model::retry::Backoff;
use serde::Serialize;

/// Raw data beyond this many bytes is cut, so each message stays well under SQS's limit.
pub const MAX_RAW_BYTES: usize = 96 * 1024;
/// Reasons can quote the record (a parser names the value it choked on): cut them too.
pub const MAX_REASON_CHARS: usize = 1024;
/// SQS's limit on one message, and on one SendMessageBatch call.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const MAX_MESSAGES_PER_BATCH: usize = 10;

/// The message body of one poison record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoisonMessage {
    pub reason: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub event_source_arn: Option<String>,
    pub data_base64: String,
    /// Length of the record's data; `data_base64` holds the first `MAX_RAW_BYTES` of it.
    pub data_bytes: usize,
    pub truncated: bool,
}

impl PoisonMessage {
    pub fn new(
        reason: String,
        shard_id: &str,
        sequence_number: &str,
        partition_key: &str,
        event_source_arn: Option<String>,
        data: &[u8],
    ) -> Self {
        let kept = &data[..data.len().min(MAX_RAW_BYTES)];
        Self {
            reason: sqs_text(&eventline_model::validation::echo(&reason, MAX_REASON_CHARS)),
            shard_id: sqs_text(shard_id),
            sequence_number: sqs_text(sequence_number),
            partition_key: sqs_text(partition_key),
            event_source_arn,
            data_base64: STANDARD.encode(kept),
            data_bytes: data.len(),
            truncated: kept.len() < data.len(),
        }
    }

    fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// SQS refuses a message holding characters outside XML's set (U+FFFE, U+FFFF, and the
/// controls JSON leaves unescaped are not among them, but a partition key or a quoted
/// value can hold the former): replace them, so one record cannot make its message
/// undeliverable.
fn sqs_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
            _ => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// Why a poison message did not reach the queue. Either way the record is retried (its
/// batch checkpoints there), so nothing is dropped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeadLetterError {
    /// The queue refused this message (a failed entry of SendMessageBatch).
    #[error("the queue refused the message: {code}: {message}")]
    Refused { code: String, message: String },
    /// The call as a whole failed, or could not be built.
    #[error("the queue did not take the messages")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl DeadLetterError {
    pub fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(error.into()))
    }
}

/// Where poison records go.
pub trait DeadLetters: Send + Sync {
    /// Sends every message; the result says, per message and in order, whether it went.
    fn send(&self, messages: &[PoisonMessage]) -> impl Future<Output = Vec<Result<(), DeadLetterError>>> + Send;
}

/// How the SQS client comes to be: given, or built when the first poison record needs it.
type LazyClient = LazyLock<aws_sdk_sqs::Client, Box<dyn FnOnce() -> aws_sdk_sqs::Client + Send>>;

#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Arc<LazyClient>,
    queue_url: String,
    backoff: Backoff,
}

impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, backoff: Backoff) -> Self {
        Self::with_client_built_by(Box::new(move || client), queue_url, backoff)
    }

    /// Builds the client from `sdk` when the first message is sent, not at start-up. Most
    /// environments never see a poison record, and building an SDK client is about a third
    /// of what a function adds to the runtime's own cold start (README, "Cold start").
    pub fn built_on_first_use(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>, backoff: Backoff) -> Self {
        let sdk = sdk.clone();
        Self::with_client_built_by(Box::new(move || aws_sdk_sqs::Client::new(&sdk)), queue_url, backoff)
    }

    fn with_client_built_by(
        build: Box<dyn FnOnce() -> aws_sdk_sqs::Client + Send>,
        queue_url: impl Into<String>,
        backoff: Backoff,
    ) -> Self {
        Self { client: Arc::new(LazyLock::new(build)), queue_url: queue_url.into(), backoff }
    }

    /// One SendMessageBatch call; the ids are message indexes.
    async fn send_batch(
        &self,
        messages: &[PoisonMessage],
        indexes: &[usize],
        outcome: &mut [Result<(), DeadLetterError>],
    ) {
        let entries: Result<Vec<_>, _> = indexes
            .iter()
            .map(|&i| {
                SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(messages[i].body()).build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                let error = DeadLetterError::unavailable(error);
                indexes.iter().for_each(|&i| outcome[i] = Err(error.clone()));
                return;
            }
        };
        match self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "SendMessageBatch failed");
                let error = DeadLetterError::unavailable(error);
                indexes.iter().for_each(|&i| outcome[i] = Err(error.clone()));
            }
            Ok(output) => {
                indexes.iter().for_each(|&i| outcome[i] = Ok(()));
                for failed in output.failed() {
                    if let Ok(i) = failed.id().parse::<usize>()
                        && i < outcome.len()
                    {
                        outcome[i] = Err(DeadLetterError::Refused {
                            code: failed.code().to_owned(),
                            message: failed.message().unwrap_or_default().to_owned(),
                        });
                    }
                }
            }
        }
    }
}

impl DeadLetters for SqsDeadLetters {
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    async fn send(&self, messages: &[PoisonMessage]) -> Vec<Result<(), DeadLetterError>> {
        let mut outcome: Vec<Result<(), DeadLetterError>> =
            vec![Err(DeadLetterError::unavailable("not sent")); messages.len()];
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut retries = self.backoff.start();
        loop {
            for batch in batches(messages, &pending) {
                self.send_batch(messages, &batch, &mut outcome).await;
            }
            pending.retain(|&i| outcome[i].is_err());
            if pending.is_empty() {
                break;
            }
            tracing::warn!(failed = pending.len(), retries = retries.count(), "dead-letter messages not sent");
            if !retries.wait().await {
                break;
            }
        }
        outcome
    }
}

/// Groups of at most 10 messages and 256 KiB, as SendMessageBatch takes them.
fn batches(messages: &[PoisonMessage], indexes: &[usize]) -> Vec<Vec<usize>> {
    let sizes: Vec<usize> = indexes.iter().map(|&i| messages[i].body().len()).collect();
    batch::split(&sizes, MAX_MESSAGES_PER_BATCH, MAX_MESSAGE_BYTES, |size| *size)
        .into_iter()
        .map(|range| indexes[range].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8]) -> PoisonMessage {
        PoisonMessage::new("bad".into(), "shardId-0", "1", "pk", None, data)
    }

    #[test]
    fn large_data_is_truncated_and_says_so() {
        let m = message(&vec![7u8; MAX_RAW_BYTES + 10]);
        assert!(m.truncated);
        assert_eq!(m.data_bytes, MAX_RAW_BYTES + 10);
        assert_eq!(STANDARD.decode(&m.data_base64).unwrap().len(), MAX_RAW_BYTES);
        assert!(!message(b"small").truncated);
    }

    #[test]
    fn a_message_stays_under_the_sqs_limit_whatever_the_record_holds() {
        // A parser error quoting a 150 KB value, a long partition key, the most raw data kept.
        let reason = format!("invalid value: string \"{}\"", "\"".repeat(150_000));
        let m = PoisonMessage::new(reason, "shardId-0", "1", &"k".repeat(256), None, &vec![b'"'; 200_000]);
        assert!(m.body().len() <= MAX_MESSAGE_BYTES, "{} bytes", m.body().len());
        assert_eq!(m.reason.chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn characters_sqs_refuses_are_replaced() {
        let m = PoisonMessage::new("bad \u{FFFF} \u{1}".into(), "s", "1", "key\u{FFFE}", None, b"x");
        assert_eq!(m.partition_key, "key\u{FFFD}");
        assert_eq!(m.reason, "bad \u{FFFD} \u{FFFD}");
    }

    #[test]
    fn batches_respect_count_and_size() {
        let small: Vec<PoisonMessage> = (0..25).map(|_| message(b"x")).collect();
        let sizes: Vec<usize> = batches(&small, &(0..25).collect::<Vec<_>>()).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<PoisonMessage> = (0..4).map(|_| message(&vec![1u8; MAX_RAW_BYTES])).collect();
        let sizes: Vec<usize> = batches(&big, &[0, 1, 2, 3]).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn the_client_is_built_once_when_the_first_message_goes_not_at_start_up() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let build = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            // Nothing listens on port 1: each call fails at once, on loopback.
            let config = aws_sdk_sqs::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "test"))
                .endpoint_url("http://127.0.0.1:1")
                .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
                .build();
            aws_sdk_sqs::Client::from_conf(config)
        };
        let dead_letters = SqsDeadLetters::with_client_built_by(
            Box::new(build),
            "http://127.0.0.1:1/000000000000/dead-letters",
            Backoff::default().with_budget(std::time::Duration::ZERO),
        );
        let clone = dead_letters.clone();
        assert_eq!(built.load(Ordering::SeqCst), 0, "built before it was needed");

        let outcome = dead_letters.send(&[message(b"x"), message(b"y")]).await;
        assert!(outcome.iter().all(Result::is_err), "{outcome:?}");
        assert_eq!(built.load(Ordering::SeqCst), 1);
        clone.send(&[message(b"z")]).await;
        assert_eq!(built.load(Ordering::SeqCst), 1, "a clone shares the client");
    }
}

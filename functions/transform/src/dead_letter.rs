//! Poison records go to an SQS queue with their raw data and the reason, so nothing is lost
//! and the shard moves on.

use std::future::Future;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_model::aws::error_chain;
use eventline_model::sink::Backoff;
use serde::Serialize;

/// Raw data beyond this many bytes is cut, so each message stays well under SQS's limit.
pub const MAX_RAW_BYTES: usize = 96 * 1024;
const MAX_MESSAGES_PER_BATCH: usize = 10;
const MAX_BYTES_PER_BATCH: usize = 256 * 1024;

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
            reason,
            shard_id: shard_id.to_owned(),
            sequence_number: sequence_number.to_owned(),
            partition_key: partition_key.to_owned(),
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

/// Where poison records go.
pub trait DeadLetters: Send + Sync {
    /// Sends every message; the result says, per message and in order, whether it went.
    fn send(&self, messages: &[PoisonMessage]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
}

#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Backoff,
}

impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into(), backoff: Backoff::default() }
    }

    /// One SendMessageBatch call; the ids are message indexes.
    async fn send_batch(&self, messages: &[PoisonMessage], indexes: &[usize], outcome: &mut [Result<(), String>]) {
        let entries: Result<Vec<_>, _> = indexes
            .iter()
            .map(|&i| {
                SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(messages[i].body()).build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                indexes.iter().for_each(|&i| outcome[i] = Err(error.to_string()));
                return;
            }
        };
        match self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
            Err(error) => {
                let chain = error_chain(&error);
                indexes.iter().for_each(|&i| outcome[i] = Err(chain.clone()));
            }
            Ok(output) => {
                indexes.iter().for_each(|&i| outcome[i] = Ok(()));
                for failed in output.failed() {
                    if let Ok(i) = failed.id().parse::<usize>()
                        && i < outcome.len()
                    {
                        outcome[i] = Err(format!("{}: {}", failed.code(), failed.message().unwrap_or_default()));
                    }
                }
            }
        }
    }
}

impl DeadLetters for SqsDeadLetters {
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    async fn send(&self, messages: &[PoisonMessage]) -> Vec<Result<(), String>> {
        let mut outcome: Vec<Result<(), String>> = vec![Err("not sent".to_owned()); messages.len()];
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        for attempt in 0..self.backoff.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff.pause(attempt)).await;
            }
            for batch in batches(messages, &pending) {
                self.send_batch(messages, &batch, &mut outcome).await;
            }
            pending.retain(|&i| outcome[i].is_err());
            if pending.is_empty() {
                break;
            }
            tracing::warn!(failed = pending.len(), attempt, "dead-letter messages not sent");
        }
        outcome
    }
}

/// Groups of at most 10 messages and 256 KiB, as SendMessageBatch takes them.
fn batches(messages: &[PoisonMessage], indexes: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in indexes {
        let size = messages[i].body().len();
        match groups.last_mut() {
            Some(group) if group.len() < MAX_MESSAGES_PER_BATCH && bytes + size <= MAX_BYTES_PER_BATCH => {
                group.push(i);
                bytes += size;
            }
            _ => {
                groups.push(vec![i]);
                bytes = size;
            }
        }
    }
    groups
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
    fn batches_respect_count_and_size() {
        let small: Vec<PoisonMessage> = (0..25).map(|_| message(b"x")).collect();
        let sizes: Vec<usize> = batches(&small, &(0..25).collect::<Vec<_>>()).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<PoisonMessage> = (0..4).map(|_| message(&vec![1u8; MAX_RAW_BYTES])).collect();
        let sizes: Vec<usize> = batches(&big, &[0, 1, 2, 3]).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1, 1]);
    }
}

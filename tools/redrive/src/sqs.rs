//! The dead-letter queue in SQS, and the objects in S3 that hold the records too large for
//! their message.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, QueueAttributeName,
};
use eventline_aws::error_chain;
use eventline_model::retry::Backoff;

use crate::dead_letter::DataObject;
use crate::error::{Error, classify};
use crate::redrive::{DeadLetterQueue, FailureBucket, QueueMessage};
use crate::s3::S3Bucket;

/// SQS's limit on messages per receive and per batch call.
const MAX_MESSAGES_PER_CALL: usize = 10;
/// Long polling asks every SQS server, so an empty answer means the queue is empty (short
/// polling samples a few servers and can answer empty while messages wait).
const WAIT_SECONDS: i32 = 1;
const QUEUE_HINT: &str = "check --queue-url (the stack output DeadLetterQueueUrl) and AWS_REGION";
/// The query protocol's code for a missing queue, which some endpoints still answer with.
const NON_EXISTENT_QUEUE: &str = "AWS.SimpleQueueService.NonExistentQueue";

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    backoff: Backoff,
    s3: aws_sdk_s3::Client,
    /// The only bucket objects are read from, when known (`--bucket`).
    bucket: Option<String>,
}

/// An entry a batch call did not carry out.
struct Refused {
    id: String,
    reason: String,
    /// The request was wrong (an expired receipt handle): trying again cannot help.
    sender_fault: bool,
}

impl SqsQueue {
    /// `s3` reads the objects messages name, from `bucket` only when it is given.
    pub fn new(
        client: aws_sdk_sqs::Client,
        url: impl Into<String>,
        backoff: Backoff,
        s3: aws_sdk_s3::Client,
        bucket: Option<String>,
    ) -> Self {
        Self { client, url: url.into(), backoff, s3, bucket }
    }

    fn what(&self) -> String {
        format!("queue {}", self.url)
    }

    fn not_found(&self) -> Error {
        Error::NotFound { what: self.what(), hint: QUEUE_HINT.to_owned() }
    }

    /// Calls `call` with batches of (entry id, receipt handle), re-trying entries that failed
    /// for reasons other than the request itself; a result per receipt, in order.
    async fn in_batches<F, Fut>(&self, receipts: &[String], call: F) -> Vec<Result<(), String>>
    where
        F: Fn(Vec<(String, String)>) -> Fut,
        Fut: Future<Output = Result<Vec<Refused>, String>>,
    {
        let mut outcome: Vec<Result<(), String>> = vec![Ok(()); receipts.len()];
        let mut pending: Vec<usize> = (0..receipts.len()).collect();
        let mut retries = self.backoff.start();
        while !pending.is_empty() {
            let mut again = Vec::new();
            for batch in pending.chunks(MAX_MESSAGES_PER_CALL) {
                batch.iter().for_each(|&i| outcome[i] = Ok(()));
                let entries = batch.iter().map(|&i| (i.to_string(), receipts[i].clone())).collect();
                match call(entries).await {
                    Ok(refused) => {
                        for entry in refused {
                            let Some(i) = entry.id.parse::<usize>().ok().filter(|i| batch.contains(i)) else {
                                continue;
                            };
                            outcome[i] = Err(entry.reason);
                            if !entry.sender_fault {
                                again.push(i);
                            }
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "an SQS batch call failed");
                        batch.iter().for_each(|&i| outcome[i] = Err(reason.clone()));
                        again.extend_from_slice(batch);
                    }
                }
            }
            pending = again;
            if !pending.is_empty() && !retries.wait().await {
                break;
            }
        }
        outcome
    }
}

impl DeadLetterQueue for SqsQueue {
    #[tracing::instrument(skip(self), fields(queue = %self.url))]
    async fn depth(&self) -> Result<u64, Error> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|error| {
                classify(&error, "sqs:GetQueueAttributes", &self.what(), |error| {
                    (matches!(error, GetQueueAttributesError::QueueDoesNotExist(_))
                        || error.code() == Some(NON_EXISTENT_QUEUE))
                    .then(|| self.not_found())
                })
            })?;
        // For the progress bar only: an approximation anyway.
        let depth = output.attributes().and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages));
        Ok(depth.and_then(|d| d.parse().ok()).unwrap_or(0))
    }

    #[tracing::instrument(skip(self), fields(queue = %self.url))]
    async fn receive(&self, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        let visibility = i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX);
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(MAX_MESSAGES_PER_CALL as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await
            .map_err(|error| {
                classify(&error, "sqs:ReceiveMessage", &self.what(), |error| {
                    (matches!(error, ReceiveMessageError::QueueDoesNotExist(_))
                        || error.code() == Some(NON_EXISTENT_QUEUE))
                    .then(|| self.not_found())
                })
            })?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                })
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(queue = %self.url, messages = receipts.len()))]
    async fn delete(&self, receipts: &[String]) -> Vec<Result<(), String>> {
        self.in_batches(receipts, |entries| async move {
            let entries = entries
                .into_iter()
                .map(|(id, receipt)| DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(receipt).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            Ok(output.failed().iter().map(refused).collect())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(queue = %self.url, messages = receipts.len()))]
    async fn release(&self, receipts: &[String]) -> Vec<Result<(), String>> {
        self.in_batches(receipts, |entries| async move {
            let entries = entries
                .into_iter()
                .map(|(id, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let output = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            Ok(output.failed().iter().map(refused).collect())
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(queue = %self.url))]
    async fn read_object(&self, object: &DataObject) -> Result<Vec<u8>, Error> {
        if let Some(bucket) = self.bucket.as_ref().filter(|bucket| **bucket != object.bucket) {
            return Err(Error::Refused {
                action: "s3:GetObject",
                what: format!("s3://{}/{}", object.bucket, object.key),
                detail: format!("the message names another bucket than {bucket} (--bucket)"),
            });
        }
        S3Bucket::new(self.s3.clone(), &object.bucket).read(&object.key).await
    }
}

fn refused(entry: &aws_sdk_sqs::types::BatchResultErrorEntry) -> Refused {
    Refused {
        id: entry.id().to_owned(),
        reason: format!("{}: {}", entry.code(), entry.message().unwrap_or_default()),
        sender_fault: entry.sender_fault(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_are_read_from_the_given_bucket_only() {
        // Nothing listens on port 1: a call would fail at once, on loopback.
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            "http://127.0.0.1:1/000000000000/dead-letters",
            Backoff::default(),
            aws_sdk_s3::Client::new(&sdk),
            Some("failures".into()),
        );
        let elsewhere = DataObject { bucket: "someone-elses".into(), key: "dead-letters/s/1".into() };
        let error = queue.read_object(&elsewhere).await.unwrap_err();
        assert!(
            matches!(&error, Error::Refused { detail, .. } if detail.contains("another bucket than failures")),
            "{error}"
        );
    }
}

//! Counting received events, for the metrics' queue depth: exactly once per request,
//! however often the call is retried.

use std::future::Future;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use eventline_aws::item::{n, s};
use eventline_aws::keys::{self, attr};
use eventline_aws::{error_chain, refused_for_good};
use eventline_model::IngestId;
use eventline_model::retry::{Backoff, MIN_ATTEMPT_TIME};

/// The received total could not be updated within the retry budget; the last error is the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("the received counter was not updated")]
pub struct CounterError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Adds accepted events to the running total of events received.
pub trait ReceivedCounter: Send + Sync {
    /// Adds `accepted` once for `request`: calling again with the same request adds nothing.
    fn add(&self, request: &IngestId, accepted: u64) -> impl Future<Output = Result<(), CounterError>> + Send;
}

/// The counter in DynamoDB, spread over several items so concurrent requests do not all
/// write one item. Each request's increment is a transaction of one action with the
/// request's token as its `ClientRequestToken`: DynamoDB applies a repeated transaction
/// with the same token and parameters once (for ten minutes, far longer than the retries
/// here), so a retry after a lost answer adds nothing. One transactional write of a small
/// item: 2 write units a request.
#[derive(Debug, Clone)]
pub struct DynamoReceivedCounter {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    backoff: Backoff,
}

impl DynamoReceivedCounter {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>, backoff: Backoff) -> Self {
        Self { client, table_name: table_name.into(), backoff }
    }

    /// The request's increment: the same on every try (its slot comes from the request's
    /// token, its time is the first try's), as an idempotent retry must be.
    fn increment(&self, request: &IngestId, accepted: u64, now_ms: i128) -> Result<TransactWriteItem, CounterError> {
        let update = Update::builder()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::ingest_sk(slot_of(request))))
            // Placeholders, because attribute names may be DynamoDB reserved words.
            .update_expression("ADD #received :n SET #first = if_not_exists(#first, :now)")
            .expression_attribute_names("#received", attr::RECEIVED)
            .expression_attribute_names("#first", attr::FIRST_RECEIVED_MS)
            .expression_attribute_values(":n", n(accepted))
            .expression_attribute_values(":now", n(now_ms))
            .build()
            .map_err(|e| CounterError(e.into()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// The counter slot of a request: spread evenly, the same for every try.
fn slot_of(request: &IngestId) -> u32 {
    let hash = request
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    (hash % u64::from(keys::INGEST_COUNTER_SLOTS)) as u32
}

impl ReceivedCounter for DynamoReceivedCounter {
    #[tracing::instrument(skip(self))]
    async fn add(&self, request: &IngestId, accepted: u64) -> Result<(), CounterError> {
        let mut retries = self.backoff.start();
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        loop {
            let call = self
                .client
                .transact_write_items()
                .transact_items(self.increment(request, accepted, now_ms)?)
                .client_request_token(request.as_str())
                .send();
            let time = retries.remaining().max(MIN_ATTEMPT_TIME);
            let Ok(result) = tokio::time::timeout(time, call).await else {
                // No answer in time: it may have gone through; a retry with the same token
                // is applied only if it did not.
                if !retries.wait().await {
                    return Err(CounterError(format!("no answer within {time:?}").into()));
                }
                continue;
            };
            match result {
                Ok(_) => return Ok(()),
                Err(error) if refused_for_good(&error) => return Err(CounterError(error.into())),
                Err(error) => {
                    let chain = error_chain(&error);
                    tracing::warn!(error = %chain, retries = retries.count(), "received counter not updated");
                    if !retries.wait().await {
                        return Err(CounterError(error.into()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> DynamoReceivedCounter {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        DynamoReceivedCounter::new(aws_sdk_dynamodb::Client::from_conf(config), "t", Backoff::default())
    }

    #[test]
    fn every_try_of_a_request_sends_the_same_increment_as_an_idempotent_retry_must() {
        let request = IngestId::generate();
        let counter = counter();
        assert_eq!(counter.increment(&request, 7, 1_000).unwrap(), counter.increment(&request, 7, 1_000).unwrap());
        assert_eq!(slot_of(&request), slot_of(&request));
    }

    #[test]
    fn requests_spread_over_every_slot() {
        let mut used = std::collections::HashSet::new();
        for _ in 0..1_000 {
            used.insert(slot_of(&IngestId::generate()));
        }
        assert_eq!(used.len(), keys::INGEST_COUNTER_SLOTS as usize);
        assert!(used.iter().all(|slot| *slot < keys::INGEST_COUNTER_SLOTS));
    }
}

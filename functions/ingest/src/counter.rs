//! Counting received events, for the metrics' queue depth: exactly once per request,
//! however often the call is retried.

use std::future::Future;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use eventline_aws::item::{Item, n, s};
use eventline_aws::keys::{self, attr};
use eventline_aws::{error_chain, refused_for_good};
use eventline_model::IngestId;
use eventline_model::retry::{Backoff, MIN_ATTEMPT_TIME};
use rand::Rng;

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
/// write one item. Each request writes a marker in the same transaction as its increment;
/// a retry of a transaction that went through finds the marker and adds nothing.
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

    fn actions(&self, request: &IngestId, accepted: u64) -> Result<Vec<TransactWriteItem>, CounterError> {
        let now = time::OffsetDateTime::now_utc();
        let now_ms = now.unix_timestamp_nanos() / 1_000_000;
        let marker = Put::builder()
            .table_name(&self.table_name)
            .set_item(Some(Item::from([
                (keys::PK.to_owned(), s(keys::received_pk(request))),
                (keys::SK.to_owned(), s(keys::RECEIVED_SK)),
                (keys::EXPIRES_AT.to_owned(), n(now.unix_timestamp() + keys::RECEIVED_MARKER_TTL_SECONDS)),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| CounterError(e.into()))?;
        let slot = rand::rng().random_range(0..keys::INGEST_COUNTER_SLOTS);
        let increment = Update::builder()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::ingest_sk(slot)))
            // Placeholders, because attribute names may be DynamoDB reserved words.
            .update_expression("ADD #received :n SET #first = if_not_exists(#first, :now)")
            .expression_attribute_names("#received", attr::RECEIVED)
            .expression_attribute_names("#first", attr::FIRST_RECEIVED_MS)
            .expression_attribute_values(":n", n(accepted))
            .expression_attribute_values(":now", n(now_ms))
            .build()
            .map_err(|e| CounterError(e.into()))?;
        Ok(vec![
            TransactWriteItem::builder().put(marker).build(),
            TransactWriteItem::builder().update(increment).build(),
        ])
    }
}

/// The marker's condition failed: an earlier try of this request already counted it.
fn already_counted<R>(error: &SdkError<TransactWriteItemsError, R>) -> bool {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
        return false;
    };
    cancelled.cancellation_reasons().first().and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}

impl ReceivedCounter for DynamoReceivedCounter {
    #[tracing::instrument(skip(self))]
    async fn add(&self, request: &IngestId, accepted: u64) -> Result<(), CounterError> {
        let mut retries = self.backoff.start();
        loop {
            let actions = self.actions(request, accepted)?;
            let call = self.client.transact_write_items().set_transact_items(Some(actions)).send();
            let time = retries.remaining().max(MIN_ATTEMPT_TIME);
            let Ok(result) = tokio::time::timeout(time, call).await else {
                // No answer in time: it may have gone through; a retry would find the marker.
                if !retries.wait().await {
                    return Err(CounterError(format!("no answer within {time:?}").into()));
                }
                continue;
            };
            match result {
                Ok(_) => return Ok(()),
                Err(error) if already_counted(&error) => return Ok(()),
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

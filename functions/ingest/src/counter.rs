//! Counting received events, for the metrics' queue depth.

use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use eventline_model::aws::error_chain;
use eventline_model::keys;
use rand::Rng;

/// Adds accepted events to the running total of events received.
pub trait ReceivedCounter: Send + Sync {
    fn add(&self, accepted: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// The counter in DynamoDB, spread over several items so concurrent requests do not
/// all write one item.
#[derive(Debug, Clone)]
pub struct DynamoReceivedCounter {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoReceivedCounter {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self { client, table_name: table_name.into() }
    }
}

impl ReceivedCounter for DynamoReceivedCounter {
    #[tracing::instrument(skip(self))]
    async fn add(&self, accepted: u64) -> Result<(), String> {
        let slot = rand::rng().random_range(0..keys::INGEST_COUNTER_SLOTS);
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key(keys::PK, AttributeValue::S(keys::METRICS_PK.to_owned()))
            .key(keys::SK, AttributeValue::S(keys::ingest_sk(slot)))
            // Placeholders, because attribute names may be DynamoDB reserved words.
            .update_expression("ADD #received :n SET #first = if_not_exists(#first, :now)")
            .expression_attribute_names("#received", "received")
            .expression_attribute_names("#first", "first_received_ms")
            .expression_attribute_values(":n", AttributeValue::N(accepted.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

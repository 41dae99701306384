//! The event store in DynamoDB: one TransactWriteItems per group of entries, holding every
//! conditional put and the counter increments they imply, so an event and its count commit
//! together or not at all.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use eventline_model::aws::error_chain;
use eventline_model::aws::item::{Item, n, s, to_item};
use eventline_model::keys;
use eventline_model::sink::Backoff;
use time::OffsetDateTime;

use crate::store::{CounterDelta, Entry, EventStore, Outcome, StoreError};

#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    backoff: Backoff,
}

impl DynamoEventStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self { client, table_name: table_name.into(), backoff: Backoff { attempts: 6, ..Backoff::default() } }
    }
}

/// Where an entry stands while its group is being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    StoreEvent,
    MarkDuplicate,
    MarkPoison,
    Done(Outcome),
}

impl Step {
    fn outcome_if_written(self) -> Outcome {
        match self {
            Step::StoreEvent => Outcome::Stored,
            Step::MarkDuplicate => Outcome::Duplicate,
            Step::MarkPoison => Outcome::Failed,
            Step::Done(outcome) => outcome,
        }
    }
}

impl EventStore for DynamoEventStore {
    #[tracing::instrument(skip(self, entries), fields(entries = entries.len()))]
    async fn commit(&self, shard_id: &str, entries: &[Entry]) -> Result<Vec<Outcome>, StoreError> {
        let mut steps: Vec<Step> = entries
            .iter()
            .map(|entry| match entry {
                Entry::Event(_) => Step::StoreEvent,
                Entry::Duplicate { .. } => Step::MarkDuplicate,
                Entry::Poison { .. } => Step::MarkPoison,
            })
            .collect();
        let mut transient_failures = 0;
        loop {
            let pending: Vec<usize> = (0..entries.len()).filter(|&i| !matches!(steps[i], Step::Done(_))).collect();
            if pending.is_empty() {
                break;
            }
            let mut delta = CounterDelta::default();
            for &i in &pending {
                delta.count(&entries[i], steps[i].outcome_if_written());
            }
            let mut actions: Vec<TransactWriteItem> =
                pending.iter().map(|&i| self.put_action(&entries[i], steps[i])).collect::<Result<_, _>>()?;
            actions.extend(self.counter_actions(shard_id, &delta, OffsetDateTime::now_utc())?);

            let result = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
            let failure = match result {
                Ok(_) => {
                    for &i in &pending {
                        steps[i] = Step::Done(steps[i].outcome_if_written());
                    }
                    break;
                }
                Err(error) => error,
            };
            if !self.resolve_conflicts(&failure, entries, &pending, &mut steps) {
                transient_failures += 1;
                let chain = error_chain(&failure);
                if transient_failures >= self.backoff.attempts || !is_transient(&failure) {
                    return Err(StoreError::Unavailable(chain));
                }
                tracing::warn!(error = %chain, attempt = transient_failures, "transaction failed; retrying");
                tokio::time::sleep(self.backoff.pause(transient_failures)).await;
            }
        }
        Ok(steps.into_iter().map(Step::outcome_if_written).collect())
    }
}

impl DynamoEventStore {
    /// A conditional put: the event item, or a marker that makes a count happen once.
    fn put_action(&self, entry: &Entry, step: Step) -> Result<TransactWriteItem, StoreError> {
        let item: Item = match (entry, step) {
            (Entry::Event(event), Step::StoreEvent) => to_item(event),
            (Entry::Event(event), _) => marker(
                keys::event_pk(&event.event.source, &event.event.id),
                keys::duplicate_sk(&event.shard_id, &event.sequence_number),
            ),
            (Entry::Duplicate { source, id, shard_id, sequence_number }, _) => {
                marker(keys::event_pk(source, id), keys::duplicate_sk(shard_id, sequence_number))
            }
            (Entry::Poison { shard_id, sequence_number }, _) => {
                marker(keys::poison_pk(shard_id, sequence_number), keys::POISON_SK.to_owned())
            }
        };
        let put = Put::builder()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The shard's totals, and its throughput in this second.
    fn counter_actions(
        &self,
        shard_id: &str,
        delta: &CounterDelta,
        now: OffsetDateTime,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        // Attribute names go through placeholders: several are DynamoDB reserved words.
        let mut adds = vec![
            "#processed :p".to_owned(),
            "#duplicate :d".to_owned(),
            "#failed :f".to_owned(),
            "#latency_sum :ls".to_owned(),
        ];
        let mut totals = Update::builder()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::shard_sk(shard_id)))
            .expression_attribute_names("#processed", "processed")
            .expression_attribute_names("#duplicate", "duplicate")
            .expression_attribute_names("#failed", "failed")
            .expression_attribute_names("#latency_sum", "latency_sum_ms")
            .expression_attribute_names("#last_active", "last_active_ms")
            .expression_attribute_names("#first_processed", "first_processed_ms")
            .expression_attribute_values(":p", n(delta.processed))
            .expression_attribute_values(":d", n(delta.duplicate))
            .expression_attribute_values(":f", n(delta.failed))
            .expression_attribute_values(":ls", n(delta.latency_sum_ms))
            .expression_attribute_values(":now", n(now_ms));
        for (bucket, count) in &delta.latency.counts {
            adds.push(format!("#h{bucket} :h{bucket}"));
            totals = totals
                .expression_attribute_names(format!("#h{bucket}"), format!("{}{bucket}", keys::LATENCY_BUCKET_PREFIX))
                .expression_attribute_values(format!(":h{bucket}"), n(count));
        }
        let totals = totals
            .update_expression(format!(
                "ADD {} SET #last_active = :now, #first_processed = if_not_exists(#first_processed, :now)",
                adds.join(", ")
            ))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut actions = vec![TransactWriteItem::builder().update(totals).build()];

        if delta.processed > 0 {
            let second = now.unix_timestamp();
            let rate = Update::builder()
                .table_name(&self.table_name)
                .key(keys::PK, s(keys::RATE_PK))
                .key(keys::SK, s(keys::rate_sk(second, shard_id)))
                .update_expression("ADD #processed :p SET #ttl = :ttl")
                .expression_attribute_names("#processed", "processed")
                .expression_attribute_names("#ttl", keys::EXPIRES_AT)
                .expression_attribute_values(":p", n(delta.processed))
                .expression_attribute_values(":ttl", n(second + keys::RATE_ITEM_TTL_SECONDS))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            actions.push(TransactWriteItem::builder().update(rate).build());
        }
        Ok(actions)
    }

    /// Reads the cancellation reasons: an entry whose condition failed is resolved (a
    /// redelivery, or a duplicate to count instead). Returns whether anything was resolved;
    /// if not, the failure was transient.
    fn resolve_conflicts(
        &self,
        failure: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
        entries: &[Entry],
        pending: &[usize],
        steps: &mut [Step],
    ) -> bool {
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = failure.as_service_error() else {
            return false;
        };
        let mut resolved = false;
        for (slot, reason) in cancelled.cancellation_reasons().iter().enumerate() {
            if reason.code() != Some("ConditionalCheckFailed") {
                continue;
            }
            let Some(&index) = pending.get(slot) else {
                continue; // a counter update; those carry no condition
            };
            resolved = true;
            steps[index] = match (&entries[index], steps[index]) {
                (Entry::Event(event), Step::StoreEvent) => {
                    let old = reason.item();
                    let field = |name: &str| old.and_then(|item| item.get(name)).and_then(|v| v.as_s().ok());
                    let same_record = field("shard_id") == Some(&event.shard_id)
                        && field("sequence_number") == Some(&event.sequence_number);
                    if same_record { Step::Done(Outcome::Redelivered) } else { Step::MarkDuplicate }
                }
                _ => Step::Done(Outcome::AlreadyCounted),
            };
        }
        resolved
    }
}

fn marker(pk: String, sk: String) -> Item {
    Item::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

/// Throttling, conflicts, timeouts and server errors pass; a malformed request does not.
fn is_transient<R>(error: &SdkError<TransactWriteItemsError, R>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            let missing_table = matches!(service.err(), TransactWriteItemsError::ResourceNotFoundException(_));
            let invalid = service.err().meta().code() == Some("ValidationException");
            !missing_table && !invalid
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

//! The transform function: Kinesis batches in, events stored exactly once and published.

pub mod breakdown;
pub mod config;
pub mod dead_letter;
pub mod dynamo;
pub mod enrich;
pub mod event;
pub mod handler;
pub mod memory;
pub mod sqs;
pub mod store;

use std::time::Duration;

use eventline_aws::KinesisSink;
use eventline_aws::reference::ReferenceStore;
use eventline_model::retry::Backoff;

use crate::config::Config;
use crate::dynamo::DynamoEventStore;
use crate::enrich::CachedReference;
use crate::handler::Transform;
use crate::sqs::SqsDeadLetters;

/// Retry budgets of one batch's steps. A throttled partition or shard recovers in seconds;
/// together with the SDK's own timeouts these stay well inside the function's timeout
/// (template.yaml), so a slow batch ends with a checkpoint, not a function timeout.
pub const COMMIT_BUDGET: Duration = Duration::from_secs(20);
pub const PUBLISH_BUDGET: Duration = Duration::from_secs(20);
pub const DEAD_LETTER_BUDGET: Duration = Duration::from_secs(10);
pub const REFERENCE_BUDGET: Duration = Duration::from_secs(10);

/// The handler wired to AWS, as deployed.
pub type AwsTransform = Transform<DynamoEventStore, KinesisSink, SqsDeadLetters, CachedReference>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsTransform {
    // One client per service: a clone shares its connections and costs nothing at start-up.
    // The dead-letter clients wait for the first poison record, which most environments never see.
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    Transform {
        store: DynamoEventStore::new(
            dynamodb.clone(),
            config.table_name.clone(),
            Backoff::default().with_budget(COMMIT_BUDGET),
        )
        .with_measures(config.aggregate_measures)
        .with_breakdown_limit(config.max_breakdown_keys)
        .with_retention(config.event_retention),
        reference: CachedReference::new(ReferenceStore::new(
            dynamodb,
            config.table_name,
            Backoff::default().with_budget(REFERENCE_BUDGET),
        )),
        output: KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), config.output_stream),
        dead_letters: SqsDeadLetters::built_on_first_use(
            sdk,
            config.dead_letter_queue_url,
            config.dead_letter_bucket,
            Backoff::default().with_budget(DEAD_LETTER_BUDGET),
        ),
        backoff: Backoff::default().with_budget(PUBLISH_BUDGET),
        rules: config.rules,
    }
}

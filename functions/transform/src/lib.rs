//! The transform function: Kinesis batches in, events stored exactly once and published.

pub mod config;
pub mod dead_letter;
pub mod dynamo;
pub mod handler;
pub mod store;

use eventline_model::aws::KinesisSink;
use eventline_model::sink::Backoff;

use crate::config::Config;
use crate::dead_letter::SqsDeadLetters;
use crate::dynamo::DynamoEventStore;
use crate::handler::Transform;

/// The handler wired to AWS, as deployed.
pub type AwsTransform = Transform<DynamoEventStore, KinesisSink, SqsDeadLetters>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsTransform {
    Transform {
        store: DynamoEventStore::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name),
        output: KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), config.output_stream),
        dead_letters: SqsDeadLetters::new(aws_sdk_sqs::Client::new(sdk), config.dead_letter_queue_url),
        backoff: Backoff::default(),
    }
}

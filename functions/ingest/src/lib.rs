//! The ingest function: validates events and puts them on the ingest stream.

pub mod config;
pub mod counter;
pub mod handler;

use eventline_model::aws::KinesisSink;
use eventline_model::sink::Backoff;

use crate::config::Config;
use crate::counter::DynamoReceivedCounter;
use crate::handler::Ingest;

/// The handler wired to AWS, as deployed.
pub type AwsIngest = Ingest<KinesisSink, DynamoReceivedCounter>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsIngest {
    Ingest {
        sink: KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), config.stream_name),
        counter: DynamoReceivedCounter::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name),
        rules: config.rules,
        backoff: Backoff::default(),
    }
}

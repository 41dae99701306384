//! The ingest function: validates events and puts them on the ingest stream.

pub mod caller;
pub mod config;
pub mod counter;
pub mod handler;
pub mod memory;
pub mod routes;
pub mod segment;
pub mod write_keys;

use std::time::Duration;

use eventline_aws::KinesisSink;
use eventline_aws::write_keys::{DynamoKeys, DynamoRateLedger};
use eventline_model::retry::Backoff;
use eventline_model::write_key::CachedKeys;

use crate::config::Config;
use crate::counter::DynamoReceivedCounter;
use crate::handler::Ingest;
use crate::write_keys::WriteKeyGate;

/// Time to put a request's events on the stream, and to count them: together well inside
/// the function's timeout (template.yaml), itself below API Gateway's 30 s.
pub const PUT_BUDGET: Duration = Duration::from_secs(10);
pub const COUNT_BUDGET: Duration = Duration::from_secs(4);

/// The handler wired to AWS, as deployed.
pub type AwsIngest = Ingest<KinesisSink, DynamoReceivedCounter, CachedKeys<DynamoKeys>, DynamoRateLedger>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsIngest {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    Ingest {
        sink: KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), config.stream_name),
        write_keys: WriteKeyGate::new(
            DynamoKeys::new(dynamodb.clone(), &config.table_name),
            DynamoRateLedger::new(dynamodb.clone(), &config.table_name),
            config.key_cache,
            config.cors_origins,
        ),
        counter: DynamoReceivedCounter::new(dynamodb, config.table_name, Backoff::default().with_budget(COUNT_BUDGET)),
        rules: config.rules,
        user_claim: config.user_claim,
        backoff: Backoff::default().with_budget(PUT_BUDGET),
    }
}

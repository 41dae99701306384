//! The ingest function: validates events and puts them on the ingest stream.

pub mod caller;
pub mod config;
pub mod counter;
pub mod handler;
pub mod reference;

use std::time::Duration;

use eventline_model::aws::KinesisSink;
use eventline_model::aws::reference::ReferenceStore;
use eventline_model::retry::Backoff;

use crate::config::Config;
use crate::counter::DynamoReceivedCounter;
use crate::handler::Ingest;

/// Time to put a request's events on the stream, and to count them: together well inside
/// the function's timeout (template.yaml), itself below API Gateway's 30 s.
pub const PUT_BUDGET: Duration = Duration::from_secs(10);
pub const COUNT_BUDGET: Duration = Duration::from_secs(4);
/// Retry budget of each step of replacing the reference table (writing buckets, switching).
pub const REFERENCE_BUDGET: Duration = Duration::from_secs(5);

/// The handler wired to AWS, as deployed.
pub type AwsIngest = Ingest<KinesisSink, DynamoReceivedCounter, ReferenceStore>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsIngest {
    // One client per service: a clone shares its connections and costs nothing at start-up.
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    Ingest {
        sink: KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), config.stream_name),
        counter: DynamoReceivedCounter::new(
            dynamodb.clone(),
            config.table_name.clone(),
            Backoff::default().with_budget(COUNT_BUDGET),
        ),
        reference: ReferenceStore::new(dynamodb, config.table_name, Backoff::default().with_budget(REFERENCE_BUDGET)),
        rules: config.rules,
        user_claim: config.user_claim,
        backoff: Backoff::default().with_budget(PUT_BUDGET),
    }
}

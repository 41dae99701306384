//! The query function: the read routes (totals, processed events, timelines, aggregates, windows, the reference table, health), each answered without a Scan.

pub mod config;
pub mod dynamo;
pub mod handler;
pub mod memory;
pub mod reader;
pub mod routes;
pub mod timeline;

use crate::config::Config;
use crate::dynamo::AwsReader;
use crate::handler::Query;

/// The handler wired to AWS, as deployed.
pub type AwsQuery = Query<AwsReader>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsQuery {
    Query::new(AwsReader::new(
        aws_sdk_dynamodb::Client::new(sdk),
        aws_sdk_kinesis::Client::new(sdk),
        config.table_name,
        config.ingest_stream,
    ))
}

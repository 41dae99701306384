//! The metrics function: processed events, totals and health, read without a Scan.

pub mod config;
pub mod handler;
pub mod reader;
pub mod timeline;

use crate::config::Config;
use crate::handler::Metrics;
use crate::reader::AwsMetricsReader;

/// The handler wired to AWS, as deployed.
pub type AwsMetrics = Metrics<AwsMetricsReader>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsMetrics {
    Metrics::new(AwsMetricsReader::new(
        aws_sdk_dynamodb::Client::new(sdk),
        aws_sdk_kinesis::Client::new(sdk),
        config.table_name,
        config.ingest_stream,
    ))
}

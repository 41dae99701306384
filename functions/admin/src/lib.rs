//! The administrator function: replaces the user reference table. It runs apart from ingest
//! so that the role that writes reference generations is not the internet-facing one.

pub mod config;
pub mod handler;
pub mod memory;
pub mod reference;
pub mod routes;

use std::time::Duration;

use eventline_aws::reference::ReferenceStore;
use eventline_model::retry::Backoff;

use crate::config::Config;
use crate::handler::Admin;

/// Retry budget of each step of replacing the reference table (writing buckets, switching).
pub const REFERENCE_BUDGET: Duration = Duration::from_secs(5);

/// The handler wired to AWS, as deployed.
pub type AwsAdmin = Admin<ReferenceStore>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsAdmin {
    Admin {
        reference: ReferenceStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name,
            Backoff::default().with_budget(REFERENCE_BUDGET),
        ),
        max_future_skew: config.max_future_skew,
    }
}

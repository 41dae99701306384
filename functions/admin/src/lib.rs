//! The administrator function: replaces the user reference table and manages the write keys.
//! It runs apart from ingest so that the role that writes reference generations and keys is
//! not the internet-facing one.

pub mod config;
pub mod error;
pub mod handler;
pub mod memory;
pub mod reference;
pub mod routes;
pub mod write_keys;

use std::time::Duration;

use eventline_aws::reference::ReferenceStore;
use eventline_aws::write_keys::DynamoKeys;
use eventline_model::retry::Backoff;

use crate::config::Config;
use crate::handler::Admin;
use crate::write_keys::KeyAdmin;

/// Retry budget of each step of replacing the reference table (writing buckets, switching).
pub const REFERENCE_BUDGET: Duration = Duration::from_secs(5);

/// The handler wired to AWS, as deployed.
pub type AwsAdmin = Admin<ReferenceStore, DynamoKeys>;

pub fn with_aws(config: Config, sdk: &aws_config::SdkConfig) -> AwsAdmin {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    Admin {
        write_keys: KeyAdmin {
            keys: DynamoKeys::new(dynamodb.clone(), &config.table_name),
            default_events_per_second: config.default_events_per_second,
            cors_origins: config.cors_origins,
        },
        reference: ReferenceStore::new(dynamodb, config.table_name, Backoff::default().with_budget(REFERENCE_BUDGET)),
        max_future_skew: config.max_future_skew,
    }
}

//! `eventline-redrive`: brings back the records the pipeline gave up on.
//!
//! - the failure bucket: batches the event source mapping stopped retrying
//!   ([`failure_record`]), each record as the stream held it;
//! - the dead-letter queue: records the transform judged poison ([`dead_letter`]), each in
//!   its message or, when too large for one, in an object of the failure bucket it names.
//!
//! Their records go back on the ingest stream with PutRecords, with their data and partition
//! key, so identities are kept and the transform's dedup makes a second redrive harmless;
//! [`prepare`] says what little is changed and why. A dead-letter message is deleted only
//! once its record is back on the stream.

pub mod conflicts;
pub mod dead_letter;
pub mod error;
pub mod failure_record;
pub mod kinesis;
pub mod prepare;
pub mod redrive;
pub mod refused;
pub mod s3;
pub mod sqs;
pub mod summary;

use eventline_aws::KinesisSink;
use eventline_model::retry::Backoff;

pub use crate::error::Error;
pub use crate::redrive::{NoProgress, Options, Progress, Sources, redrive};
pub use crate::summary::{Summary, Tally};

/// The resources a redrive reads and writes: the stack's outputs.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `IngestStreamName`.
    pub stream: String,
    /// `StreamFailureBucketName`; needed to read failure objects.
    pub bucket: Option<String>,
    /// `DeadLetterQueueUrl`; needed to read dead-letter messages.
    pub queue_url: Option<String>,
}

/// Runs a redrive with clients built from `sdk`.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Summary, Error> {
    if target.stream.is_empty() {
        return Err(Error::Usage("--stream is needed (the stack output IngestStreamName)".into()));
    }
    if options.from.bucket() && target.bucket.is_none() {
        return Err(Error::Usage(
            "reading failure objects needs --bucket (the stack output StreamFailureBucketName), or use --from dlq"
                .into(),
        ));
    }
    if options.from.queue() && target.queue_url.is_none() {
        return Err(Error::Usage(
            "reading dead-letter messages needs --queue-url (the stack output DeadLetterQueueUrl), or use --from s3"
                .into(),
        ));
    }
    if sdk.region().is_none() {
        return Err(Error::Usage("no AWS region: set AWS_REGION to the stack's region".into()));
    }
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    kinesis::check_stream(&kinesis, &target.stream).await?;
    let sink = KinesisSink::new(kinesis, target.stream.clone());
    let bucket =
        target.bucket.as_ref().filter(|_| options.from.bucket()).map(|name| s3::S3Bucket::new(s3_client(sdk), name));
    let queue = target.queue_url.as_ref().filter(|_| options.from.queue()).map(|url| {
        let client = aws_sdk_sqs::Client::new(sdk);
        sqs::SqsQueue::new(client, url, Backoff::default(), s3_client(sdk), target.bucket.clone())
    });
    redrive(bucket.as_ref(), queue.as_ref(), &sink, options, progress).await
}

fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::config::Builder::from(sdk);
    // An emulator at one address cannot serve each bucket under a host name of its own.
    if sdk.endpoint_url().is_some() {
        config = config.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

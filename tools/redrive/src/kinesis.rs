//! The ingest stream: checked before anything is read, so a wrong `--stream` fails at once
//! instead of after every PutRecords retry. Records go through the model's `KinesisSink`.

use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError;

use crate::error::{Error, classify};

pub async fn check_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<(), Error> {
    let what = format!("stream {stream}");
    client.describe_stream_summary().stream_name(stream).send().await.map(|_| ()).map_err(|error| {
        classify(&error, "kinesis:DescribeStreamSummary", &what, |error| {
            matches!(error, DescribeStreamSummaryError::ResourceNotFoundException(_)).then(|| Error::NotFound {
                what: what.clone(),
                hint: "check --stream (the stack output IngestStreamName) and AWS_REGION".to_owned(),
            })
        })
    })
}

//! A Kinesis stream as the model's record sink.

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use eventline_model::sink::{OutRecord, PutFailure, RecordSink};

use crate::error_chain;

/// A Kinesis stream as a [`RecordSink`].
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Self {
        Self { client, stream_name: stream_name.into() }
    }
}

impl RecordSink for KinesisSink {
    #[tracing::instrument(skip_all, fields(stream = %self.stream_name, records = records.len()))]
    async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.data.clone()))
                    .build()
                    .map_err(|e| PutFailure { code: "InvalidRequest".into(), message: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output =
            self.client.put_records().stream_name(&self.stream_name).set_records(Some(entries)).send().await.map_err(
                |e| {
                    let chain = error_chain(&e);
                    tracing::warn!(error = %chain, "PutRecords call failed");
                    PutFailure { code: e.code().unwrap_or("PutRecordsFailed").to_owned(), message: chain }
                },
            )?;
        Ok(output
            .records()
            .iter()
            .map(|entry| match entry.error_code() {
                None => Ok(()),
                Some(code) => Err(PutFailure {
                    code: code.to_owned(),
                    message: entry.error_message().unwrap_or_default().to_owned(),
                }),
            })
            .collect())
    }
}

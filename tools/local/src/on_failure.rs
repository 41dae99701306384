//! What Lambda sends to an event source mapping's on-failure destination when it gives up
//! on a Kinesis batch: to a queue, the invocation record (metadata only); to a bucket, the
//! same record with the whole invocation event as `payload`, under
//! `aws/lambda/<mapping id>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

/// Where failure records go, from the destination's ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Queue { name: String },
    Bucket { name: String },
}

impl Destination {
    pub fn from_arn(arn: &str) -> Result<Self, String> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some(service), Some(_region), Some(_account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{arn} is not an ARN"));
        };
        match service {
            "sqs" => Ok(Self::Queue { name: resource.to_owned() }),
            "s3" => Ok(Self::Bucket { name: resource.to_owned() }),
            other => Err(format!("on-failure destinations of service {other} are not supported locally ({arn})")),
        }
    }
}

/// The batch a mapping gave up on, and why.
pub struct FailedBatch<'a> {
    pub condition: &'a str,
    pub attempts: i64,
    pub function_arn: &'a str,
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
    pub first_sequence_number: &'a str,
    pub last_sequence_number: &'a str,
    pub first_arrival: Option<OffsetDateTime>,
    pub last_arrival: Option<OffsetDateTime>,
    pub size: usize,
    pub at: OffsetDateTime,
}

impl FailedBatch<'_> {
    /// The invocation record; `payload` (the invocation event, as JSON text) only for S3.
    pub fn record(&self, request_id: &str, payload: Option<&str>) -> Value {
        let time = |t: Option<OffsetDateTime>| t.map(eventline_model::format_rfc3339);
        let mut record = json!({
            "requestContext": {
                "requestId": request_id,
                "functionArn": self.function_arn,
                "condition": self.condition,
                "approximateInvokeCount": self.attempts + 1,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": eventline_model::format_rfc3339(self.at),
            "KinesisBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": self.first_sequence_number,
                "endSequenceNumber": self.last_sequence_number,
                "approximateArrivalOfFirstRecord": time(self.first_arrival),
                "approximateArrivalOfLastRecord": time(self.last_arrival),
                "batchSize": self.size,
                "streamArn": self.stream_arn,
            },
        });
        if let Some(payload) = payload {
            record["payload"] = Value::String(payload.to_owned());
        }
        record
    }

    /// The object key Lambda writes this batch's record under.
    pub fn object_key(&self, mapping_uuid: &str, unique: &str) -> String {
        let day = format_description!("[year]/[month]/[day]");
        let moment = format_description!("[year]-[month]-[day]T[hour].[minute].[second]");
        let at = self.at.to_offset(time::UtcOffset::UTC);
        format!(
            "aws/lambda/{mapping_uuid}/{}/{}/{}-{unique}",
            self.shard_id,
            at.format(&day).unwrap_or_default(),
            at.format(&moment).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn batch() -> FailedBatch<'static> {
        FailedBatch {
            condition: "RetryAttemptsExhausted",
            attempts: 3,
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:t",
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s",
            shard_id: "shardId-000000000000",
            first_sequence_number: "1",
            last_sequence_number: "9",
            first_arrival: Some(datetime!(2026-11-30 10:00:00 UTC)),
            last_arrival: None,
            size: 2,
            at: datetime!(2026-11-30 10:05:07.250 UTC),
        }
    }

    #[test]
    fn destinations_are_read_from_their_arns() {
        assert_eq!(
            Destination::from_arn("arn:aws:s3:::my-bucket").unwrap(),
            Destination::Bucket { name: "my-bucket".into() }
        );
        assert_eq!(
            Destination::from_arn("arn:aws:sqs:us-east-1:123456789012:q").unwrap(),
            Destination::Queue { name: "q".into() }
        );
        assert!(Destination::from_arn("arn:aws:sns:us-east-1:123456789012:t").is_err());
        assert!(Destination::from_arn("my-bucket").is_err());
    }

    #[test]
    fn s3_records_carry_the_invocation_and_are_keyed_by_mapping_shard_and_time() {
        let batch = batch();
        assert_eq!(
            batch.object_key("uuid-1", "u"),
            "aws/lambda/uuid-1/shardId-000000000000/2026/11/30/2026-11-30T10.05.07-u"
        );
        let record = batch.record("r-1", Some(r#"{"Records":[]}"#));
        assert_eq!(record["payload"], r#"{"Records":[]}"#);
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 4);
        assert_eq!(record["KinesisBatchInfo"]["batchSize"], 2);
        assert!(batch.record("r-1", None).get("payload").is_none(), "a queue gets metadata only");
    }
}

//! The invocation event as Lambda sends it.

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::KinesisEvent;
use eventline_model::event::arrival_time;
use serde::{Deserialize, Deserializer};

/// A Kinesis invocation event with each record's arrival read exactly. aws_lambda_events reads
/// the fraction of `approximateArrivalTimestamp` as milliseconds whatever its digits: an
/// arrival at .460 s, which JSON writes `.46`, would become 46 ms, and with it the `timestamp`
/// and `received_at` of records other producers wrote.
#[derive(Debug, Clone)]
pub struct StreamEvent(pub KinesisEvent);

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let arrivals: Vec<_> = value
            .get("Records")
            .and_then(serde_json::Value::as_array)
            .map(|records| {
                records
                    .iter()
                    .map(|r| r.pointer("/kinesis/approximateArrivalTimestamp").and_then(arrival_time))
                    .collect()
            })
            .unwrap_or_default();
        let mut event: KinesisEvent = serde_json::from_value(value).map_err(serde::de::Error::custom)?;
        for (record, arrival) in event.records.iter_mut().zip(arrivals) {
            let exact = arrival.and_then(|at| chrono::DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond()));
            if let Some(exact) = exact {
                record.kinesis.approximate_arrival_timestamp = SecondTimestamp(exact);
            }
        }
        Ok(Self(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(arrival: &str) -> String {
        format!(
            r#"{{"Records":[{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"u-1","sequenceNumber":"1","data":"e30=","approximateArrivalTimestamp":{arrival}}},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"shardId-000000000000:1","eventName":"aws:kinesis:record","invokeIdentityArn":"arn:aws:iam::1:role/r","awsRegion":"us-east-1","eventSourceARN":"arn:aws:kinesis:us-east-1:1:stream/s"}}]}}"#
        )
    }

    #[test]
    fn arrivals_keep_their_milliseconds_however_they_are_written() {
        for (written, millis) in [
            ("1796100465.46", 1_796_100_465_460_i64),
            ("1796100465.4", 1_796_100_465_400),
            ("1796100465.416", 1_796_100_465_416),
            ("1.796100465046E9", 1_796_100_465_046),
            ("\"1796100465.46\"", 1_796_100_465_460),
            ("1796100465", 1_796_100_465_000),
        ] {
            let StreamEvent(event) = serde_json::from_str(&event(written)).unwrap();
            assert_eq!(
                event.records[0].kinesis.approximate_arrival_timestamp.0.timestamp_millis(),
                millis,
                "{written}"
            );
        }
        // What aws_lambda_events alone makes of the first: 46 ms.
        let alone: KinesisEvent = serde_json::from_str(&event("1796100465.46")).unwrap();
        assert_eq!(alone.records[0].kinesis.approximate_arrival_timestamp.0.timestamp_millis(), 1_796_100_465_046);
    }

    #[test]
    fn anything_else_is_read_as_aws_lambda_events_reads_it() {
        let StreamEvent(event) = serde_json::from_str(&event("0")).unwrap();
        assert_eq!(event.records[0].kinesis.approximate_arrival_timestamp.0.timestamp(), 0);
        assert!(serde_json::from_str::<StreamEvent>(r#"{"Records":"no"}"#).is_err());
    }
}

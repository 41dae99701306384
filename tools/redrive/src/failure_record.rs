//! The objects Lambda writes to an event source mapping's S3 on-failure destination when it
//! gives up on a Kinesis batch: an invocation record whose `payload` is the whole invocation
//! event (as JSON text, or as an object), under
//! `aws/lambda/<mapping id>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`.
//!
//! A record in the KPL's aggregated format is read as its user records, each a record of its
//! own at the aggregate's position and its index there, as the transform reads it: so each
//! goes back alone, and one without `id` keeps the id the transform derived from that position.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventline_model::Position;
use eventline_model::event::arrival_time;
use eventline_model::kpl;
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// One failure object, read.
#[derive(Debug)]
pub struct FailureRecord {
    /// Why the mapping gave up: `RetryAttemptsExhausted`, `RecordAgeExceeded`, ...
    pub condition: String,
    /// Each record of the batch (each user record of an aggregated record), or why it cannot
    /// be re-submitted.
    pub records: Vec<Result<GivenUpRecord, String>>,
}

/// A record as the stream held it.
#[derive(Debug, Clone, PartialEq)]
pub struct GivenUpRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Where it sat in the stream, when the record says.
    pub position: Option<Position>,
    /// When the stream took it.
    pub arrival: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvocationRecord {
    #[serde(default)]
    request_context: Option<RequestContext>,
    #[serde(rename = "KinesisBatchInfo", default)]
    batch_info: Option<BatchInfo>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RequestContext {
    #[serde(default)]
    condition: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchInfo {
    #[serde(default)]
    shard_id: Option<String>,
}

#[derive(Deserialize)]
struct InvocationEvent<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventRecord {
    kinesis: KinesisData,
    #[serde(rename = "eventID", default)]
    event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KinesisData {
    data: String,
    partition_key: String,
    sequence_number: String,
    #[serde(default)]
    approximate_arrival_timestamp: Option<serde_json::Value>,
}

/// Reads a failure object. `Err` says why the object as a whole holds nothing to re-submit;
/// a single bad record is an `Err` among the records instead.
pub fn parse(body: &[u8]) -> Result<FailureRecord, String> {
    let record: InvocationRecord =
        serde_json::from_slice(body).map_err(|e| format!("is not a Lambda invocation record: {e}"))?;
    let condition = record.request_context.and_then(|c| c.condition).unwrap_or_else(|| "unknown".to_owned());
    let Some(payload) = record.payload else {
        return Err("has no payload (only a destination bucket receives the records themselves)".to_owned());
    };
    // Lambda writes the event as JSON text; an object is read the same way.
    let text: String = if payload.get().starts_with('"') {
        serde_json::from_str(payload.get()).map_err(|e| format!("payload is not a JSON string: {e}"))?
    } else {
        payload.get().to_owned()
    };
    let event: InvocationEvent<'_> =
        serde_json::from_str(&text).map_err(|e| format!("payload is not a Kinesis invocation event: {e}"))?;
    let batch_shard = record.batch_info.and_then(|b| b.shard_id);
    let mut records = Vec::with_capacity(event.records.len());
    for (index, raw) in event.records.iter().enumerate() {
        match given_up_record(raw, batch_shard.as_deref()) {
            Ok(record) => records.extend(user_records(record).into_iter().map(Ok)),
            Err(e) => records.push(Err(format!("record {index}: {e}"))),
        }
    }
    Ok(FailureRecord { condition, records })
}

/// The user records of an aggregated record, each at its index in the aggregate; any other
/// record (one that is poison as a whole too: the transform judges it again) as it is.
fn user_records(record: GivenUpRecord) -> Vec<GivenUpRecord> {
    let Ok(Some(users)) = kpl::deaggregate(&record.data) else {
        return vec![record];
    };
    (0..)
        .zip(users)
        .map(|(index, user)| GivenUpRecord {
            partition_key: user.partition_key,
            data: user.data,
            position: record.position.clone().map(|position| Position { sub_sequence_number: Some(index), ..position }),
            arrival: record.arrival,
        })
        .collect()
}

fn given_up_record(raw: &RawValue, batch_shard: Option<&str>) -> Result<GivenUpRecord, String> {
    let record: EventRecord = serde_json::from_str(raw.get()).map_err(|e| format!("is not a Kinesis record: {e}"))?;
    let kinesis = record.kinesis;
    let data = STANDARD
        .decode(kinesis.data.as_bytes())
        .map_err(|e| format!("sequence number {}: data is not base64: {e}", kinesis.sequence_number))?;
    // `eventID` is `<shard id>:<sequence number>`.
    let shard_id = record
        .event_id
        .as_deref()
        .and_then(|id| id.split_once(':'))
        .map(|(shard, _)| shard.to_owned())
        .or_else(|| batch_shard.map(str::to_owned));
    let position = shard_id.map(|shard_id| Position::of_record(shard_id, kinesis.sequence_number));
    let arrival = kinesis.approximate_arrival_timestamp.as_ref().and_then(arrival_time);
    Ok(GivenUpRecord { partition_key: kinesis.partition_key, data, position, arrival })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinesis_record(data: &[u8], sequence_number: &str) -> serde_json::Value {
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "u-1",
                "sequenceNumber": sequence_number,
                "data": STANDARD.encode(data),
                "approximateArrivalTimestamp": 1_764_496_800.125,
            },
            "eventSource": "aws:kinesis",
            "eventID": format!("shardId-000000000002:{sequence_number}"),
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
        })
    }

    fn object(payload: serde_json::Value) -> Vec<u8> {
        json!({
            "requestContext": {
                "requestId": "r-1",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:t",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 11,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2026-11-30T10:05:07Z",
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000002",
                "startSequenceNumber": "1",
                "endSequenceNumber": "2",
                "batchSize": 2,
                "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
            },
            "payload": payload,
        })
        .to_string()
        .into_bytes()
    }

    fn event() -> serde_json::Value {
        json!({"Records": [kinesis_record(b"{\"id\":\"a\"}", "1"), kinesis_record(b"\xff raw", "2")]})
    }

    #[test]
    fn a_payload_written_as_json_text_gives_every_record_byte_for_byte() {
        let parsed = parse(&object(json!(event().to_string()))).unwrap();
        assert_eq!(parsed.condition, "RetryAttemptsExhausted");
        let records: Vec<GivenUpRecord> = parsed.records.into_iter().map(Result::unwrap).collect();
        assert_eq!(records[0].data, b"{\"id\":\"a\"}");
        assert_eq!(records[1].data, b"\xff raw");
        assert_eq!(records[0].partition_key, "u-1");
        let position = records[1].position.clone().unwrap();
        assert_eq!((position.shard_id.as_str(), position.sequence_number.as_str()), ("shardId-000000000002", "2"));
        assert_eq!(records[0].arrival, Some(time::macros::datetime!(2025-11-30 10:00:00.125 UTC)));
    }

    #[test]
    fn an_aggregated_record_goes_back_as_its_user_records_each_at_its_index() {
        let users = [
            kpl::UserRecord { partition_key: "u-1".into(), explicit_hash_key: None, data: b"{\"id\":\"a\"}".to_vec() },
            kpl::UserRecord { partition_key: "u-2".into(), explicit_hash_key: None, data: b"{}".to_vec() },
        ];
        let aggregated = json!({"Records": [kinesis_record(&kpl::aggregate(&users), "5"), kinesis_record(b"{}", "6")]});
        let parsed = parse(&object(aggregated)).unwrap();
        let records: Vec<GivenUpRecord> = parsed.records.into_iter().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].position.clone().unwrap(), Position::of_record("shardId-000000000002", "6"));
        for (index, (record, user)) in records.iter().zip(&users).enumerate() {
            assert_eq!((&record.partition_key, &record.data), (&user.partition_key, &user.data));
            let position = record.position.clone().unwrap();
            assert_eq!((position.sequence_number.as_str(), position.sub_sequence_number), ("5", Some(index as u64)));
        }
        // One that cannot be read goes back whole, as any record the transform did not judge.
        let mut broken = kpl::aggregate(&users);
        let last = broken.len() - 1;
        broken[last] ^= 1;
        let event = json!({"Records": [kinesis_record(&broken, "6")]});
        let parsed = parse(&object(event)).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.records[0].as_ref().unwrap().data, broken);
    }

    #[test]
    fn a_payload_written_as_an_object_is_read_the_same() {
        let from_text = parse(&object(json!(event().to_string()))).unwrap();
        let from_object = parse(&object(event())).unwrap();
        assert_eq!(from_text.records, from_object.records);
    }

    #[test]
    fn a_bad_record_is_reported_alone() {
        let mut event = event();
        event["Records"][0]["kinesis"]["data"] = json!("not base64!");
        event["Records"].as_array_mut().unwrap().push(json!({"kinesis": {"data": ""}}));
        let parsed = parse(&object(event)).unwrap();
        let error = parsed.records[0].as_ref().unwrap_err();
        assert!(error.starts_with("record 0: sequence number 1: data is not base64"), "{error}");
        assert!(parsed.records[1].is_ok());
        let error = parsed.records[2].as_ref().unwrap_err();
        assert!(error.contains("missing field `partitionKey`"), "{error}");
    }

    #[test]
    fn the_batch_shard_stands_in_for_a_missing_event_id() {
        let mut event = event();
        event["Records"][0].as_object_mut().unwrap().remove("eventID");
        let parsed = parse(&object(event)).unwrap();
        let position = parsed.records[0].as_ref().unwrap().position.clone().unwrap();
        assert_eq!(position.shard_id, "shardId-000000000002");
    }

    #[test]
    fn objects_without_records_say_why() {
        assert!(parse(b"not json").unwrap_err().starts_with("is not a Lambda invocation record"));
        let mut queue_style: serde_json::Value = serde_json::from_slice(&object(json!(null))).unwrap();
        queue_style.as_object_mut().unwrap().remove("payload");
        assert!(parse(queue_style.to_string().as_bytes()).unwrap_err().starts_with("has no payload"));
        let error = parse(&object(json!("{\"Records\": 3}"))).unwrap_err();
        assert!(error.starts_with("payload is not a Kinesis invocation event"), "{error}");
        let error = parse(&object(json!(17))).unwrap_err();
        assert!(error.starts_with("payload is not a Kinesis invocation event"), "{error}");
    }
}

//! Records in the Kinesis Producer Library's aggregated format: many user records in one
//! Kinesis record, as the KPL (or a library that speaks its format) writes them. A record of
//! that format is the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5
//! digest of the protobuf bytes. The transform reads each user record as the Kinesis Client
//! Library does: as a record of its own, at the aggregate's sequence number and its index in
//! the aggregate (the KCL's sub-sequence number).

use md5::{Digest, Md5};
use prost::Message;

/// What every aggregated record starts with. No JSON text can: `C2` cannot follow `F3 89 9A`
/// in UTF-8.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// The MD5 digest that ends an aggregated record.
pub const DIGEST_BYTES: usize = 16;

/// One record of an aggregate, as its producer added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Why a record that starts as an aggregate cannot be read: it is poison as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("KPL aggregated record of {bytes} bytes is too short for its digest")]
    TooShort { bytes: usize },
    #[error("KPL aggregated record does not match its MD5 digest")]
    Digest,
    #[error("KPL aggregated record does not decode: {0}")]
    Protobuf(String),
    #[error("KPL aggregated record: user record {index} names partition key {key} of a table of {table}")]
    PartitionKey { index: usize, key: u64, table: usize },
    #[error("KPL aggregated record: user record {index} names explicit hash key {key} of a table of {table}")]
    ExplicitHashKey { index: usize, key: u64, table: usize },
}

// The KPL's `messages.proto` (proto2), written out for prost: no build step, no protoc.

#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    /// Carried by the format, used by no consumer; decoded only so that a malformed one is
    /// an error.
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// Whether the data is in the aggregated format (whether or not it is a valid aggregate).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The user records of an aggregated record, in order; `Ok(None)` when the data is not in
/// the aggregated format, an ordinary record. Data that starts with the magic bytes but is
/// too short, fails its digest, or whose message does not decode (or names a key its tables
/// do not hold) is an error: the record is poison as a whole.
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<UserRecord>>, AggregateError> {
    if !is_aggregated(data) {
        return Ok(None);
    }
    let Some(message_end) = data.len().checked_sub(DIGEST_BYTES).filter(|end| *end >= MAGIC.len()) else {
        return Err(AggregateError::TooShort { bytes: data.len() });
    };
    let (message, digest) = (&data[MAGIC.len()..message_end], &data[message_end..]);
    if Md5::digest(message).as_slice() != digest {
        return Err(AggregateError::Digest);
    }
    let aggregate = AggregatedRecord::decode(message).map_err(|e| AggregateError::Protobuf(e.to_string()))?;
    let AggregatedRecord { partition_key_table, explicit_hash_key_table, records } = aggregate;
    let lookup = |table: &[String], key: u64| usize::try_from(key).ok().and_then(|k| table.get(k)).cloned();
    let user_records = records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let partition_key =
                lookup(&partition_key_table, record.partition_key_index).ok_or(AggregateError::PartitionKey {
                    index,
                    key: record.partition_key_index,
                    table: partition_key_table.len(),
                })?;
            let explicit_hash_key = match record.explicit_hash_key_index {
                None => None,
                Some(key) => Some(lookup(&explicit_hash_key_table, key).ok_or(AggregateError::ExplicitHashKey {
                    index,
                    key,
                    table: explicit_hash_key_table.len(),
                })?),
            };
            Ok(UserRecord { partition_key, explicit_hash_key, data: record.data })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(user_records))
}

/// The aggregated record holding these user records, in order, each key once in its table:
/// what the KPL would write. For tests, fuzzing and benchmarks; the pipeline only reads them.
pub fn aggregate(user_records: &[UserRecord]) -> Vec<u8> {
    fn index_of(table: &mut Vec<String>, key: &str) -> u64 {
        let index = table.iter().position(|k| k == key).unwrap_or_else(|| {
            table.push(key.to_owned());
            table.len() - 1
        });
        index as u64
    }
    let mut aggregate = AggregatedRecord::default();
    for user in user_records {
        let partition_key_index = index_of(&mut aggregate.partition_key_table, &user.partition_key);
        let explicit_hash_key_index =
            user.explicit_hash_key.as_deref().map(|key| index_of(&mut aggregate.explicit_hash_key_table, key));
        aggregate.records.push(Record {
            partition_key_index,
            explicit_hash_key_index,
            data: user.data.clone(),
            tags: Vec::new(),
        });
    }
    let message = aggregate.encode_to_vec();
    let mut data = Vec::with_capacity(MAGIC.len() + message.len() + DIGEST_BYTES);
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&message);
    data.extend_from_slice(&Md5::digest(&message));
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(partition_key: &str, data: &str) -> UserRecord {
        UserRecord { partition_key: partition_key.into(), explicit_hash_key: None, data: data.as_bytes().to_vec() }
    }

    /// An aggregate of this message, with its digest.
    fn framed(message: &[u8]) -> Vec<u8> {
        [&MAGIC[..], message, &Md5::digest(message)[..]].concat()
    }

    #[test]
    fn user_records_come_back_in_order_with_their_keys() {
        let records = [user("u-1", r#"{"id":"a"}"#), user("u-2", r#"{"id":"b"}"#), user("u-1", r#"{"id":"c"}"#)];
        let data = aggregate(&records);
        assert!(data.starts_with(&MAGIC));
        assert_eq!(deaggregate(&data), Ok(Some(records.to_vec())));
        // Each key once in the table, as the KPL writes it.
        let message = AggregatedRecord::decode(&data[MAGIC.len()..data.len() - DIGEST_BYTES]).unwrap();
        assert_eq!(message.partition_key_table, ["u-1", "u-2"]);
        assert_eq!(message.records.iter().map(|r| r.partition_key_index).collect::<Vec<_>>(), [0, 1, 0]);
    }

    #[test]
    fn explicit_hash_keys_are_read_from_their_table() {
        let mut first = user("u-1", "x");
        first.explicit_hash_key = Some("340282366920938463463374607431768211455".into());
        let mut third = user("u-3", "z");
        third.explicit_hash_key = Some("0".into());
        let records = [first, user("u-2", "y"), third];
        assert_eq!(deaggregate(&aggregate(&records)), Ok(Some(records.to_vec())));

        let beyond = AggregatedRecord {
            partition_key_table: vec!["u-1".into()],
            explicit_hash_key_table: vec!["0".into()],
            records: vec![Record {
                partition_key_index: 0,
                explicit_hash_key_index: Some(1),
                data: vec![],
                tags: vec![],
            }],
        };
        assert_eq!(
            deaggregate(&framed(&beyond.encode_to_vec())),
            Err(AggregateError::ExplicitHashKey { index: 0, key: 1, table: 1 })
        );
    }

    #[test]
    fn data_without_the_magic_is_an_ordinary_record() {
        for data in [&br#"{"id":"a"}"#[..], b"", b"\xF3\x89\x9A", b"\xF3\x89\x9A\xC3rest", b"\x00\xF3\x89\x9A\xC2"] {
            assert_eq!(deaggregate(data), Ok(None), "{data:?}");
        }
    }

    #[test]
    fn an_aggregate_that_fails_its_digest_is_an_error() {
        let mut data = aggregate(&[user("u-1", "x")]);
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(deaggregate(&data), Err(AggregateError::Digest));
        // A changed message byte, with the old digest.
        let mut data = aggregate(&[user("u-1", "x")]);
        data[MAGIC.len() + 3] ^= 0x20;
        assert_eq!(deaggregate(&data), Err(AggregateError::Digest));
    }

    #[test]
    fn a_truncated_aggregate_is_an_error() {
        let data = aggregate(&[user("u-1", "some data"), user("u-2", "more")]);
        for length in [4, 5, 19] {
            assert_eq!(deaggregate(&data[..length]), Err(AggregateError::TooShort { bytes: length }), "{length}");
        }
        // Cut short anywhere past the digest's length, its last 16 bytes are no digest of the rest.
        for length in 20..data.len() {
            assert_eq!(deaggregate(&data[..length]), Err(AggregateError::Digest), "{length}");
        }
    }

    #[test]
    fn an_empty_aggregate_holds_no_user_records() {
        let data = aggregate(&[]);
        assert_eq!(data.len(), MAGIC.len() + DIGEST_BYTES);
        assert_eq!(deaggregate(&data), Ok(Some(Vec::new())));
    }

    #[test]
    fn a_message_that_does_not_decode_or_names_a_missing_key_is_an_error() {
        // Field 3 (records) with a length beyond the message.
        assert!(matches!(deaggregate(&framed(&[0x1A, 0x05, 0x08])), Err(AggregateError::Protobuf(_))));
        // A partition key that is not UTF-8.
        assert!(matches!(deaggregate(&framed(&[0x0A, 0x01, 0xFF])), Err(AggregateError::Protobuf(_))));
        let no_table = AggregatedRecord {
            records: vec![Record { partition_key_index: 0, explicit_hash_key_index: None, data: vec![], tags: vec![] }],
            ..AggregatedRecord::default()
        };
        assert_eq!(
            deaggregate(&framed(&no_table.encode_to_vec())),
            Err(AggregateError::PartitionKey { index: 0, key: 0, table: 0 })
        );
        let huge = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            records: vec![Record {
                partition_key_index: u64::MAX,
                explicit_hash_key_index: None,
                data: vec![],
                tags: vec![],
            }],
            ..AggregatedRecord::default()
        };
        assert!(matches!(deaggregate(&framed(&huge.encode_to_vec())), Err(AggregateError::PartitionKey { .. })));
    }

    #[test]
    fn tags_are_read_past() {
        let tagged = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            records: vec![Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: vec![Tag { key: "team".into(), value: Some("a".into()) }, Tag { key: "b".into(), value: None }],
            }],
            ..AggregatedRecord::default()
        };
        assert_eq!(deaggregate(&framed(&tagged.encode_to_vec())), Ok(Some(vec![user("k", "x")])));
    }

    /// An aggregate the Python library `aws_kinesis_agg` 1.2.3 wrote, with two user records,
    /// the second with an explicit hash key: the same bytes as the KPL writes.
    #[test]
    fn reads_what_another_implementation_wrote() {
        let data = include_bytes!("../tests/fixtures/aws_kinesis_agg.bin");
        let records = deaggregate(data).unwrap().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], user("u-1", r#"{"id":"kpl-1","payload":"one"}"#));
        assert_eq!(records[1].partition_key, "u-2");
        assert_eq!(records[1].explicit_hash_key.as_deref(), Some("12345"));
        assert_eq!(records[1].data, br#"{"id":"kpl-2","payload":"two"}"#);
    }
}

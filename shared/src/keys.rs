//! The single-table key layout. Every read the service makes is a GetItem or a Query on
//! one of these partitions; nothing needs a Scan.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | processed event | `EVENT#{source}#{id}` | `EVENT` |
//! | duplicate delivery marker | `EVENT#{source}#{id}` | `DUP#{shard}#{sequence}` |
//! | poison record marker | `POISON#{shard}#{sequence}` | `POISON` |
//! | per-shard totals | `METRICS` | `SHARD#{shard}` |
//! | ingest counter slot | `METRICS` | `INGEST#{slot}` |
//! | per-second throughput | `RATE` | `{epoch second, 11 digits}#{shard}` |
//!
//! Events with a user also carry `user_pk` = `USER#{user_id}` and
//! `user_sk` = `{timestamp}#{source}#{id}` for the `ByUser` index.
//! `#` cannot occur in a source or an id, so keys never collide.

use crate::event::{EventId, Source, UserId};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const USER_PK: &str = "user_pk";
pub const USER_SK: &str = "user_sk";
/// Attribute the table's TTL reads: epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";

pub const EVENT_SK: &str = "EVENT";
pub const POISON_SK: &str = "POISON";
pub const METRICS_PK: &str = "METRICS";
pub const SHARD_PREFIX: &str = "SHARD#";
pub const INGEST_PREFIX: &str = "INGEST#";
pub const RATE_PK: &str = "RATE";
/// Per-shard latency histogram buckets are attributes named `lat_{bucket}`.
pub const LATENCY_BUCKET_PREFIX: &str = "lat_";

/// Ingest spreads its received counter over this many items so no single item runs hot.
pub const INGEST_COUNTER_SLOTS: u32 = 16;

/// Seconds the per-second throughput items live before TTL removes them.
pub const RATE_ITEM_TTL_SECONDS: i64 = 2 * 24 * 60 * 60;

pub fn event_pk(source: &Source, id: &EventId) -> String {
    format!("EVENT#{source}#{id}")
}

pub fn duplicate_sk(shard_id: &str, sequence_number: &str) -> String {
    format!("DUP#{shard_id}#{sequence_number}")
}

pub fn poison_pk(shard_id: &str, sequence_number: &str) -> String {
    format!("POISON#{shard_id}#{sequence_number}")
}

pub fn shard_sk(shard_id: &str) -> String {
    format!("{SHARD_PREFIX}{shard_id}")
}

pub fn ingest_sk(slot: u32) -> String {
    format!("{INGEST_PREFIX}{slot:02}")
}

pub fn rate_sk(epoch_second: i64, shard_id: &str) -> String {
    format!("{epoch_second:011}#{shard_id}")
}

/// Lower bound of the `RATE` sort keys for seconds at or after `epoch_second`.
pub fn rate_sk_from(epoch_second: i64) -> String {
    format!("{epoch_second:011}#")
}

pub fn user_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

pub fn user_sk(timestamp: &str, source: &Source, id: &EventId) -> String {
    format!("{timestamp}#{source}#{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_keys_sort_by_time() {
        let mut keys = [rate_sk(1_000_000_001, "s"), rate_sk(999_999_999, "s"), rate_sk(1_000_000_000, "a")];
        keys.sort();
        assert_eq!(keys[0], "00999999999#s");
        assert!(rate_sk_from(1_000_000_000) <= keys[1] && keys[1] < rate_sk_from(1_000_000_001));
    }

    #[test]
    fn event_keys_include_source_and_id() {
        let pk = event_pk(&Source::parse("web").unwrap(), &EventId::parse("a:1").unwrap());
        assert_eq!(pk, "EVENT#web#a:1");
    }
}

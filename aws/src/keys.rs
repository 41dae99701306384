//! The single-table key layout. Every read the service makes is a GetItem or a Query on
//! one of these partitions; nothing needs a Scan.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | processed event | `EVENT#{source}#{id}` | `EVENT` |
//! | duplicate marker, or conflict item | `EVENT#{source}#{id}` | `DUP#{ingest id}`, or `DUP#{shard}#{sequence}` for other producers' records (`DUP#{shard}#{sequence}#{sub-sequence}` for a user record of an aggregated record) |
//! | poison record marker | `POISON#{ingest id}`, or `POISON#{shard}#{sequence}` (`#{sub-sequence}` likewise) | `POISON` |
//! | received marker (one per ingest request; no longer written, expires by TTL) | `RECEIVED#{request token}` | `RECEIVED` |
//! | current reference generation | `REFERENCE` | `CURRENT` |
//! | reference bucket | `REFERENCE#{generation key}` | `BUCKET#{index, 5 digits}` |
//! | window bucket, per shard | `WINDOW#{shard}` | `S#{epoch second, 11 digits}` or `M#{minute's first second}` |
//! | a window bucket's distinct users | `WINDOW#{shard}` | the bucket's sort key and `#U` |
//! | a user's day (months are added up from days when read) | `USERAGG#{user_id}` | `D#{yyyy-mm-dd}` |
//! | everyone's day or month, per shard | `AGG#{shard}` | `D#{yyyy-mm-dd}` or `M#{yyyy-mm}` |
//! | per-shard totals | `METRICS` | `SHARD#{shard}` |
//! | ingest counter slot, by request token | `METRICS` | `INGEST#{slot, 2 digits}` |
//! | ingest counter slot, leased by one execution environment at a time | `METRICS` | `INGEST#L{slot, 2 digits}` |
//! | per-second throughput | `RATE` | `{epoch second, 11 digits}#{shard}` |
//! | write key | `WRITE_KEYS` | `{key id}` |
//! | a write key's events in one second | `KEYRATE#{key id}` | `{epoch second, 11 digits}` |
//! | a call a write key sent that was refused | `REFUSED#{source}#{digest}` | `REFUSED` |
//!
//! Window buckets and aggregates count by type, source (and plan, region) in attributes
//! `t#{type}`, `s#{source}`, ... Each such breakdown keeps at most a configured number of keys
//! (`n#t#` counts them); later keys add to `t#other` and to `folded`. Each also holds, per
//! shard, the position of the last record it took (`w#{shard}`).
//!
//! Events with a user also carry `user_pk` = `USER#{user_id}` and
//! `user_sk` = `{timestamp, fixed width}#{source}#{id}` for the `ByUser` index. Conflict
//! items carry `user_pk` = `CONFLICTS` and `user_sk` = `{when judged, fixed width}#{source}#{id}`
//! there too, so that they can be listed with one Query. A record's duplicate marker and its
//! conflict item share one key: a record is counted once, whichever it was judged.
//! `#` cannot occur in a source, an id or an ingest id, so keys never collide.
//! Markers are keyed by the ingest id when the record has one, so every copy of a record
//! that ingest put twice finds the same marker and is counted once.

use time::OffsetDateTime;

use eventline_model::aggregate::Period;
use eventline_model::event::{EventId, IngestId, Source, UserId, sortable_timestamp};
use eventline_model::record::Position;
use eventline_model::window::Bucket;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const USER_PK: &str = "user_pk";
pub const USER_SK: &str = "user_sk";
/// The global secondary index on `user_pk`/`user_sk` (template.yaml).
pub const BY_USER_INDEX: &str = "ByUser";
/// Attribute the table's TTL reads: epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";

pub const EVENT_SK: &str = "EVENT";
pub const POISON_SK: &str = "POISON";
pub const RECEIVED_SK: &str = "RECEIVED";
pub const REFERENCE_PK: &str = "REFERENCE";
pub const REFERENCE_CURRENT_SK: &str = "CURRENT";
/// Seconds a replaced generation's buckets stay readable (for batches that read its
/// pointer just before the switch) before TTL removes them.
pub const REFERENCE_EXPIRY_SECONDS: i64 = 24 * 60 * 60;
pub const METRICS_PK: &str = "METRICS";
pub const SHARD_PREFIX: &str = "SHARD#";
pub const INGEST_PREFIX: &str = "INGEST#";
pub const RATE_PK: &str = "RATE";
/// Per-shard latency histogram buckets are attributes named `lat_{bucket}`.
pub const LATENCY_BUCKET_PREFIX: &str = "lat_";

/// Ingest spreads its received counter over this many items so no single item runs hot.
pub const INGEST_COUNTER_SLOTS: u32 = 16;
/// Slots an execution environment of ingest can lease for its received counts; one more
/// environment than this counts by request token instead.
pub const INGEST_LEASED_SLOTS: u32 = 64;

/// Seconds the per-second throughput items live before TTL removes them.
pub const RATE_ITEM_TTL_SECONDS: i64 = 2 * 24 * 60 * 60;
/// Seconds a received marker lives: far longer than any retry of the request that wrote it.
pub const RECEIVED_MARKER_TTL_SECONDS: i64 = 24 * 60 * 60;

/// Attribute names, shared by the writers (ingest, transform) and the reader (metrics).
pub mod attr {
    // The processed event item.
    pub const ID: &str = "id";
    pub const SOURCE: &str = "source";
    pub const TYPE: &str = "type";
    pub const TIMESTAMP: &str = "timestamp";
    pub const USER_ID: &str = "user_id";
    pub const PAYLOAD: &str = "payload";
    /// `data` as the client's JSON text: DynamoDB numbers cannot hold every JSON number.
    pub const DATA: &str = "data";
    pub const RECEIVED_AT: &str = "received_at";
    pub const PROCESSED_AT: &str = "processed_at";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const SHARD_ID: &str = "shard_id";
    pub const SEQUENCE_NUMBER: &str = "sequence_number";
    /// A user record's index in its aggregated record (a number); absent on other records.
    pub const SUB_SEQUENCE_NUMBER: &str = "sub_sequence_number";
    pub const INGEST_ID: &str = "ingest_id";
    /// Who sent the event, and the digest of what they sent (`identity.rs`); also on a
    /// conflict item, for the conflicting copy.
    pub const SENDER: &str = "sender";
    pub const DIGEST: &str = "digest";

    // A conflict item: the copy as it would have been stored (JSON, when small enough), its
    // size, and when the transform judged it (`processed_at`).
    pub const KIND: &str = "kind";
    pub const KIND_CONFLICT: &str = "conflict";
    pub const COPY: &str = "copy";
    pub const COPY_BYTES: &str = "copy_bytes";

    // Counter items.
    pub const PROCESSED: &str = "processed";
    pub const DUPLICATE: &str = "duplicate";
    pub const CONFLICT: &str = "conflict";
    pub const FAILED: &str = "failed";
    pub const LATENCY_SUM_MS: &str = "latency_sum_ms";
    pub const LAST_ACTIVE_MS: &str = "last_active_ms";
    pub const FIRST_PROCESSED_MS: &str = "first_processed_ms";
    pub const RECEIVED: &str = "received";
    /// On a shard's totals: records other producers wrote, counted received by the transform.
    pub const RECEIVED_DIRECT: &str = "received_direct";
    pub const FIRST_RECEIVED_MS: &str = "first_received_ms";
    /// A leased ingest counter slot: who holds it, until when, and the last request it counted.
    pub const LEASE_OWNER: &str = "lease_owner";
    pub const LEASE_UNTIL_MS: &str = "lease_until_ms";
    pub const LEASE_SEQUENCE: &str = "lease_seq";

    // Enrichment, on the processed event item.
    pub const PLAN: &str = "plan";
    pub const REGION: &str = "region";
    pub const GENERATION: &str = "generation";

    // The reference pointer and buckets.
    pub const GENERATION_KEY: &str = "generation_key";
    pub const TS: &str = "ts";
    /// `ts` as epoch nanoseconds, for the newer-than condition.
    pub const TS_NS: &str = "ts_ns";
    pub const USERS: &str = "users";
    pub const BUCKETS: &str = "buckets";
    pub const BUCKET_USERS: &str = "bucket_users";

    // Window buckets: counts, counts per dimension value (prefix + value), the users sketch.
    pub const EVENTS: &str = "events";
    pub const UNKNOWN: &str = "unknown";
    pub const TYPE_PREFIX: &str = "t#";
    pub const SOURCE_PREFIX: &str = "s#";
    pub const PLAN_PREFIX: &str = "p#";
    pub const REGION_PREFIX: &str = "r#";
    /// Aggregates: sums of a measure.
    pub const MEASURE_PREFIX: &str = "m#";
    pub const USERS_SKETCH: &str = "users_sketch";
    /// Bumped by every sketch write, for the optimistic check of the next one.
    pub const SKETCH_VERSION: &str = "sketch_version";
    /// How many keys of one breakdown hold a counter of their own: `n#` + the breakdown's
    /// prefix (`n#t#`), checked by every update that counts a key.
    pub const KEY_COUNT_PREFIX: &str = "n#";
    /// Per shard, the position of the last record a window bucket or aggregate took.
    pub const TAKEN_PREFIX: &str = "w#";
    /// Increments a bucket or aggregate counted under `other` because a breakdown was full.
    pub const FOLDED: &str = "folded";
    /// Per-shard totals: analytics updates the table refused (or that failed past their retry
    /// budget), counted in events; the events themselves were stored and counted.
    pub const ANALYTICS_LOST: &str = "analytics_lost";
    /// Write keys.
    pub const KEY_SOURCE: &str = "source";
    pub const SECRET_HASH: &str = "secret_hash";
    pub const ALLOWED_ORIGINS: &str = "allowed_origins";
    pub const EVENTS_PER_SECOND: &str = "events_per_second";
    pub const CREATED_AT: &str = "created_at";
    /// A write key's events in one second.
    pub const COUNT: &str = "count";
    /// A refused call: the key that sent it, its messageId, why (JSON), the call itself.
    pub const KEY_ID: &str = "key_id";
    pub const MESSAGE_ID: &str = "message_id";
    pub const ERRORS: &str = "errors";
    pub const CALL: &str = "call";
}

/// The attribute on a window bucket or aggregate holding the position
/// ([`Position::order_key`](eventline_model::record::Position::order_key)) of the last record
/// of shard `shard_id` it took: it takes only later ones, so a redelivered record adds once.
pub fn taken_attribute(shard_id: &str) -> String {
    format!("{}{shard_id}", attr::TAKEN_PREFIX)
}

/// The attribute holding the key count of the breakdown whose counters start with `prefix`.
pub fn key_count_attribute(prefix: &str) -> String {
    format!("{}{prefix}", attr::KEY_COUNT_PREFIX)
}

pub fn event_pk(source: &Source, id: &EventId) -> String {
    format!("EVENT#{source}#{id}")
}

/// What names one stream record for its markers: ingest's id, else its stream position (a
/// user record's with its index in the aggregate, so that its siblings have markers of their own).
fn record_key(ingest_id: Option<&IngestId>, position: &Position) -> String {
    match (ingest_id, position.sub_sequence_number) {
        (Some(ingest_id), _) => ingest_id.to_string(),
        (None, None) => format!("{}#{}", position.shard_id, position.sequence_number),
        (None, Some(index)) => format!("{}#{}#{index}", position.shard_id, position.sequence_number),
    }
}

/// The partition of the write keys: few, read by id, listed with one Query.
pub const WRITE_KEYS_PK: &str = "WRITE_KEYS";
/// Seconds a key's count for one second is kept (the ledger needs only the current one).
pub const KEY_RATE_TTL_SECONDS: i64 = 120;

pub fn key_rate_pk(key: &eventline_model::write_key::KeyId) -> String {
    format!("KEYRATE#{key}")
}

pub fn key_rate_sk(second: i64) -> String {
    format!("{second:011}")
}

/// The `ByUser` index partition that lists refused calls (no user key starts so).
pub const REFUSED_INDEX_PK: &str = "REFUSED";
pub const REFUSED_SK: &str = "REFUSED";
/// How long a refused call is kept: as long as the dead-letter queue keeps its messages.
pub const REFUSED_TTL_SECONDS: i64 = 14 * 24 * 60 * 60;

/// A refused call, keyed by its content: sent again, it is kept once.
pub fn refused_pk(source: &Source, digest: &eventline_model::Digest) -> String {
    format!("REFUSED#{source}#{digest}")
}

/// The `ByUser` index partition that lists conflict items (no user key starts so).
pub const CONFLICTS_INDEX_PK: &str = "CONFLICTS";

pub fn conflict_index_sk(judged_at: OffsetDateTime, source: &Source, id: &EventId) -> String {
    format!("{}#{source}#{id}", sortable_timestamp(judged_at))
}

pub fn duplicate_sk(ingest_id: Option<&IngestId>, position: &Position) -> String {
    format!("DUP#{}", record_key(ingest_id, position))
}

pub fn poison_pk(ingest_id: Option<&IngestId>, position: &Position) -> String {
    format!("POISON#{}", record_key(ingest_id, position))
}

/// Where in the failure bucket (S3) the transform keeps the data of poison records too large
/// for their dead-letter message. Lambda's own failure records are under `aws/lambda/`.
pub const DEAD_LETTER_PREFIX: &str = "dead-letters/";

/// The object of one poison record: named by its stream position, so every delivery of the
/// record writes the same object (a user record of an aggregated record: under the
/// aggregate's, by its index in it).
pub fn dead_letter_key(position: &Position) -> String {
    match position.sub_sequence_number {
        None => format!("{DEAD_LETTER_PREFIX}{}/{}", position.shard_id, position.sequence_number),
        Some(index) => format!("{DEAD_LETTER_PREFIX}{}/{}/{index}", position.shard_id, position.sequence_number),
    }
}

pub fn reference_bucket_pk(generation_key: &str) -> String {
    format!("REFERENCE#{generation_key}")
}

pub fn reference_bucket_sk(index: u32) -> String {
    format!("BUCKET#{index:05}")
}

pub fn window_pk(shard_id: &str) -> String {
    format!("WINDOW#{shard_id}")
}

pub fn window_sk(bucket: Bucket) -> String {
    match bucket {
        Bucket::Second(second) => format!("S#{second:011}"),
        Bucket::Minute(first) => format!("M#{first:011}"),
    }
}

/// The item of a window bucket's distinct users, beside the bucket's counts: so that adding
/// to the counts writes a small item, and merging users writes only the sketch. It sorts
/// after its bucket and before the next one.
pub fn window_users_sk(bucket: Bucket) -> String {
    format!("{}{}", window_sk(bucket), WINDOW_USERS_SUFFIX)
}

/// What ends the sort key of a bucket's users item.
pub const WINDOW_USERS_SUFFIX: &str = "#U";

pub fn user_aggregate_pk(user: &UserId) -> String {
    format!("USERAGG#{user}")
}

pub fn shard_aggregate_pk(shard_id: &str) -> String {
    format!("AGG#{shard_id}")
}

pub fn period_sk(period: Period) -> String {
    match period {
        Period::Day(_) => format!("D#{}", period.label()),
        Period::Month(..) => format!("M#{}", period.label()),
    }
}

pub fn received_pk(request_token: &IngestId) -> String {
    format!("RECEIVED#{request_token}")
}

pub fn shard_sk(shard_id: &str) -> String {
    format!("{SHARD_PREFIX}{shard_id}")
}

pub fn ingest_sk(slot: u32) -> String {
    format!("{INGEST_PREFIX}{slot:02}")
}

pub fn ingest_leased_sk(slot: u32) -> String {
    format!("{INGEST_PREFIX}L{slot:02}")
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

pub fn user_sk(timestamp: OffsetDateTime, source: &Source, id: &EventId) -> String {
    format!("{}#{source}#{id}", sortable_timestamp(timestamp))
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
    fn user_keys_sort_by_event_time() {
        let (web, id) = (Source::parse("web").unwrap(), EventId::parse("a").unwrap());
        let whole = user_sk(time::macros::datetime!(2026-11-23 12:00:00 UTC), &web, &id);
        let half = user_sk(time::macros::datetime!(2026-11-23 12:00:00.5 UTC), &web, &id);
        assert!(whole < half, "{whole} should sort before {half}");
    }

    #[test]
    fn markers_of_copies_of_one_record_collide() {
        let ingest_id = IngestId::generate();
        let at = |sequence: &str| Position::of_record("s1", sequence);
        assert_eq!(duplicate_sk(Some(&ingest_id), &at("1")), duplicate_sk(Some(&ingest_id), &at("2")));
        assert_ne!(duplicate_sk(None, &at("1")), duplicate_sk(None, &at("2")));
        assert_eq!(poison_pk(None, &at("7")), "POISON#s1#7");
    }

    #[test]
    fn user_records_of_one_aggregate_have_markers_and_objects_of_their_own() {
        let user = |index| Position { sub_sequence_number: Some(index), ..Position::of_record("s1", "7") };
        assert_eq!(poison_pk(None, &user(0)), "POISON#s1#7#0");
        assert_ne!(duplicate_sk(None, &user(0)), duplicate_sk(None, &user(1)));
        assert_ne!(duplicate_sk(None, &user(0)), duplicate_sk(None, &Position::of_record("s1", "7")));
        assert_eq!(dead_letter_key(&user(2)), "dead-letters/s1/7/2");
        assert_eq!(dead_letter_key(&Position::of_record("s1", "7")), "dead-letters/s1/7");
    }

    #[test]
    fn event_keys_include_source_and_id() {
        let pk = event_pk(&Source::parse("web").unwrap(), &EventId::parse("a:1").unwrap());
        assert_eq!(pk, "EVENT#web#a:1");
    }
}

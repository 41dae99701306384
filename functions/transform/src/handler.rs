//! One Kinesis batch, in stages: decode each record (each user record of an aggregated
//! record, as the KCL hands them out), enrich the events from the reference table,
//! dead-letter the poison records, commit (store and count exactly once), merge the stored
//! events' users into the window sketches, dead-letter what the table refused, publish what
//! was stored, and report the first record not finished so Lambda retries from there.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use eventline_aws::item::{MAX_ITEM_BYTES, fits_in_an_item};
use eventline_model::event::checked_utc;
use eventline_model::kpl::{self, AggregateError, UserRecord};
use eventline_model::reference::Enrichment;
use eventline_model::reference::ReferenceError;
use eventline_model::retry::Backoff;
use eventline_model::sink::{OutRecord, RecordSink, put_all};
use eventline_model::window::{Bucket, user_hash};
use eventline_model::{Arrival, EventId, IngestId, Position, ProcessedEvent, Rules, Source, StreamRecord, UserId};
use time::OffsetDateTime;

use crate::dead_letter::{DeadLetters, PoisonMessage};
use crate::enrich::Enricher;
use crate::store::{Committed, Entry, EventStore, Outcome};

pub struct Transform<St, Si, D, E> {
    pub store: St,
    pub output: Si,
    pub dead_letters: D,
    pub reference: E,
    /// Budget for publishing one batch's stored events.
    pub backoff: Backoff,
    /// The deployment's rules, which records other producers write must meet too.
    pub rules: Rules,
}

/// One event's worth of a batch: a record, or one user record of an aggregated record.
struct Unit<'a> {
    record: &'a KinesisEventRecord,
    /// The record's index in the batch: where Lambda retries from.
    index: usize,
    part: Part,
}

enum Part {
    /// An ordinary record: its data is one event.
    Whole,
    /// A user record of an aggregated record, at its index there (its sub-sequence number).
    User(u64, UserRecord),
    /// An aggregated record that cannot be read: poison as a whole.
    Broken(AggregateError),
}

impl Unit<'_> {
    fn data(&self) -> &[u8] {
        match &self.part {
            Part::User(_, user) => &user.data,
            Part::Whole | Part::Broken(_) => &self.record.kinesis.data,
        }
    }

    fn sub_sequence_number(&self) -> Option<u64> {
        match &self.part {
            Part::User(index, _) => Some(*index),
            Part::Whole | Part::Broken(_) => None,
        }
    }

    /// The dead-letter message of this unit: the record's, or the user record's own partition
    /// key and data at the record's position, so that its siblings are not sent with it.
    fn poison_message(&self, reason: String, batch_shard: &str) -> PoisonMessage {
        let kinesis = &self.record.kinesis;
        let shard_id = shard_of(self.record).unwrap_or_else(|| batch_shard.to_owned());
        let arn = self.record.event_source_arn.clone();
        match &self.part {
            Part::User(index, user) => {
                PoisonMessage::new(reason, &shard_id, &kinesis.sequence_number, &user.partition_key, arn, &user.data)
                    .of_user_record(*index)
            }
            Part::Whole | Part::Broken(_) => PoisonMessage::new(
                reason,
                &shard_id,
                &kinesis.sequence_number,
                &kinesis.partition_key,
                arn,
                &kinesis.data,
            ),
        }
    }
}

/// The batch's units, in order: a record each, and an aggregated record's user records.
fn units(records: &[KinesisEventRecord]) -> Vec<Unit<'_>> {
    let mut units = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        match kpl::deaggregate(&record.kinesis.data) {
            Ok(None) => units.push(Unit { record, index, part: Part::Whole }),
            Ok(Some(users)) => units.extend((0..).zip(users).map(|(sub_sequence, user)| Unit {
                record,
                index,
                part: Part::User(sub_sequence, user),
            })),
            Err(error) => units.push(Unit { record, index, part: Part::Broken(error) }),
        }
    }
    units
}

/// What one unit decoded to.
enum Decoded {
    Event(ProcessedEvent),
    /// With ingest's id when the record decoded but cannot be stored, so every copy of it
    /// is counted once.
    Poison(PoisonMessage, Option<IngestId>),
}

/// A unit for the dead-letter queue, at its index in the batch's units.
type DeadLetter = (usize, PoisonMessage);

/// A summary of one batch, for the log line each invocation writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub records: usize,
    pub stored: usize,
    pub redelivered: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub poison: usize,
    /// Index of the first record not finished, when the batch must be retried from there.
    pub retry_from: Option<usize>,
    /// Events the records held: one per ordinary record, one per user record of an
    /// aggregated record, one per aggregated record that is poison as a whole.
    pub units: usize,
    /// Milliseconds from received to processed of each event stored by this batch.
    pub latencies_ms: Vec<u64>,
    /// Users-sketch updates given up on (the events were stored and counted).
    pub analytics_lost: u64,
}

impl<St: EventStore, Si: RecordSink, D: DeadLetters, E: Enricher> Transform<St, Si, D, E> {
    #[tracing::instrument(skip_all, fields(records = event.records.len()))]
    pub async fn handle(&self, event: KinesisEvent) -> KinesisEventResponse {
        let (response, _) = self.process(&event.records).await;
        response
    }

    /// The batch through its stages; the response names the first record not finished.
    pub async fn process(&self, records: &[KinesisEventRecord]) -> (KinesisEventResponse, BatchReport) {
        let shard_id = batch_shard(records);
        let units = units(records);
        let mut decoded = decode(&units, &shard_id, OffsetDateTime::now_utc(), &self.rules);
        if let Err(error) = self.enrich(&mut decoded).await {
            tracing::error!(error = %eventline_aws::error_chain(&error), "reference table not read; retrying the batch");
            return report(records, &units, &[], &[], Unfinished::All, 0); // nothing done: all retried
        }
        // A poison record reaches the queue before its marker counts it: the batch stops
        // short of the first one the queue did not take.
        let unsent = self.dead_letter(poison(&decoded), "poison record").await;
        let (entries, outcomes) = self.commit(&shard_id, &decoded[..unsent.unwrap_or(decoded.len())]).await;
        let analytics = self.store.add_analytics(&shard_id, &entries, &outcomes).await;
        let analytics_lost = analytics.lost + self.sketches(&shard_id, &entries, &outcomes).await;
        let unsent = self.dead_letter(refused(&units, &shard_id, &outcomes), "refused record").await;
        let unpublished = self.publish(&entries, &outcomes).await;
        // Units past the last committed, or from the first whose analytics were not added,
        // not sent or not published, are retried by Lambda, with the whole record that holds
        // the first of them.
        let unfinished =
            [analytics.unfinished, unsent, unpublished].into_iter().flatten().fold(outcomes.len(), usize::min);
        report(records, &units, &entries, &outcomes, Unfinished::From(unfinished), analytics_lost)
    }

    /// Each event gets its user's plan and region from one generation of the reference
    /// table for the whole batch, read before anything is written, so a failure here
    /// retries the batch with nothing done.
    async fn enrich(&self, decoded: &mut [Decoded]) -> Result<(), ReferenceError> {
        let users: Vec<&UserId> = decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Event(event) => event.event.user_id.as_ref(),
                Decoded::Poison(..) => None,
            })
            .collect();
        let lookup = self.reference.lookup(&users).await?;
        for d in decoded {
            if let Decoded::Event(event) = d {
                let meta = event.event.user_id.as_ref().and_then(|u| lookup.users.get(u));
                event.enrichment = Some(match meta {
                    Some(meta) => Enrichment {
                        plan: meta.plan.clone(),
                        region: meta.region.clone(),
                        generation: lookup.generation,
                    },
                    None => Enrichment::unknown(lookup.generation),
                });
            }
        }
        Ok(())
    }

    /// Sends records to the dead-letter queue: the one place that does, for the records
    /// that are poison and for the events the table refused. Returns the index of the
    /// first record the queue did not take.
    async fn dead_letter(&self, letters: Vec<DeadLetter>, what: &str) -> Option<usize> {
        if letters.is_empty() {
            return None;
        }
        let (indexes, messages): (Vec<usize>, Vec<PoisonMessage>) = letters.into_iter().unzip();
        let mut unsent = None;
        for ((index, message), sent) in indexes.into_iter().zip(&messages).zip(self.dead_letters.send(&messages).await)
        {
            tracing::warn!(sequence_number = %message.sequence_number, reason = %message.reason, "{what}");
            if let Err(error) = sent {
                tracing::error!(error = %eventline_aws::error_chain(&error), sequence_number = %message.sequence_number, "dead-letter queue refused a record");
                unsent.get_or_insert(index);
            }
        }
        unsent
    }

    /// Stores and counts each record's entry exactly once. Returns the entries, and an
    /// outcome for each committed: fewer than the entries when a commit failed, and the
    /// batch is then retried from the first without one.
    async fn commit(&self, shard_id: &str, decoded: &[Decoded]) -> (Vec<Entry>, Vec<Outcome>) {
        let entries = entries_of(decoded);
        let Committed { outcomes, error } = self.store.commit(shard_id, &entries).await;
        if let Some(error) = error {
            tracing::error!(%error, first = outcomes.len(), "commit failed");
        }
        (entries, outcomes)
    }

    /// Users of the stored events join their buckets' sketches. Analytics never hold up
    /// the shard: what the store gives up on is counted as lost (and returned here), and a
    /// redelivery (of a batch retried for another reason) merges them again harmlessly.
    async fn sketches(&self, shard_id: &str, entries: &[Entry], outcomes: &[Outcome]) -> u64 {
        let mut users: BTreeMap<Bucket, Vec<u64>> = BTreeMap::new();
        for (entry, outcome) in entries.iter().zip(outcomes) {
            if let (Entry::Event { event, buckets }, Outcome::Stored | Outcome::Redelivered | Outcome::IngestCopy) =
                (entry, outcome)
                && let Some(user) = &event.event.user_id
            {
                for bucket in buckets {
                    users.entry(*bucket).or_default().push(user_hash(user.as_str()));
                }
            }
        }
        if users.is_empty() {
            return 0;
        }
        self.store.merge_users(shard_id, &users).await
    }

    /// Puts the events stored now or by an earlier delivery on the output stream. Returns
    /// the index of the first the stream did not take.
    async fn publish(&self, entries: &[Entry], outcomes: &[Outcome]) -> Option<usize> {
        let (indexes, to_publish): (Vec<usize>, Vec<OutRecord>) = entries
            .iter()
            .zip(outcomes)
            .enumerate()
            .filter_map(|(index, (entry, outcome))| match entry {
                Entry::Event { event, .. } if outcome.publishes() => {
                    Some((index, OutRecord { partition_key: event.event.partition_key(), data: event.to_json() }))
                }
                _ => None,
            })
            .unzip();
        let published = put_all(&self.output, &to_publish, self.backoff).await;
        let mut unpublished = None;
        for (index, result) in indexes.into_iter().zip(published) {
            if let Err(failure) = result {
                tracing::error!(code = %failure.code, index, "output stream did not take a stored event");
                unpublished.get_or_insert(index);
            }
        }
        unpublished
    }
}

/// Decodes each unit: an event, or a poison record with the reason.
fn decode(units: &[Unit<'_>], shard_id: &str, processed_at: OffsetDateTime, rules: &Rules) -> Vec<Decoded> {
    units.iter().map(|unit| decode_unit(unit, shard_id, processed_at, rules)).collect()
}

/// What of a batch is not finished.
#[derive(Debug, Clone, Copy)]
enum Unfinished {
    /// Nothing was done.
    All,
    /// The units from this index on (none when it is past the last).
    From(usize),
}

/// The batch item failure that makes Lambda retry from the record holding the first unit
/// not finished (none when all are done), and the batch's counts, written to the log and the
/// metrics.
fn report(
    records: &[KinesisEventRecord],
    units: &[Unit<'_>],
    entries: &[Entry],
    outcomes: &[Outcome],
    unfinished: Unfinished,
    analytics_lost: u64,
) -> (KinesisEventResponse, BatchReport) {
    let (finished, retry_from) = match unfinished {
        Unfinished::All => (0, (!records.is_empty()).then_some(0)),
        Unfinished::From(unit) => (unit, units.get(unit).map(|unit| unit.index)),
    };
    let mut report = BatchReport {
        records: records.len(),
        units: units.len(),
        retry_from,
        analytics_lost,
        ..BatchReport::default()
    };
    for (entry, outcome) in entries.iter().zip(outcomes).take(finished) {
        match (entry, outcome) {
            (Entry::Poison { .. }, _) | (_, Outcome::Refused | Outcome::RefusedBefore) => report.poison += 1,
            (Entry::Event { event, .. }, Outcome::Stored) => {
                report.stored += 1;
                report.latencies_ms.push(event.latency_ms);
            }
            (_, Outcome::Stored) => report.stored += 1,
            (_, Outcome::Redelivered | Outcome::IngestCopy) => report.redelivered += 1,
            (_, Outcome::Duplicate) => report.duplicates += 1,
            (_, Outcome::Conflict) => report.conflicts += 1,
            _ => {}
        }
    }
    let mut response = KinesisEventResponse::default();
    if let Some(record) = retry_from.and_then(|index| records.get(index)) {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(record.kinesis.sequence_number.clone());
        response.batch_item_failures.push(failure);
    }
    tracing::info!(
        stored = report.stored,
        redelivered = report.redelivered,
        duplicates = report.duplicates,
        conflicts = report.conflicts,
        poison = report.poison,
        retry_from = ?report.retry_from,
        analytics_lost = report.analytics_lost,
        "batch processed"
    );
    eventline_aws::telemetry::transformed(report.stored as u64, report.duplicates as u64, report.poison as u64);
    eventline_aws::telemetry::conflicted(report.conflicts as u64);
    eventline_aws::telemetry::processing_latency(&report.latencies_ms);
    (response, report)
}

/// The records that did not decode, or broke the rules: dead-lettered before the commit.
fn poison(decoded: &[Decoded]) -> Vec<DeadLetter> {
    decoded
        .iter()
        .enumerate()
        .filter_map(|(index, d)| match d {
            Decoded::Poison(message, _) => Some((index, message.clone())),
            Decoded::Event(_) => None,
        })
        .collect()
}

/// Events the table refused for what they hold: dead-lettered after the commit, never
/// retried as a batch.
fn refused(units: &[Unit<'_>], shard_id: &str, outcomes: &[Outcome]) -> Vec<DeadLetter> {
    outcomes
        .iter()
        .zip(units)
        .enumerate()
        .filter(|(_, (outcome, _))| outcome.dead_letters())
        .map(|(index, (_, unit))| {
            let reason = "the table refused the stored item (ValidationError)".into();
            (index, unit.poison_message(reason, shard_id))
        })
        .collect()
}

/// One entry per record, in order: a later record with an identity seen earlier in the batch
/// is an event too, judged against the stored one in a later transaction (a duplicate or a
/// conflict), or a mere copy when ingest put that same record twice.
fn entries_of(decoded: &[Decoded]) -> Vec<Entry> {
    let mut seen: HashMap<(Source, EventId), &ProcessedEvent> = HashMap::new();
    let mut poison_seen: HashSet<IngestId> = HashSet::new();
    decoded
        .iter()
        .map(|d| match d {
            Decoded::Poison(message, ingest_id) => {
                if let Some(id) = ingest_id
                    && !poison_seen.insert(id.clone())
                {
                    return Entry::Copy;
                }
                Entry::Poison {
                    ingest_id: ingest_id.clone(),
                    position: Position {
                        shard_id: message.shard_id.clone(),
                        sequence_number: message.sequence_number.clone(),
                        sub_sequence_number: message.sub_sequence_number,
                    },
                }
            }
            Decoded::Event(event) => {
                let (source, id) = event.event.identity();
                match seen.get(&(source.clone(), id.clone())) {
                    None => {
                        seen.insert((source.clone(), id.clone()), event);
                        Entry::event(event.clone())
                    }
                    Some(first) if first.ingest_id.is_some() && event.ingest_id == first.ingest_id => Entry::Copy,
                    Some(_) => Entry::event(event.clone()),
                }
            }
        })
        .collect()
}

/// Where the counters of a batch go when no record names its shard: not a batch Lambda
/// sends, but its poison records are still counted.
const NO_SHARD: &str = "shardId-none";

/// The shard a record came from: the part of its event id before the sequence number.
fn shard_of(record: &KinesisEventRecord) -> Option<String> {
    let (shard, _) = record.event_id.as_deref()?.split_once(':')?;
    (!shard.is_empty()).then(|| shard.to_owned())
}

/// The shard of a batch: Lambda sends one shard's records per invocation.
fn batch_shard(records: &[KinesisEventRecord]) -> String {
    records.iter().find_map(shard_of).unwrap_or_else(|| NO_SHARD.to_owned())
}

/// When Kinesis took the record, if it lies in the years the pipeline stores.
fn arrival_time(record: &KinesisEventRecord) -> Option<OffsetDateTime> {
    let arrived = record.kinesis.approximate_arrival_timestamp.0;
    let nanos = i128::from(arrived.timestamp()) * 1_000_000_000 + i128::from(arrived.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(checked_utc)
}

fn decode_unit(unit: &Unit<'_>, batch_shard: &str, processed_at: OffsetDateTime, rules: &Rules) -> Decoded {
    let record = unit.record;
    // Without its shard a record's stream position, and so its identity as a delivery, is
    // unknown: storing it could count a redelivery as a duplicate.
    let Some(shard_id) = shard_of(record) else {
        let reason = "the record has no eventID naming its shard".to_owned();
        return Decoded::Poison(unit.poison_message(reason, batch_shard), None);
    };
    if let Part::Broken(error) = &unit.part {
        return Decoded::Poison(unit.poison_message(error.to_string(), batch_shard), None);
    }
    let position = Position {
        shard_id,
        sequence_number: record.kinesis.sequence_number.clone(),
        sub_sequence_number: unit.sub_sequence_number(),
    };
    let arrival = Arrival { at: arrival_time(record), position: &position, rules };
    let stream_record = match StreamRecord::decode_arrived(unit.data(), &arrival) {
        Ok(stream_record) => stream_record,
        Err(error) => return Decoded::Poison(unit.poison_message(error.to_string(), batch_shard), None),
    };
    // Another producer's record can hold what ingest would refuse: an item DynamoDB cannot
    // store would fail its whole commit group, every time. Sized with the longest metadata
    // (as ingest sizes it), so a record cannot be stored on one delivery and refused on the
    // next.
    if let Err(size) = fits_in_an_item(&stream_record) {
        let reason = format!("the stored item could be {size} bytes; DynamoDB's item limit is {MAX_ITEM_BYTES}");
        return Decoded::Poison(unit.poison_message(reason, batch_shard), stream_record.ingest_id);
    }
    let event = ProcessedEvent::from_record(stream_record, position, processed_at);
    Decoded::Event(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryDeadLetters, MemoryReference, MemoryStore};
    use eventline_model::EventId;
    use eventline_model::memory::MemoryStream;
    use eventline_model::sink::PutFailure;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    type TestTransform = Transform<MemoryStore, MemoryStream, MemoryDeadLetters, MemoryReference>;

    fn transform() -> TestTransform {
        Transform {
            store: MemoryStore::new(),
            output: MemoryStream::new(),
            dead_letters: MemoryDeadLetters::new(),
            reference: MemoryReference::new(),
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(1),
                budget: Duration::from_millis(2),
            },
            rules: Rules::default(),
        }
    }

    fn fixture(name: &str) -> KinesisEvent {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn counts(t: &TestTransform) -> (u64, u64, u64) {
        let counts = t.store.counts();
        (counts.processed, counts.duplicate, counts.failed)
    }

    fn failure_ids(response: &KinesisEventResponse) -> Vec<String> {
        response.batch_item_failures.iter().filter_map(|f| f.item_identifier.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn good_records_are_uppercased_stored_counted_and_published() {
        let t = transform();
        let response = t.handle(fixture("transform-kinesis-good.json")).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (3, 0, 0));
        let published = t.output.taken_json();
        assert_eq!(published.len(), 3);
        assert_eq!(published[0]["payload"], "GRÖSSE 0");
        assert_eq!(published[0]["shard_id"], "shardId-000000000000");
        assert_eq!(published[0]["sequence_number"], "49655000000000000000000000000000000000000000000000000");
        assert_eq!(published[0]["latency_ms"].as_u64().map(|l| l > 0), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn poison_records_go_to_dead_letters_and_the_rest_is_stored() {
        let t = transform();
        let response = t.handle(fixture("transform-kinesis-poison.json")).await;
        assert!(response.batch_item_failures.is_empty(), "poison must not block the shard");
        assert_eq!(counts(&t), (2, 0, 2));
        let sent = t.dead_letters.sent();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].reason.contains("UTF-8"), "{}", sent[0].reason);
        assert!(sent[1].reason.contains("not a valid event"), "{}", sent[1].reason);
        assert_eq!(sent[1].data, br#"{"id": "no closing brace""#);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_in_one_batch_is_stored_once_and_counted_as_duplicate() {
        let t = transform();
        t.handle(fixture("transform-kinesis-duplicate.json")).await;
        assert_eq!(counts(&t), (2, 1, 0));
        let published = t.output.taken_json();
        assert_eq!(published.iter().filter(|r| r["id"] == "evt-dup").count(), 1);
        assert_eq!(published[0]["payload"], "FIRST");
    }

    #[tokio::test(start_paused = true)]
    async fn redelivered_batch_is_republished_but_not_counted_again() {
        let t = transform();
        t.handle(fixture("transform-kinesis-duplicate.json")).await;
        t.handle(fixture("transform-kinesis-duplicate.json")).await;
        t.handle(fixture("transform-kinesis-poison.json")).await;
        t.handle(fixture("transform-kinesis-poison.json")).await;
        assert_eq!(counts(&t), (4, 1, 2));
        assert_eq!(t.output.taken_json().len(), 4 + 4, "stored events are published at least once");
    }

    #[tokio::test(start_paused = true)]
    async fn when_store_fails_should_report_first_record_for_retry() {
        let t = transform();
        t.store.fail_next_commits(1);
        let event = fixture("transform-kinesis-good.json");
        let first = event.records[0].kinesis.sequence_number.clone();
        let response = t.handle(event.clone()).await;
        assert_eq!(failure_ids(&response), [first]);
        assert!(t.output.taken_json().is_empty(), "nothing published before it is stored");
        let response = t.handle(event).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (3, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn when_publish_fails_should_retry_from_that_record() {
        let mut t = transform();
        let refusing = Arc::new(AtomicBool::new(true));
        let refuses = refusing.clone();
        t.output = MemoryStream::refusing(move |record| {
            let json: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
            (refuses.load(Ordering::SeqCst) && json["id"] == "evt-k001")
                .then(|| PutFailure { code: "InternalFailure".into(), message: "down".into() })
        });
        let event = fixture("transform-kinesis-good.json");
        let response = t.handle(event.clone()).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()]);
        refusing.store(false, Ordering::SeqCst);
        // Lambda re-delivers from the reported record onwards.
        let mut retry = event.clone();
        retry.records.remove(0);
        assert!(t.handle(retry).await.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (3, 0, 0));
        let ids: HashSet<String> = t.output.taken_json().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn when_dead_letter_queue_fails_should_retry_from_the_poison_record() {
        let mut t = transform();
        t.dead_letters = MemoryDeadLetters::refusing();
        let event = fixture("transform-kinesis-poison.json");
        let response = t.handle(event.clone()).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()]);
        assert_eq!(counts(&t), (1, 0, 0), "records before the poison record are finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sam_generated_record_is_stored_as_an_api_event_received_when_it_arrived() {
        let t = transform();
        let event = fixture("transform-kinesis-sam-generated.json");
        assert!(t.handle(event.clone()).await.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (1, 0, 0));
        {
            let published = t.output.taken_json();
            assert_eq!(published.len(), 1);
            let stored = &published[0];
            assert_eq!((stored["id"].as_str(), stored["source"].as_str()), (Some("k-1"), Some("sam")));
            assert_eq!(stored["received_at"], "2015-04-09T00:00:00Z", "the approximate arrival timestamp");
            assert_eq!(stored["timestamp"], "2015-04-09T00:00:00Z", "the API's default: when it was received");
            assert_eq!(stored["type"], "event");
            assert_eq!(stored["payload"], "HI");
        }
        assert!(t.dead_letters.sent().is_empty());
        t.handle(event).await;
        assert_eq!(counts(&t), (1, 0, 0), "a redelivery is not counted again");
        let stored = t.store.stored_at("sam", "k-1");
        assert_eq!(stored.clone().map(|at| at.ingest_id), Some(None), "{stored:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_without_id_keeps_one_identity_across_deliveries() {
        let t = transform();
        let mut event = fixture("transform-kinesis-sam-generated.json");
        *event.records[0].kinesis.data = br#"{"source":"sam","payload":"no id"}"#.to_vec();
        t.handle(event.clone()).await;
        t.handle(event).await;
        assert_eq!(counts(&t), (1, 0, 0));
        assert_eq!(t.store.stored_events(), 1);
        let published = t.output.taken_json();
        assert_eq!(published.len(), 2, "published on each delivery");
        assert_eq!(published[0]["id"], published[1]["id"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sam_generated_record_that_breaks_the_apis_rules_is_poison() {
        let t = transform();
        let event = fixture("transform-kinesis-sam-invalid.json");
        let data = event.records[0].kinesis.data.0.clone();
        let response = t.handle(event).await;
        assert!(response.batch_item_failures.is_empty(), "poison must not block the shard");
        assert_eq!(counts(&t), (0, 0, 1));
        assert!(t.output.taken_json().is_empty());
        let sent = t.dead_letters.sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].reason.contains("timestamp must be an RFC 3339 string"), "{}", sent[0].reason);
        assert_eq!(sent[0].data, data);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_shaped_record_is_checked_against_its_arrival_not_the_clock() {
        let t = transform();
        let mut event = fixture("transform-kinesis-sam-generated.json");
        // Long past now, but more than 5 minutes after the record arrived.
        *event.records[0].kinesis.data = br#"{"id":"k-3","timestamp":"2015-04-09T00:05:01Z"}"#.to_vec();
        t.handle(event).await;
        assert_eq!(counts(&t), (0, 0, 1));
        let sent = t.dead_letters.sent();
        assert!(sent[0].reason.contains("in the future"), "{}", sent[0].reason);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_batch_is_fine() {
        let response = transform().handle(KinesisEvent::default()).await;
        assert!(response.batch_item_failures.is_empty());
    }

    /// Records another producer wrote, one holding each `data`, at stream positions no
    /// earlier batch used.
    fn records_holding(data: Vec<Vec<u8>>) -> KinesisEvent {
        static NEXT_SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);
        let mut event = fixture("transform-kinesis-sam-generated.json");
        let template = event.records[0].clone();
        event.records = data
            .into_iter()
            .map(|data| {
                let mut record = template.clone();
                let n = NEXT_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sequence = format!("4965600000000000000000000000000000000000000000000{n:04}");
                record.kinesis.sequence_number = sequence.clone();
                record.event_id = Some(format!("shardId-000000000000:{sequence}"));
                *record.kinesis.data = data;
                record
            })
            .collect();
        event
    }

    /// An aggregated record of user records holding these texts, with keys `pk-0`, `pk-1`...
    fn aggregate_of(texts: &[&str]) -> Vec<u8> {
        let users: Vec<UserRecord> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| UserRecord {
                partition_key: format!("pk-{i}"),
                explicit_hash_key: None,
                data: text.as_bytes().to_vec(),
            })
            .collect();
        kpl::aggregate(&users)
    }

    fn event_with_id(id: &str) -> String {
        format!(r#"{{"id":"{id}","source":"kpl","payload":"{id}"}}"#)
    }

    /// An ordinary record, an aggregate of `a-1`, `a-2`, `a-3`, and an ordinary record.
    fn around_an_aggregate() -> KinesisEvent {
        let users = [event_with_id("a-1"), event_with_id("a-2"), event_with_id("a-3")];
        records_holding(vec![
            event_with_id("o-1").into_bytes(),
            aggregate_of(&users.each_ref().map(String::as_str)),
            event_with_id("o-2").into_bytes(),
        ])
    }

    #[tokio::test(start_paused = true)]
    async fn each_user_record_of_an_aggregated_record_is_an_event_of_its_own() {
        let t = transform();
        let event = fixture("transform-kinesis-kpl-aggregated.json");
        let (response, report) = t.process(&event.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.records, report.units, report.stored), (2, 4, 4));
        assert_eq!(counts(&t), (4, 0, 0));
        assert!(t.dead_letters.sent().is_empty());
        let published = t.output.taken_json();
        assert_eq!(published[0]["id"], "kpl-0");
        assert!(published[0].get("sub_sequence_number").is_none(), "an ordinary record has none");
        let aggregate = event.records[1].kinesis.sequence_number.as_str();
        let users = &published[1..];
        assert!(users.iter().all(|r| r["sequence_number"] == aggregate), "{users:?}");
        assert_eq!(
            users.iter().map(|r| r["sub_sequence_number"].as_u64()).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2)]
        );
        assert_eq!((users[0]["id"].as_str(), users[0]["payload"].as_str()), (Some("kpl-1"), Some("FIRST")));
        assert_eq!((users[1]["id"].as_str(), users[1]["user_id"].as_str()), (Some("kpl-2"), Some("user-2")));
        // Without an id: one derived from the shard, the aggregate's sequence number and the index.
        let derived = EventId::derived_from(&format!("shardId-000000000000:{aggregate}:2"));
        assert_eq!(users[2]["id"], derived.as_str());
        assert_eq!(users[2]["received_at"], "2015-04-09T00:00:00Z", "the aggregate's arrival");

        // Lambda delivering the batch again stores and counts nothing again.
        let (response, report) = t.process(&event.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.stored, report.redelivered, report.duplicates), (0, 4, 0));
        assert_eq!(counts(&t), (4, 0, 0));
        assert_eq!(t.store.stored_events(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_aggregate_put_again_counts_its_events_as_duplicates() {
        let t = transform();
        let data = aggregate_of(&[&event_with_id("a-1"), &event_with_id("a-2")]);
        t.handle(records_holding(vec![data.clone()])).await;
        // The same bytes at a new sequence number, as a producer retrying its put writes them.
        let (_, report) = t.process(&records_holding(vec![data]).records).await;
        assert_eq!((report.stored, report.duplicates), (0, 2));
        assert_eq!(counts(&t), (2, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn siblings_of_one_identity_are_an_event_and_a_duplicate_not_a_redelivery() {
        let t = transform();
        let event = records_holding(vec![aggregate_of(&[&event_with_id("a-1"), &event_with_id("a-1")])]);
        t.handle(event.clone()).await;
        assert_eq!(counts(&t), (1, 1, 0));
        t.handle(event).await;
        assert_eq!(counts(&t), (1, 1, 0), "a redelivery counts neither again");
    }

    #[tokio::test(start_paused = true)]
    async fn an_aggregated_record_that_cannot_be_read_is_dead_lettered_whole() {
        let good = aggregate_of(&[&event_with_id("a-1"), &event_with_id("a-2")]);
        let mut digest_fails = good.clone();
        *digest_fails.last_mut().unwrap() ^= 1;
        let truncated = good[..good.len() - 1].to_vec();
        let too_short = kpl::MAGIC.to_vec();
        let message = [0x1A, 0x05, 0x08]; // a user record longer than the message
        let undecodable = [&kpl::MAGIC[..], &message, md5_of(&message).as_slice()].concat();
        for (broken, reason) in [
            (digest_fails, "does not match its MD5 digest"),
            (truncated, "does not match its MD5 digest"),
            (too_short, "too short for its digest"),
            (undecodable, "does not decode"),
        ] {
            let t = transform();
            let event = records_holding(vec![
                event_with_id("before").into_bytes(),
                broken.clone(),
                event_with_id("after").into_bytes(),
            ]);
            let (response, report) = t.process(&event.records).await;
            assert!(response.batch_item_failures.is_empty(), "poison must not block the shard");
            assert_eq!((report.units, report.poison), (3, 1));
            assert_eq!(counts(&t), (2, 0, 1), "{reason}");
            let sent = t.dead_letters.sent();
            assert_eq!(sent.len(), 1);
            assert!(sent[0].reason.contains(reason), "{}", sent[0].reason);
            assert_eq!(sent[0].data, broken, "the record whole");
            assert_eq!(sent[0].sequence_number, event.records[1].kinesis.sequence_number);
            assert_eq!(sent[0].sub_sequence_number, None);
            t.handle(event).await;
            assert_eq!(counts(&t), (2, 0, 1), "a redelivery counts it once");
        }
    }

    fn md5_of(data: &[u8]) -> Vec<u8> {
        use md5::Digest;
        md5::Md5::digest(data).to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_record_that_is_no_event_is_dead_lettered_alone() {
        let t = transform();
        let event = records_holding(vec![aggregate_of(&[&event_with_id("a-1"), "not json", &event_with_id("a-3")])]);
        let response = t.handle(event.clone()).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (2, 0, 1));
        let sent = t.dead_letters.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].data.as_slice(), sent[0].partition_key.as_str()), (&b"not json"[..], "pk-1"));
        assert_eq!(sent[0].sequence_number, event.records[0].kinesis.sequence_number);
        assert_eq!(sent[0].sub_sequence_number, Some(1));
        assert!(sent[0].object_key().ends_with("/1"), "{}", sent[0].object_key());
        t.handle(event).await;
        assert_eq!(counts(&t), (2, 0, 1), "a redelivery counts nothing again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_record_the_table_refuses_is_dead_lettered_alone() {
        let mut t = transform();
        t.store = MemoryStore::refusing_ids(&["bad"]);
        let event = records_holding(vec![aggregate_of(&[
            &event_with_id("ok-1"),
            &event_with_id("bad"),
            &event_with_id("ok-2"),
        ])]);
        let response = t.handle(event.clone()).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (2, 0, 1));
        let sent = t.dead_letters.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].data, event_with_id("bad").as_bytes());
        assert_eq!(sent[0].sub_sequence_number, Some(1));
        assert_eq!(t.output.taken_json().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn when_a_user_record_is_not_published_the_aggregate_is_retried_and_counted_once() {
        let mut t = transform();
        let refusing = Arc::new(AtomicBool::new(true));
        let refuses = refusing.clone();
        t.output = MemoryStream::refusing(move |record| {
            let json: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
            (refuses.load(Ordering::SeqCst) && json["id"] == "a-2")
                .then(|| PutFailure { code: "InternalFailure".into(), message: "down".into() })
        });
        let event = around_an_aggregate();
        let (response, report) = t.process(&event.records).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()], "the aggregate's");
        assert_eq!((report.retry_from, report.stored), (Some(1), 2), "what is reported is finished");
        refusing.store(false, Ordering::SeqCst);
        let mut retry = event.clone();
        retry.records.remove(0);
        let (response, report) = t.process(&retry.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(report.redelivered, 4, "the aggregate's user records and the record after it");
        assert_eq!(counts(&t), (5, 0, 0));
        let ids: HashSet<String> = t.output.taken_json().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_store_stops_inside_an_aggregate_the_aggregate_is_retried() {
        let t = transform();
        let event = around_an_aggregate();
        t.store.fail_next_commit_after(2);
        let (response, report) = t.process(&event.records).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()]);
        assert_eq!((report.stored, report.retry_from), (2, Some(1)), "o-1 and a-1 are finished");
        let mut retry = event.clone();
        retry.records.remove(0);
        let (response, report) = t.process(&retry.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.redelivered, report.stored), (1, 3));
        assert_eq!(counts(&t), (5, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_aggregate_holds_no_event_and_holds_up_nothing() {
        let mut t = transform();
        t.output =
            MemoryStream::refusing(|_| Some(PutFailure { code: "InternalFailure".into(), message: "down".into() }));
        let event = records_holding(vec![aggregate_of(&[]), event_with_id("o-1").into_bytes()]);
        let (response, report) = t.process(&event.records).await;
        assert_eq!(report.units, 1);
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()], "not the empty one");
        assert_eq!(counts(&t), (1, 0, 0));
        assert!(t.dead_letters.sent().is_empty());
        t.output = MemoryStream::new();
        let (response, report) = t.process(&event.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.records, report.redelivered), (2, 1));
    }

    /// A batch of records as ingest writes them, one per `(id, ingest id)`, in order, at
    /// stream positions no earlier batch used.
    fn batch(records: &[(&str, &IngestId, &str)]) -> KinesisEvent {
        static NEXT_SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);
        let mut event = fixture("transform-kinesis-good.json");
        let template = event.records[0].clone();
        event.records = records
            .iter()
            .map(|(id, ingest_id, payload)| {
                let mut record = template.clone();
                let n = NEXT_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sequence = format!("4965500000000000000000000000000000000000000000000{n:04}");
                record.kinesis.sequence_number = sequence.clone();
                record.event_id = Some(format!("shardId-000000000000:{sequence}"));
                let line = format!(
                    r#"{{"id":"{id}","source":"web","type":"t","timestamp":"2026-11-23T12:00:00Z","received_at":"2026-11-23T12:00:00Z","ingest_id":"{ingest_id}","payload":"{payload}"}}"#
                );
                *record.kinesis.data = line.into_bytes();
                record
            })
            .collect();
        event
    }

    #[tokio::test(start_paused = true)]
    async fn copies_ingest_put_twice_are_stored_and_counted_once_not_as_duplicates() {
        let t = transform();
        let (a, b) = (IngestId::generate(), IngestId::generate());
        // Within one batch, and across batches: the copy carries the same ingest id.
        t.handle(batch(&[("e1", &a, "x"), ("e1", &a, "x"), ("e2", &b, "y")])).await;
        t.handle(batch(&[("e2", &b, "y")])).await;
        assert_eq!(counts(&t), (2, 0, 0));
        // A client sending e1 again is a duplicate, counted once however often it arrives.
        let c = IngestId::generate();
        t.handle(batch(&[("e1", &c, "x"), ("e1", &c, "x")])).await;
        t.handle(batch(&[("e1", &c, "x")])).await;
        assert_eq!(counts(&t), (2, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_in_the_same_batch_from_another_sender_is_a_conflict_not_stored() {
        let t = transform();
        let ids = [IngestId::generate(), IngestId::generate(), IngestId::generate(), IngestId::generate()];
        let mut event = batch(&[
            ("e1", &ids[0], "mine"),
            ("e1", &ids[1], "theirs"),
            ("e1", &ids[2], "mine"),
            ("e1", &ids[3], "mine"),
        ]);
        let senders = [("alice", "a"), ("bob", "a"), ("alice", "a"), ("alice", "b")];
        for (record, (sender, digest)) in event.records.iter_mut().zip(senders) {
            let text = String::from_utf8(record.kinesis.data.to_vec()).unwrap();
            let envelope = format!(r#","sender":"arn:aws:iam::1:user/{sender}","digest":"{}"}}"#, digest.repeat(32));
            *record.kinesis.data = text.replacen('}', &envelope, 1).into_bytes();
            assert!(StreamRecord::decode(&record.kinesis.data).unwrap().provenance.is_some());
        }
        let (response, report) = t.process(&event.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.stored, report.duplicates, report.conflicts), (1, 1, 2));
        assert_eq!(counts(&t), (1, 1, 0));
        assert_eq!(t.store.counts().conflict, 2);
        let published = t.output.taken_json();
        assert_eq!(published.len(), 1, "conflicts are not published");
        assert_eq!(published[0]["payload"], "MINE");
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_too_large_to_store_is_poison_and_the_rest_is_stored() {
        let t = transform();
        let (a, b, c) = (IngestId::generate(), IngestId::generate(), IngestId::generate());
        let grows = "ΐ".repeat(130_000);
        let event = batch(&[("small", &a, "x"), ("grows", &b, &grows), ("after", &c, "y")]);
        let response = t.handle(event.clone()).await;
        assert!(response.batch_item_failures.is_empty(), "one record must not block the shard");
        assert_eq!(counts(&t), (2, 0, 1));
        let sent = t.dead_letters.sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].reason.contains("item limit"), "{}", sent[0].reason);
        assert_eq!(sent[0].data, event.records[1].kinesis.data.0, "kept whole");
        t.handle(event).await;
        assert_eq!(counts(&t), (2, 0, 1), "redelivery counts nothing again");
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_the_table_refuses_is_dead_lettered_not_retried() {
        let mut t = transform();
        t.store = MemoryStore::refusing_ids(&["bad"]);
        let (a, b, c) = (IngestId::generate(), IngestId::generate(), IngestId::generate());
        let event = batch(&[("ok1", &a, "x"), ("bad", &b, "y"), ("ok2", &c, "z")]);
        let response = t.handle(event.clone()).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (2, 0, 1));
        assert_eq!(t.dead_letters.sent().len(), 1);
        assert_eq!(t.output.taken_json().len(), 2);
        // Redelivered: sent to the queue again (at least once), counted once.
        t.handle(event).await;
        assert_eq!(counts(&t), (2, 0, 1));
        assert_eq!(t.dead_letters.sent().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_store_stops_mid_batch_what_it_committed_is_published_and_the_rest_retried() {
        let t = transform();
        let ids = [IngestId::generate(), IngestId::generate(), IngestId::generate()];
        let event = batch(&[("c1", &ids[0], "x"), ("c2", &ids[1], "y"), ("c3", &ids[2], "z")]);
        t.store.fail_next_commit_after(1);
        let (response, report) = t.process(&event.records).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()]);
        assert_eq!((report.stored, report.retry_from), (1, Some(1)));
        assert_eq!(counts(&t), (1, 0, 0));
        let published = t.output.taken_json();
        assert_eq!(published.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(), ["c1"]);
        let mut retry = event.clone();
        retry.records.remove(0);
        assert!(t.handle(retry).await.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (3, 0, 0));
        assert_eq!(t.output.taken_json().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_analytics_fail_the_batch_is_retried_and_each_record_adds_to_them_once() {
        let t = transform();
        let ids = [IngestId::generate(), IngestId::generate(), IngestId::generate()];
        let event = batch(&[("c1", &ids[0], "x"), ("c2", &ids[1], "y"), ("c3", &ids[2], "z")]);
        t.store.fail_next_analytics(1);
        let (response, report) = t.process(&event.records).await;
        assert_eq!(failure_ids(&response), [event.records[0].kinesis.sequence_number.clone()]);
        assert_eq!((report.stored, report.retry_from), (0, Some(0)), "stored, not finished");
        assert_eq!(counts(&t), (3, 0, 0), "stored and counted in the commit");
        assert!(t.store.analytics().is_empty());
        // The retry finds the events stored by this very record: their analytics are added,
        // and a second redelivery, or a later batch holding them again, adds nothing.
        assert!(t.handle(event.clone()).await.batch_item_failures.is_empty());
        assert!(t.handle(event.clone()).await.batch_item_failures.is_empty());
        let mut tail = event.clone();
        tail.records.remove(0);
        assert!(t.handle(tail).await.batch_item_failures.is_empty());
        let analytics = t.store.analytics();
        assert!(!analytics.is_empty());
        for (item, events) in &analytics {
            assert_eq!(*events, 3, "{item}: each of the three events once");
        }
        assert_eq!(counts(&t), (3, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_dead_letter_queue_fails_for_a_refused_event_the_batch_is_retried_from_it() {
        let mut t = transform();
        t.store = MemoryStore::refusing_ids(&["bad"]);
        t.dead_letters = MemoryDeadLetters::refusing();
        let (a, b, c) = (IngestId::generate(), IngestId::generate(), IngestId::generate());
        let event = batch(&[("ok1", &a, "x"), ("bad", &b, "y"), ("ok2", &c, "z")]);
        let (response, report) = t.process(&event.records).await;
        assert_eq!(failure_ids(&response), [event.records[1].kinesis.sequence_number.clone()]);
        assert_eq!((report.stored, report.poison), (1, 0), "what is reported is finished");
        assert_eq!(counts(&t), (2, 0, 1), "committed, and counted once");
        t.dead_letters = MemoryDeadLetters::new();
        let mut retry = event.clone();
        retry.records.remove(0);
        let (response, report) = t.process(&retry.records).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((report.redelivered, report.poison), (1, 1));
        assert_eq!(counts(&t), (2, 0, 1), "the redelivery counts nothing again");
        assert_eq!(t.dead_letters.sent().len(), 1, "refused before, and dead-lettered now");
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_without_its_shard_is_poison_not_stored_under_a_made_up_shard() {
        let t = transform();
        let mut event = fixture("transform-kinesis-good.json");
        event.records[1].event_id = None;
        let response = t.handle(event).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(counts(&t), (2, 0, 1));
        let sent = t.dead_letters.sent();
        assert!(sent[0].reason.contains("no eventID"), "{}", sent[0].reason);
        assert_eq!(sent[0].shard_id, "shardId-000000000000", "counted with the batch's shard");
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_enriched_from_one_generation_per_batch() {
        use eventline_model::reference::{Label, UserMeta};
        let mut t = transform();
        let meta = UserMeta { plan: Label::parse("pro").unwrap(), region: Label::parse("eu").unwrap() };
        t.reference = MemoryReference::at_generation(5).with_user(UserId::parse("user-1").unwrap(), meta);
        assert!(t.handle(fixture("transform-kinesis-good.json")).await.batch_item_failures.is_empty());
        let published = t.output.taken_json();
        for record in published.iter() {
            assert_eq!(record["generation"], 5, "{record}");
            let known = record["user_id"] == "user-1";
            assert_eq!(record["plan"], if known { "pro" } else { "unknown" }, "{record}");
            assert_eq!(record["region"], if known { "eu" } else { "unknown" }, "{record}");
        }
        assert!(published.iter().any(|r| r["user_id"] == "user-1"), "the fixture has a known user");
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_reference_cannot_be_read_the_whole_batch_is_retried_untouched() {
        let mut t = transform();
        t.reference = MemoryReference::down();
        let event = fixture("transform-kinesis-good.json");
        let response = t.handle(event.clone()).await;
        assert_eq!(failure_ids(&response), [event.records[0].kinesis.sequence_number.clone()]);
        assert_eq!(counts(&t), (0, 0, 0));
        assert!(t.output.taken_json().is_empty());
    }

    /// Events `s0`, `s1`... of these users, at one second of now, so they count in window
    /// buckets.
    fn recent_events_of_users(users: &[&str]) -> KinesisEvent {
        let ids: Vec<IngestId> = users.iter().map(|_| IngestId::generate()).collect();
        let mut event = batch(&ids.iter().map(|id| ("s", id, "x")).collect::<Vec<_>>());
        let now = time::OffsetDateTime::now_utc();
        for (i, (record, user)) in event.records.iter_mut().zip(users).enumerate() {
            let line = format!(
                r#"{{"id":"s{i}","source":"web","type":"t","timestamp":"{0}","received_at":"{0}","user_id":"{user}"}}"#,
                eventline_model::format_rfc3339(now)
            );
            *record.kinesis.data = line.into_bytes();
            record.kinesis.approximate_arrival_timestamp.0 = chrono::Utc::now();
        }
        event
    }

    #[tokio::test(start_paused = true)]
    async fn users_of_events_stored_now_or_before_join_their_buckets_sketches_and_duplicates_do_not() {
        let t = transform();
        let event = recent_events_of_users(&["u-0", "u-1"]);
        let (_, report) = t.process(&event.records).await;
        assert_eq!(report.analytics_lost, 0);
        let both = HashSet::from([user_hash("u-0"), user_hash("u-1")]);
        let sketches = t.store.sketch_users();
        assert_eq!(sketches.len(), 2, "their second and their minute");
        assert!(sketches.values().all(|users| *users == both), "{sketches:?}");
        // A redelivery merges them again, harmlessly; a client's duplicate, from another
        // user, joins no sketch.
        t.process(&event.records).await;
        let duplicate = recent_events_of_users(&["u-9"]);
        let (_, report) = t.process(&duplicate.records).await;
        assert_eq!((report.redelivered, report.duplicates), (0, 1));
        assert_eq!(t.store.sketch_users(), sketches);
    }

    #[tokio::test(start_paused = true)]
    async fn users_sketches_the_table_refuses_cost_no_event_and_hold_up_no_shard() {
        let mut t = transform();
        t.store = MemoryStore::refusing_sketches();
        let event = recent_events_of_users(&["u-0", "u-1"]);
        let (response, report) = t.process(&event.records).await;
        assert!(response.batch_item_failures.is_empty(), "the shard moves on");
        assert_eq!(report.analytics_lost, 4, "two users, each in a second and a minute bucket");
        assert_eq!(counts(&t), (2, 0, 0));
        assert_eq!(t.output.taken_json().len(), 2);
        assert!(t.dead_letters.sent().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn records_other_producers_write_meet_the_deployments_rules() {
        let mut t = transform();
        t.rules =
            Rules { allowed_types: vec![eventline_model::EventType::parse("click").unwrap()], ..Rules::default() };
        // In the API's shape, and in ingest's own: neither gets past the allow-list.
        let mut event = fixture("transform-kinesis-sam-generated.json");
        *event.records[0].kinesis.data = br#"{"id":"k-9","type":"view"}"#.to_vec();
        t.handle(event).await;
        let good = fixture("transform-kinesis-good.json");
        t.handle(good).await;
        assert_eq!(counts(&t), (0, 0, 4));
        let sent = t.dead_letters.sent();
        assert!(sent.iter().all(|m| m.reason.contains("type is not in the allowed types")), "{sent:?}");
    }
}

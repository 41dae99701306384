//! Counting received events, for the metrics' queue depth: exactly once per request,
//! however often the call is retried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use eventline_aws::item::{n, s};
use eventline_aws::keys::{self, attr};
use eventline_aws::{error_chain, refused_for_good};
use eventline_model::IngestId;
use eventline_model::retry::{Backoff, MIN_ATTEMPT_TIME, Retries};

/// The received total could not be updated within the retry budget; the last error is the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("the received counter was not updated")]
pub struct CounterError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Adds accepted events to the running total of events received.
pub trait ReceivedCounter: Send + Sync {
    /// Adds a request's `accepted` events once, however often the call retries its writes
    /// within. A request is counted with one call: a second call is a second count.
    fn add(&self, request: &IngestId, accepted: u64) -> impl Future<Output = Result<(), CounterError>> + Send;
}

/// How long a leased slot stays with its holder after its last count: far longer than a
/// request's retries (so a slot never changes hands while a count to it may still land),
/// short enough that the slots of environments that are gone free up soon. Environments
/// compare it with their own clocks, which must agree to well within it (Lambda's do, to
/// milliseconds).
pub const LEASE_TIME: Duration = Duration::from_secs(5 * 60);
/// Slots a request tries to lease before it counts by token instead.
const CLAIMS_PER_REQUEST: u32 = 3;
/// After every slot a request tried was held, how long the environment counts by token
/// before it tries to lease again.
const LEASING_PAUSE: Duration = Duration::from_secs(60);

/// The counter in DynamoDB, in small items of the `METRICS` partition, two ways:
///
/// - **A leased slot, 1 write unit a request.** An execution environment leases one of
///   [`keys::INGEST_LEASED_SLOTS`] items and counts each request there with a plain update
///   that also records the request's sequence number in the lease: the update's condition
///   (this lease holds the slot, and has not counted this request yet) makes a retry after a
///   lost answer add nothing, and the item as it was, returned when the condition fails,
///   says whether an earlier try did. The first count leases the slot, when it is free or
///   its holder has not counted for [`LEASE_TIME`]; every count keeps it.
/// - **By request token, 2 write units a request,** when every slot tried is held (more
///   environments than slots): a transaction of one update whose `ClientRequestToken` is the
///   request's token, which DynamoDB applies once however often it is sent (for ten minutes,
///   far longer than the retries here), spread over [`keys::INGEST_COUNTER_SLOTS`] items.
///
/// A lease is used by one request at a time; concurrent requests in one process (the local
/// stack) each take a lease of their own.
#[derive(Debug)]
pub struct DynamoReceivedCounter {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    backoff: Backoff,
    /// Leases no request is using.
    idle: Mutex<Vec<Lease>>,
    /// Claims made so far, which picks the next slot to try.
    claims: AtomicU32,
    /// Set when every slot a request tried was held: count by token until then.
    leasing_paused_until: Mutex<Option<Instant>>,
}

/// A slot this environment holds, or is about to claim.
#[derive(Debug)]
struct Lease {
    slot: u32,
    /// Unique to this lease, so that no two tenures of a slot, even by one environment, can
    /// be taken for each other.
    owner: String,
    /// The sequence number of the last request tried (0: none yet, the slot is not held).
    sequence: u64,
}

/// What became of a request's count on a lease.
enum Leased {
    Counted,
    /// Another lease holds the slot; nothing was counted.
    Held,
}

impl DynamoReceivedCounter {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>, backoff: Backoff) -> Self {
        Self {
            client,
            table_name: table_name.into(),
            backoff,
            idle: Mutex::default(),
            claims: AtomicU32::new(first_slot()),
            leasing_paused_until: Mutex::default(),
        }
    }

    /// A lease no request is using, or a new one on the next slot to try, unless leasing is
    /// paused.
    fn take_lease(&self) -> Option<Lease> {
        if let Some(lease) = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Some(lease);
        }
        let mut paused = self.leasing_paused_until.lock().unwrap_or_else(PoisonError::into_inner);
        if paused.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        *paused = None;
        // Consecutive claims step through every slot (the step is odd, the count a power of two).
        let claim = self.claims.fetch_add(1, Ordering::Relaxed);
        let slot = claim.wrapping_mul(CLAIM_STEP) % keys::INGEST_LEASED_SLOTS;
        Some(Lease { slot, owner: IngestId::generate().as_str().to_owned(), sequence: 0 })
    }

    fn pause_leasing(&self) {
        *self.leasing_paused_until.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + LEASING_PAUSE);
    }

    /// The update that counts a request on a lease: the same on every try of the request.
    fn leased_update(
        &self,
        lease: &Lease,
        accepted: u64,
        now_ms: i128,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::ingest_leased_sk(lease.slot)))
            // Placeholders, because attribute names may be DynamoDB reserved words.
            .update_expression(
                "ADD #received :n SET #owner = :owner, #seq = :seq, #until = :until, #first = if_not_exists(#first, :now)",
            )
            .condition_expression("(#owner = :owner AND #seq < :seq) OR attribute_not_exists(#owner) OR #until < :now")
            .expression_attribute_names("#received", attr::RECEIVED)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#seq", attr::LEASE_SEQUENCE)
            .expression_attribute_names("#until", attr::LEASE_UNTIL_MS)
            .expression_attribute_names("#first", attr::FIRST_RECEIVED_MS)
            .expression_attribute_values(":n", n(accepted))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":seq", n(lease.sequence))
            .expression_attribute_values(":until", n(now_ms + LEASE_TIME.as_millis() as i128))
            .expression_attribute_values(":now", n(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// Counts a request on a lease, as its next sequence number.
    async fn add_leased(
        &self,
        lease: &mut Lease,
        accepted: u64,
        now_ms: i128,
        retries: &mut Retries,
    ) -> Result<Leased, CounterError> {
        lease.sequence += 1;
        let lease = &*lease;
        let update = self.leased_update(lease, accepted, now_ms);
        with_retries(
            retries,
            || update.clone().send(),
            |answer| match answer {
                Ok(_) => Try::Done(Ok(Leased::Counted)),
                Err(error) => match error.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => match judge(lease, failed.item())
                    {
                        Some(leased) => Try::Done(Ok(leased)),
                        None => Try::Again(CounterError(
                            format!("leased counter slot {} answered inconsistently", lease.slot).into(),
                        )),
                    },
                    _ => failed(error),
                },
            },
        )
        .await
    }

    /// The request's increment by token: the same on every try (its slot comes from the
    /// request's token, its time is the first try's), as an idempotent retry must be.
    fn increment(&self, request: &IngestId, accepted: u64, now_ms: i128) -> Result<TransactWriteItem, CounterError> {
        let update = Update::builder()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::METRICS_PK))
            .key(keys::SK, s(keys::ingest_sk(slot_of(request))))
            .update_expression("ADD #received :n SET #first = if_not_exists(#first, :now)")
            .expression_attribute_names("#received", attr::RECEIVED)
            .expression_attribute_names("#first", attr::FIRST_RECEIVED_MS)
            .expression_attribute_values(":n", n(accepted))
            .expression_attribute_values(":now", n(now_ms))
            .build()
            .map_err(|e| CounterError(e.into()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Counts a request by its token.
    async fn add_by_token(
        &self,
        request: &IngestId,
        accepted: u64,
        now_ms: i128,
        retries: &mut Retries,
    ) -> Result<(), CounterError> {
        let increment = self.increment(request, accepted, now_ms)?;
        let call = self.client.transact_write_items().transact_items(increment).client_request_token(request.as_str());
        with_retries(
            retries,
            || call.clone().send(),
            |answer| match answer {
                Ok(_) => Try::Done(Ok(())),
                Err(error) => failed(error),
            },
        )
        .await
    }
}

/// What one try of a count came to.
enum Try<T> {
    Done(Result<T, CounterError>),
    /// Worth another try after a pause; the error to give if none is left.
    Again(CounterError),
}

/// A failed call: for good when the service refused it as such, else worth another try.
fn failed<T, E, R>(error: aws_sdk_dynamodb::error::SdkError<E, R>) -> Try<T>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if refused_for_good(&error) {
        Try::Done(Err(CounterError(error.into())))
    } else {
        Try::Again(CounterError(error.into()))
    }
}

/// Sends a count until `judge` settles a try or the budget is spent. A try without an answer
/// in time may have gone through: every try of one count is the same call, so the next one
/// finds out (by the lease's condition, or by the request's token).
async fn with_retries<T, Fut: Future>(
    retries: &mut Retries,
    mut send: impl FnMut() -> Fut,
    mut judge: impl FnMut(Fut::Output) -> Try<T>,
) -> Result<T, CounterError> {
    loop {
        let time = retries.remaining().max(MIN_ATTEMPT_TIME);
        let error = match tokio::time::timeout(time, send()).await {
            Ok(answer) => match judge(answer) {
                Try::Done(result) => return result,
                Try::Again(error) => error,
            },
            Err(_) => CounterError(format!("no answer within {time:?}").into()),
        };
        tracing::warn!(error = %error_chain(&error), retries = retries.count(), "received counter not updated");
        if !retries.wait().await {
            return Err(error);
        }
    }
}

/// What a refused count on `lease` means, from the slot as it was: counted by an earlier
/// try of this request (the lease holds the slot at this request's number or later), or not
/// counted because another lease holds it. None when the slot says neither.
fn judge(lease: &Lease, slot: Option<&HashMap<String, AttributeValue>>) -> Option<Leased> {
    let text = |name| slot.and_then(|item| item.get(name)).and_then(|v| v.as_s().ok());
    let number =
        |name| slot.and_then(|item| item.get(name)).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    if text(attr::LEASE_OWNER).map(String::as_str) != Some(lease.owner.as_str()) {
        // A count by this lease writes the owner with it, and the slot never changes hands
        // while a try of it may still land: this request was not counted.
        return slot.is_some_and(|item| item.contains_key(attr::LEASE_OWNER)).then_some(Leased::Held);
    }
    (number(attr::LEASE_SEQUENCE)? >= lease.sequence).then_some(Leased::Counted)
}

/// Odd, so that successive claims visit every one of the (power of two) slots.
const CLAIM_STEP: u32 = 37;

/// Where an environment starts claiming: spread over every leased slot, so that
/// environments started together do not walk the same slots.
fn first_slot() -> u32 {
    (fnv(IngestId::generate().as_str()) % u64::from(keys::INGEST_LEASED_SLOTS)) as u32
}

/// The counter slot of a request counted by token: spread evenly, the same for every try.
fn slot_of(request: &IngestId) -> u32 {
    (fnv(request.as_str()) % u64::from(keys::INGEST_COUNTER_SLOTS)) as u32
}

fn fnv(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl ReceivedCounter for DynamoReceivedCounter {
    #[tracing::instrument(skip(self))]
    async fn add(&self, request: &IngestId, accepted: u64) -> Result<(), CounterError> {
        let mut retries = self.backoff.start();
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut held = 0;
        while held < CLAIMS_PER_REQUEST {
            let Some(mut lease) = self.take_lease() else { break };
            // On an error the lease is dropped with the request: the slot lapses unused.
            match self.add_leased(&mut lease, accepted, now_ms, &mut retries).await? {
                Leased::Counted => {
                    self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(lease);
                    return Ok(());
                }
                Leased::Held => held += 1,
            }
        }
        if held == CLAIMS_PER_REQUEST {
            tracing::info!(tried = held, "every counter slot tried is held; counting by request token for a while");
            self.pause_leasing();
        }
        self.add_by_token(request, accepted, now_ms, &mut retries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> DynamoReceivedCounter {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        DynamoReceivedCounter::new(aws_sdk_dynamodb::Client::from_conf(config), "t", Backoff::default())
    }

    #[test]
    fn every_try_of_a_request_sends_the_same_increment_as_an_idempotent_retry_must() {
        let request = IngestId::generate();
        let counter = counter();
        assert_eq!(counter.increment(&request, 7, 1_000).unwrap(), counter.increment(&request, 7, 1_000).unwrap());
        assert_eq!(slot_of(&request), slot_of(&request));
    }

    #[test]
    fn requests_spread_over_every_slot() {
        let mut used = std::collections::HashSet::new();
        for _ in 0..1_000 {
            used.insert(slot_of(&IngestId::generate()));
        }
        assert_eq!(used.len(), keys::INGEST_COUNTER_SLOTS as usize);
        assert!(used.iter().all(|slot| *slot < keys::INGEST_COUNTER_SLOTS));
    }

    #[test]
    fn successive_claims_visit_every_leased_slot_once_each() {
        let counter = counter();
        let slots: std::collections::HashSet<u32> =
            (0..keys::INGEST_LEASED_SLOTS).map(|_| counter.take_lease().unwrap().slot).collect();
        assert_eq!(slots.len(), keys::INGEST_LEASED_SLOTS as usize);
    }

    #[test]
    fn each_claim_is_a_lease_of_its_own_and_an_idle_lease_is_used_again() {
        let counter = counter();
        let first = counter.take_lease().unwrap();
        let second = counter.take_lease().unwrap();
        assert_ne!(first.owner, second.owner, "two tenures of a slot are never taken for each other");
        let owner = first.owner.clone();
        counter.idle.lock().unwrap().push(first);
        assert_eq!(counter.take_lease().unwrap().owner, owner);
    }

    #[test]
    fn a_pause_counts_by_token_and_ends() {
        let counter = counter();
        counter.pause_leasing();
        assert!(counter.take_lease().is_none());
        *counter.leasing_paused_until.lock().unwrap() = Some(Instant::now());
        assert!(counter.take_lease().is_some());
    }

    fn slot(owner: &str, sequence: u64) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (attr::LEASE_OWNER.to_owned(), s(owner)),
            (attr::LEASE_SEQUENCE.to_owned(), n(sequence)),
            (attr::RECEIVED.to_owned(), n(5)),
        ])
    }

    #[test]
    fn a_refused_count_is_judged_by_the_slot_as_it_was() {
        let lease = Lease { slot: 3, owner: "mine".into(), sequence: 4 };
        // An earlier try of request 4 landed (its answer was lost), or a later one did.
        assert!(matches!(judge(&lease, Some(&slot("mine", 4))), Some(Leased::Counted)));
        assert!(matches!(judge(&lease, Some(&slot("mine", 5))), Some(Leased::Counted)));
        // Another lease holds the slot: nothing was counted.
        assert!(matches!(judge(&lease, Some(&slot("theirs", 9))), Some(Leased::Held)));
        // Neither: this lease holds it at an earlier number (the condition held), or the slot
        // is absent or has no holder (a claim would have been taken): try again.
        assert!(judge(&lease, Some(&slot("mine", 3))).is_none());
        assert!(judge(&lease, None).is_none());
        assert!(judge(&lease, Some(&HashMap::from([(attr::RECEIVED.to_owned(), n(5))]))).is_none());
    }
}

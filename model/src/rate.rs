//! Each write key's rate, held across every instance of the ingest function: the events a
//! key may send in one second are counted in a shared ledger (a DynamoDB item per key and
//! second), which each instance draws on in leases of a tenth of the rate, so that a busy
//! key costs about ten ledger writes a second per instance rather than one per request.
//!
//! How exact it is:
//! - In one second the instances together admit at most the rate: a lease is taken only
//!   while the second's count stays within it. A request with more events than the whole
//!   rate is never admitted (the route refuses it as too large before asking).
//! - An instance may hold up to a tenth of the rate unused when its second ends, so with
//!   several instances a key may be refused a little before it reaches its rate.
//! - Seconds are whole clock seconds, so a burst across a second's boundary can reach twice
//!   the rate within one moving second.
//! - When the ledger cannot be reached the request is admitted: the rate bounds abuse, and
//!   an outage of the ledger is not a reason to refuse everyone's events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::write_key::{KeyId, KeyStoreError};

/// The shared count of each key's events per second.
pub trait RateLedger: Send + Sync {
    /// Adds `amount` to the count of `key` in `second` when the count stays within `limit`
    /// or the second has no count yet; `false` when it would go over.
    fn take(
        &self,
        key: &KeyId,
        second: i64,
        amount: u64,
        limit: u64,
    ) -> impl Future<Output = Result<bool, KeyStoreError>> + Send;
}

/// What one instance holds of each key's current second.
pub struct RateLimiter<L> {
    ledger: L,
    leases: Mutex<HashMap<KeyId, Lease>>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    second: i64,
    remaining: u64,
}

impl<L: RateLedger> RateLimiter<L> {
    pub fn new(ledger: L) -> Self {
        Self { ledger, leases: Mutex::new(HashMap::new()) }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Whether `key`, allowed `rate` events a second, may send `events` now (`second`, in
    /// Unix seconds).
    pub async fn admit(&self, key: &KeyId, rate: u32, events: u64, second: i64) -> bool {
        let held = self.held(key, second);
        if held >= events {
            self.set(key, second, held - events);
            return true;
        }
        let rate = u64::from(rate.max(1));
        let needed = events - held;
        if needed > rate {
            return false;
        }
        let lease = needed.max(rate / 10).min(rate);
        for amount in [lease, needed] {
            match self.ledger.take(key, second, amount, rate).await {
                Ok(true) => {
                    self.set(key, second, held + amount - events);
                    return true;
                }
                Ok(false) if amount > needed => continue,
                Ok(false) => return false,
                Err(error) => {
                    tracing::warn!(%error, key = %key, "the rate ledger is not available; admitting the request");
                    return true;
                }
            }
        }
        false
    }

    fn held(&self, key: &KeyId, second: i64) -> u64 {
        let leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        leases.get(key).filter(|lease| lease.second == second).map_or(0, |lease| lease.remaining)
    }

    fn set(&self, key: &KeyId, second: i64, remaining: u64) {
        let mut leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if leases.len() > 10_000 {
            leases.retain(|_, lease| lease.second >= second);
        }
        leases.insert(key.clone(), Lease { second, remaining });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryRateLedger;

    fn key(n: u8) -> KeyId {
        KeyId::parse(format!("{n:016x}")).unwrap()
    }

    #[tokio::test]
    async fn instances_together_admit_the_rate_and_no_more_in_a_second() {
        let ledger = std::sync::Arc::new(MemoryRateLedger::default());
        let instances: Vec<_> = (0..3).map(|_| RateLimiter::new(ledger.clone())).collect();
        let mut admitted = 0;
        for round in 0..200 {
            if instances[round % 3].admit(&key(1), 100, 1, 50).await {
                admitted += 1;
            }
        }
        assert!((90..=100).contains(&admitted), "admitted {admitted} of a rate of 100");
        assert!(ledger.count(&key(1), 50) <= 100);
        assert!(instances[0].admit(&key(1), 100, 1, 51).await, "a new second");
        assert!(instances[0].admit(&key(2), 100, 1, 50).await, "keys are counted apart");
    }

    #[tokio::test]
    async fn one_instance_writes_the_ledger_about_ten_times_a_second() {
        let ledger = std::sync::Arc::new(MemoryRateLedger::default());
        let limiter = RateLimiter::new(ledger.clone());
        for _ in 0..1000 {
            assert!(limiter.admit(&key(1), 1000, 1, 7).await);
        }
        assert_eq!(ledger.takes(), 10);
        assert!(!limiter.admit(&key(1), 1000, 1, 7).await);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_rate_is_never_admitted() {
        let ledger = std::sync::Arc::new(MemoryRateLedger::default());
        let limiter = RateLimiter::new(ledger.clone());
        assert!(!limiter.admit(&key(1), 10, 11, 1).await);
        assert_eq!(ledger.takes(), 0, "not even asked");
        assert!(limiter.admit(&key(1), 10, 10, 1).await, "the whole rate at once");
        assert!(!limiter.admit(&key(1), 10, 1, 1).await);
    }
}

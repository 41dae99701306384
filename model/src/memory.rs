//! In-memory adapters of the model's ports, for tests, benches and tools that need no AWS:
//! they keep what they are given and refuse what they are told to.

use std::sync::Mutex;

use crate::rate::RateLedger;
use crate::sink::{OutRecord, PutFailure, RecordSink};
use crate::write_key::{KeyGrant, KeyId, KeyStore, KeyStoreError, RefusalLog, RefusedCall, StoredKey};

/// Decides, per record, whether a [`MemoryStream`] refuses it, and with what.
type Refusal = Box<dyn Fn(&OutRecord) -> Option<PutFailure> + Send + Sync>;

/// A stream in memory: keeps every call as it was made and every record it took.
#[derive(Default)]
pub struct MemoryStream {
    calls: Mutex<Vec<Vec<OutRecord>>>,
    taken: Mutex<Vec<OutRecord>>,
    refusal: Option<Refusal>,
    /// Keeps neither calls nor records.
    discard: bool,
}

impl MemoryStream {
    /// Takes every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every record and keeps nothing: for benches, whose runs would otherwise keep
    /// every record of every iteration.
    pub fn discarding() -> Self {
        Self { discard: true, ..Self::default() }
    }

    /// Refuses, every time, the records `refuse` gives a failure for; takes the others.
    pub fn refusing(refuse: impl Fn(&OutRecord) -> Option<PutFailure> + Send + Sync + 'static) -> Self {
        Self { refusal: Some(Box::new(refuse)), ..Self::default() }
    }

    /// Refuses, as a throttled shard does, the records with one of these partition keys.
    pub fn throttling_keys(keys: &[&str]) -> Self {
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        Self::refusing(move |record| keys.contains(&record.partition_key).then(throttled))
    }

    /// Every call, in order, with the records as they were sent.
    pub fn calls(&self) -> Vec<Vec<OutRecord>> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The records taken, in the order they were taken.
    pub fn taken(&self) -> Vec<OutRecord> {
        self.taken.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The records taken, each read as JSON (records that are not JSON are left out).
    pub fn taken_json(&self) -> Vec<serde_json::Value> {
        self.taken().iter().filter_map(|record| serde_json::from_slice(&record.data).ok()).collect()
    }
}

/// The failure Kinesis gives a record when its shard is over its write limit.
pub fn throttled() -> PutFailure {
    PutFailure { code: "ProvisionedThroughputExceededException".into(), message: "Rate exceeded for shard".into() }
}

impl RecordSink for MemoryStream {
    async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
        if self.discard {
            return Ok(vec![Ok(()); records.len()]);
        }
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(records.to_vec());
        let mut taken = self.taken.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(records
            .iter()
            .map(|record| match self.refusal.as_ref().and_then(|refuse| refuse(record)) {
                Some(failure) => Err(failure),
                None => {
                    taken.push(record.clone());
                    Ok(())
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> OutRecord {
        OutRecord { partition_key: key.to_owned(), data: format!("{{\"key\":\"{key}\"}}").into_bytes() }
    }

    #[tokio::test]
    async fn a_throttled_key_is_refused_every_time_and_the_others_taken() {
        let stream = MemoryStream::throttling_keys(&["b"]);
        let results = stream.put_once(&[record("a"), record("b")]).await.unwrap();
        assert_eq!(results, vec![Ok(()), Err(throttled())]);
        assert_eq!(stream.put_once(&[record("b")]).await.unwrap(), vec![Err(throttled())]);
        assert_eq!(stream.calls().len(), 2);
        assert_eq!(stream.taken(), vec![record("a")]);
        assert_eq!(stream.taken_json(), vec![serde_json::json!({"key": "a"})]);
    }

    #[tokio::test]
    async fn a_discarding_stream_takes_everything_and_keeps_nothing() {
        let stream = MemoryStream::discarding();
        assert_eq!(stream.put_once(&[record("a"), record("b")]).await.unwrap(), vec![Ok(()), Ok(())]);
        assert!(stream.calls().is_empty() && stream.taken().is_empty());
    }
}

/// Write keys in memory, with the calls their keys sent that were refused.
#[derive(Default)]
pub struct MemoryKeys {
    keys: Mutex<std::collections::BTreeMap<KeyId, StoredKey>>,
    refused: Mutex<Vec<RefusedCall>>,
}

impl MemoryKeys {
    /// The refused calls kept, in the order they came.
    pub fn refused(&self) -> Vec<RefusedCall> {
        self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl RefusalLog for MemoryKeys {
    async fn keep(&self, calls: &[RefusedCall]) -> Result<(), KeyStoreError> {
        let mut refused = self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for call in calls {
            if !refused.iter().any(|kept| kept.digest == call.digest && kept.source == call.source) {
                refused.push(call.clone());
            }
        }
        Ok(())
    }
}

impl KeyStore for MemoryKeys {
    async fn get(&self, id: &KeyId) -> Result<Option<StoredKey>, KeyStoreError> {
        Ok(self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(id).cloned())
    }

    async fn put(&self, key: &StoredKey) -> Result<(), KeyStoreError> {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.grant.key_id.clone(), key.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<KeyGrant>, KeyStoreError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|k| k.grant.clone())
            .collect())
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, KeyStoreError> {
        Ok(self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id).is_some())
    }
}

/// A shared rate ledger in memory: the count of each key and second.
#[derive(Default)]
pub struct MemoryRateLedger {
    counts: Mutex<std::collections::HashMap<(KeyId, i64), u64>>,
    takes: std::sync::atomic::AtomicUsize,
}

impl MemoryRateLedger {
    pub fn count(&self, key: &KeyId, second: i64) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(key.clone(), second))
            .copied()
            .unwrap_or(0)
    }

    /// Leases taken.
    pub fn takes(&self) -> usize {
        self.takes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl RateLedger for MemoryRateLedger {
    async fn take(&self, key: &KeyId, second: i64, amount: u64, limit: u64) -> Result<bool, KeyStoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry((key.clone(), second)).or_default();
        if *count + amount > limit {
            return Ok(false);
        }
        *count += amount;
        self.takes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }
}

impl<L: RateLedger> RateLedger for std::sync::Arc<L> {
    async fn take(&self, key: &KeyId, second: i64, amount: u64, limit: u64) -> Result<bool, KeyStoreError> {
        self.as_ref().take(key, second, amount, limit).await
    }
}

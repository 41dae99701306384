//! Putting records on a stream: the port, and the retry policy that re-sends only what failed.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Kinesis limits for one PutRecords call.
pub const MAX_RECORDS_PER_PUT: usize = 500;
pub const MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl OutRecord {
    /// Bytes the record counts against the per-call limit.
    fn weight(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// Why an entry, or a whole call, did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PutFailure {
    pub code: String,
    pub message: String,
}

/// A stream that takes a batch of records in one call (Kinesis PutRecords).
pub trait RecordSink: Send + Sync {
    /// One call. `Ok` holds a result per record, in order; `Err` means the call as a whole failed.
    fn put_once(
        &self,
        records: &[OutRecord],
    ) -> impl Future<Output = Result<Vec<Result<(), PutFailure>>, PutFailure>> + Send;
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { attempts: 4, base: Duration::from_millis(50), max: Duration::from_millis(1_000) }
    }
}

impl Backoff {
    /// Upper bound of the pause before retry `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn pause(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }
}

/// Puts every record, in calls within the per-call limits, re-sending only failed entries
/// with backoff. The result holds, per record and in order, its last failure if it never
/// went through.
pub async fn put_all(sink: &impl RecordSink, records: &[OutRecord], backoff: Backoff) -> Vec<Result<(), PutFailure>> {
    let mut outcome: Vec<Result<(), PutFailure>> = vec![Ok(()); records.len()];
    for chunk in chunks(records) {
        let mut pending: Vec<usize> = chunk.clone().collect();
        for attempt in 0..backoff.attempts.max(1) {
            // The first attempt sends the chunk as it is; retries copy out the failed entries.
            let retry_batch: Vec<OutRecord>;
            let batch: &[OutRecord] = if attempt == 0 {
                &records[chunk.clone()]
            } else {
                tokio::time::sleep(backoff.pause(attempt)).await;
                retry_batch = pending.iter().map(|&i| records[i].clone()).collect();
                &retry_batch
            };
            match sink.put_once(batch).await {
                Ok(results) => {
                    let mut still = Vec::new();
                    for (slot, &index) in pending.iter().enumerate() {
                        match results.get(slot).cloned().unwrap_or_else(|| Err(missing_result())) {
                            Ok(()) => outcome[index] = Ok(()),
                            Err(failure) => {
                                outcome[index] = Err(failure);
                                still.push(index);
                            }
                        }
                    }
                    pending = still;
                }
                Err(failure) => {
                    for &index in &pending {
                        outcome[index] = Err(failure.clone());
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            tracing::warn!(failed = pending.len(), attempt, "PutRecords left entries unwritten");
        }
    }
    outcome
}

fn missing_result() -> PutFailure {
    PutFailure { code: "MissingResult".into(), message: "the stream returned fewer results than records".into() }
}

/// Splits records, in order, into calls of at most 500 records and 5 MiB.
fn chunks(records: &[OutRecord]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        if index > start && (index - start == MAX_RECORDS_PER_PUT || bytes + record.weight() > MAX_BYTES_PER_PUT) {
            groups.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += record.weight();
    }
    if start < records.len() {
        groups.push(start..records.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails the listed partition keys a set number of times each, and records every call.
    #[derive(Default)]
    struct FlakySink {
        failures: Mutex<Vec<(String, u32)>>,
        calls: Mutex<Vec<Vec<String>>>,
        whole_call_failures: Mutex<u32>,
    }

    impl RecordSink for FlakySink {
        async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
            self.calls.lock().unwrap().push(records.iter().map(|r| r.partition_key.clone()).collect());
            {
                let mut whole = self.whole_call_failures.lock().unwrap();
                if *whole > 0 {
                    *whole -= 1;
                    return Err(PutFailure { code: "Throttling".into(), message: "slow down".into() });
                }
            }
            let mut failures = self.failures.lock().unwrap();
            Ok(records
                .iter()
                .map(|r| match failures.iter_mut().find(|(k, n)| *k == r.partition_key && *n > 0) {
                    Some((_, n)) => {
                        *n -= 1;
                        Err(PutFailure {
                            code: "ProvisionedThroughputExceededException".into(),
                            message: "busy".into(),
                        })
                    }
                    None => Ok(()),
                })
                .collect())
        }
    }

    fn records(n: usize) -> Vec<OutRecord> {
        (0..n).map(|i| OutRecord { partition_key: format!("k{i}"), data: vec![b'x'; 10] }).collect()
    }

    fn fast() -> Backoff {
        Backoff { attempts: 4, base: Duration::from_millis(1), max: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn when_entries_fail_should_resend_only_those() {
        let sink = FlakySink { failures: Mutex::new(vec![("k1".into(), 2)]), ..Default::default() };
        let out = put_all(&sink, &records(3), fast()).await;
        assert!(out.iter().all(Result::is_ok));
        let calls = sink.calls.lock().unwrap();
        assert_eq!(*calls, vec![vec!["k0", "k1", "k2"], vec!["k1"], vec!["k1"]]);
    }

    #[tokio::test]
    async fn when_retries_run_out_should_report_the_failed_entry() {
        let sink = FlakySink { failures: Mutex::new(vec![("k2".into(), 99)]), ..Default::default() };
        let out = put_all(&sink, &records(3), fast()).await;
        assert!(out[0].is_ok() && out[1].is_ok());
        assert_eq!(out[2].as_ref().unwrap_err().code, "ProvisionedThroughputExceededException");
        assert_eq!(sink.calls.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn when_whole_call_fails_should_retry_everything() {
        let sink = FlakySink { whole_call_failures: Mutex::new(1), ..Default::default() };
        let out = put_all(&sink, &records(2), fast()).await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(sink.calls.lock().unwrap().len(), 2);
    }

    #[test]
    fn chunks_respect_count_and_size_limits() {
        assert_eq!(chunks(&records(1001)), [0..500, 500..1000, 1000..1001]);
        let big: Vec<OutRecord> =
            (0..6).map(|i| OutRecord { partition_key: format!("{i}"), data: vec![0; 1024 * 1024] }).collect();
        assert_eq!(chunks(&big), [0..4, 4..6]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff { attempts: 10, base: Duration::from_millis(50), max: Duration::from_millis(300) };
        assert_eq!(b.ceiling(1), Duration::from_millis(50));
        assert_eq!(b.ceiling(3), Duration::from_millis(200));
        assert_eq!(b.ceiling(9), Duration::from_millis(300));
        assert!(b.pause(2) <= Duration::from_millis(100));
    }
}

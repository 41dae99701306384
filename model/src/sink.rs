//! Putting records on a stream: the port, and the retry policy that re-sends only what failed.

use std::future::Future;

use crate::batch;
use crate::retry::{Backoff, MIN_ATTEMPT_TIME};

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

/// Error codes that mean the request itself is refused (invalid, not allowed, no such
/// resource): waiting cannot help, so they are never retried.
pub fn is_permanent_code(code: &str) -> bool {
    matches!(
        code,
        "ValidationException"
            | "InvalidArgumentException"
            | "AccessDeniedException"
            | "ResourceNotFoundException"
            | "UnrecognizedClientException"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSNotFoundException"
    )
}

impl PutFailure {
    /// Whether the stream refused the call for good ([`is_permanent_code`]).
    pub fn is_permanent(&self) -> bool {
        is_permanent_code(&self.code)
    }
}

/// A stream that takes a batch of records in one call (Kinesis PutRecords).
pub trait RecordSink: Send + Sync {
    /// One call. `Ok` holds a result per record, in order; `Err` means the call as a whole failed.
    fn put_once(
        &self,
        records: &[OutRecord],
    ) -> impl Future<Output = Result<Vec<Result<(), PutFailure>>, PutFailure>> + Send;
}

/// Puts every record, in calls within the per-call limits, re-sending only failed entries
/// with backoff until the budget is spent. The result holds, per record and in order, its
/// last failure if it never went through. A call that ends without an answer (a timeout,
/// a lost connection) may still have put its records: such a record is reported failed
/// but may be on the stream, possibly twice after a re-send; records carry an id that lets
/// the reader tell such copies apart.
pub async fn put_all(sink: &impl RecordSink, records: &[OutRecord], backoff: Backoff) -> Vec<Result<(), PutFailure>> {
    let mut outcome: Vec<Result<(), PutFailure>> = vec![Ok(()); records.len()];
    let mut retries = backoff.start();
    for chunk in chunks(records) {
        let mut pending: Vec<usize> = chunk.clone().collect();
        let mut first = true;
        loop {
            // The first try sends the chunk as it is; retries copy out the failed entries.
            let retry_batch: Vec<OutRecord>;
            let batch: &[OutRecord] = if first {
                &records[chunk.clone()]
            } else {
                retry_batch = pending.iter().map(|&i| records[i].clone()).collect();
                &retry_batch
            };
            first = false;
            let time = retries.remaining().max(MIN_ATTEMPT_TIME);
            let answer = tokio::time::timeout(time, sink.put_once(batch)).await.unwrap_or_else(|_| {
                Err(PutFailure { code: "Timeout".into(), message: format!("no answer within {time:?}") })
            });
            match answer {
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
                    if failure.is_permanent() {
                        tracing::error!(code = %failure.code, "PutRecords refused; not retrying");
                        break;
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            tracing::warn!(failed = pending.len(), retries = retries.count(), "PutRecords left entries unwritten");
            if !retries.wait().await {
                break;
            }
        }
    }
    outcome
}

fn missing_result() -> PutFailure {
    PutFailure { code: "MissingResult".into(), message: "the stream returned fewer results than records".into() }
}

/// Splits records, in order, into calls of at most 500 records and 5 MiB.
fn chunks(records: &[OutRecord]) -> Vec<std::ops::Range<usize>> {
    batch::split(records, MAX_RECORDS_PER_PUT, MAX_BYTES_PER_PUT, OutRecord::weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Fails the listed partition keys a set number of times each, and records every call.
    #[derive(Default)]
    struct FlakySink {
        failures: Mutex<Vec<(String, u32)>>,
        calls: Mutex<Vec<Vec<String>>>,
        whole_call_failures: Mutex<u32>,
        /// The code of a whole-call failure (throttling unless set).
        whole_call_code: Option<&'static str>,
    }

    impl RecordSink for FlakySink {
        async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
            self.calls.lock().unwrap().push(records.iter().map(|r| r.partition_key.clone()).collect());
            {
                let mut whole = self.whole_call_failures.lock().unwrap();
                if *whole > 0 {
                    *whole -= 1;
                    let code = self.whole_call_code.unwrap_or("Throttling");
                    return Err(PutFailure { code: code.into(), message: "refused".into() });
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

    /// Room for three retries: pauses of at most 1, 2, 2 ms, then the budget is spent.
    fn fast() -> Backoff {
        Backoff { base: Duration::from_millis(1), max: Duration::from_millis(2), budget: Duration::from_millis(6) }
    }

    #[tokio::test(start_paused = true)]
    async fn when_entries_fail_should_resend_only_those() {
        let sink = FlakySink { failures: Mutex::new(vec![("k1".into(), 2)]), ..Default::default() };
        let out = put_all(&sink, &records(3), fast()).await;
        assert!(out.iter().all(Result::is_ok));
        let calls = sink.calls.lock().unwrap();
        assert_eq!(*calls, vec![vec!["k0", "k1", "k2"], vec!["k1"], vec!["k1"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_retries_run_out_should_report_the_failed_entry() {
        let sink = FlakySink { failures: Mutex::new(vec![("k2".into(), 99)]), ..Default::default() };
        let out = put_all(&sink, &records(3), fast()).await;
        assert!(out[0].is_ok() && out[1].is_ok());
        assert_eq!(out[2].as_ref().unwrap_err().code, "ProvisionedThroughputExceededException");
        assert!(sink.calls.lock().unwrap().len() >= 4, "retried until the budget was spent");
    }

    #[tokio::test(start_paused = true)]
    async fn when_whole_call_fails_should_retry_everything() {
        let sink = FlakySink { whole_call_failures: Mutex::new(1), ..Default::default() };
        let out = put_all(&sink, &records(2), fast()).await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(sink.calls.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_refused_for_good_is_not_retried() {
        for code in ["ValidationException", "AccessDeniedException", "ResourceNotFoundException"] {
            let sink = FlakySink {
                whole_call_failures: Mutex::new(u32::MAX),
                whole_call_code: Some(code),
                ..Default::default()
            };
            let out = put_all(&sink, &records(2), Backoff::default()).await;
            assert!(out.iter().all(|r| r.as_ref().is_err_and(|f| f.code == code)), "{out:?}");
            assert_eq!(sink.calls.lock().unwrap().len(), 1, "{code}: one call, no retry");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_throttled_for_seconds_is_waited_out() {
        // Kinesis takes 1 MiB/s per shard: a 4 MiB request to one shard is throttled for
        // about four seconds. The default budget rides that out.
        let sink = FlakySink { whole_call_failures: Mutex::new(u32::MAX), ..Default::default() };
        let started = tokio::time::Instant::now();
        let throttled_for = Duration::from_secs(4);
        let records = records(3);
        let put = put_all(&sink, &records, Backoff::default());
        let recover = async {
            tokio::time::sleep(throttled_for).await;
            *sink.whole_call_failures.lock().unwrap() = 0;
        };
        let (out, ()) = tokio::join!(put, recover);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert!(started.elapsed() >= throttled_for);
        assert!(started.elapsed() <= Backoff::default().budget);
    }

    #[test]
    fn chunks_respect_count_and_size_limits() {
        assert_eq!(chunks(&records(1001)), [0..500, 500..1000, 1000..1001]);
        let big: Vec<OutRecord> =
            (0..6).map(|i| OutRecord { partition_key: format!("{i}"), data: vec![0; 1024 * 1024] }).collect();
        assert_eq!(chunks(&big), [0..4, 4..6]);
    }
}

//! The pipeline's own metrics, as the dashboard and alarms read them: namespace `Eventline`,
//! dimension `Stack`. Handlers record through these functions (the `metrics` facade, a
//! no-op until a recorder is installed); each function's `main` installs the CloudWatch
//! embedded-metric-format recorder and writes one log line per invocation
//! (`aws::metrics`).

/// The CloudWatch namespace of every metric here.
pub const NAMESPACE: &str = "Eventline";
/// The one dimension: which stack the metric comes from.
pub const STACK_DIMENSION: &str = "Stack";

pub const EVENTS_ACCEPTED: &str = "EventsAccepted";
pub const EVENTS_REJECTED: &str = "EventsRejected";
pub const EVENTS_STORED: &str = "EventsStored";
pub const EVENTS_DUPLICATE: &str = "EventsDuplicate";
/// Copies of a stored identity from another sender or with other content.
pub const EVENTS_CONFLICT: &str = "EventsConflict";
pub const EVENTS_POISON: &str = "EventsPoison";
pub const COMMIT_RETRIES: &str = "CommitRetries";
/// Analytics updates (window buckets, aggregates, users sketches) the table refused or that
/// failed past their retries, counted in events; the events themselves were stored.
pub const ANALYTICS_LOST: &str = "AnalyticsLost";
/// Milliseconds from `received_at` to stored, per event (sampled, see [`processing_latency`]).
pub const PROCESSING_LATENCY: &str = "ProcessingLatency";

/// At most this many latency samples per invocation: one metric document holds 100 values.
pub const MAX_LATENCY_SAMPLES: usize = 100;

/// Events ingest accepted onto the stream, and items it rejected as invalid.
pub fn ingested(accepted: u64, rejected: u64) {
    metrics::counter!(EVENTS_ACCEPTED).increment(accepted);
    metrics::counter!(EVENTS_REJECTED).increment(rejected);
}

/// What a transform batch came to.
pub fn transformed(stored: u64, duplicate: u64, poison: u64) {
    metrics::counter!(EVENTS_STORED).increment(stored);
    metrics::counter!(EVENTS_DUPLICATE).increment(duplicate);
    metrics::counter!(EVENTS_POISON).increment(poison);
}

/// Conflicts a transform batch kept (copies of stored identities from another sender or with
/// other content).
pub fn conflicted(conflicts: u64) {
    metrics::counter!(EVENTS_CONFLICT).increment(conflicts);
}

/// A commit (transaction) tried again after a transient error.
pub fn commit_retried() {
    metrics::counter!(COMMIT_RETRIES).increment(1);
}

/// Events whose analytics updates were given up.
pub fn analytics_lost(events: u64) {
    metrics::counter!(ANALYTICS_LOST).increment(events);
}

/// Each stored event's latency in milliseconds; a batch larger than
/// [`MAX_LATENCY_SAMPLES`] gives an even sample of its events.
pub fn processing_latency(latencies_ms: &[u64]) {
    let step = latencies_ms.len().div_ceil(MAX_LATENCY_SAMPLES).max(1);
    let histogram = metrics::histogram!(PROCESSING_LATENCY);
    for latency in latencies_ms.iter().step_by(step) {
        histogram.record(*latency as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_sampled_to_at_most_one_document_of_latencies() {
        for size in [0_usize, 1, 99, 100, 101, 250, 10_000] {
            let samples = (0..size).step_by(size.div_ceil(MAX_LATENCY_SAMPLES).max(1)).count();
            assert!(samples <= MAX_LATENCY_SAMPLES, "{size}: {samples}");
            assert_eq!(samples == 0, size == 0);
        }
    }
}

//! The pipeline's own metrics, as the dashboard and alarms read them: namespace `Eventline`,
//! dimension `Stack`. Handlers record through these functions (the `metrics` facade, a
//! no-op until a recorder is installed); each function's `main` installs the CloudWatch
//! embedded-metric-format recorder and writes one log line per invocation
//! (`metrics_recorder`, `flush_metrics`).

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

/// Installs the recorder of the pipeline's own metrics (namespace `Eventline`, dimension
/// `Stack` from `STACK_NAME`), once per cold start; [`flush_metrics`] writes what an
/// invocation recorded as one CloudWatch embedded-metric-format log line.
pub fn metrics_recorder() -> Result<&'static metrics_cloudwatch_embedded::Collector, metrics_cloudwatch_embedded::Error>
{
    let stack = std::env::var(eventline_model::config::names::STACK_NAME).unwrap_or_else(|_| "unknown".to_owned());
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension(STACK_DIMENSION, stack)
        .init()
}

/// Writes the metrics recorded since the last flush to stdout, where Lambda's log capture
/// turns them into CloudWatch metrics. A failed write loses metrics, never the invocation.
pub fn flush_metrics(collector: &metrics_cloudwatch_embedded::Collector) {
    if let Err(error) = collector.flush(std::io::stdout().lock()) {
        tracing::warn!(%error, "could not write the invocation's metrics");
    }
}

#[cfg(test)]
mod recorder_tests {
    use super::*;

    #[test]
    fn metrics_are_written_as_one_embedded_metric_format_document() {
        let collector = metrics_recorder().expect("the first recorder in this process");
        ingested(7, 2);
        processing_latency(&[120, 80]);
        let mut line = Vec::new();
        collector.flush(&mut line).unwrap();
        let document: serde_json::Value = serde_json::from_slice(&line).expect("one JSON document");
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([[STACK_DIMENSION]]));
        assert_eq!(document[EVENTS_ACCEPTED], 7);
        assert_eq!(document[EVENTS_REJECTED], 2);
        assert_eq!(document[PROCESSING_LATENCY], serde_json::json!([120.0, 80.0]));
        assert!(document["_aws"]["Timestamp"].is_u64());
    }
}

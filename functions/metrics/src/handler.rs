//! `GET /events/{source}/{id}`, `GET /metrics`, `GET /health` and `/healthz`.

use http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use time::OffsetDateTime;

use eventline_model::latency::Histogram;
use eventline_model::response::{Problem, json};
use eventline_model::{EventId, Source, format_rfc3339};

use crate::reader::{Counters, MetricsReader};

/// The window of `events_per_second` and `active_workers`.
pub const RECENT_SECONDS: i64 = 60;

pub struct Metrics<R> {
    pub reader: R,
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Event { source: String, id: String },
    Metrics,
    Health,
}

/// The totals `GET /metrics` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub events_received: u64,
    pub events_processed: u64,
    pub events_failed: u64,
    pub events_duplicate: u64,
    pub average_processing_latency_ms: Option<f64>,
    pub p50_processing_latency_ms: Option<u64>,
    pub p95_processing_latency_ms: Option<u64>,
    pub p99_processing_latency_ms: Option<u64>,
    pub current_queue_depth: u64,
    pub events_per_second: f64,
    pub uptime_seconds: u64,
    pub active_workers: usize,
    pub generated_at: String,
}

impl Totals {
    /// Pure arithmetic over the counter items; `processed_recently` covers the last
    /// [`RECENT_SECONDS`] whole seconds.
    pub fn compute(counters: &Counters, processed_recently: u64, now: OffsetDateTime) -> Self {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let sum = |f: fn(&crate::reader::ShardCounters) -> u64| counters.shards.iter().map(f).sum::<u64>();
        let processed = sum(|s| s.processed);
        let duplicate = sum(|s| s.duplicate);
        let failed = sum(|s| s.failed);
        let latency_sum = sum(|s| s.latency_sum_ms);
        let mut latency = Histogram::default();
        for shard in &counters.shards {
            for (&bucket, &count) in &shard.latency.counts {
                latency.add_bucket(bucket, count);
            }
        }
        let first_seen =
            counters.shards.iter().filter_map(|s| s.first_processed_ms).chain(counters.first_received_ms).min();
        let active_since = now_ms - RECENT_SECONDS * 1000;
        Totals {
            events_received: counters.received,
            events_processed: processed,
            events_failed: failed,
            events_duplicate: duplicate,
            average_processing_latency_ms: (processed > 0)
                .then(|| (latency_sum as f64 / processed as f64 * 10.0).round() / 10.0),
            p50_processing_latency_ms: latency.quantile(0.50),
            p95_processing_latency_ms: latency.quantile(0.95),
            p99_processing_latency_ms: latency.quantile(0.99),
            // The received total is counted at the HTTP edge; records put on the stream by
            // other producers are processed without being received, hence the floor at 0.
            current_queue_depth: counters.received.saturating_sub(processed + failed + duplicate),
            events_per_second: processed_recently as f64 / RECENT_SECONDS as f64,
            uptime_seconds: first_seen.map_or(0, |first| u64::try_from((now_ms - first) / 1000).unwrap_or(0)),
            active_workers: counters
                .shards
                .iter()
                .filter(|s| s.last_active_ms.is_some_and(|t| t >= active_since))
                .count(),
            generated_at: format_rfc3339(now),
        }
    }
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    checks: HealthChecks,
}

#[derive(Debug, Serialize)]
struct HealthChecks {
    table: &'static str,
    stream: &'static str,
}

impl<R: MetricsReader> Metrics<R> {
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.respond(&request).await.map(Body::from)
    }

    async fn respond(&self, request: &Request) -> Response<Vec<u8>> {
        let Some(route) = route(request.uri().path()) else {
            return Problem::new(StatusCode::NOT_FOUND, format!("no route for {}", request.uri().path()))
                .into_response();
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response =
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed; use GET", request.method()))
                    .into_response();
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match route {
            Route::Event { source, id } => self.event(source, id).await,
            Route::Metrics => self.metrics().await,
            Route::Health => self.health().await,
        }
    }

    async fn event(&self, source: String, id: String) -> Response<Vec<u8>> {
        let (source, id) = match (Source::parse(source), EventId::parse(id)) {
            (Ok(source), Ok(id)) => (source, id),
            (Err(rule), _) => return Problem::new(StatusCode::BAD_REQUEST, format!("source {rule}")).into_response(),
            (_, Err(rule)) => return Problem::new(StatusCode::BAD_REQUEST, format!("id {rule}")).into_response(),
        };
        match self.reader.event(&source, &id).await {
            Ok(Some(event)) => json(StatusCode::OK, &event),
            Ok(None) => Problem::new(StatusCode::NOT_FOUND, format!("event {source}/{id} has not been processed"))
                .into_response(),
            Err(error) => internal(&error),
        }
    }

    async fn metrics(&self) -> Response<Vec<u8>> {
        let now = OffsetDateTime::now_utc();
        let second = now.unix_timestamp();
        let (counters, recent) =
            tokio::join!(self.reader.counters(), self.reader.processed_between(second - RECENT_SECONDS, second));
        match (counters, recent) {
            (Ok(counters), Ok(recent)) => json(StatusCode::OK, &Totals::compute(&counters, recent, now)),
            (Err(error), _) | (_, Err(error)) => internal(&error),
        }
    }

    async fn health(&self) -> Response<Vec<u8>> {
        let (table, stream) = tokio::join!(self.reader.check_table(), self.reader.check_stream());
        let state = |result: &Result<(), crate::reader::ReadError>, what: &str| match result {
            Ok(()) => "ok",
            Err(error) => {
                tracing::error!(%error, what, "health check failed");
                "unavailable"
            }
        };
        let checks = HealthChecks { table: state(&table, "table"), stream: state(&stream, "stream") };
        let healthy = table.is_ok() && stream.is_ok();
        let body =
            Health { status: if healthy { "ok" } else { "unavailable" }, version: env!("CARGO_PKG_VERSION"), checks };
        json(if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
    }
}

fn internal(error: &crate::reader::ReadError) -> Response<Vec<u8>> {
    tracing::error!(%error, "read failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "the request could not be served").into_response()
}

/// Matches the end of the path, so a stage prefix does not matter.
fn route(path: &str) -> Option<Route> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    match segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [.., "events", source, id] => Some(Route::Event { source: (*source).to_owned(), id: (*id).to_owned() }),
        [.., "metrics"] => Some(Route::Metrics),
        [.., "health" | "healthz"] => Some(Route::Health),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{ReadError, ShardCounters};
    use eventline_model::{Position, ProcessedEvent, Rules, StreamRecord};
    use serde_json::{Value, json};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);
    const NOW_MS: i64 = 1_795_435_200_000;

    #[derive(Default)]
    struct FakeReader {
        event: Option<ProcessedEvent>,
        counters: Counters,
        recent: u64,
        table_down: bool,
    }

    impl MetricsReader for FakeReader {
        async fn event(&self, source: &Source, id: &EventId) -> Result<Option<ProcessedEvent>, ReadError> {
            Ok(self.event.clone().filter(|e| &e.event.source == source && &e.event.id == id))
        }
        async fn counters(&self) -> Result<Counters, ReadError> {
            Ok(self.counters.clone())
        }
        async fn processed_between(&self, from: i64, to: i64) -> Result<u64, ReadError> {
            assert_eq!(to - from, RECENT_SECONDS);
            Ok(self.recent)
        }
        async fn check_table(&self) -> Result<(), ReadError> {
            if self.table_down { Err(ReadError("ResourceNotFoundException".into())) } else { Ok(()) }
        }
        async fn check_stream(&self) -> Result<(), ReadError> {
            Ok(())
        }
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    async fn call(reader: FakeReader, request: Request) -> (u16, Value) {
        let response = Metrics { reader }.handle(request).await;
        (response.status().as_u16(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
    }

    fn stored_event() -> ProcessedEvent {
        let event = eventline_model::Event::from_json(
            &json!({"id": "evt-0001", "source": "web", "payload": "straße"}),
            &Rules::default(),
            NOW,
        )
        .unwrap();
        ProcessedEvent::from_record(
            StreamRecord { event, received_at: NOW },
            Position { shard_id: "shardId-000000000000".into(), sequence_number: "1".into() },
            NOW,
        )
    }

    #[tokio::test]
    async fn processed_event_is_returned_and_404_before() {
        let (status, body) =
            call(FakeReader { event: Some(stored_event()), ..Default::default() }, fixture("metrics-get-event.json"))
                .await;
        assert_eq!(status, 200);
        assert_eq!(body["payload"], "STRASSE");
        assert_eq!(body["sequence_number"], "1");
        let (status, body) = call(FakeReader::default(), fixture("metrics-get-event-missing.json")).await;
        assert_eq!(status, 404);
        assert!(body["detail"].as_str().unwrap().contains("web/never-sent"));
    }

    #[tokio::test]
    async fn invalid_identity_in_path_is_400() {
        let request = http::Request::builder().uri("/events/Web/x").body(Body::Empty).unwrap();
        let (status, body) = call(FakeReader::default(), request).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().starts_with("source"));
    }

    #[tokio::test]
    async fn percent_encoded_ids_are_decoded() {
        let mut event = stored_event();
        event.event.id = EventId::parse("a:b").unwrap();
        let request = http::Request::builder().uri("/events/web/a%3Ab").body(Body::Empty).unwrap();
        let (status, _) = call(FakeReader { event: Some(event), ..Default::default() }, request).await;
        assert_eq!(status, 200);
    }

    #[test]
    fn totals_sum_shards_and_derive_depth_rate_uptime_and_workers() {
        let mut fast = Histogram::default();
        (0..90).for_each(|_| fast.record(10));
        let mut slow = Histogram::default();
        (0..10).for_each(|_| slow.record(1000));
        let counters = Counters {
            shards: vec![
                ShardCounters {
                    shard_id: "a".into(),
                    processed: 90,
                    duplicate: 2,
                    failed: 1,
                    latency_sum_ms: 900,
                    latency: fast,
                    first_processed_ms: Some(NOW_MS - 100_000),
                    last_active_ms: Some(NOW_MS - 5_000),
                },
                ShardCounters {
                    shard_id: "b".into(),
                    processed: 10,
                    latency_sum_ms: 10_000,
                    latency: slow,
                    last_active_ms: Some(NOW_MS - 120_000),
                    ..Default::default()
                },
            ],
            received: 110,
            first_received_ms: Some(NOW_MS - 120_500),
        };
        let totals = Totals::compute(&counters, 120, NOW);
        assert_eq!(totals.events_processed, 100);
        assert_eq!(totals.events_duplicate, 2);
        assert_eq!(totals.events_failed, 1);
        assert_eq!(totals.current_queue_depth, 7);
        assert_eq!(totals.average_processing_latency_ms, Some(109.0));
        assert_eq!(totals.p50_processing_latency_ms, Some(10));
        assert!((960..=1040).contains(&totals.p95_processing_latency_ms.unwrap()));
        assert_eq!(totals.events_per_second, 2.0);
        assert_eq!(totals.uptime_seconds, 120);
        assert_eq!(totals.active_workers, 1);
    }

    #[tokio::test]
    async fn metrics_route_answers_totals_and_empty_stack_has_no_latency() {
        let (status, body) = call(FakeReader::default(), fixture("metrics-get-metrics.json")).await;
        assert_eq!(status, 200);
        assert_eq!(body["events_processed"], 0);
        assert_eq!(body["average_processing_latency_ms"], Value::Null);
        assert_eq!(body["current_queue_depth"], 0);
    }

    #[tokio::test]
    async fn health_is_200_when_table_and_stream_answer_else_503() {
        let (status, body) = call(FakeReader::default(), fixture("metrics-get-health.json")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        let (status, body) =
            call(FakeReader { table_down: true, ..Default::default() }, fixture("metrics-get-healthz.json")).await;
        assert_eq!(status, 503);
        assert_eq!(body["checks"]["table"], "unavailable");
        assert!(!body.to_string().contains("ResourceNotFound"), "5xx bodies hide internals");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_refused() {
        let (status, _) =
            call(FakeReader::default(), http::Request::builder().uri("/nope").body(Body::Empty).unwrap()).await;
        assert_eq!(status, 404);
        let post = http::Request::builder().method("POST").uri("/metrics").body(Body::Empty).unwrap();
        assert_eq!(call(FakeReader::default(), post).await.0, 405);
    }
}

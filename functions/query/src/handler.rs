//! `GET /events/{source}/{id}`, `GET /metrics`, `GET /health` and `/healthz`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use time::OffsetDateTime;

use eventline_aws::http::{Problem, json};
use eventline_aws::routes::{Lookup, lookup, path_parameter};
use eventline_model::latency::Histogram;
use eventline_model::validation::echo;
use eventline_model::{EventId, ProcessedEvent, Source, UserId, format_rfc3339};

use crate::reader::{Counters, ReadError, Reader, WindowRead};
use crate::routes::{ROUTES, Route};
use crate::timeline;
use eventline_model::aggregate::{AggregateTally, Granularity, PeriodView};
use eventline_model::window::{DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS, ReadPlan};
use std::collections::BTreeMap;

/// The window of `events_per_second` and `active_workers`.
pub const RECENT_SECONDS: i64 = 60;

/// How long a health answer is reused. DescribeTable and DescribeStreamSummary are
/// control-plane calls with low account-wide limits (DescribeStreamSummary: 20 per second);
/// with this, a flood of health checks costs each container one pair of calls per period.
pub const HEALTH_CACHE: Duration = Duration::from_secs(10);

pub struct Query<R> {
    pub reader: R,
    pub health_cache: HealthCache,
}

impl<R> Query<R> {
    pub fn new(reader: R) -> Self {
        Self { reader, health_cache: HealthCache::default() }
    }
}

/// The last health answer and when it was made.
#[derive(Default)]
pub struct HealthCache(Mutex<Option<(Instant, Health)>>);

/// Why a request is not answered with what it asked for. The one place that turns an error
/// into a status: 4xx say what was wrong, 5xx say nothing internal (the log has the chain).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0} is not allowed; use GET")]
    MethodNotAllowed(Method),
    #[error("{field} {rule}")]
    BadParameter { field: &'static str, rule: &'static str },
    #[error("from and to span {periods} {unit}s; granularity={unit} allows at most {limit} per request")]
    SpanTooLong { periods: i64, unit: &'static str, limit: i64 },
    #[error("event {0} has not been processed")]
    EventNotFound(String),
    #[error("{0}")]
    ReferenceNotFound(String),
    #[error("the request could not be served")]
    Read(#[from] ReadError),
}

impl RequestError {
    fn into_response(self) -> Response<String> {
        let status = match &self {
            Self::NotFound(_) | Self::EventNotFound(_) | Self::ReferenceNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadParameter { .. } | Self::SpanTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::Read(error) => {
                tracing::error!(error = %eventline_aws::error_chain(error), "read failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = Problem::new(status, self.to_string()).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}

/// The totals `GET /metrics` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub events_received: u64,
    pub events_processed: u64,
    pub events_failed: u64,
    pub events_duplicate: u64,
    /// Copies of a stored identity from another sender or with other content.
    pub events_conflict: u64,
    pub average_processing_latency_ms: Option<f64>,
    pub p50_processing_latency_ms: Option<u64>,
    pub p95_processing_latency_ms: Option<u64>,
    pub p99_processing_latency_ms: Option<u64>,
    /// Received minus processed, failed, duplicate and conflict: 0 when drained. Negative only if a
    /// received count was lost (ingest could not count a request within its budget): shown,
    /// not hidden.
    pub current_queue_depth: i64,
    /// Events stored and counted whose analytics (window buckets, aggregates, distinct
    /// users) the table refused or that were given up on.
    pub analytics_lost: u64,
    pub events_per_second: f64,
    pub uptime_seconds: u64,
    pub active_workers: usize,
    pub generated_at: String,
    /// With `?window=N`: the last N seconds by event time.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowView>,
}

/// One page of a user's timeline. Serialized as it is (not through `serde_json::Value`), so
/// each event's `data` is the client's text byte for byte and the page's size is what the
/// reader counted.
#[derive(Serialize)]
struct TimelinePage<'a> {
    user_id: &'a UserId,
    events: &'a [ProcessedEvent],
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /metrics?window=N`: events whose event time lies in the last N seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub window_sec: i64,
    pub events_per_sec: f64,
    pub unique_users: u64,
    pub unknown: u64,
    pub by_plan: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    /// Whether a bucket read counted keys beyond its limit under `other`.
    pub folded: bool,
}

impl WindowView {
    pub fn of(seconds: i64, read: WindowRead) -> Self {
        let mut tally = read.tally;
        tally.fold_for_answer();
        Self {
            window_sec: seconds,
            events_per_sec: (tally.events as f64 / seconds as f64 * 1000.0).round() / 1000.0,
            unique_users: read.users.count(),
            unknown: tally.unknown,
            by_plan: tally.by_plan,
            by_region: tally.by_region,
            by_type: tally.by_type,
            by_source: tally.by_source,
            folded: tally.folded > 0,
        }
    }
}

const WINDOW_RULE: &str = "must be an integer from 1 to 1800 (seconds), or empty for 300";

/// The `window` parameter: absent, empty (the default), or 1..=1800 seconds.
pub fn window_seconds(value: Option<&str>) -> Result<Option<i64>, RequestError> {
    let bad = || RequestError::BadParameter { field: "window", rule: WINDOW_RULE };
    match value {
        None => Ok(None),
        Some("") => Ok(Some(DEFAULT_WINDOW_SECONDS)),
        Some(text) => {
            let seconds: i64 = text.parse().map_err(|_| bad())?;
            if (1..=MAX_WINDOW_SECONDS).contains(&seconds) && text.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Some(seconds))
            } else {
                Err(bad())
            }
        }
    }
}

impl Totals {
    /// Pure arithmetic over the counter items; `processed_recently` covers the last
    /// [`RECENT_SECONDS`] whole seconds.
    pub fn compute(counters: &Counters, processed_recently: u64, now: OffsetDateTime) -> Self {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let sum = |f: fn(&crate::reader::ShardCounters) -> u64| counters.shards.iter().map(f).sum::<u64>();
        let processed = sum(|s| s.outcomes.processed);
        let duplicate = sum(|s| s.outcomes.duplicate);
        let conflict = sum(|s| s.outcomes.conflict);
        let failed = sum(|s| s.outcomes.failed);
        let latency_sum = sum(|s| s.outcomes.latency_sum_ms);
        let received = counters.received + sum(|s| s.outcomes.received_direct);
        let mut latency = Histogram::default();
        for shard in &counters.shards {
            for (&bucket, &count) in &shard.outcomes.latency.counts {
                latency.add_bucket(bucket, count);
            }
        }
        let first_seen =
            counters.shards.iter().filter_map(|s| s.first_processed_ms).chain(counters.first_received_ms).min();
        let active_since = now_ms - RECENT_SECONDS * 1000;
        Totals {
            events_received: received,
            events_processed: processed,
            events_failed: failed,
            events_duplicate: duplicate,
            events_conflict: conflict,
            average_processing_latency_ms: (processed > 0)
                .then(|| (latency_sum as f64 / processed as f64 * 10.0).round() / 10.0),
            p50_processing_latency_ms: latency.quantile(0.50),
            p95_processing_latency_ms: latency.quantile(0.95),
            p99_processing_latency_ms: latency.quantile(0.99),
            current_queue_depth: i64::try_from(
                i128::from(received) - i128::from(processed + failed + duplicate + conflict),
            )
            .unwrap_or(i64::MIN),
            analytics_lost: sum(|s| s.analytics_lost),
            events_per_second: processed_recently as f64 / RECENT_SECONDS as f64,
            uptime_seconds: first_seen.map_or(0, |first| u64::try_from((now_ms - first) / 1000).unwrap_or(0)),
            active_workers: counters
                .shards
                .iter()
                .filter(|s| s.last_active_ms.is_some_and(|t| t >= active_since))
                .count(),
            generated_at: format_rfc3339(now),
            window: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
    checks: HealthChecks,
}

#[derive(Debug, Clone, Serialize)]
struct HealthChecks {
    table: &'static str,
    stream: &'static str,
}

impl<R: Reader> Query<R> {
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = match self.respond(&request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        response.map(Body::Text)
    }

    async fn respond(&self, request: &Request) -> Result<Response<String>, RequestError> {
        let route = match lookup(ROUTES, request) {
            Lookup::Found(route) => route,
            Lookup::MethodNotAllowed => return Err(RequestError::MethodNotAllowed(request.method().clone())),
            Lookup::NotFound => return Err(RequestError::NotFound(echo(request.uri().path(), 256))),
        };
        // API Gateway sends every parameter of the route's path; a missing one is refused as
        // an empty value would be.
        let parameter = |name: &str| path_parameter(request, name).unwrap_or_default();
        match route {
            Route::Event => self.event(parameter("source"), parameter("id")).await,
            Route::Metrics => {
                let query = request.query_string_parameters_ref();
                self.metrics(window_seconds(query.and_then(|q| q.first("window")))?).await
            }
            Route::Health => Ok(self.health().await),
            Route::UserEvents => self.user_events(parameter("user_id"), request).await,
            Route::UserAggregates => {
                let user = UserId::parse(parameter("user_id"))
                    .map_err(|rule| RequestError::BadParameter { field: "user_id", rule })?;
                let partitions = vec![eventline_aws::keys::user_aggregate_pk(&user)];
                self.aggregates(partitions, Some(user), request).await
            }
            Route::Aggregates => {
                // Everyone's aggregates are kept per shard: add up the shards' items.
                let shards = self.reader.counters().await?.shards;
                let partitions = shards.iter().map(|s| eventline_aws::keys::shard_aggregate_pk(&s.shard_id)).collect();
                self.aggregates(partitions, None, request).await
            }
            Route::ReferenceUsers => {
                let user = request.query_string_parameters_ref().and_then(|q| q.first("user_id")).map(str::to_owned);
                self.reference_users(user).await
            }
        }
    }

    /// A user's events by event time, a page at a time.
    async fn user_events(&self, user: String, request: &Request) -> Result<Response<String>, RequestError> {
        let user = UserId::parse(user).map_err(|rule| RequestError::BadParameter { field: "user_id", rule })?;
        let query = request.query_string_parameters_ref();
        let param = |name: &str| query.and_then(|q| q.first(name)).map(str::to_owned);
        let bad = |e: timeline::BadParameter| RequestError::BadParameter { field: e.field, rule: e.rule };
        let from = param("from").map(|t| timeline::time_param("from", &t)).transpose().map_err(bad)?;
        let to = param("to").map(|t| timeline::time_param("to", &t)).transpose().map_err(bad)?;
        let limit = timeline::limit_param(param("limit").as_deref()).map_err(bad)?;
        let cursor = param("cursor").map(|c| timeline::Cursor::decode(&c)).transpose().map_err(bad)?;
        let from = from.unwrap_or(time::macros::datetime!(0001-01-01 00:00 UTC));
        let to = to.unwrap_or(time::macros::datetime!(9999-12-31 23:59:59.999999999 UTC));
        let range = timeline::user_sk_range(from, to);
        if let Some(cursor) = &cursor
            && !(range.0 <= cursor.user_sk && cursor.user_sk <= range.1)
        {
            return Err(RequestError::BadParameter { field: "cursor", rule: "belongs to another from/to" });
        }
        let (events, next) =
            if from < to { self.reader.user_events(&user, range, limit, cursor).await? } else { (Vec::new(), None) };
        let page = TimelinePage { user_id: &user, events: &events, next_cursor: next.map(|c| c.encode()) };
        Ok(json(StatusCode::OK, &page))
    }

    /// Day or month aggregates of the given partitions (a user's, or every shard's).
    async fn aggregates(
        &self,
        partitions: Vec<String>,
        user: Option<UserId>,
        request: &Request,
    ) -> Result<Response<String>, RequestError> {
        let query = request.query_string_parameters_ref();
        let param = |name: &str| query.and_then(|q| q.first(name)).map(str::to_owned);
        let bad = |e: timeline::BadParameter| RequestError::BadParameter { field: e.field, rule: e.rule };
        let granularity = timeline::granularity_param(param("granularity").as_deref()).map_err(bad)?;
        let from = param("from").map(|t| timeline::time_param("from", &t)).transpose().map_err(bad)?;
        let to = param("to").map(|t| timeline::time_param("to", &t)).transpose().map_err(bad)?;
        let (first, last) = timeline::period_range(granularity, from, to, OffsetDateTime::now_utc());
        let (limit, unit) = timeline::span_limit(granularity);
        let span = timeline::periods_between(first, last);
        if span > limit {
            return Err(RequestError::SpanTooLong { periods: span, unit, limit });
        }
        let mut periods = if first > last {
            BTreeMap::new()
        } else if user.is_some() && granularity == Granularity::Month {
            // A user's months are kept as their days, and added up here.
            let days = self.reader.aggregates(&partitions, timeline::days_of_months_sk_range(first, last)).await?;
            timeline::months_of_days(days)
        } else {
            self.reader.aggregates(&partitions, timeline::period_sk_range(first, last)).await?
        };
        periods.values_mut().for_each(AggregateTally::fold_for_answer);
        let folded = periods.values().any(|tally| tally.folded > 0);
        let periods: Vec<PeriodView> = periods.into_iter().map(|(label, tally)| PeriodView::of(label, tally)).collect();
        let mut body = serde_json::json!({
            "granularity": if granularity == Granularity::Day { "day" } else { "month" },
            "from": first.label(),
            "to": last.label(),
            "periods": periods,
            "folded": folded,
        });
        if let Some(user) = user {
            body["user_id"] = user.as_str().into();
        }
        Ok(json(StatusCode::OK, &body))
    }

    /// The current reference generation, or one user's entry in it.
    async fn reference_users(&self, user: Option<String>) -> Result<Response<String>, RequestError> {
        let user = user
            .map(UserId::parse)
            .transpose()
            .map_err(|rule| RequestError::BadParameter { field: "user_id", rule })?;
        let Some(generation) = self.reader.reference().await? else {
            return Err(RequestError::ReferenceNotFound("no reference table has been stored yet".into()));
        };
        let Some(user) = user else {
            return Ok(json(StatusCode::OK, &generation));
        };
        match self.reader.reference_user(&generation, &user).await? {
            Some(meta) => Ok(json(
                StatusCode::OK,
                &serde_json::json!({"user_id": user, "plan": meta.plan, "region": meta.region, "generation": generation.number}),
            )),
            None => Err(RequestError::ReferenceNotFound(format!(
                "user {user} is not in reference generation {}",
                generation.number
            ))),
        }
    }

    async fn event(&self, source: String, id: String) -> Result<Response<String>, RequestError> {
        let source = Source::parse(source).map_err(|rule| RequestError::BadParameter { field: "source", rule })?;
        let id = EventId::parse(id).map_err(|rule| RequestError::BadParameter { field: "id", rule })?;
        match self.reader.event(&source, &id).await? {
            Some(event) => Ok(json(StatusCode::OK, &event)),
            None => Err(RequestError::EventNotFound(format!("{source}/{id}"))),
        }
    }

    async fn metrics(&self, window: Option<i64>) -> Result<Response<String>, RequestError> {
        let now = OffsetDateTime::now_utc();
        let second = now.unix_timestamp();
        let (counters, recent) =
            tokio::join!(self.reader.counters(), self.reader.processed_between(second - RECENT_SECONDS, second));
        let counters = counters?;
        let mut totals = Totals::compute(&counters, recent?, now);
        if let Some(seconds) = window {
            let shards: Vec<String> = counters.shards.iter().map(|s| s.shard_id.clone()).collect();
            let read = self.reader.window(&shards, &ReadPlan::new(second, seconds)).await?;
            tracing::debug!(items = read.items_read, seconds, "window read");
            totals.window = Some(WindowView::of(seconds, read));
        }
        Ok(json(StatusCode::OK, &totals))
    }

    async fn health(&self) -> Response<String> {
        let cached = self
            .health_cache
            .0
            .lock()
            .ok()
            .and_then(|cache| cache.as_ref().filter(|(at, _)| at.elapsed() < HEALTH_CACHE).map(|(_, h)| h.clone()));
        let health = match cached {
            Some(health) => health,
            None => {
                let health = self.check_health().await;
                if let Ok(mut cache) = self.health_cache.0.lock() {
                    *cache = Some((Instant::now(), health.clone()));
                }
                health
            }
        };
        let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json(status, &health)
    }

    async fn check_health(&self) -> Health {
        let (table, stream) = tokio::join!(self.reader.check_table(), self.reader.check_stream());
        let state = |result: &Result<(), ReadError>, what: &str| match result {
            Ok(()) => "ok",
            Err(error) => {
                tracing::error!(error = %eventline_aws::error_chain(error), what, "health check failed");
                "unavailable"
            }
        };
        let checks = HealthChecks { table: state(&table, "table"), stream: state(&stream, "stream") };
        let healthy = table.is_ok() && stream.is_ok();
        Health { status: if healthy { "ok" } else { "unavailable" }, version: env!("CARGO_PKG_VERSION"), checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryReader;
    use crate::reader::ShardCounters;
    use crate::routes::routed;
    use eventline_aws::routes::route_key;
    use eventline_model::outcomes::Outcomes;
    use eventline_model::reference::{Generation, UserMeta};
    use eventline_model::{Position, ProcessedEvent, Rules, StreamRecord};
    use serde_json::{Value, json};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);
    const NOW_MS: i64 = 1_795_435_200_000;

    /// What the tests' reader holds unless a test says otherwise: a day of aggregates, a
    /// window of 600 `pro` events from 7 users, and `u-1` in the reference table.
    fn reader() -> MemoryReader {
        let mut reader = MemoryReader::new();
        reader.aggregates.insert("2026-11-23".to_owned(), AggregateTally { events: 1, ..Default::default() });
        reader.window.tally.events = 600;
        reader.window.tally.by_plan.insert("pro".into(), 600);
        for i in 0..7 {
            reader.window.users.insert_hash(eventline_model::window::user_hash(&format!("u{i}")));
        }
        let label = |text: &str| eventline_model::reference::Label::parse(text).unwrap();
        reader.reference_users.insert("u-1".to_owned(), UserMeta { plan: label("pro"), region: label("eu") });
        reader
    }

    /// A table that does not answer.
    fn down() -> MemoryReader {
        let mut reader = reader();
        reader.table_down = true;
        reader
    }

    fn holding(event: ProcessedEvent) -> MemoryReader {
        let mut reader = reader();
        reader.event = Some(event);
        reader
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    async fn call(reader: MemoryReader, request: Request) -> (u16, Value) {
        call_on(&Query::new(reader), request).await
    }

    async fn call_on(metrics: &Query<MemoryReader>, request: Request) -> (u16, Value) {
        let response = metrics.handle(request).await;
        let Body::Text(text) = response.body() else { panic!("JSON answers are sent as text") };
        (response.status().as_u16(), serde_json::from_str(text).unwrap_or(Value::Null))
    }

    fn stored_event() -> ProcessedEvent {
        let raw = serde_json::value::RawValue::from_string(
            json!({"id": "evt-0001", "source": "web", "payload": "straße"}).to_string(),
        )
        .unwrap();
        let event = eventline_model::parse_event(&raw, &Rules::default(), NOW).unwrap();
        ProcessedEvent::from_record(
            StreamRecord { event, received_at: NOW, ingest_id: None, provenance: None },
            Position::of_record("shardId-000000000000", "1"),
            NOW,
        )
    }

    #[tokio::test]
    async fn processed_event_is_returned_and_404_before() {
        let (status, body) = call(holding(stored_event()), fixture("query-get-event.json")).await;
        assert_eq!(status, 200);
        assert_eq!(body["payload"], "STRASSE");
        assert_eq!(body["sequence_number"], "1");
        let (status, body) = call(reader(), fixture("query-get-event-missing.json")).await;
        assert_eq!(status, 404);
        assert!(body["detail"].as_str().unwrap().contains("web/never-sent"));
    }

    #[tokio::test]
    async fn invalid_identity_in_path_is_400() {
        let request = routed(http::Request::builder().uri("/events/Web/x").body(Body::Empty).unwrap());
        let (status, body) = call(reader(), request).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().starts_with("source"));
    }

    #[tokio::test]
    async fn percent_encoded_ids_are_decoded() {
        let mut event = stored_event();
        event.event.id = EventId::parse("a:b").unwrap();
        let request = routed(http::Request::builder().uri("/events/web/a%3Ab").body(Body::Empty).unwrap());
        let (status, _) = call(holding(event), request).await;
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
                    outcomes: Outcomes {
                        received_direct: 3,
                        processed: 90,
                        duplicate: 2,
                        conflict: 4,
                        failed: 1,
                        latency_sum_ms: 900,
                        latency: fast,
                    },
                    analytics_lost: 4,
                    first_processed_ms: Some(NOW_MS - 100_000),
                    last_active_ms: Some(NOW_MS - 5_000),
                },
                ShardCounters {
                    shard_id: "b".into(),
                    outcomes: Outcomes { processed: 10, latency_sum_ms: 10_000, latency: slow, ..Default::default() },
                    last_active_ms: Some(NOW_MS - 120_000),
                    ..Default::default()
                },
            ],
            received: 114,
            first_received_ms: Some(NOW_MS - 120_500),
        };
        let totals = Totals::compute(&counters, 120, NOW);
        assert_eq!(totals.events_processed, 100);
        assert_eq!(totals.events_duplicate, 2);
        assert_eq!(totals.events_failed, 1);
        assert_eq!(totals.events_conflict, 4);
        assert_eq!(totals.events_received, 117, "ingest's count and the records other producers wrote");
        assert_eq!(totals.current_queue_depth, 10);
        assert_eq!(totals.average_processing_latency_ms, Some(109.0));
        assert_eq!(totals.p50_processing_latency_ms, Some(10));
        assert!((960..=1040).contains(&totals.p95_processing_latency_ms.unwrap()));
        assert_eq!(totals.events_per_second, 2.0);
        assert_eq!(totals.uptime_seconds, 120);
        assert_eq!(totals.active_workers, 1);
        assert_eq!(totals.analytics_lost, 4, "lost analytics are summed over the shards");
    }

    #[tokio::test]
    async fn metrics_route_answers_totals_and_empty_stack_has_no_latency() {
        let query = Query::new(reader());
        let (status, body) = call_on(&query, fixture("query-get-metrics.json")).await;
        assert_eq!(status, 200);
        assert_eq!(query.reader.spans_asked(), [RECENT_SECONDS], "the events per second are of the last minute");
        assert_eq!(body["events_processed"], 0);
        assert_eq!(body["average_processing_latency_ms"], Value::Null);
        assert_eq!(body["current_queue_depth"], 0);
    }

    #[tokio::test]
    async fn health_is_200_when_table_and_stream_answer_else_503() {
        let (status, body) = call(reader(), fixture("query-get-health.json")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        let (status, body) = call(down(), fixture("query-get-healthz.json")).await;
        assert_eq!(status, 503);
        assert_eq!(body["checks"]["table"], "unavailable");
        assert!(!body.to_string().contains("ResourceNotFound"), "5xx bodies hide internals");
    }

    #[tokio::test]
    async fn a_flood_of_health_checks_costs_one_check() {
        let metrics = Query::new(reader());
        for _ in 0..50 {
            assert_eq!(call_on(&metrics, fixture("query-get-health.json")).await.0, 200);
        }
        assert_eq!(metrics.reader.health_checks(), 1);
    }

    #[test]
    fn a_mismatch_shows_as_negative_depth_instead_of_zero() {
        let counters = Counters {
            shards: vec![ShardCounters {
                shard_id: "a".into(),
                outcomes: Outcomes { processed: 5, ..Default::default() },
                ..Default::default()
            }],
            received: 3,
            first_received_ms: None,
        };
        assert_eq!(Totals::compute(&counters, 0, NOW).current_queue_depth, -2);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_refused() {
        let (status, _) =
            call(reader(), routed(http::Request::builder().uri("/nope").body(Body::Empty).unwrap())).await;
        assert_eq!(status, 404);
        let post = routed(http::Request::builder().method("POST").uri("/metrics").body(Body::Empty).unwrap());
        assert_eq!(call(reader(), post).await.0, 405);
    }

    #[tokio::test]
    async fn the_reference_generation_and_one_users_entry_are_served() {
        let generation = Generation { number: 3, key: "k".into(), ts: NOW, users: 7, buckets: 1 };
        let stored = || {
            let mut reader = reader();
            reader.reference = Some(generation.clone());
            reader
        };
        let get = |uri: &str| {
            let query: std::collections::HashMap<String, String> = uri
                .split_once('?')
                .map(|(_, q)| {
                    q.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
                })
                .unwrap_or_default();
            routed(http::Request::builder().uri(uri).body(Body::Empty).unwrap().with_query_string_parameters(query))
        };
        let (status, body) = call(stored(), get("/reference/users")).await;
        assert_eq!((status, &body), (200, &json!({"generation": 3, "ts": "2026-11-23T12:00:00Z", "users": 7})));
        let (status, body) = call(stored(), get("/reference/users?user_id=u-1")).await;
        assert_eq!((status, &body), (200, &json!({"user_id": "u-1", "plan": "pro", "region": "eu", "generation": 3})));
        assert_eq!(call(stored(), get("/reference/users?user_id=u-2")).await.0, 404);
        assert_eq!(call(reader(), get("/reference/users")).await.0, 404);
    }

    #[test]
    fn the_window_parameter_is_1_to_1800_or_empty_for_300() {
        assert_eq!(window_seconds(None).unwrap(), None);
        assert_eq!(window_seconds(Some("")).unwrap(), Some(300));
        assert_eq!(window_seconds(Some("1")).unwrap(), Some(1));
        assert_eq!(window_seconds(Some("1800")).unwrap(), Some(1800));
        for bad in ["0", "1801", "-5", "+5", "1.5", "abc", " 60"] {
            let error = window_seconds(Some(bad)).unwrap_err();
            assert!(error.to_string().starts_with("window must be an integer"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn metrics_with_a_window_add_its_view_and_without_stay_as_they_were() {
        let request = |uri: &str, query: &[(&str, &str)]| {
            let query: std::collections::HashMap<String, String> =
                query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            routed(http::Request::builder().uri(uri).body(Body::Empty).unwrap().with_query_string_parameters(query))
        };
        let query = Query::new(reader());
        let (status, body) = call_on(&query, request("/metrics", &[("window", "60")])).await;
        assert_eq!(status, 200);
        assert_eq!(body["window_sec"], 60);
        assert_eq!(body["events_per_sec"], 10.0);
        assert_eq!(body["unique_users"], 7);
        assert_eq!(body["by_plan"]["pro"], 600);
        assert_eq!(query.reader.spans_asked(), [RECENT_SECONDS], "the events per second are of the last minute");
        let (_, plain) = call(reader(), request("/metrics", &[])).await;
        assert!(plain.get("window_sec").is_none());
        let (status, body) = call(reader(), request("/metrics", &[("window", "0")])).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("1 to 1800"));
    }

    #[tokio::test]
    async fn timeline_and_aggregate_parameters_are_checked() {
        for (uri, field) in [
            ("/users/u-1/events?limit=0", "limit"),
            ("/users/u-1/events?from=soon", "from"),
            ("/users/u-1/events?cursor=forged", "cursor"),
            ("/users/u-1/aggregates?granularity=week", "granularity"),
            ("/aggregates?to=x", "to"),
        ] {
            let (status, body) = call(reader(), get(uri)).await;
            assert_eq!(status, 400, "{uri}");
            assert!(body["detail"].as_str().unwrap().starts_with(field), "{uri}: {body}");
        }
        let (status, body) = call(reader(), get("/users/u-1/aggregates?granularity=month")).await;
        assert_eq!((status, body["granularity"].as_str(), body["user_id"].as_str()), (200, Some("month"), Some("u-1")));
        assert_eq!(body["periods"][0]["period"], "2026-11", "the user's days, added up by month");
        let (status, body) = call(reader(), get("/users/u-1/events")).await;
        assert_eq!((status, body["events"].as_array().map(Vec::len)), (200, Some(0)));
        assert!(body.get("next_cursor").is_none());
    }

    fn get(uri: &str) -> Request {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let query: std::collections::HashMap<String, String> =
            query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        routed(http::Request::builder().uri(path).body(Body::Empty).unwrap().with_query_string_parameters(query))
    }

    #[tokio::test]
    async fn aggregate_spans_up_to_366_days_or_120_months_are_served_and_longer_ones_refused() {
        for (route, granularity, from, to, status) in [
            ("/aggregates", "day", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", 200),
            ("/aggregates", "day", "2024-01-01T00:00:00Z", "2025-01-02T00:00:00Z", 400),
            ("/users/u-1/aggregates", "day", "2024-01-01T12:00:00Z", "2025-01-01T00:00:00Z", 200),
            ("/users/u-1/aggregates", "day", "2024-01-01T12:00:00Z", "2025-01-01T12:00:00Z", 400),
            ("/aggregates", "month", "2016-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 200),
            ("/aggregates", "month", "2016-01-01T00:00:00Z", "2026-01-01T00:00:01Z", 400),
            ("/users/u-1/aggregates", "month", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z", 400),
        ] {
            let uri = format!("{route}?granularity={granularity}&from={from}&to={to}");
            let (got, body) = call(reader(), get(&uri)).await;
            assert_eq!(got, status, "{uri}: {body}");
            if status == 400 {
                let limit = if granularity == "day" { "at most 366" } else { "at most 120" };
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.starts_with("from and to span") && detail.contains(limit), "{detail}");
            }
        }
        // Only a start: up to now, which is more than ten years after year 1.
        let (status, _) = call(reader(), get("/aggregates?granularity=month&from=0001-01-01T00:00:00Z")).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn a_timeline_page_carries_data_as_the_client_wrote_it() {
        let mut event = stored_event();
        let data = r#"{"n":1e2,"big":123456789012345678901234567890}"#;
        event.event.data = Some(eventline_model::RawObject::from_text(data.to_owned()).unwrap());
        let metrics = Query::new(holding(event));
        let response = metrics.handle(get("/users/u-1/events")).await;
        let Body::Text(text) = response.body() else { panic!("JSON answers are sent as text") };
        assert!(text.contains(r#""data":{"n":1e2,"big":123456789012345678901234567890}"#), "{text}");
    }

    #[test]
    fn an_event_named_like_a_route_is_still_an_event() {
        let request = get("/events/web/aggregates");
        assert_eq!(route_key(&request), Some("GET /events/{source}/{id}"));
        assert_eq!(lookup(ROUTES, &request), Lookup::Found(Route::Event));
        assert_eq!(path_parameter(&request, "id").as_deref(), Some("aggregates"));
        assert_eq!(lookup(ROUTES, &get("/users/u-1/events")), Lookup::Found(Route::UserEvents));
        assert_eq!(lookup(ROUTES, &get("/aggregates")), Lookup::Found(Route::Aggregates));
    }

    #[tokio::test]
    async fn the_route_key_and_path_parameters_decide_not_the_path() {
        // The health fixture's key, on a request whose path reads like another route.
        let mut request = fixture("query-get-health.json");
        *request.uri_mut() = http::Uri::from_static("/events/web/evt-0001");
        let (status, body) = call(reader(), request).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        // The event named by the parameters, whatever the path says.
        let mut request = fixture("query-get-event.json");
        *request.uri_mut() = http::Uri::from_static("/metrics");
        assert_eq!(call(holding(stored_event()), request).await.0, 200);
        // A path alone, without the route key API Gateway sends, is no route.
        let (status, body) = call(reader(), http::Request::builder().uri("/metrics").body(Body::Empty).unwrap()).await;
        assert_eq!(status, 404);
        assert_eq!(body["detail"], "no route for /metrics");
    }
}

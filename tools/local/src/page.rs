//! A live page at `/` with what the deployed CloudWatch dashboard shows, as far as the local
//! stack has it: throughput, processing latency percentiles, queue depth, dead letters, the
//! poller's counts, and the window's breakdowns by plan, region, type and source.
//!
//! The page and its figures (`/_local/dashboard.json`) are local conveniences: the deployed
//! API has no such routes (CloudWatch's dashboard plays this part there), so they take no
//! signature and stay out of [`App::route_list`](crate::server::App::route_list).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eventline_aws::error_chain;
use eventline_aws::http::Problem;
use eventline_model::latency::Histogram;
use eventline_query::reader::Reader;
use http::{StatusCode, Uri, header};
use lambda_http::RequestExt;
use serde_json::{Value, json};

use crate::manifest::Manifest;
use crate::poller::Poller;
use crate::{Error, Functions};

pub const PAGE_PATH: &str = "/";
pub const FIGURES_PATH: &str = "/_local/dashboard.json";

/// The window of the breakdowns unless the page's URL asks for another (`/?window=300`).
const DEFAULT_WINDOW: &str = "60";

const PAGE: &str = include_str!("page.html");

/// Inline styles and script only, and fetches to this origin: the page loads nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'";

/// What the figures are read from.
pub struct Dashboard {
    functions: Arc<Functions>,
    poller: Arc<Poller>,
    sqs: aws_sdk_sqs::Client,
    dead_letter_queue_url: String,
}

impl Dashboard {
    pub fn new(
        functions: Arc<Functions>,
        poller: Arc<Poller>,
        sdk: &aws_config::SdkConfig,
        manifest: &Manifest,
    ) -> Result<Self, Error> {
        let dead_letter_queue_url = manifest.outputs.get("DeadLetterQueueUrl").cloned().ok_or_else(|| {
            Error::Setup("template.yaml has no DeadLetterQueueUrl output, which the local dashboard reads".into())
        })?;
        Ok(Self { functions, poller, sqs: aws_sdk_sqs::Client::new(sdk), dead_letter_queue_url })
    }

    /// One sample: `GET /metrics?window=N` as the query function answers it, with the latency
    /// percentiles, the dead-letter queue's depth and the poller's counts beside it.
    async fn sample(&self, window: &str) -> Result<Value, SampleError> {
        let sampled_at_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let mut request = http::Request::new(lambda_http::Body::Empty);
        *request.uri_mut() = Uri::from_static("/metrics");
        let request = request.with_query_string_parameters(HashMap::from([("window".to_owned(), window.to_owned())]));
        // Straight to the handler, with the route key the gateway would send.
        let request = eventline_query::routes::routed(request);
        let (answer, counters, poller, dead_letters) = tokio::join!(
            self.functions.query.handle(request),
            self.functions.query.reader.counters(),
            self.poller.stats(),
            self.dead_letters(),
        );
        if answer.status() != StatusCode::OK {
            return Err(SampleError::Metrics(answer));
        }
        let metrics: Value = match answer.body() {
            lambda_http::Body::Text(text) => serde_json::from_str(text).ok(),
            _ => None,
        }
        .ok_or_else(|| SampleError::Read("GET /metrics did not answer JSON text".into()))?;
        let counters = counters.map_err(|e| SampleError::Read(error_chain(&e)))?;

        // GET /metrics answers p50, p95 and p99; the dashboard wants p90 as well. All three
        // come from the per-shard histograms GET /metrics reads, merged here from one read so
        // that they agree with each other.
        let mut latency = Histogram::default();
        for shard in &counters.shards {
            for (&bucket, &count) in &shard.outcomes.latency.counts {
                latency.add_bucket(bucket, count);
            }
        }
        Ok(json!({
            "sampled_at_ms": sampled_at_ms,
            "metrics": metrics,
            "latency_ms": {
                "p50": latency.quantile(0.50),
                "p90": latency.quantile(0.90),
                "p99": latency.quantile(0.99),
            },
            "dead_letters": dead_letters?,
            "poller": {
                "batches": poller.batches,
                "records": poller.records,
                "retries": poller.retries,
                "sent_to_on_failure": poller.sent_to_on_failure,
                "largest_batch": poller.largest_batch,
            },
        }))
    }

    /// Messages waiting in the dead-letter queue, as CloudWatch's
    /// `ApproximateNumberOfMessagesVisible` shows them.
    async fn dead_letters(&self) -> Result<u64, SampleError> {
        let visible = QueueAttributeName::ApproximateNumberOfMessages;
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.dead_letter_queue_url)
            .attribute_names(visible.clone())
            .send()
            .await
            .map_err(|e| SampleError::Read(format!("dead-letter queue: {}", error_chain(&e))))?;
        output
            .attributes()
            .and_then(|attributes| attributes.get(&visible))
            .and_then(|count| count.parse().ok())
            .ok_or_else(|| SampleError::Read("dead-letter queue: no message count in its attributes".into()))
    }
}

/// Why a sample could not be taken.
#[derive(Debug)]
enum SampleError {
    /// The query function's own answer when not 200: a 4xx says what was wrong with
    /// `window`; a 5xx says nothing internal, and the function has logged why.
    Metrics(http::Response<lambda_http::Body>),
    /// A read of the page's own failed.
    Read(String),
}

impl IntoResponse for SampleError {
    fn into_response(self) -> Response {
        let answer = match self {
            Self::Metrics(answer) => answer,
            Self::Read(error) => {
                tracing::error!(%error, "local dashboard: a read failed");
                let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the figures could not be read");
                return into_axum(problem.into_response());
            }
        };
        let (parts, body) = answer.into_parts();
        let bytes = match body {
            lambda_http::Body::Text(text) => text.into_bytes(),
            lambda_http::Body::Binary(bytes) => bytes,
            _ => Vec::new(),
        };
        Response::from_parts(parts, axum::body::Body::from(bytes))
    }
}

fn into_axum(response: http::Response<String>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The page's routes in front of `template`, which answers everything else, including other
/// methods on these paths (the gateway's 404, as before).
pub fn router(dashboard: Arc<Dashboard>, template: Router) -> Router {
    Router::new()
        .route(PAGE_PATH, get(page).fallback_service(template.clone()))
        .route(FIGURES_PATH, get(figures).fallback_service(template.clone()))
        .fallback_service(template)
        .with_state(dashboard)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        PAGE,
    )
        .into_response()
}

async fn figures(State(dashboard): State<Arc<Dashboard>>, uri: Uri) -> Response {
    let window = window_param(uri.query()).unwrap_or_else(|| DEFAULT_WINDOW.to_owned());
    match dashboard.sample(&window).await {
        Ok(sample) => {
            ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], sample.to_string())
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// The first `window` in a query string, decoded; GET /metrics checks its value.
fn window_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == "window").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_taken_from_the_query_and_decoded() {
        assert_eq!(window_param(Some("window=300")).as_deref(), Some("300"));
        assert_eq!(window_param(Some("x=1&window=6%30&window=9")).as_deref(), Some("60"));
        assert_eq!(window_param(Some("window")).as_deref(), Some(""));
        assert_eq!(window_param(Some("windows=5")), None);
        assert_eq!(window_param(None), None);
    }

    #[test]
    fn the_page_fetches_its_figures_from_this_origin_only() {
        assert!(PAGE.contains(&format!("\"{FIGURES_PATH}\"")));
        for external in ["http://", "https://", "//cdn", "src=\"", "href=\""] {
            assert!(!PAGE.contains(external), "the page refers to {external}");
        }
    }
}

//! What a mix of events makes the pipeline do, counted on a local stack: ingest and the
//! transform run in this process against the emulator, with every AWS request recorded by
//! [`Recorder`], and scaled to a million events as the [`Usage`] the bill prices.
//!
//! Counted exactly: HTTP API requests and their 512 KB units, invocations, Kinesis PUT
//! payload units on both streams, DynamoDB write units by kind (index copies included) and
//! items read, the bytes each event leaves in the table and the index, the functions' log
//! lines at `INFO` and their embedded-metric lines. Modelled, and stated here: a function's
//! duration (its CPU time in this process plus [`SECONDS_PER_CALL`] for each AWS call it
//! waits on), Lambda's platform lines (for each function whose system log level in the
//! template keeps them) and the access-log line (their documented formats with a request's
//! typical values), X-Ray's sampling, and the streams' KMS requests.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use aws_lambda_events::apigw::{ApiGatewayRequestAuthorizer, ApiGatewayV2CustomAuthorizerV2Request};
use aws_sdk_kinesis::types::Record;
use base64::Engine;
use eventline_aws::KinesisSink;
use eventline_aws::item::item_size;
use eventline_aws::reference::ReferenceStore;
use eventline_aws::write_keys::{DynamoKeys, DynamoRateLedger};
use eventline_local::LocalStack;
use eventline_local::cost::{self, INDEX_KIND, Recorder, Write};
use eventline_local::poller::kinesis_event;
use eventline_model::retry::Backoff;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use serde_json::{Value, json};

use crate::bill::{FunctionUsage, MILLION, Steady, Usage, default_sampling_fraction, http_api_units};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Events each mix sends.
pub const EVENTS: usize = 1_000;
/// The steady rate both mixes are priced at.
pub const EVENTS_PER_SECOND: f64 = 1_000.0;
/// What one AWS call a function waits on adds to its duration: a round trip within a region.
pub const SECONDS_PER_CALL: f64 = 0.010;
/// Analytics updates the transform has in flight at once.
pub const CONCURRENT_UPDATES: usize = 16;
/// The functions' memory (the template's `MemorySize`).
pub const MEMORY_MB: u32 = 256;
/// Seconds a write key's check is cached by the authorizer (`WriteKeyCacheSeconds`).
pub const KEY_CACHE_SECONDS: f64 = 300.0;
/// A Kinesis stream's shard takes 1,000 records a second: at the steady rate each stream
/// needs one, and has two for headroom.
pub const SHARDS_PER_STREAM: u32 = 2;
/// Kinesis asks KMS for a data key about every five minutes per shard, for writing and for
/// reading (server-side encryption with the `aws/kinesis` key).
pub const KMS_REQUESTS_PER_SHARD_HOUR: f64 = 2.0 * 12.0;
/// The pipeline's own metrics (`eventline_aws::telemetry`), each with the `Stack` dimension.
pub const CUSTOM_METRICS: u32 = 9;

/// Lambda's two platform lines of an invocation in JSON log format (`platform.start` and
/// `platform.report`, traced), as documented, with an invocation's typical values.
const PLATFORM_LINES: [&str; 2] = [
    r#"{"time":"2026-12-07T12:00:00.000Z","type":"platform.start","record":{"requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","version":"$LATEST","tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-657a1234-0123456789abcdef01234567;Parent=54565fb41ac79632;Sampled=0;Lineage=1:4b5d35e5:0"}}}"#,
    r#"{"time":"2026-12-07T12:00:00.012Z","type":"platform.report","record":{"requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","metrics":{"durationMs":11.43,"billedDurationMs":12,"memorySizeMB":256,"maxMemoryUsedMB":24},"tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-657a1234-0123456789abcdef01234567;Parent=54565fb41ac79632;Sampled=0;Lineage=1:4b5d35e5:0"},"status":"success"}}"#,
];

/// One line of the template's access-log format (`HttpApi.AccessLogSettings`) with a
/// request's typical values; `{principal}` is the caller's ARN, or `-` for a write key.
const ACCESS_LOG_LINE: &str = r#"{"requestId":"OHaXhj1BIAMEPsw=","ip":"203.0.113.17","requestTime":"07/Dec/2026:12:00:00 +0000","routeKey":"{route}","status":"202","responseLength":"64","latencyMs":"23","integrationLatencyMs":"21","integrationError":"-","authorizerError":"-","principal":"{principal}"}"#;
const IAM_PRINCIPAL: &str = "arn:aws:iam::123456789012:user/producer";

/// A way events reach the pipeline: its route, its authorization and how many events a
/// request carries.
#[derive(Debug, Clone, Copy)]
pub struct Mix<'a> {
    pub name: &'a str,
    pub route: &'static str,
    pub authorization: &'static str,
    pub events_per_request: usize,
}

/// Batches of 100 from a server, and single events from Segment's SDKs.
pub const MIXES: [Mix<'static>; 2] = [
    Mix { name: "batches of 100", route: "POST /events", authorization: "IAM (SigV4)", events_per_request: 100 },
    Mix {
        name: "single events",
        route: "POST /v1/track",
        authorization: "a write key (Basic), checked by the authorizer",
        events_per_request: 1,
    },
];

/// What a mix did for [`EVENTS`] events, and its usage per million events.
#[derive(Debug, Clone)]
pub struct Counted {
    pub mix: Mix<'static>,
    /// Records per transform batch.
    pub batch: usize,
    /// AWS requests ingest sent, by operation (`PutRecords`, `TransactWriteItems`...).
    pub ingest_requests: BTreeMap<String, usize>,
    /// AWS requests the transform sent, by operation.
    pub transform_requests: BTreeMap<String, usize>,
    /// The transform's DynamoDB write units per event, by kind (index copies included).
    pub transform_units: BTreeMap<&'static str, f64>,
    /// Ingest's DynamoDB write units per event (received counters, write-key rates).
    pub ingest_units: f64,
    /// Mean bytes of a stored event's item (without DynamoDB's per-item overhead).
    pub event_item_bytes: f64,
    pub usage: Usage,
}

impl Counted {
    /// The transform's write units per event, index copies included.
    pub fn transform_units_per_event(&self) -> f64 {
        self.transform_units.values().sum()
    }
}

/// The fixed monthly charges' setting: two streams at [`SHARDS_PER_STREAM`], `alarms` alarms,
/// the pipeline's metrics and the alarm topic's key, at [`EVENTS_PER_SECOND`].
pub fn steady(alarms: u32) -> Steady {
    Steady {
        events_per_second: EVENTS_PER_SECOND,
        streams: 2,
        shards_per_stream: SHARDS_PER_STREAM,
        alarms,
        custom_metrics: CUSTOM_METRICS,
        kms_keys: 1,
    }
}

/// Bytes the functions wrote to their log, counted by a subscriber installed once.
static LOG_BYTES: AtomicU64 = AtomicU64::new(0);

struct CountingWriter;

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_BYTES.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log and metrics the functions write in Lambda, installed once for the process: their
/// `INFO` lines as JSON (as `eventline_aws::logs` writes them there), counted, and the
/// embedded-metric recorder.
fn telemetry() -> Result<&'static metrics_cloudwatch_embedded::Collector, BoxError> {
    static COLLECTOR: OnceLock<Result<&'static metrics_cloudwatch_embedded::Collector, String>> = OnceLock::new();
    let collector = COLLECTOR.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .json()
            .with_writer(|| CountingWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
        eventline_aws::telemetry::metrics_recorder().map_err(|e| e.to_string())
    });
    collector.clone().map_err(Into::into)
}

/// Bytes of the embedded-metric line one invocation writes, and the line flushed.
fn metric_line_bytes(collector: &metrics_cloudwatch_embedded::Collector) -> u64 {
    let mut line = Vec::new();
    // A line that cannot be written loses the count of one line, nothing else.
    let _ = collector.flush(&mut line);
    line.len() as u64
}

/// The CPU time this process has used, user and system.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A Segment track call of a call-detail event, as the SDKs send it.
fn track_call(event: &Value) -> Value {
    json!({
        "type": "track",
        "event": event["type"],
        "messageId": event["id"],
        "userId": event["user_id"],
        "properties": event["data"],
        "timestamp": time::OffsetDateTime::from_unix_timestamp(event["timestamp"].as_i64().unwrap_or(0))
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    })
}

/// Runs `mix` on `stack` (a fresh one: the run reads its whole stream) and counts, with the
/// transform taking batches of `batch` records (the template's `TransformBatchSize`; at the
/// steady rate a batch fills within the batching window).
pub async fn count(stack: &LocalStack, mix: Mix<'static>, batch: usize) -> Result<Counted, BoxError> {
    let collector = telemetry()?;
    let _ = metric_line_bytes(collector);
    let table = stack.manifest.function("transform")?.environment["EVENTS_TABLE"].clone();
    let events = cost::live_events(EVENTS, time::OffsetDateTime::now_utc().unix_timestamp());

    // A write key for the write-key mix, made by the admin function; the authorizer checks
    // it once, and its answer is cached for the whole run (as for 300 s on AWS).
    let mut authorizer_context = None;
    let mut key_header = None;
    if mix.route.starts_with("POST /v1/") {
        let request = http::Request::builder()
            .method("POST")
            .uri("/write-keys")
            .header("content-type", "application/json")
            .body(lambda_http::Body::Text(json!({"source": "switch-a"}).to_string()))?;
        let made = stack.functions.admin.handle(eventline_admin::routes::routed(request)).await;
        let made: Value = serde_json::from_slice(made.body())?;
        let key = made["write_key"].as_str().ok_or("the admin function made no write key")?;
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")));
        let mut request = ApiGatewayV2CustomAuthorizerV2Request::default();
        request.headers.insert(http::header::AUTHORIZATION, header.parse()?);
        let answer = stack.functions.authorizer.authorize(&request).await?;
        if !answer.is_authorized {
            return Err("the authorizer refused the run's write key".into());
        }
        authorizer_context = Some(serde_json::from_value(answer.context)?);
        key_header = Some(header);
    }

    // Ingest, with every request of its clients recorded.
    let recorder = Recorder::default();
    let ingest_env = &stack.manifest.function("ingest")?.environment;
    let config = eventline_ingest::config::Config::from_lookup(ingest_env)?;
    let dynamodb = recorder.dynamodb(&stack.sdk);
    let ingest = eventline_ingest::handler::Ingest {
        sink: KinesisSink::new(recorder.kinesis(&stack.sdk), &config.stream_name),
        counter: eventline_ingest::counter::DynamoReceivedCounter::new(
            dynamodb.clone(),
            &config.table_name,
            Backoff::default().with_budget(eventline_ingest::COUNT_BUDGET),
        ),
        rules: config.rules,
        user_claim: config.user_claim,
        write_keys: eventline_ingest::write_keys::WriteKeyGate::new(
            DynamoKeys::new(dynamodb.clone(), &config.table_name),
            DynamoRateLedger::new(dynamodb, &config.table_name),
            config.key_cache,
            config.cors_origins,
        ),
        backoff: Backoff::default().with_budget(eventline_ingest::PUT_BUDGET),
    };
    let (path, principal) = match mix.route.split_once(' ') {
        Some((_, path)) => (path, if key_header.is_some() { "-" } else { IAM_PRINCIPAL }),
        None => return Err(format!("route {} has no path", mix.route).into()),
    };
    let mut api_units = 0;
    let mut function_log_bytes = 0;
    let requests = EVENTS.div_ceil(mix.events_per_request);
    LOG_BYTES.store(0, Ordering::Relaxed);
    let cpu = cpu_seconds();
    for chunk in events.chunks(mix.events_per_request) {
        let body = match key_header {
            Some(_) => track_call(&chunk[0]).to_string(),
            None => Value::Array(chunk.to_vec()).to_string(),
        };
        api_units += http_api_units(body.len() as u64);
        let mut builder = http::Request::builder().method("POST").uri(path).header("content-type", "application/json");
        if let Some(header) = &key_header {
            builder = builder.header(http::header::AUTHORIZATION, header);
        }
        let mut request = builder.body(lambda_http::Body::Text(body))?;
        if let Some(fields) = &authorizer_context {
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            authorizer.fields = std::collections::HashMap::clone(fields);
            let mut context = ApiGatewayV2httpRequestContext::default();
            context.authorizer = Some(authorizer);
            request = request.with_request_context(RequestContext::ApiGatewayV2(context));
        }
        let status = ingest.handle(eventline_ingest::routes::routed(request)).await.status();
        if !status.is_success() {
            return Err(format!("ingest answered {status} on {}", mix.route).into());
        }
        function_log_bytes += metric_line_bytes(collector);
    }
    let ingest_cpu = cpu_seconds() - cpu;
    function_log_bytes += LOG_BYTES.swap(0, Ordering::Relaxed);
    let ingest_requests = recorder.requests();
    let ingest_writes = recorder.writes();
    let ingest_items_read = recorder.items_read();
    let mut put_units = recorder.put_payload_units();

    // The transform, batch by batch, likewise.
    let records = stack.read_stream(&config.stream_name).await?;
    if records.len() != EVENTS {
        return Err(format!("the ingest stream holds {} records, not {EVENTS}", records.len()).into());
    }
    recorder.reset();
    let env = &stack.manifest.function("transform")?.environment;
    let config = eventline_transform::config::Config::from_lookup(env)?;
    let transform = eventline_transform::handler::Transform {
        store: eventline_transform::dynamo::DynamoEventStore::new(
            recorder.dynamodb(&stack.sdk),
            &config.table_name,
            Backoff::default(),
        )
        .with_measures(config.aggregate_measures)
        .with_breakdown_limit(config.max_breakdown_keys),
        output: KinesisSink::new(recorder.kinesis(&stack.sdk), &config.output_stream),
        dead_letters: eventline_transform::sqs::SqsDeadLetters::built_on_first_use(
            &stack.sdk,
            &config.dead_letter_queue_url,
            &config.dead_letter_bucket,
            Backoff::default(),
        ),
        reference: eventline_transform::enrich::CachedReference::new(ReferenceStore::new(
            recorder.dynamodb(&stack.sdk),
            &config.table_name,
            Backoff::default(),
        )),
        backoff: Backoff::default(),
        rules: config.rules,
    };
    let source = &stack.manifest.event_sources[0];
    let batches: Vec<_> = records
        .chunks(batch)
        .map(|batch: &[Record]| {
            kinesis_event(batch, "shardId-000000000000", &source.stream_arn, &stack.manifest.region)
        })
        .collect::<Result<_, _>>()?;
    let cpu = cpu_seconds();
    for batch in batches {
        if !transform.handle(batch).await.batch_item_failures.is_empty() {
            return Err("the transform did not finish a batch".into());
        }
        function_log_bytes += metric_line_bytes(collector);
    }
    let transform_cpu = cpu_seconds() - cpu;
    function_log_bytes += LOG_BYTES.swap(0, Ordering::Relaxed);
    let transform_requests = recorder.requests();
    let transform_writes = recorder.writes();
    put_units += recorder.put_payload_units();

    // What the writes cost, by the items' sizes in the table now.
    let items = cost::items(&aws_sdk_dynamodb::Client::new(&stack.sdk), &table).await?;
    let sizes = items.iter().map(|item| (cost::key_of(item), item_size(item))).collect();
    let per_event = |units: f64| units / EVENTS as f64;
    let transform_units: BTreeMap<&'static str, f64> = cost::units_by_kind(&transform_writes, &sizes)
        .into_iter()
        .map(|(kind, units)| (kind, per_event(units)))
        .collect();
    let ingest_by_kind = cost::units_by_kind(&ingest_writes, &sizes);
    let ingest_units = per_event(ingest_by_kind.values().sum());
    let index_units = transform_units.get(INDEX_KIND).copied().unwrap_or(0.0)
        + per_event(ingest_by_kind.get(INDEX_KIND).copied().unwrap_or(0.0));
    let table_units = transform_units.values().sum::<f64>() + ingest_units - index_units;

    // What each event leaves stored: its item, and its index copy, each with the 100 bytes
    // DynamoDB adds to every item it bills storage for.
    let stored: Vec<_> = items.iter().filter(|item| cost::key_of(item).1 == eventline_aws::keys::EVENT_SK).collect();
    let event_item_bytes = stored.iter().map(|item| item_size(item) as f64).sum::<f64>() / EVENTS as f64;
    let indexed = stored.iter().filter(|item| item.contains_key(eventline_aws::keys::USER_PK)).count();
    let overhead = 100.0;
    let index_bytes_per_event = (event_item_bytes + overhead) * indexed as f64 / EVENTS as f64;

    // Durations: CPU here, and a round trip for each call waited on. The transform's analytics
    // updates go [`CONCURRENT_UPDATES`] at a time; its other calls one after the other.
    let scale = MILLION / EVENTS as f64;
    let ingest_calls = ingest_requests.values().sum::<usize>() as f64 / requests as f64;
    let batches = EVENTS.div_ceil(batch) as f64;
    let analytics_updates = transform_writes.iter().filter(|w| is_analytics_update(w)).count();
    let other_calls = transform_requests.values().sum::<usize>() - analytics_updates;
    let transform_calls = (other_calls as f64
        + (analytics_updates as f64 / batches / CONCURRENT_UPDATES as f64).ceil() * batches)
        / batches;
    let mut functions = vec![
        FunctionUsage {
            name: "ingest".to_owned(),
            invocations: requests as f64 * scale,
            memory_mb: MEMORY_MB,
            seconds_per_invocation: ingest_cpu / requests as f64 + ingest_calls * SECONDS_PER_CALL,
        },
        FunctionUsage {
            name: "transform".to_owned(),
            invocations: batches * scale,
            memory_mb: MEMORY_MB,
            seconds_per_invocation: transform_cpu / batches + transform_calls * SECONDS_PER_CALL,
        },
    ];
    let steady = steady(0);
    if key_header.is_some() {
        // One check per key per cache period, one GetItem each.
        functions.push(FunctionUsage {
            name: "authorizer".to_owned(),
            invocations: steady.occurrences_per_million_events(KEY_CACHE_SECONDS),
            memory_mb: MEMORY_MB,
            seconds_per_invocation: SECONDS_PER_CALL,
        });
    }
    // The platform's start and report lines, for each function whose system log level keeps
    // them (INFO, and DEBUG with more besides; WARN drops them).
    let platform_bytes: u64 = PLATFORM_LINES.iter().map(|line| line.len() as u64 + 1).sum();
    let mut platform_log_bytes = 0.0;
    for function in &functions {
        if stack.manifest.function(&function.name)?.system_log_level != "WARN" {
            platform_log_bytes += function.invocations * platform_bytes as f64;
        }
    }
    let xray_traces = functions
        .iter()
        .map(|f| f.invocations * default_sampling_fraction(f.invocations * EVENTS_PER_SECOND / MILLION))
        .sum();
    let access_line = ACCESS_LOG_LINE.replace("{route}", mix.route).replace("{principal}", principal);
    let seconds_per_million = MILLION / EVENTS_PER_SECOND;
    let shard_hours = 2.0 * f64::from(SHARDS_PER_STREAM) * seconds_per_million / 3_600.0;
    let usage = Usage {
        mix: format!("{}: {}, {}, transform batches of {batch}", mix.name, mix.route, mix.authorization),
        api_requests: requests as f64 * scale,
        api_request_units: api_units as f64 * scale,
        functions,
        kinesis_put_payload_units: put_units as f64 * scale,
        table_write_units: table_units * MILLION,
        index_write_units: index_units * MILLION,
        read_units: (ingest_items_read + recorder.items_read()) as f64 * scale,
        table_bytes_per_event: event_item_bytes + overhead,
        index_bytes_per_event,
        sqs_requests: 0.0,
        s3_puts: 0.0,
        function_log_bytes: function_log_bytes as f64 * scale + platform_log_bytes,
        access_log_bytes: (access_line.len() + 1) as f64 * requests as f64 * scale,
        xray_traces,
        kms_requests: shard_hours * KMS_REQUESTS_PER_SHARD_HOUR,
    };
    Ok(Counted {
        mix,
        batch,
        ingest_requests,
        transform_requests,
        transform_units,
        ingest_units,
        event_item_bytes,
        usage,
    })
}

/// Whether a write is one of the transform's analytics updates, sent several at a time: a
/// plain update that adds to counters (a users sketch's write is not one: those go one by one).
fn is_analytics_update(write: &Write) -> bool {
    !write.transactional && write.adds
}

/// What the counting writer counts of `line`.
#[cfg(test)]
fn write_counted(line: &str) -> u64 {
    use std::io::Write as _;
    let before = LOG_BYTES.load(Ordering::Relaxed);
    let _ = CountingWriter.write_all(line.as_bytes());
    LOG_BYTES.load(Ordering::Relaxed) - before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counting_writer_counts_what_it_is_given() {
        assert_eq!(write_counted("{\"level\":\"INFO\"}\n"), 17);
    }

    #[test]
    fn the_modelled_lines_are_single_json_documents() {
        for line in PLATFORM_LINES {
            let _: Value = serde_json::from_str(line).unwrap();
        }
        let access = ACCESS_LOG_LINE.replace("{route}", "POST /events").replace("{principal}", IAM_PRINCIPAL);
        let parsed: Value = serde_json::from_str(&access).unwrap();
        assert_eq!(parsed["routeKey"], "POST /events");
    }

    #[test]
    fn the_template_logs_the_fields_the_access_line_models() {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
        let line: Value = serde_json::from_str(ACCESS_LOG_LINE).unwrap();
        for (field, _) in line.as_object().unwrap() {
            assert!(template.contains(&format!("\"{field}\":\"$context.")), "{field} is not in the access-log format");
        }
    }
}

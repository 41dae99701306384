//! The load driver behind `load` and `replay`.
//!
//! Batches go out as `POST {url}/events`, or with a write key as Segment's
//! `POST {url}/v1/batch`, paced to a target event rate with at most `concurrency` requests in
//! flight. Afterwards every accepted event is looked up with `GET {url}/events/{source}/{id}`
//! until all are found or the verification timeout passes. A reference table, when given,
//! goes out first as `PUT {url}/reference/users`. With a [`Signer`] every request is signed
//! with SigV4, except the batches that carry a write key instead.
//!
//! [`run`] owns a Tokio runtime; code that is already async must await [`run_async`].

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::{self, Endpoint, HttpClient, ItemStatus, Outcome, Reply};
use crate::format::API_MAX_BATCH;
use crate::segment::{self, WriteKey};
use crate::signing::Signer;
use crate::source::{Batch, Batches, EventKey, SourceError, check_file};
use crate::summary::{ErrorCounts, Latency, ReferenceUpload, Summary, live_line};

/// Where the events come from.
#[derive(Clone, Debug)]
pub enum EventSource {
    /// Freshly generated events, dated just before they are sent. Without a `count` the run
    /// is bounded by [`LoadOptions::duration`].
    Generated { seed: u64, count: Option<u64> },
    /// A replay file: NDJSON lines of pipeline events or call-detail events, or JSON arrays of
    /// them (as written by `generate --format api`).
    File(PathBuf),
}

/// Sending generated events through Segment's tracking API with a write key.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    pub write_key: WriteKey,
    /// The source the key was made for. The service files the key's events under it, so
    /// verifying looks them up there; needed unless verification is off.
    pub source: Option<String>,
    /// Send bodies gzip-compressed, with `Content-Encoding: gzip`.
    pub gzip: bool,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Base URL; `/events` and `/metrics` are appended to it.
    pub url: String,
    pub source: EventSource,
    /// Target events per second; `None` sends as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Events per request: 1 to 100 through `/events`; through a write key at most this
    /// many, as many as fit in Segment's 500 KB when it is `usize::MAX`.
    pub batch: usize,
    /// Requests in flight at once while sending.
    pub concurrency: usize,
    /// Lookups in flight at once while verifying. Each accepted event takes at least one
    /// lookup, so this is what bounds how many events can be checked before the timeout.
    pub verify_concurrency: usize,
    /// Retries of a batch answered with 503 or 429.
    pub retries: u32,
    pub request_timeout: Duration,
    pub verify: bool,
    /// How long verifying may take: waiting for `GET /metrics` to count the accepted events
    /// settled, then looking each one up.
    pub verify_timeout: Duration,
    /// Pause between lookups of events not found yet.
    pub poll_interval: Duration,
    /// Print a live line on stderr every `progress_interval`.
    pub progress: bool,
    pub progress_interval: Duration,
    /// Read `GET {url}/metrics` at the end.
    pub fetch_metrics: bool,
    /// Signs every request when set (but the batches sent with a write key); requests go
    /// unsigned otherwise.
    pub signer: Option<Signer>,
    /// A file to send as `PUT {url}/reference/users` before the first event.
    pub reference: Option<PathBuf>,
    /// Send the events to `POST {url}/v1/batch` with a write key instead of `POST {url}/events`.
    pub segment: Option<SegmentOptions>,
}

impl LoadOptions {
    pub fn new(url: &str, source: EventSource) -> Self {
        Self {
            url: url.to_owned(),
            source,
            rate: None,
            duration: None,
            batch: API_MAX_BATCH,
            concurrency: 8,
            verify_concurrency: 32,
            retries: 5,
            request_timeout: Duration::from_secs(30),
            verify: true,
            verify_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            progress: false,
            progress_interval: Duration::from_secs(2),
            fetch_metrics: true,
            signer: None,
            reference: None,
            segment: None,
        }
    }

    /// Sends through Segment's tracking API: as many events to a request as fit its 500 KB
    /// (set `batch` afterwards to send fewer).
    pub fn through_write_key(mut self, segment: SegmentOptions) -> Self {
        self.batch = usize::MAX;
        self.segment = Some(segment);
        self
    }

    fn validate(&self) -> Result<Endpoint, LoadError> {
        let endpoint =
            Endpoint::parse(&self.url).map_err(|reason| LoadError::InvalidUrl { url: self.url.clone(), reason })?;
        let invalid = |m: &str| Err(LoadError::InvalidOptions(m.to_owned()));
        match &self.segment {
            None if !(1..=API_MAX_BATCH).contains(&self.batch) => {
                return invalid("the batch size must be between 1 and 100 (more only with a write key)");
            }
            Some(_) if self.batch == 0 => return invalid("the batch size must be at least 1"),
            Some(_) if matches!(self.source, EventSource::File(_)) => {
                return invalid("a write key sends generated events only; replay files go to /events");
            }
            Some(SegmentOptions { source: None, .. }) if self.verify => {
                return invalid(
                    "with a write key, name the key's source (--source) so that its events can be looked up, \
                     or skip verifying (--no-verify)",
                );
            }
            _ => {}
        }
        if self.concurrency == 0 || self.verify_concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            return invalid("the rate must be a positive number of events per second");
        }
        if let EventSource::Generated { count: None, .. } = self.source
            && self.duration.is_none()
        {
            return invalid("say how much to send: --count N or --duration D");
        }
        Ok(endpoint)
    }
}

/// Why a run could not start or go on. [`LoadError::is_invalid_options`] tells the options
/// that can never work from the troubles of a run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{0}")]
    InvalidOptions(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("load::run was called inside a Tokio runtime; await load::run_async instead")]
    NestedRuntime,
    #[error("reading the reference table {path}: {source}")]
    ReferenceRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reference table {path}: {reason}")]
    ReferenceInvalid { path: PathBuf, reason: String },
    /// The API did not take the table (any answer but 200); no event was sent.
    #[error("PUT /reference/users: {0}; no events were sent")]
    ReferenceRefused(String),
}

impl LoadError {
    /// The options themselves are wrong: fixing them, not trying again, is what helps.
    pub fn is_invalid_options(&self) -> bool {
        matches!(self, LoadError::InvalidUrl { .. } | LoadError::InvalidOptions(_))
    }
}

/// Where batches go and what authorises them.
enum Ingest {
    /// `POST /events`, signed when there is a signer.
    Native { uri: Uri, signer: Option<Signer> },
    /// `POST /v1/batch` with the write key.
    Segment { uri: Uri, write_key: WriteKey, gzip: bool },
}

impl Ingest {
    fn new(options: &LoadOptions, endpoint: &Endpoint) -> Result<Self, LoadError> {
        Ok(match &options.segment {
            None => Ingest::Native { uri: endpoint.events().clone(), signer: options.signer.clone() },
            Some(segment) => Ingest::Segment {
                uri: endpoint
                    .segment_batch()
                    .map_err(|reason| LoadError::InvalidUrl { url: options.url.clone(), reason })?,
                write_key: segment.write_key.clone(),
                gzip: segment.gzip,
            },
        })
    }

    async fn post(&self, client: &HttpClient, batch: &Batch, timeout: Duration) -> Result<Reply, String> {
        match self {
            Ingest::Native { uri, signer } => {
                api::send(client, signer.as_ref(), Method::POST, uri, Some(batch.body.clone()), timeout).await
            }
            Ingest::Segment { uri, write_key, gzip } => {
                segment::send(client, uri, write_key, &batch.body, *gzip, timeout).await
            }
        }
    }

    fn classify(&self, reply: &Reply, ids: &[Option<&str>]) -> Outcome {
        match self {
            Ingest::Native { .. } => api::classify(reply, ids),
            Ingest::Segment { .. } => segment::classify(reply, ids),
        }
    }
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h`, or plain seconds (`90`, `1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 30s, 5m or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}' has an unknown unit (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is out of range"))
}

/// When the batch that starts with event number `events_before` is due, from the start.
pub fn send_offset(events_before: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(events_before as f64 / rate).unwrap_or(Duration::MAX)
}

/// Whether the batch starting at event `events_before` is past the end of a timed run.
pub fn past_duration(events_before: u64, rate: Option<f64>, elapsed: Duration, duration: Option<Duration>) -> bool {
    match (duration, rate) {
        (None, _) => false,
        // Paced: decided by the schedule, so a run sends exactly ceil(rate × duration) events.
        (Some(d), Some(r)) => send_offset(events_before, r) >= d,
        (Some(d), None) => elapsed >= d,
    }
}

/// Counters shared by the request tasks and the live reporter.
#[derive(Default)]
struct Tally {
    sent: u64,
    accepted: u64,
    rejected: u64,
    failed: u64,
    retries: u64,
    unverifiable: u64,
    latencies_ms: Vec<f64>,
    errors: ErrorCounts,
    accepted_keys: Vec<EventKey>,
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    // Counters stay meaningful even if a task panicked while holding the lock.
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

fn say(line: &str) {
    // Progress output is best effort; a closed stderr must not end the run.
    let _ = writeln!(io::stderr(), "{line}");
}

/// Runs a load test on a runtime of its own.
pub fn run(options: LoadOptions) -> Result<Summary, LoadError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(LoadError::NestedRuntime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(LoadError::Runtime)?;
    runtime.block_on(run_async(options))
}

/// Runs a load test on the current Tokio runtime.
pub async fn run_async(options: LoadOptions) -> Result<Summary, LoadError> {
    let endpoint = options.validate()?;
    let ingest = Arc::new(Ingest::new(&options, &endpoint)?);
    let mut batches = match (&options.source, &options.segment) {
        (EventSource::Generated { seed, count }, Some(segment)) => {
            Batches::segment(*seed, *count, segment.source.clone())
        }
        (EventSource::Generated { seed, count }, None) => Batches::generated(*seed, *count),
        (EventSource::File(path), _) => {
            // Check the whole file first so a bad line stops the run before anything is sent.
            check_file(path)?;
            Batches::file(path)?
        }
    };
    // Read and checked before anything is sent, like a replay file.
    let reference = options.reference.as_deref().map(read_reference).transpose()?;
    let idle = options.concurrency.max(options.verify_concurrency);
    let client = api::client(&endpoint, idle).map_err(LoadError::Client)?;
    let signer = options.signer.as_ref();
    let uploaded = match reference {
        Some(body) => {
            let upload =
                put_reference(&endpoint, &client, signer, body, options.retries, options.request_timeout).await?;
            if options.progress {
                say(&format!("reference table: generation {}, {} users", upload.generation_text(), upload.users));
            }
            Some(upload)
        }
        None => None,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    // What the pipeline had settled before this run, so that verifying can wait for this
    // run's events (None where GET /metrics is not served or not allowed).
    let settled_before = if options.verify {
        fetch_metrics(&endpoint, &client, signer, options.request_timeout).await.as_ref().and_then(settled_events)
    } else {
        None
    };

    let started = Instant::now();
    let reporter = options.progress.then(|| {
        let tally = Arc::clone(&tally);
        let every = options.progress_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(started + every, every);
            loop {
                ticker.tick().await;
                let line = {
                    let t = lock(&tally);
                    let mut samples = t.latencies_ms.clone();
                    let latency = Latency::from_samples(&mut samples);
                    live_line(started.elapsed().as_secs_f64(), t.sent, t.accepted, t.rejected, t.failed, &latency)
                };
                say(&line);
            }
        })
    });

    let send_result = send_all(&options, &ingest, &client, &mut batches, &tally, started).await;
    let send_seconds = started.elapsed().as_secs_f64();
    if let Some(r) = reporter {
        r.abort();
    }
    send_result?;

    let (keys, mut summary) = {
        let mut t = lock(&tally);
        let keys = std::mem::take(&mut t.accepted_keys);
        let summary = Summary {
            sent: t.sent,
            accepted: t.accepted,
            rejected: t.rejected,
            failed: t.failed,
            unverifiable: t.unverifiable,
            retries: t.retries,
            send_seconds,
            latency_ms: Latency::from_samples(&mut t.latencies_ms),
            errors: t.errors.clone(),
            reference: uploaded,
            ..Summary::default()
        };
        (keys, summary)
    };

    if options.verify {
        let verify_started = Instant::now();
        let deadline = verify_started + options.verify_timeout;
        let total = keys.len() as u64;
        if let Some(before) = settled_before {
            wait_until_settled(&options, &endpoint, &client, before + summary.accepted, deadline).await;
        }
        let verified = verify(&options, &endpoint, &client, keys, deadline).await;
        summary.verification = true;
        summary.verified = verified;
        summary.unverified = total - verified;
        summary.verify_seconds = verify_started.elapsed().as_secs_f64();
    }
    if options.fetch_metrics {
        summary.metrics = fetch_metrics(&endpoint, &client, signer, options.request_timeout).await;
    }
    summary.finish_rates();
    Ok(summary)
}

async fn send_all(
    options: &LoadOptions,
    ingest: &Arc<Ingest>,
    client: &HttpClient,
    batches: &mut Batches,
    tally: &Arc<Mutex<Tally>>,
    started: Instant,
) -> Result<(), LoadError> {
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    let mut events_before = 0u64;
    let mut outcome = Ok(());
    loop {
        if past_duration(events_before, options.rate, started.elapsed(), options.duration) {
            break;
        }
        let batch = match batches.next_batch(options.batch) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                // Let requests already in flight finish so their events are counted.
                outcome = Err(e.into());
                break;
            }
        };
        if let Some(rate) = options.rate {
            tokio::time::sleep_until(started + send_offset(events_before, rate)).await;
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        events_before += batch.len() as u64;
        lock(tally).sent += batch.len() as u64;
        let client = client.clone();
        let ingest = Arc::clone(ingest);
        let task_tally = Arc::clone(tally);
        let (retries, timeout) = (options.retries, options.request_timeout);
        tasks.spawn(async move {
            send_batch(&client, &ingest, batch, retries, timeout, &task_tally).await;
            drop(permit);
        });
        while let Some(done) = tasks.try_join_next() {
            note_task_failure(done, tally);
        }
    }
    while let Some(done) = tasks.join_next().await {
        note_task_failure(done, tally);
    }
    outcome
}

fn note_task_failure(done: Result<(), tokio::task::JoinError>, tally: &Mutex<Tally>) {
    if let Err(e) = done {
        lock(tally).errors.add(&format!("internal error in a request task: {e}"), 1);
    }
}

/// Sends one batch, retrying when the API asks for it (503/429, and any 5xx from Segment's
/// routes), and records what happened to each event.
async fn send_batch(
    client: &HttpClient,
    ingest: &Ingest,
    batch: Batch,
    retries: u32,
    timeout: Duration,
    tally: &Mutex<Tally>,
) {
    let len = batch.len();
    let ids: Vec<Option<&str>> = batch.keys.iter().map(|k| k.id.as_deref()).collect();
    let mut attempt = 0u32;
    let statuses = loop {
        let request_started = Instant::now();
        let result = ingest.post(client, &batch, timeout).await;
        lock(tally).latencies_ms.push(request_started.elapsed().as_secs_f64() * 1000.0);
        let reply = match result {
            Ok(reply) => reply,
            Err(reason) => break vec![ItemStatus::Failed(reason); len],
        };
        match ingest.classify(&reply, &ids) {
            Outcome::Done(statuses) => break statuses,
            Outcome::Retry(_) if attempt >= retries => {
                let reason = format!("HTTP {} after {retries} retries", reply.status);
                break vec![ItemStatus::Failed(reason); len];
            }
            Outcome::Retry(wait) => {
                let wait = wait.unwrap_or_else(|| api::backoff(attempt));
                attempt += 1;
                lock(tally).retries += 1;
                tokio::time::sleep(wait).await;
            }
        }
    };
    let mut t = lock(tally);
    for (status, item) in statuses.into_iter().zip(&batch.keys) {
        match status {
            ItemStatus::Accepted(id) => {
                t.accepted += 1;
                match item.key(id) {
                    Some(key) => t.accepted_keys.push(key),
                    None => t.unverifiable += 1,
                }
            }
            ItemStatus::Rejected(reason) => {
                t.rejected += 1;
                t.errors.add(&format!("rejected: {reason}"), 1);
            }
            ItemStatus::Failed(reason) => {
                t.failed += 1;
                t.errors.add(&format!("failed: {reason}"), 1);
            }
        }
    }
}

/// Events the pipeline has finished with, as `GET /metrics` counts them: each accepted event
/// ends up processed, a duplicate, a conflict (counted by deployments that record senders),
/// or failed (dead-lettered).
fn settled_events(metrics: &serde_json::Value) -> Option<u64> {
    let conflict = metrics.get("events_conflict").and_then(serde_json::Value::as_u64).unwrap_or(0);
    ["events_processed", "events_duplicate", "events_failed"]
        .iter()
        .map(|name| metrics.get(name).and_then(serde_json::Value::as_u64))
        .sum::<Option<u64>>()
        .map(|settled| settled + conflict)
}

/// Waits until `GET /metrics` counts `target` events settled, or the deadline passes, or
/// the metrics cannot be read. Looking events up while the pipeline is still working through
/// them would only compete with it for the same tables, and find little.
async fn wait_until_settled(
    options: &LoadOptions,
    endpoint: &Endpoint,
    client: &HttpClient,
    target: u64,
    deadline: Instant,
) {
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let timeout = options.request_timeout.min(deadline - now);
        let Some(settled) =
            fetch_metrics(endpoint, client, options.signer.as_ref(), timeout).await.as_ref().and_then(settled_events)
        else {
            return;
        };
        if settled >= target {
            return;
        }
        if options.progress && last_report.elapsed() >= options.progress_interval {
            say(&format!("waiting for the pipeline: {} events to go before verifying", target - settled));
            last_report = Instant::now();
        }
        tokio::time::sleep(options.poll_interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Looks every key up until all are found or the deadline passes; returns how many were found.
async fn verify(
    options: &LoadOptions,
    endpoint: &Endpoint,
    client: &HttpClient,
    keys: Vec<EventKey>,
    deadline: Instant,
) -> u64 {
    let total = keys.len() as u64;
    let found_total = Arc::new(AtomicU64::new(0));
    let reporter = options.progress.then(|| {
        let found = Arc::clone(&found_total);
        let every = options.progress_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                ticker.tick().await;
                say(&format!("verifying: {} of {total} accepted events found", found.load(Ordering::Relaxed)));
            }
        })
    });
    let mut pending = keys;
    while !pending.is_empty() {
        let round = Arc::new(pending);
        let found: Arc<Vec<AtomicBool>> = Arc::new(round.iter().map(|_| AtomicBool::new(false)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..options.verify_concurrency.min(round.len()) {
            let (round, found, next) = (Arc::clone(&round), Arc::clone(&found), Arc::clone(&next));
            let found_total = Arc::clone(&found_total);
            let client = client.clone();
            let signer = options.signer.clone();
            let endpoint = endpoint.clone();
            let request_timeout = options.request_timeout;
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if i >= round.len() || now >= deadline {
                        break;
                    }
                    let key = &round[i];
                    let Ok(uri) = endpoint.event(&key.source, &key.id) else {
                        continue;
                    };
                    let timeout = request_timeout.min(deadline - now);
                    if let Ok(reply) = api::send(&client, signer.as_ref(), Method::GET, &uri, None, timeout).await
                        && reply.status == 200
                    {
                        found[i].store(true, Ordering::Relaxed);
                        found_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
        pending = round
            .iter()
            .zip(found.iter())
            .filter(|(_, f)| !f.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone())
            .collect();
        let now = Instant::now();
        if pending.is_empty() || now >= deadline {
            break;
        }
        tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
    }
    if let Some(r) = reporter {
        r.abort();
    }
    total - pending.len() as u64
}

async fn fetch_metrics(
    endpoint: &Endpoint,
    client: &HttpClient,
    signer: Option<&Signer>,
    timeout: Duration,
) -> Option<serde_json::Value> {
    let uri = endpoint.metrics().ok()?;
    let reply = api::send(client, signer, Method::GET, &uri, None, timeout).await.ok()?;
    if reply.status != 200 {
        return None;
    }
    serde_json::from_slice(&reply.body).ok()
}

/// The reference table's bytes, sent exactly as they are in the file once they are known to
/// be a JSON object with a `user_metadata` object: a wrong file stops the run before it starts.
fn read_reference(path: &Path) -> Result<Bytes, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::ReferenceRead { path: path.to_owned(), source })?;
    let invalid = |reason: String| LoadError::ReferenceInvalid { path: path.to_owned(), reason };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if !value.get("user_metadata").is_some_and(serde_json::Value::is_object) {
        return Err(invalid(
            "expected an object with a \"user_metadata\" object, as `eventline-gen reference` writes".into(),
        ));
    }
    Ok(Bytes::from(bytes))
}

/// Sends the reference table, retrying 503 and 429 like event batches; anything but a final
/// 200 with `generation` and `users` in its body is an error.
async fn put_reference(
    endpoint: &Endpoint,
    client: &HttpClient,
    signer: Option<&Signer>,
    body: Bytes,
    retries: u32,
    timeout: Duration,
) -> Result<ReferenceUpload, LoadError> {
    let uri = endpoint.reference_users().map_err(LoadError::ReferenceRefused)?;
    let mut attempt = 0u32;
    loop {
        let reply = api::send(client, signer, Method::PUT, &uri, Some(body.clone()), timeout)
            .await
            .map_err(LoadError::ReferenceRefused)?;
        match reply.status {
            200 => return ReferenceUpload::from_answer(&reply.body).map_err(LoadError::ReferenceRefused),
            429 | 503 if attempt < retries => {
                let wait =
                    api::parse_retry_after(reply.retry_after.as_deref()).unwrap_or_else(|| api::backoff(attempt));
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            _ => return Err(LoadError::ReferenceRefused(api::describe_problem(&reply))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn pacing_spreads_batches_evenly_over_time() {
        // 250 events/s in batches of 100: batches start at 0, 0.4 s, 0.8 s, …
        assert_eq!(send_offset(0, 250.0), Duration::ZERO);
        assert_eq!(send_offset(100, 250.0), Duration::from_millis(400));
        assert_eq!(send_offset(1000, 250.0), Duration::from_secs(4));
        assert_eq!(send_offset(1, 0.0), Duration::MAX);
    }

    #[test]
    fn paced_timed_runs_send_rate_times_duration_events() {
        let (rate, duration) = (Some(100.0), Some(Duration::from_secs(10)));
        let mut events = 0;
        while !past_duration(events, rate, Duration::ZERO, duration) {
            events += 30;
        }
        // Batches of 30 starting before the 10 s mark: 34 of them.
        assert_eq!(events, 1020);
        assert!(past_duration(1000, rate, Duration::ZERO, duration));
        assert!(!past_duration(999, rate, Duration::ZERO, duration));
    }

    #[test]
    fn unpaced_timed_runs_stop_on_the_clock() {
        let d = Some(Duration::from_secs(5));
        assert!(!past_duration(10_000, None, Duration::from_secs(4), d));
        assert!(past_duration(0, None, Duration::from_secs(5), d));
        assert!(!past_duration(u64::MAX, None, Duration::from_secs(99), None));
    }

    #[test]
    fn options_need_a_bound_and_a_sane_url() {
        let unbounded = LoadOptions::new("http://127.0.0.1:3000", EventSource::Generated { seed: 1, count: None });
        assert!(matches!(unbounded.validate(), Err(LoadError::InvalidOptions(_))));
        let mut timed = unbounded.clone();
        timed.duration = Some(Duration::from_secs(1));
        assert!(timed.validate().is_ok());
        let mut bad_url = timed.clone();
        bad_url.url = "localhost:3000".into();
        assert!(matches!(bad_url.validate(), Err(LoadError::InvalidUrl { .. })));
        let mut bad_batch = timed;
        bad_batch.batch = 101;
        assert!(bad_batch.validate().is_err());
    }

    #[test]
    fn write_key_runs_take_generated_events_and_need_the_keys_source_to_verify() {
        let Ok(write_key) = WriteKey::parse("wk_0123456789abcdef_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234") else {
            panic!("a well-formed key was refused");
        };
        let segment = SegmentOptions { write_key, source: Some("web".into()), gzip: false };
        let generated = EventSource::Generated { seed: 1, count: Some(1000) };
        let packed = LoadOptions::new("http://127.0.0.1:3000", generated.clone()).through_write_key(segment.clone());
        assert_eq!(packed.batch, usize::MAX);
        assert!(packed.validate().is_ok());
        let mut capped = packed.clone();
        capped.batch = 500;
        assert!(capped.validate().is_ok(), "more than 100 a request is for write keys");
        capped.batch = 0;
        assert!(matches!(capped.validate(), Err(LoadError::InvalidOptions(_))));
        let sourceless = SegmentOptions { source: None, ..segment.clone() };
        let mut unfiled = LoadOptions::new("http://127.0.0.1:3000", generated).through_write_key(sourceless);
        assert!(matches!(unfiled.validate(), Err(e) if e.to_string().contains("--source")));
        unfiled.verify = false;
        assert!(unfiled.validate().is_ok());
        let replay = LoadOptions::new("http://127.0.0.1:3000", EventSource::File("x.ndjson".into()));
        assert!(matches!(replay.through_write_key(segment).validate(), Err(LoadError::InvalidOptions(_))));
    }

    #[test]
    fn unreachable_server_counts_every_event_as_failed() {
        // Port 9 on loopback (discard) is closed on test machines, so connections are refused.
        let mut options = LoadOptions::new("http://127.0.0.1:9", EventSource::Generated { seed: 1, count: Some(150) });
        options.concurrency = 2;
        options.request_timeout = Duration::from_secs(5);
        options.verify_timeout = Duration::from_millis(100);
        let summary = run(options);
        let Ok(summary) = summary else {
            panic!("run failed: {summary:?}");
        };
        assert_eq!(summary.sent, 150);
        assert_eq!(summary.failed, 150);
        assert_eq!(summary.accepted, 0);
        assert!(summary.all_verified());
        assert_eq!(summary.latency_ms.requests, 2);
        assert!(summary.errors.0.keys().any(|k| k.starts_with("failed: connection error")), "{:?}", summary.errors);
    }

    #[test]
    fn settled_events_add_processed_duplicate_and_failed() {
        let metrics =
            serde_json::json!({"events_received": 9, "events_processed": 5, "events_duplicate": 2, "events_failed": 1});
        assert_eq!(settled_events(&metrics), Some(8));
        let with_conflicts =
            serde_json::json!({"events_processed": 5, "events_duplicate": 2, "events_conflict": 3, "events_failed": 1});
        assert_eq!(settled_events(&with_conflicts), Some(11));
        assert_eq!(settled_events(&serde_json::json!({"events_processed": 5})), None, "not the pipeline's metrics");
        assert_eq!(settled_events(&serde_json::json!({"message": "Forbidden"})), None);
    }

    #[tokio::test]
    async fn run_refuses_to_nest_runtimes() {
        let options = LoadOptions::new("http://127.0.0.1:9", EventSource::Generated { seed: 1, count: Some(1) });
        assert!(matches!(run(options), Err(LoadError::NestedRuntime)));
    }
}

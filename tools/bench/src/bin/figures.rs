//! `make bench`: each figure beside a baseline measured in the same run, as one table.
//!
//! - cold start: process start to the first `/next` on a Runtime API stub, for each
//!   function's `sam build` bootstrap and a hello-world `lambda_runtime` function built with
//!   the same profile, also on the functions' one-thread runtime (median of [`RUNS`] runs
//!   each, interleaved);
//! - package size: each bootstrap zipped, beside the hello-world's;
//! - CPU per request: the two medians `cargo bench -p ingest --bench ingest_request` left;
//! - AWS requests and DynamoDB write units per 1,000 events, through ingest and the
//!   transform against the emulator, beside the naive design;
//! - items `GET /metrics` reads, with 1,000 and with 100,000 events stored.
//!
//! `make bench` builds what this reads first (see the Makefile). A figure whose inputs are
//! missing is reported as not measured; the run fails only when a measurement breaks.

// The transform's handler future, awaited here, nests several retrying AWS calls deeper
// than the default limit allows (as in the transform's own main.rs).
#![recursion_limit = "256"]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record;
use eventline_bench::bill::{self, Prices, Retention};
use eventline_bench::mix;
use eventline_bench::package::{architecture, zipped_size};
use eventline_bench::report::{Figure, Verdict, table};
use eventline_bench::runtime_api::{ColdStart, RuntimeApiStub, lambda_environment, median};
use eventline_local::cost::{self, AGGREGATE_KINDS, Recorder};
use eventline_local::poller::kinesis_event;
use eventline_local::{LocalStack, Options};
use eventline_model::{IngestId, Rules, StreamRecord, parse_event};
use serde_json::Value;
use serde_json::value::RawValue;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts of each binary for the cold-start medians.
const RUNS: usize = 20;
/// The hello-world on a one-thread runtime, the functions' flavour: a second cold-start baseline.
const ONE_THREAD_HELLO: &str = "hello-world-one-thread";
/// The functions, by their binary names (`BuildProperties.Binary` in template.yaml).
const FUNCTIONS: [&str; 3] = ["ingest", "transform", "query"];
/// Events per ingest request in the batches mix, and the transform batch of the worst case
/// for merging a batch's writes (`stack-tests/tests/cost.rs`).
const REQUEST_EVENTS: usize = 100;
/// Stored events of the two read-cost tables, and the batch the larger one is seeded with.
const FEW_EVENTS: usize = 1_000;
const MANY_EVENTS: usize = 100_000;
const SEED_BATCH: usize = 1_000;
/// The read-cost tables' events lie in the 14 minutes before the last minute of the run's
/// start: inside a 30-minute window when they are read, away from its edges (which read
/// single seconds), so that both tables have the same buckets to read.
const SEED_FIRST_SECONDS_AGO: i64 = 900;
const SEED_SECONDS: i64 = 840;
/// Items an event changes: its own, the shard totals, the throughput second, the second and
/// minute window buckets, and the user's and everyone's day and month aggregates. The naive
/// design writes each once per event, plainly (1 unit for an item of up to 1 KB).
const NAIVE_WRITES_PER_EVENT: usize = 9;
const NAIVE_WRITES_WITHOUT_AGGREGATES: usize = 5;
/// `GET /metrics` counts the processed events of the last minute from throughput items:
/// the read-cost tables are read once their seeding is longer ago than that, so both read
/// the same (empty) minute.
const RECENT_SECONDS: u64 = 61;
/// The package-size target, in bytes (5 MB).
const MAX_PACKAGE_BYTES: u64 = 5_000_000;

const USAGE: &str = "\
usage: figures                            every figure of `make bench`, beside its baseline
       figures --cost                     only the dollars per million events, with their bills
       figures --cold-start NAME=PATH...  cold starts of any bootstraps, interleaved
  NAME is a function (ingest, transform, query: it gets that function's environment) or
  any other name, such as hello-world or hello-world-one-thread (Lambda's variables only);
  the same NAME may repeat. The first hello-world is the others' baseline.
  NAME[KEY=VALUE,...] adds variables to that binary's environment, e.g.
  'ingest[TLS_ROOTS=system]=PATH' (an empty VALUE removes the variable).";

struct Paths {
    root: PathBuf,
}

impl Paths {
    /// A function's bootstrap from `sam build --build-dir .aws-sam/bench/ARCH`.
    fn bootstrap(&self, arch: &str, logical_id: &str) -> PathBuf {
        self.root.join(".aws-sam/bench").join(arch).join(logical_id).join("bootstrap")
    }

    /// The hello-world from `cargo lambda build --release --lambda-dir target/lambda/ARCH`.
    fn hello_world(&self, arch: &str) -> PathBuf {
        self.root.join("target/lambda").join(arch).join("hello-world/bootstrap")
    }

    /// The same hello-world on a one-thread runtime, as the functions run, built beside it.
    fn hello_world_one_thread(&self, arch: &str) -> PathBuf {
        self.root.join("target/lambda").join(arch).join("hello-world-one-thread/bootstrap")
    }

    fn criterion_median_ns(&self, group: &str, function: &str) -> Result<f64, BoxError> {
        let path = self.root.join("target/criterion").join(group).join(function).join("new/estimates.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let estimates: Value = serde_json::from_str(&text)?;
        estimates["median"]["point_estimate"].as_f64().ok_or_else(|| format!("{}: no median", path.display()).into())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cost_only = false;
    let pairs = match args.first().map(String::as_str) {
        None => None,
        Some("--cost") if args.len() == 1 => {
            cost_only = true;
            None
        }
        Some("--cold-start") if args.len() > 1 => Some(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let paths = Paths { root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..") };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: no Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pairs) = pairs {
        return match runtime.block_on(compare_cold_starts(&paths, pairs)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let mut figures = Vec::new();
    if cost_only {
        let result = runtime.block_on(dollar_costs(&paths, &mut figures));
        println!("\n{}", table(&figures));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(measure(&paths, &mut figures));
    figures.extend(cpu_per_request(&paths));
    println!("\n{}", table(&figures));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(paths: &Paths, figures: &mut Vec<Figure>) -> Result<(), BoxError> {
    eprintln!("bench: starting the emulator stacks");
    let few = stack("bench-few").await?;
    let many = stack("bench-many").await?;
    let logical_ids: HashMap<&str, String> = FUNCTIONS
        .iter()
        .map(|f| Ok((*f, few.manifest.function(f)?.logical_id.clone())))
        .collect::<Result<_, BoxError>>()?;

    figures.extend(package_sizes(paths, &logical_ids));

    // The read-cost tables first, so that the minute they must age is spent measuring.
    let anchor = time::OffsetDateTime::now_utc().unix_timestamp();
    eprintln!("bench: storing {MANY_EVENTS} events through the transform");
    let started = Instant::now();
    let first = anchor - SEED_FIRST_SECONDS_AGO;
    seed(&many, &cost::spread_events(MANY_EVENTS, first, SEED_SECONDS)).await?;
    eprintln!("bench: stored {MANY_EVENTS} events in {:.0} s", started.elapsed().as_secs_f64());
    seed(&few, &cost::spread_events(FEW_EVENTS, first, SEED_SECONDS)).await?;
    let seeded = Instant::now();

    figures.extend(cold_starts(paths, &few, &logical_ids)?);

    dollar_costs(paths, figures).await?;

    let age = Duration::from_secs(RECENT_SECONDS).saturating_sub(seeded.elapsed());
    eprintln!("bench: waiting {} s until the seeding has left the last minute", age.as_secs());
    tokio::time::sleep(age).await;
    figures.extend(read_costs(&few, &many).await?);
    Ok(())
}

async fn stack(name: &str) -> Result<LocalStack, BoxError> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut options = Options::for_checkout(&root);
    options.stack_name = format!("{name}-{}", std::process::id());
    Ok(LocalStack::start(&options).await?)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn package_sizes(paths: &Paths, logical_ids: &HashMap<&str, String>) -> Vec<Figure> {
    // arm64 is what the template deploys by default; x86_64 only when arm64 was not built.
    let arch =
        if FUNCTIONS.iter().all(|f| paths.bootstrap("arm64", &logical_ids[f]).exists()) { "arm64" } else { "x86_64" };
    let hello = zipped_size(&paths.hello_world(arch));
    FUNCTIONS
        .iter()
        .map(|function| {
            let name = format!("package size, {function} ({arch}, zipped)");
            let target = "≤ 5 MB";
            let bootstrap = paths.bootstrap(arch, &logical_ids[function]);
            let size = match zipped_size(&bootstrap) {
                Ok(size) => size,
                Err(error) => return Figure::missing(name, format!("{}: {error}", bootstrap.display()), target),
            };
            if let Ok(found) = architecture(&bootstrap)
                && found != arch
            {
                return Figure::missing(name, format!("{} is {found}", bootstrap.display()), target);
            }
            let baseline = hello.as_ref().ok().copied();
            Figure {
                figure: name,
                measured: megabytes(size),
                baseline: baseline.map(|b| format!("{} hello-world", megabytes(b))).unwrap_or_default(),
                ratio: baseline.map(|b| size as f64 / b as f64),
                target: target.to_owned(),
                verdict: Verdict::of(size <= MAX_PACKAGE_BYTES),
            }
        })
        .collect()
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// A binary to start: its name (`hello-world` or a function's binary name), its path, and
/// the environment it gets.
type Binary = (String, PathBuf, BTreeMap<String, String>);

/// The environment each binary gets: Lambda's, plus for a function the variables the
/// template gives it, with its AWS endpoint at the stub.
fn binaries(
    stub: &RuntimeApiStub,
    stack: &LocalStack,
    named: impl IntoIterator<Item = (String, PathBuf)>,
) -> Result<Vec<Binary>, BoxError> {
    // Any AWS call a function made before /next would reach the stub too.
    let endpoint = format!("http://{}", stub.addr());
    named
        .into_iter()
        .map(|(label, path)| {
            let (name, extra) = split_label(&label)?;
            let mut env = lambda_environment(&format!("eventline-{name}"), stub.addr());
            if FUNCTIONS.contains(&name) {
                env.extend(stack.manifest.function(name)?.environment.clone());
                env.insert("ENDPOINT_URL".to_owned(), endpoint.clone());
            }
            for (key, value) in extra {
                if value.is_empty() {
                    env.remove(&key);
                } else {
                    env.insert(key, value);
                }
            }
            Ok((label, path, env))
        })
        .collect()
}

/// Variables added to a binary's environment, `(KEY, VALUE)`.
type Variables = Vec<(String, String)>;

/// `ingest[TLS_ROOTS=system,AWS_MAX_ATTEMPTS=3]`: the binary's name and the variables its
/// environment gets besides.
fn split_label(label: &str) -> Result<(&str, Variables), BoxError> {
    let Some((name, rest)) = label.split_once('[') else { return Ok((label, Vec::new())) };
    let assignments = rest.strip_suffix(']').ok_or_else(|| format!("{label}: expected NAME[KEY=VALUE,...]"))?;
    let extra = assignments
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            let (key, value) = a.split_once('=').ok_or_else(|| format!("{label}: {a} is not KEY=VALUE"))?;
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect::<Result<_, BoxError>>()?;
    Ok((name, extra))
}

/// [`RUNS`] starts of each binary (after one each to warm the page cache), interleaved so
/// that a slow moment of this shared machine hits every binary alike.
///
/// Each binary is started from a copy written just before, all side by side: on this machine
/// the same bytes started 0.2-0.3 ms later from a file written an hour earlier than from a
/// fresh copy, which would favour whichever build is newer.
fn time_starts(stub: &RuntimeApiStub, binaries: &[Binary], work_dir: &Path) -> Result<Vec<Vec<ColdStart>>, BoxError> {
    let copies_dir = work_dir.join("cold-start");
    if copies_dir.exists() {
        std::fs::remove_dir_all(&copies_dir)?;
    }
    let mut copies = Vec::with_capacity(binaries.len());
    for (i, (name, path, _)) in binaries.iter().enumerate() {
        let dir = copies_dir.join(format!("{i}-{name}"));
        std::fs::create_dir_all(&dir)?;
        let copy = dir.join("bootstrap");
        std::fs::copy(path, &copy).map_err(|e| format!("{}: {e}", path.display()))?;
        copies.push(copy);
    }
    let mut samples: Vec<Vec<ColdStart>> = vec![Vec::new(); binaries.len()];
    for run in 0..=RUNS {
        for (i, ((name, _, env), copy)) in binaries.iter().zip(&copies).enumerate() {
            let log = work_dir.join(format!("cold-start-{name}.log"));
            let start = stub.cold_start(copy, env, &log, Duration::from_secs(10))?;
            if run > 0 {
                samples[i].push(start);
            }
        }
    }
    Ok(samples)
}

fn median_to_next(starts: &[ColdStart]) -> Duration {
    median(&starts.iter().map(|c| c.to_next).collect::<Vec<_>>()).unwrap_or_default()
}

fn cold_starts(
    paths: &Paths,
    stack: &LocalStack,
    logical_ids: &HashMap<&str, String>,
) -> Result<Vec<Figure>, BoxError> {
    let stub = RuntimeApiStub::start()?;
    let mut named = vec![
        ("hello-world".to_owned(), paths.hello_world("x86_64")),
        (ONE_THREAD_HELLO.to_owned(), paths.hello_world_one_thread("x86_64")),
    ];
    named.extend(FUNCTIONS.iter().map(|f| (f.to_string(), paths.bootstrap("x86_64", &logical_ids[f]))));
    let binaries = binaries(&stub, stack, named)?;
    let missing: Vec<Figure> = binaries
        .iter()
        .filter(|(_, path, _)| !path.exists())
        .map(|(name, path, _)| {
            Figure::missing(
                format!("cold start to first /next, {name}"),
                format!("no {}", path.display()),
                "≤ 1.3× hello-world",
            )
        })
        .collect();
    if !missing.is_empty() {
        return Ok(missing);
    }

    eprintln!("bench: {RUNS} cold starts of each binary");
    let samples = time_starts(&stub, &binaries, &paths.root.join("target/bench"))?;
    let medians: Vec<Duration> = samples.iter().map(|s| median_to_next(s)).collect();
    let (hello, one_thread) = (medians[0], medians[1]);
    let functions: Vec<(&String, Duration)> =
        binaries.iter().zip(&medians).skip(2).map(|((name, _, _), &to_next)| (name, to_next)).collect();
    let mut figures: Vec<Figure> = functions
        .iter()
        .map(|&(name, to_next)| {
            let ratio = to_next.as_secs_f64() / hello.as_secs_f64();
            Figure {
                figure: format!("cold start to first /next, {name} (x86_64, median of {RUNS})"),
                measured: millis(to_next),
                baseline: format!("{} hello-world", millis(hello)),
                ratio: Some(ratio),
                target: "≤ 1.3× hello-world".to_owned(),
                verdict: Verdict::of(ratio <= 1.3),
            }
        })
        .collect();
    // The functions run on a one-thread runtime and the runtime's example on several threads:
    // the same comparison over a one-thread hello-world shows what is the functions' own.
    figures.push(Figure {
        figure: format!("cold start to first /next, hello-world on a one-thread runtime (x86_64, median of {RUNS})"),
        measured: millis(one_thread),
        baseline: format!("{} hello-world", millis(hello)),
        ratio: Some(one_thread.as_secs_f64() / hello.as_secs_f64()),
        target: "-".to_owned(),
        verdict: Verdict::Info,
    });
    figures.extend(functions.iter().map(|&(name, to_next)| Figure {
        figure: format!("cold start to first /next, {name}, over the one-thread hello-world"),
        measured: millis(to_next),
        baseline: format!("{} one-thread hello-world", millis(one_thread)),
        ratio: Some(to_next.as_secs_f64() / one_thread.as_secs_f64()),
        target: "-".to_owned(),
        verdict: Verdict::Info,
    }));
    let mut early: Vec<String> = Vec::new();
    for ((name, _, _), starts) in binaries.iter().zip(&samples) {
        for request in starts.iter().flat_map(|c| &c.requests_before_next) {
            early.push(format!("{name}: {request}"));
        }
    }
    for request in early.iter().take(5) {
        eprintln!("bench: before /next: {request}");
    }
    figures.push(Figure {
        figure: format!("requests before the first /next (all functions, {RUNS} runs)"),
        measured: early.len().to_string(),
        baseline: String::new(),
        ratio: None,
        target: "0".to_owned(),
        verdict: Verdict::of(early.is_empty()),
    });
    Ok(figures)
}

/// `figures --cold-start NAME=PATH...`: the cold-start median, zipped size and ratio to the
/// first hello-world of any bootstraps (a NAME of `ingest`, `transform` or `query` gets that
/// function's environment), as docs/figures.md's cold-start comparisons were measured.
async fn compare_cold_starts(paths: &Paths, pairs: &[String]) -> Result<(), BoxError> {
    let named = pairs
        .iter()
        .map(|pair| {
            // The path follows the first `=` after any `[...]` of added variables.
            let after = pair.find(']').map_or(0, |end| end + 1);
            let split = pair[after..].find('=').map(|at| after + at);
            let (name, path) =
                split.map(|at| (&pair[..at], &pair[at + 1..])).ok_or_else(|| format!("{pair}: expected NAME=PATH"))?;
            Ok((name.to_owned(), PathBuf::from(path)))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let stack = stack("bench-env").await?;
    let stub = RuntimeApiStub::start()?;
    let binaries = binaries(&stub, &stack, named)?;
    let samples = time_starts(&stub, &binaries, &paths.root.join("target/bench"))?;
    let baseline = binaries.iter().zip(&samples).find(|((name, _, _), _)| name == "hello-world");
    let baseline = baseline.map(|(_, starts)| median_to_next(starts));
    println!(
        "| binary | zipped | cold start, median of {RUNS} | fastest | slowest | × first hello-world |\n\
         |---|---|---|---|---|---|"
    );
    for ((name, path, _), starts) in binaries.iter().zip(&samples) {
        let times: Vec<Duration> = starts.iter().map(|c| c.to_next).collect();
        let median = median_to_next(starts);
        let ratio = baseline.map(|b| format!("{:.2}×", median.as_secs_f64() / b.as_secs_f64()));
        println!(
            "| {name} ({}) | {} | {} | {} | {} | {} |",
            path.display(),
            megabytes(zipped_size(path)?),
            fine_millis(median),
            fine_millis(times.iter().min().copied().unwrap_or_default()),
            fine_millis(times.iter().max().copied().unwrap_or_default()),
            ratio.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// Milliseconds to the hundredth, for comparing builds whose starts differ by less than 0.1 ms.
fn fine_millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn cpu_per_request(paths: &Paths) -> Vec<Figure> {
    let name = format!("CPU per request of {REQUEST_EVENTS} events, ingest handler (criterion median)");
    let target = "≤ 2× serde_json";
    let (handler, baseline) = match (
        paths.criterion_median_ns("ingest_request", "handler"),
        paths.criterion_median_ns("ingest_request", "serde_json_values"),
    ) {
        (Ok(h), Ok(b)) => (h, b),
        (Err(e), _) | (_, Err(e)) => {
            return vec![Figure::missing(name, format!("{e} (cargo bench -p ingest --bench ingest_request)"), target)];
        }
    };
    let ratio = handler / baseline;
    vec![Figure {
        figure: name,
        measured: format!("{:.1} µs", handler / 1e3),
        baseline: format!("{:.1} µs serde_json → Vec<Value>", baseline / 1e3),
        ratio: Some(ratio),
        target: target.to_owned(),
        verdict: Verdict::of(ratio <= 2.0),
    }]
}

/// One record as ingest puts it on the stream, as the event source hands it over.
fn stream_record(event: &Value, sequence: usize, now: time::OffsetDateTime) -> Result<Record, BoxError> {
    let raw = RawValue::from_string(event.to_string())?;
    let event = parse_event(&raw, &Rules::default(), now).map_err(|errors| format!("invalid event: {errors:?}"))?;
    let partition_key = event.partition_key();
    let record = StreamRecord { event, received_at: now, ingest_id: Some(IngestId::generate()), provenance: None };
    Ok(Record::builder()
        .sequence_number(format!("{sequence:056}"))
        .partition_key(partition_key)
        .data(Blob::new(record.encode()))
        .approximate_arrival_timestamp(DateTime::from_secs(now.unix_timestamp()))
        .build()?)
}

/// Stores `events` through the stack's transform, in batches of [`SEED_BATCH`].
async fn seed(stack: &LocalStack, events: &[Value]) -> Result<(), BoxError> {
    let source = &stack.manifest.event_sources[0];
    let now = time::OffsetDateTime::now_utc();
    for (n, chunk) in events.chunks(SEED_BATCH).enumerate() {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, event)| stream_record(event, n * SEED_BATCH + i + 1, now))
            .collect::<Result<_, _>>()?;
        let event = kinesis_event(&records, "shardId-000000000000", &source.stream_arn, &stack.manifest.region)?;
        let response = stack.functions.transform.handle(event).await;
        if !response.batch_item_failures.is_empty() {
            return Err(format!("the transform did not finish batch {n}: {:?}", response.batch_item_failures).into());
        }
    }
    Ok(())
}

fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The AWS requests and write units of the batches of 100 through ingest and the transform,
/// as counted by [`mix::count`] with transform batches of 100: the cost run of
/// `stack-tests/tests/cost.rs`, beside the naive design.
fn request_and_write_costs(counted: &mix::Counted) -> Vec<Figure> {
    let events = mix::EVENTS;
    let put_records =
        ["PutRecords", "PutRecord"].iter().filter_map(|op| counted.ingest_requests.get(*op)).sum::<usize>();
    let all_ingest: usize = counted.ingest_requests.values().sum();
    let units = &counted.transform_units;
    let total = counted.transform_units_per_event();
    let aggregates = AGGREGATE_KINDS.iter().filter_map(|k| units.get(k)).sum::<f64>();
    // The naive design writes the event's index copy too.
    let (naive_with, naive_without) =
        (NAIVE_WRITES_PER_EVENT as f64 + 1.0, NAIVE_WRITES_WITHOUT_AGGREGATES as f64 + 1.0);
    let dynamodb_writes: usize = ["TransactWriteItems", "UpdateItem", "PutItem", "BatchWriteItem"]
        .iter()
        .map(|op| counted.transform_requests.get(*op).copied().unwrap_or(0))
        .sum();
    let per_thousand = |n: usize| n * 1000 / events;
    vec![
        Figure {
            figure: "ingest PutRecords calls per 1,000 events (requests of 100)".to_owned(),
            measured: count(per_thousand(put_records)),
            baseline: "1,000 naive (a PutRecord per event)".to_owned(),
            ratio: Some(put_records as f64 / events as f64),
            target: "≤ 10".to_owned(),
            verdict: Verdict::of(per_thousand(put_records) <= 10),
        },
        Figure {
            figure: "ingest AWS requests per 1,000 events (Kinesis and DynamoDB)".to_owned(),
            measured: count(per_thousand(all_ingest)),
            baseline: "2,000 naive (a PutRecord and a counter write per event)".to_owned(),
            ratio: Some(all_ingest as f64 / (2 * events) as f64),
            target: "-".to_owned(),
            verdict: Verdict::Info,
        },
        Figure {
            figure: format!("transform DynamoDB write requests per 1,000 events, batches of {}", counted.batch),
            measured: count(per_thousand(dynamodb_writes)),
            baseline: format!("{} naive (a write per item an event changes)", count(NAIVE_WRITES_PER_EVENT * 1000)),
            ratio: Some(dynamodb_writes as f64 / (NAIVE_WRITES_PER_EVENT * events) as f64),
            target: "-".to_owned(),
            verdict: Verdict::Info,
        },
        Figure {
            figure: format!(
                "transform write units per event, index copies included, every analytic on, batches of {}",
                counted.batch
            ),
            measured: format!("{total:.2}"),
            baseline: "3.00 floor (the event's exactly-once write and its index copy)".to_owned(),
            ratio: Some(total / 3.0),
            target: "≤ 4.5 (cost.rs)".to_owned(),
            verdict: Verdict::of(total <= 4.5),
        },
        Figure {
            figure: format!("the same without the aggregates, batches of {}", counted.batch),
            measured: format!("{:.2}", total - aggregates),
            baseline: format!(
                "{naive_without:.2} naive (a plain 1-unit write per item an event changes, its index copy too)"
            ),
            ratio: Some((total - aggregates) / naive_without),
            target: "-".to_owned(),
            verdict: Verdict::Info,
        },
        Figure {
            figure: format!("the same with the naive design's writes, batches of {}", counted.batch),
            measured: format!("{total:.2}"),
            baseline: format!("{naive_with:.2} naive"),
            ratio: Some(total / naive_with),
            target: "-".to_owned(),
            verdict: Verdict::Info,
        },
    ]
}

/// Dollars per million events for each mix, with the bills that make them, beside the naive
/// design and the floor of storing each event once, priced from the same table. The bills
/// are printed; the figures go to the table.
async fn dollar_costs(paths: &Paths, figures: &mut Vec<Figure>) -> Result<(), BoxError> {
    let prices = Prices::builtin()?;
    let template = std::fs::read_to_string(paths.root.join("template.yaml"))?;
    let alarms = template.matches("Type: AWS::CloudWatch::Alarm").count() as u32;
    let steady = mix::steady(alarms);
    let kept = [Retention::Days(30), Retention::KeptForeverAfterOneYear];
    println!("\n## Dollars per million events\n\n{}.\n", prices.caption());
    // Each mix with the template's batch size (`None`); batches of 100 records too, for what
    // larger batches buy.
    let runs = [(mix::MIXES[0], None), (mix::MIXES[0], Some(REQUEST_EVENTS)), (mix::MIXES[1], None)];
    for (each, batch) in runs {
        let cost_stack = stack("bench-bill").await?;
        let batch = batch.unwrap_or(cost_stack.manifest.event_sources[0].batch_size);
        eprintln!(
            "bench: {} events as {}, transform batches of {batch}, counting what they cost",
            mix::EVENTS,
            each.name
        );
        let counted = mix::count(&cost_stack, each, batch).await?;
        drop(cost_stack);
        eprintln!("bench: ingest's requests: {:?}", counted.ingest_requests);
        eprintln!("bench: the transform's requests: {:?}", counted.transform_requests);
        let flow = bill::flow(&prices, &counted.usage, &steady);
        let storage: Vec<_> = kept.iter().map(|r| bill::storage(&prices, &counted.usage, &steady, *r)).collect();
        let event_bytes = counted.event_item_bytes.round() as u64;
        // Items an event changes: its own, the shard totals, the throughput second, the second
        // and minute window buckets, the user's day and month and everyone's, and its index copy.
        let naive = bill::naive(&prices, event_bytes, NAIVE_WRITES_PER_EVENT as f64 + 1.0);
        let floor = bill::firehose_floor(&prices, event_bytes);
        let floor_storage: Vec<_> =
            kept.iter().map(|r| bill::firehose_floor_storage(&prices, &steady, event_bytes, *r)).collect();
        println!("{}", bill::render_markdown(&flow));
        for kept in &storage {
            println!("{}", bill::render_markdown(kept));
        }
        println!("{}", bill::render_summary(&flow, &storage));
        println!("{}", bill::render_markdown(&naive));
        println!("{}", bill::render_summary(&floor, &floor_storage));
        println!("Write units per event, by kind (the transform's; ingest's: {:.2}):\n", counted.ingest_units);
        for (kind, units) in &counted.transform_units {
            println!("- {kind}: {units:.2}");
        }
        println!();
        let money = |amount: f64| bill::dollars(amount);
        let each_name = format!("{}, transform batches of {batch}", each.name);
        let each = mix::Mix { name: &each_name, ..each };
        figures.push(Figure {
            figure: format!("$ per million events, {} ({}, {})", each.name, each.route, each.authorization),
            measured: money(flow.total()),
            baseline: format!("{} naive (a record and a write per item), its writes alone", money(naive.total())),
            ratio: Some(flow.total() / naive.total()),
            target: "-".to_owned(),
            verdict: Verdict::Info,
        });
        for (kept, floor_kept) in storage.iter().zip(&floor_storage) {
            let total = flow.total() + kept.total();
            let floor_total = floor.total() + floor_kept.total();
            figures.push(Figure {
                figure: format!(
                    "$ per million events, {}, with storage {}",
                    each.name,
                    kept.title.trim_start_matches("storage ")
                ),
                measured: money(total),
                baseline: format!("{} Firehose to S3, the same retention", money(floor_total)),
                ratio: Some(total / floor_total),
                target: "-".to_owned(),
                verdict: Verdict::Info,
            });
        }
        if each.events_per_request == REQUEST_EVENTS {
            figures.extend(request_and_write_costs(&counted));
        }
    }
    Ok(())
}

/// Items one `GET` of the query function reads, counted on its DynamoDB client.
async fn items_read(stack: &LocalStack, uri: &str) -> Result<usize, BoxError> {
    let env = &stack.manifest.function("query")?.environment;
    let config = eventline_query::config::Config::from_lookup(env)?;
    let recorder = Recorder::default();
    let handler = eventline_query::handler::Query::new(eventline_query::dynamo::AwsReader::new(
        recorder.dynamodb(&stack.sdk),
        recorder.kinesis(&stack.sdk),
        config.table_name,
        config.ingest_stream,
    ));
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let query: HashMap<String, String> =
        query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let request = http::Request::builder().method("GET").uri(path).body(lambda_http::Body::Empty)?;
    let request = lambda_http::RequestExt::with_query_string_parameters(request, query);
    let response = handler.handle(eventline_query::routes::routed(request)).await;
    if response.status() != 200 {
        return Err(format!("GET {uri} answered {}", response.status()).into());
    }
    Ok(recorder.items_read())
}

async fn read_costs(few: &LocalStack, many: &LocalStack) -> Result<Vec<Figure>, BoxError> {
    let mut figures = Vec::new();
    for uri in ["/metrics", "/metrics?window=1800"] {
        let (with_few, with_many) = (items_read(few, uri).await?, items_read(many, uri).await?);
        eprintln!("bench: GET {uri} read {with_few} items with {FEW_EVENTS} events, {with_many} with {MANY_EVENTS}");
        figures.push(Figure {
            figure: format!("items read by GET {uri}, {} events stored", count(MANY_EVENTS)),
            measured: count(with_many),
            baseline: format!("{} with {} events", count(with_few), count(FEW_EVENTS)),
            ratio: Some(with_many as f64 / with_few.max(1) as f64),
            target: "equal".to_owned(),
            verdict: Verdict::of(with_many == with_few),
        });
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_names_the_binary_and_the_variables_it_gets_besides() {
        assert_eq!(split_label("ingest").unwrap(), ("ingest", vec![]));
        assert_eq!(
            split_label("ingest[TLS_ROOTS=system,AWS_MAX_ATTEMPTS=]").unwrap(),
            ("ingest", vec![("TLS_ROOTS".into(), "system".into()), ("AWS_MAX_ATTEMPTS".into(), String::new())])
        );
        assert!(split_label("ingest[TLS_ROOTS]").is_err());
        assert!(split_label("ingest[TLS_ROOTS=system").is_err());
    }
}

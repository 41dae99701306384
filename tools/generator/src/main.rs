//! `eventline-gen`: generate call-detail test events, or drive them through the HTTP API.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use eventline_gen::clock;
use eventline_gen::format::{API_MAX_BATCH, Format};
use eventline_gen::generate::{self, GenerateOptions};
use eventline_gen::load::{self, EventSource, LoadOptions, SegmentOptions};
use eventline_gen::reference::{self, MAX_USERS};
use eventline_gen::rng;
use eventline_gen::segment::WriteKey;
use eventline_gen::signing::Signer;

#[derive(Parser, Debug)]
#[command(
    name = "eventline-gen",
    version,
    about = "Generates Eventline call-detail test events and drives load through the HTTP API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write generated call-detail events as CSV, NDJSON, API batches or a Lambda Kinesis event.
    Generate(GenerateArgs),
    /// Send generated events through `POST {url}/events` (or `POST {url}/v1/batch` with a write
    /// key) and verify they were stored.
    Load(LoadArgs),
    /// Re-send events from an NDJSON or `api` file through the HTTP API and verify them.
    Replay(ReplayArgs),
    /// Write the reference table of users (the body of `PUT /reference/users`) for a seed's events.
    Reference(ReferenceArgs),
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Number of events to write.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    count: u64,
    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "csv", value_parser = parse_format)]
    format: Format,
    /// Seed for reproducible output; random when omitted.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Worker threads; defaults to the number of cores. Output does not depend on it.
    #[arg(long, value_name = "T", value_parser = parse_threads)]
    threads: Option<u64>,
    /// Output file; standard output when omitted.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Time of the first event (RFC 3339); events follow about 7 ms apart.
    #[arg(long, value_name = "RFC3339", value_parser = clock::parse_rfc3339)]
    start: Option<i64>,
    /// Events per JSON array in the `api` format.
    #[arg(long, value_name = "N", default_value_t = API_MAX_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=API_MAX_BATCH as u64))]
    batch: u64,
    /// Always print the seed to stderr (otherwise only when stderr is a terminal).
    #[arg(long)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Base URL of the API, e.g. http://127.0.0.1:3000 or https://ID.execute-api.REGION.amazonaws.com/stage
    #[arg(long, value_name = "URL")]
    url: String,
    /// Target events per second; unlimited when omitted (bounded by --concurrency).
    #[arg(long, value_name = "R", value_parser = parse_rate, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Events per request: 100 (the default and the most) through /events; `load --write-key`
    /// sends as many as fit in 500 KB unless this caps them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch: Option<u64>,
    /// Requests in flight at once while sending.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Lookups in flight at once while verifying.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    verify_concurrency: u64,
    /// Retries of a batch answered with 503 or 429 (any 5xx through `load --write-key`) before
    /// its events count as failed.
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
    /// Time limit for one request, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// How long to wait for accepted events to show up (waiting for the pipeline's metrics to
    /// count them, then looking each up), e.g. 60s or 2m.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    verify_timeout: Duration,
    /// Skip checking that accepted events reached the table.
    #[arg(long)]
    no_verify: bool,
    /// Print the final summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No live progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Sign every request with SigV4 (service execute-api) using AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, for the region in AWS_REGION, else
    /// AWS_DEFAULT_REGION, else us-east-1. Without --sign or --no-sign, requests are signed
    /// whenever both keys are set.
    #[arg(long, conflicts_with = "no_sign")]
    sign: bool,
    /// Send requests unsigned even when AWS credentials are set.
    #[arg(long)]
    no_sign: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    #[command(flatten)]
    send: SendArgs,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    count: Option<u64>,
    /// Stop after this long, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seed for the generated events; random when omitted.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Send this reference table (from `eventline-gen reference`) as `PUT {url}/reference/users`
    /// before the first event; the run stops unless the API answers 200 (503 and 429 are retried).
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    /// Send the events as Segment track messages to `POST {url}/v1/batch`, authorised by this
    /// write key (HTTP Basic, the key as user name). Only the batches: lookups, metrics and
    /// the reference table are signed as without it, whenever AWS credentials are set.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["sign", "no_sign"])]
    write_key: Option<String>,
    /// The source the write key was made for, which the service files its events under;
    /// verifying looks them up there. Needed with --write-key unless --no-verify.
    #[arg(long, value_name = "SOURCE", requires = "write_key")]
    source: Option<String>,
    /// Compress the --write-key batches with gzip (`Content-Encoding: gzip`).
    #[arg(long, requires = "write_key")]
    gzip: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "The table holds the first N distinct user_ids (subscribers) of the seed's events, \
in order. `load --seed S --count C` then sends only users in the table when C is N, or a multiple of 20 up \
to N; another C below N may leave up to C mod 20 users of its last, shorter type block out. Beyond N \
nearly every event brings a new user, so keep C at most N. Plans (free 60 %, pro 30 %, enterprise 10 %) \
and regions (eu 40 %, us 35 %, apac 25 %) are fixed per seed and user.")]
struct ReferenceArgs {
    /// Users in the table, 1 to 100000: the users of the first N events of the seed (a few more
    /// events when some of them share a user).
    #[arg(long, value_name = "N", value_parser = parse_users)]
    users: u64,
    /// Seed of the events the table is for: the --seed given to load or generate.
    #[arg(long, value_name = "S")]
    seed: u64,
    /// Output file; standard output when omitted.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The table's `ts` (RFC 3339); now (UTC, to the millisecond) when omitted.
    #[arg(long, value_name = "RFC3339", value_parser = reference::parse_ts)]
    ts: Option<i64>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// NDJSON of pipeline or call-detail events, or a file from `generate --format api`.
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    send: SendArgs,
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
}

fn parse_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

fn parse_users(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n @ 1..) if n <= MAX_USERS as u64 => Ok(n),
        Ok(0) => Err("must be at least 1".into()),
        Ok(_) => Err(format!("a reference table holds at most {MAX_USERS} users")),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

fn parse_threads(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("'{text}' is not a thread count from 1 to 1024")),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("'{text}' is not a positive number of events per second")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    load::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = write!(io::stdout(), "{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say(&one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Load(args) => {
            let seed = args.seed.unwrap_or_else(rng::random_seed);
            let source = EventSource::Generated { seed, count: args.count };
            let segment = match args.write_key.as_deref().map(WriteKey::parse).transpose() {
                Ok(write_key) => {
                    write_key.map(|write_key| SegmentOptions { write_key, source: args.source, gzip: args.gzip })
                }
                Err(e) => {
                    say(&format!("error: --write-key: {e}"));
                    return ExitCode::from(2);
                }
            };
            run_send(args.send, source, args.duration, args.reference, segment)
        }
        Command::Replay(args) => run_send(args.send, EventSource::File(args.file), None, None, None),
        Command::Reference(args) => run_reference(args),
    }
}

/// Prints a line on stderr; a closed or full stderr is ignored rather than a panic.
fn say(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// Clap's error text joined into one line: the message plus any hint, without the usage block.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_generate(args: GenerateArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(rng::random_seed);
    if args.verbose || (args.seed.is_none() && io::stderr().is_terminal()) {
        say(&format!("seed: {seed}"));
    }
    let mut options = GenerateOptions::new(args.count, seed, args.format);
    if let Some(threads) = args.threads {
        options.threads = threads as usize;
    }
    if let Some(start) = args.start {
        options.start_micros = start;
    }
    options.batch = args.batch as usize;
    options.progress = true;
    if let Err(e) = options.validate() {
        say(&format!("error: {e}"));
        return ExitCode::from(2);
    }
    let result = match &args.out {
        Some(path) => match File::create(path) {
            Ok(mut file) => generate::generate_to(&options, &mut file),
            Err(e) => {
                say(&format!("error: cannot create {}: {e}", path.display()));
                return ExitCode::FAILURE;
            }
        },
        None => generate::generate_to(&options, &mut io::stdout().lock()),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // The reader has gone (e.g. `| head`): stop quietly, as other filters do.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let target = args.out.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
            say(&format!("error: {e} ({target})"));
            ExitCode::FAILURE
        }
    }
}

fn run_reference(args: ReferenceArgs) -> ExitCode {
    let users = reference::user_ids(args.seed, args.users as usize);
    let ts = args.ts.map_or_else(reference::now_ts, reference::format_ts);
    let result = match &args.out {
        Some(path) => match File::create(path) {
            Ok(file) => reference::write_table(args.seed, &users, &ts, &mut io::BufWriter::new(file)),
            Err(e) => {
                say(&format!("error: cannot create {}: {e}", path.display()));
                return ExitCode::FAILURE;
            }
        },
        None => reference::write_table(args.seed, &users, &ts, &mut io::BufWriter::new(io::stdout().lock())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let target = args.out.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
            say(&format!("error: {e} ({target})"));
            ExitCode::FAILURE
        }
    }
}

/// The signer `--sign`/`--no-sign` and the AWS environment variables ask for.
fn signer(args: &SendArgs) -> Result<Option<Signer>, String> {
    if args.no_sign {
        return Ok(None);
    }
    match Signer::from_env() {
        Ok(None) if args.sign => {
            Err("--sign needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN \
                 for temporary ones)"
                .into())
        }
        Ok(signer) => Ok(signer),
        Err(e) => Err(e.to_string()),
    }
}

fn run_send(
    args: SendArgs,
    source: EventSource,
    duration: Option<Duration>,
    reference: Option<PathBuf>,
    segment: Option<SegmentOptions>,
) -> ExitCode {
    let signer = match signer(&args) {
        Ok(signer) => signer,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    let mut options = LoadOptions::new(&args.url, source);
    if let Some(segment) = segment {
        options = options.through_write_key(segment);
    }
    options.signer = signer;
    options.reference = reference;
    options.rate = args.rate;
    options.duration = duration;
    if let Some(batch) = args.batch {
        options.batch = usize::try_from(batch).unwrap_or(usize::MAX);
    }
    options.concurrency = args.concurrency as usize;
    options.verify_concurrency = args.verify_concurrency as usize;
    options.retries = args.retries;
    options.request_timeout = args.request_timeout;
    options.verify = !args.no_verify;
    options.verify_timeout = args.verify_timeout;
    options.progress = !args.quiet;
    match load::run(options) {
        Ok(summary) => {
            let text = if args.json { summary.to_json() } else { summary.to_text() };
            if let Err(e) = writeln!(io::stdout(), "{text}")
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                say(&format!("error: writing summary: {e}"));
                return ExitCode::FAILURE;
            }
            if !summary.all_verified() {
                say(&format!(
                    "error: {} accepted events were not found within the verification timeout",
                    summary.unverified
                ));
                ExitCode::FAILURE
            } else if summary.nothing_delivered() {
                say("error: no event could be delivered to the API");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) if e.is_invalid_options() => {
            say(&format!("error: {e}"));
            ExitCode::from(2)
        }
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

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
use eventline_gen::load::{self, EventSource, LoadOptions};
use eventline_gen::rng;

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
    /// Send generated events through `POST {url}/events` and verify they were stored.
    Load(LoadArgs),
    /// Re-send events from an NDJSON or `api` file through the HTTP API and verify them.
    Replay(ReplayArgs),
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
    /// Events per request (at most 100).
    #[arg(long, value_name = "N", default_value_t = API_MAX_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=API_MAX_BATCH as u64))]
    batch: u64,
    /// Requests in flight at once while sending.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Lookups in flight at once while verifying.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    verify_concurrency: u64,
    /// Retries of a batch answered with 503 or 429 before its events count as failed.
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
    /// Time limit for one request, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// How long to wait for accepted events to show up, e.g. 60s or 2m.
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
            run_send(args.send, source, args.duration)
        }
        Command::Replay(args) => run_send(args.send, EventSource::File(args.file), None),
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

fn run_send(args: SendArgs, source: EventSource, duration: Option<Duration>) -> ExitCode {
    let mut options = LoadOptions::new(&args.url, source);
    options.rate = args.rate;
    options.duration = duration;
    options.batch = args.batch as usize;
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
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

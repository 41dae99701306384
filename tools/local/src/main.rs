//! `eventline-local`: the whole pipeline on this machine. See README.md, "Two commands".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eventline_local::{LocalStack, Options, Progress};
use tokio::signal::unix::{Signal, SignalKind, signal};

const USAGE: &str = "\
usage: eventline-local [--addr HOST:PORT] [--root DIR] [--parameter KEY=VALUE]... [--jwks FILE]

  --addr        where to serve the HTTP API (default 127.0.0.1:3000, or $EVENTLINE_ADDR)
  --root        the checkout holding template.yaml and .venv (default: current directory)
  --parameter   a template parameter override, e.g. TransformBatchSize=10
  --jwks        the token issuer's JSON Web Key Set, for IngestAuthorization=JWT
";

struct Args {
    addr: SocketAddr,
    root: PathBuf,
    parameters: Vec<(String, String)>,
    jwks: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let default_addr = std::env::var("EVENTLINE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let mut addr = default_addr;
    let mut root = PathBuf::from(".");
    let mut parameters = Vec::new();
    let mut jwks = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--addr" => addr = value("--addr")?,
            "--root" => root = PathBuf::from(value("--root")?),
            "--parameter" => {
                let pair = value("--parameter")?;
                let (key, val) =
                    pair.split_once('=').ok_or_else(|| format!("--parameter {pair:?} is not KEY=VALUE"))?;
                parameters.push((key.to_owned(), val.to_owned()));
            }
            "--jwks" => jwks = Some(PathBuf::from(value("--jwks")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let addr = addr.parse().map_err(|_| format!("--addr {addr:?} is not HOST:PORT (e.g. 127.0.0.1:3000)"))?;
    Ok(Args { addr, root, parameters, jwks })
}

#[tokio::main]
async fn main() -> ExitCode {
    eventline_aws::init_tracing();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("eventline-local: {message}");
            }
            eprint!("{USAGE}");
            return if message.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eventline-local: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), eventline_local::Error> {
    let mut options = Options::for_checkout(&args.root);
    options.parameters = args.parameters;
    options.jwks = args.jwks;
    eprintln!("eventline-local: starting the emulator and creating {} ...", options.template.display());
    let stack = LocalStack::start(&options).await?;
    // Until here Ctrl-C ends the process outright, and the emulator goes with it.
    let mut signals = Signals::new()?;
    let running = stack.spawn(args.addr).await?;
    let url = running.url();
    let outputs = &stack.manifest.outputs;
    let get = |key: &str| outputs.get(key).map_or("?", String::as_str);
    println!("eventline-local: serving on {url}");
    println!("  dashboard     {url}/ (live figures, local only)");
    println!("  emulator      {} (log: {})", stack.emulator.endpoint, stack.emulator.log_path.display());
    println!("  ingest stream {}", get("IngestStreamName"));
    println!("  output stream {}", get("OutputStreamName"));
    println!("  table         {}", get("EventsTableName"));
    println!("  dead letters  {}", get("DeadLetterQueueUrl"));
    println!("  failed batches s3://{}", get("StreamFailureBucketName"));
    for route in stack.app().route_list() {
        println!("  route         {route}");
    }
    // Routes take SigV4 like the deployed API; the local stack accepts the emulator's keys.
    // The ingest routes take what IngestAuthorization says.
    let sign = format!("--aws-sigv4 aws:amz:{}:execute-api --user testing:testing", stack.manifest.region);
    let ingest_authorization =
        options.parameters.iter().rev().find(|(name, _)| name == "IngestAuthorization").map_or("IAM", |(_, v)| v);
    let (ingest_auth, ingest_note) = match ingest_authorization {
        "JWT" => {
            ("-H \"authorization: Bearer $TOKEN\" ".to_owned(), "; POST /events takes $TOKEN, a token from JwtIssuer")
        }
        "NONE" => (String::new(), "; POST /events is open to anyone"),
        _ => (format!("{sign} "), ""),
    };
    println!("try (signed with the local credentials{ingest_note}):");
    println!(
        "  curl -s {ingest_auth}-X POST {url}/events -H 'content-type: application/json' -d '{{\"id\":\"e1\",\"source\":\"web\",\"payload\":\"hello\"}}'"
    );
    println!("  curl -s {sign} {url}/events/web/e1");
    println!("  curl -s {sign} {url}/metrics");
    println!("Ctrl-C stops (the emulator keeps its data in memory only).");

    signals.next().await;
    eprintln!(
        "eventline-local: stopping: finishing requests and draining the stream (up to {} s; Ctrl-C again stops at once) ...",
        DRAIN.as_secs()
    );
    let progress = running.progress();
    tokio::select! {
        stopped = running.stop(DRAIN) => {
            let stats = stopped?;
            eprintln!(
                "eventline-local: stopped after {} batches ({} records, {} retries, {} sent to the on-failure destination)",
                stats.batches, stats.records, stats.retries, stats.sent_to_on_failure
            );
            stack.emulator.stop().await;
            Ok(())
        }
        () = signals.next() => {
            let left = undrained(&progress).await;
            stack.emulator.stop().await;
            Err(eventline_local::Error::Setup(format!("stopped at once, before the drain finished; left undrained: {left}")))
        }
    }
}

/// How long a stop waits for the stream to be drained.
const DRAIN: Duration = Duration::from_secs(60);
/// How long a stop at once spends counting what it leaves.
const COUNTING: Duration = Duration::from_secs(5);

/// What a stop at once leaves behind, in words.
async fn undrained(progress: &Progress) -> String {
    let requests = match progress.requests_in_flight() {
        0 => "no HTTP request in flight".to_owned(),
        1 => "1 HTTP request in flight (cut off)".to_owned(),
        n => format!("{n} HTTP requests in flight (cut off)"),
    };
    let records = match tokio::time::timeout(COUNTING, progress.records_unprocessed()).await {
        Ok(Ok(0)) => "no record on the ingest stream left to process".to_owned(),
        Ok(Ok(n)) => format!(
            "{n} record{} on the ingest stream not processed by the transform (the emulator keeps them in memory only: they are gone)",
            if n == 1 { "" } else { "s" }
        ),
        Ok(Err(error)) => format!("the records left on the ingest stream could not be counted ({error})"),
        Err(_) => format!("the records left on the ingest stream could not be counted within {} s", COUNTING.as_secs()),
    };
    format!("{records}; {requests}")
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from the start so that none is missed between
/// the first, which stops gracefully, and the second, which stops at once.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

//! `eventline-redrive`: re-submits the records in the failure bucket and the dead-letter
//! queue to the ingest stream. See tools/redrive/README.md.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use clap::{Parser, ValueEnum};
use eventline_redrive::{Options, Progress, Sources, Target};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// SQS's longest visibility timeout.
const MAX_VISIBILITY_SECONDS: u64 = 12 * 60 * 60;

#[derive(Parser, Debug)]
#[command(
    name = "eventline-redrive",
    version,
    about = "Re-submits the records Eventline gave up on (failure bucket, dead-letter queue) to its ingest stream.",
    after_help = "Region and credentials come from the environment (AWS_REGION, AWS_PROFILE, AWS_*).\n\
                  Exit status: 0 when everything found was re-submitted or skipped, 1 when something failed, \
                  2 when the command could not run."
)]
struct Cli {
    /// The ingest stream to re-submit to (stack output IngestStreamName).
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The failure bucket (stack output StreamFailureBucketName); needed unless --from dlq.
    #[arg(long, value_name = "NAME")]
    bucket: Option<String>,
    /// The dead-letter queue (stack output DeadLetterQueueUrl); needed unless --from s3.
    #[arg(long, value_name = "URL")]
    queue_url: Option<String>,
    /// Which records to bring back.
    #[arg(long, value_enum, default_value_t = SourceArg::Both)]
    from: SourceArg,
    /// Only failure objects whose key starts with this, e.g. aws/lambda/<mapping id>/<shard id>/2026/11/30/.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Only failure objects written since then: RFC 3339, or an age such as 90s, 30m, 12h, 7d.
    #[arg(long, value_name = "WHEN", value_parser = |text: &str| parse_since(text, OffsetDateTime::now_utc()))]
    since: Option<OffsetDateTime>,
    /// Show what would be re-submitted; put, delete and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delete each failure object whose records were all re-submitted (otherwise the bucket's
    /// lifecycle rule expires them).
    #[arg(long)]
    delete_failure_objects: bool,
    /// Send every AWS request here, e.g. the local stack's emulator (S3 then uses path-style addressing).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Seconds a dead-letter message stays hidden from other readers while it is handled.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = parse_visibility)]
    visibility_timeout: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    S3,
    Dlq,
    Both,
}

impl SourceArg {
    fn sources(self) -> Sources {
        match self {
            SourceArg::S3 => Sources::S3,
            SourceArg::Dlq => Sources::Dlq,
            SourceArg::Both => Sources::Both,
        }
    }
}

/// An RFC 3339 time, or an age (`90s`, `30m`, `12h`, `7d`) before `now`.
fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let bad = || format!("{text:?} is neither an RFC 3339 time nor an age such as 90s, 30m, 12h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let age = number.checked_mul(seconds).and_then(|s| i64::try_from(s).ok()).ok_or_else(bad)?;
    now.checked_sub(time::Duration::seconds(age)).ok_or_else(bad)
}

fn parse_visibility(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(seconds) if (1..=MAX_VISIBILITY_SECONDS).contains(&seconds) => Ok(seconds),
        _ => Err(format!("must be a number of seconds from 1 to {MAX_VISIBILITY_SECONDS}")),
    }
}

/// A progress bar on stderr, one per phase; indicatif draws nothing when stderr is not a terminal.
#[derive(Default)]
struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let bar = ProgressBar::new(total).with_message(what.to_owned());
        if let Ok(style) = ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)") {
            bar.set_style(style.progress_chars("=> "));
        }
        if let Ok(mut current) = self.0.lock() {
            *current = Some(bar);
        }
    }

    fn advance(&self, done: u64) {
        if let Ok(current) = self.0.lock()
            && let Some(bar) = current.as_ref()
        {
            bar.inc(done);
            // The queue's depth is approximate: let the bar grow rather than overflow.
            if bar.length().is_some_and(|length| bar.position() > length) {
                bar.set_length(bar.position());
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut current) = self.0.lock()
            && let Some(bar) = current.take()
        {
            bar.finish_and_clear();
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            // Room for a failure object of a few MB on a slow link.
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(90))
            .build(),
    );
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let target = Target { stream: cli.stream, bucket: cli.bucket, queue_url: cli.queue_url };
    let options = Options {
        from: cli.from.sources(),
        prefix: cli.prefix,
        since: cli.since,
        dry_run: cli.dry_run,
        delete_failure_objects: cli.delete_failure_objects,
        visibility_timeout: Duration::from_secs(cli.visibility_timeout),
        ..Options::default()
    };
    let bar = Bar::default();
    match eventline_redrive::run(&sdk, &target, &options, &bar).await {
        Ok(summary) => {
            bar.finish();
            if cli.json {
                match serde_json::to_string_pretty(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(error) => eprintln!("eventline-redrive: cannot write the summary as JSON: {error}"),
                }
            } else {
                print!("{summary}");
            }
            if summary.has_failures() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            bar.finish();
            eprintln!("eventline-redrive: {error}");
            ExitCode::from(2)
        }
    }
}

/// Warnings and errors on stderr (`RUST_LOG` for more); the summary goes to stdout.
fn init_tracing() {
    // The SDK warns about every place it looked for a region or credentials before it found
    // one; a missing region is an error of its own.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-30 12:00:00 UTC);

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(parse_since("2026-11-29T08:30:00Z", NOW), Ok(datetime!(2026-11-29 08:30:00 UTC)));
        assert_eq!(parse_since("90s", NOW), Ok(datetime!(2026-11-30 11:58:30 UTC)));
        assert_eq!(parse_since("30m", NOW), Ok(datetime!(2026-11-30 11:30:00 UTC)));
        assert_eq!(parse_since("12h", NOW), Ok(datetime!(2026-11-30 00:00:00 UTC)));
        assert_eq!(parse_since("7d", NOW), Ok(datetime!(2026-11-23 12:00:00 UTC)));
        for bad in ["", "h", "12", "12w", "-3h", "yesterday", "99999999999999999999d"] {
            assert!(parse_since(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn visibility_is_within_what_sqs_takes() {
        assert_eq!(parse_visibility("300"), Ok(300));
        assert!(parse_visibility("0").is_err());
        assert!(parse_visibility("43201").is_err());
        assert!(parse_visibility("five").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["eventline-redrive", "--stream", "s", "--from", "dlq", "--queue-url", "q"]).unwrap();
        assert_eq!(cli.from.sources(), Sources::Dlq);
        assert!(Cli::try_parse_from(["eventline-redrive"]).is_err(), "--stream is required");
    }
}

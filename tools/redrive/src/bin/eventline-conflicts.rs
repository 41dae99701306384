//! `eventline-conflicts list`: the copies of stored identities that came from another sender
//! or with other content, kept in the table for inspection. See tools/redrive/README.md.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use clap::{Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser, Debug)]
#[command(
    name = "eventline-conflicts",
    version,
    about = "Lists the events Eventline kept as conflicts: a stored (source, id) sent again by another sender or with other content.",
    after_help = "Region and credentials come from the environment (AWS_REGION, AWS_PROFILE, AWS_*).\n\
                  Exit status: 0 when the list was read, 2 when the command could not run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists conflicts, newest first.
    List(ListArgs),
    /// Lists the Segment calls ingest refused because they can never be stored, newest first
    /// (kept 14 days).
    Refused(ListArgs),
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    /// The events table (stack output EventsTableName).
    #[arg(long, value_name = "NAME")]
    table: String,
    /// Only those since then (RFC 3339).
    #[arg(long, value_name = "WHEN", value_parser = |text: &str| OffsetDateTime::parse(text, &Rfc3339).map_err(|e| e.to_string()))]
    since: Option<OffsetDateTime>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    /// Send every AWS request here, e.g. the local stack's emulator.
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command;
    let (Command::List(args) | Command::Refused(args)) = &command;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        eprintln!("eventline-conflicts: no AWS region: set AWS_REGION to the stack's region");
        return ExitCode::from(2);
    }
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let (table, since, limit) = (&args.table, args.since, args.limit);
    let result = match command {
        Command::List(_) => eventline_redrive::conflicts::list(&client, table, since, limit)
            .await
            .map(|c| print_all(&c, args.json, "conflict")),
        Command::Refused(_) => eventline_redrive::refused::list(&client, table, since, limit)
            .await
            .map(|r| print_all(&r, args.json, "refused call")),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("eventline-conflicts: {error}");
            ExitCode::from(2)
        }
    }
}

/// The list as text with a count, or as JSON.
fn print_all<T: std::fmt::Display + serde::Serialize>(items: &[T], json: bool, noun: &str) -> ExitCode {
    if json {
        return match serde_json::to_string_pretty(items) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("eventline-conflicts: cannot write the list as JSON: {error}");
                ExitCode::from(2)
            }
        };
    }
    for item in items {
        print!("{item}");
    }
    println!("{} {noun}{}", items.len(), if items.len() == 1 { "" } else { "s" });
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["eventline-conflicts", "list", "--table", "t", "--limit", "5"]).unwrap();
        assert!(matches!(cli.command, Command::List(ListArgs { limit: 5, .. })));
        let cli = Cli::try_parse_from(["eventline-conflicts", "refused", "--table", "t"]).unwrap();
        assert!(matches!(cli.command, Command::Refused(ListArgs { limit: 100, .. })));
        assert!(Cli::try_parse_from(["eventline-conflicts", "list"]).is_err(), "--table is required");
    }
}

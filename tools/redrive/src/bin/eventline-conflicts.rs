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
    List {
        /// The events table (stack output EventsTableName).
        #[arg(long, value_name = "NAME")]
        table: String,
        /// Only conflicts judged since then (RFC 3339).
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
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::List { table, since, limit, endpoint_url, json } = Cli::parse().command;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if let Some(url) = &endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        eprintln!("eventline-conflicts: no AWS region: set AWS_REGION to the stack's region");
        return ExitCode::from(2);
    }
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    match eventline_redrive::conflicts::list(&client, &table, since, limit).await {
        Ok(conflicts) if json => match serde_json::to_string_pretty(&conflicts) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("eventline-conflicts: cannot write the list as JSON: {error}");
                ExitCode::from(2)
            }
        },
        Ok(conflicts) => {
            for conflict in &conflicts {
                print!("{conflict}");
            }
            println!("{} conflict{}", conflicts.len(), if conflicts.len() == 1 { "" } else { "s" });
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("eventline-conflicts: {error}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["eventline-conflicts", "list", "--table", "t", "--limit", "5"]).unwrap();
        assert!(matches!(cli.command, Command::List { limit: 5, .. }));
        assert!(Cli::try_parse_from(["eventline-conflicts", "list"]).is_err(), "--table is required");
    }
}

//! The `eventline-gen` binary: argument errors, determinism, and closed pipes.

use std::io::Read;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_eventline-gen");

fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// Runs the binary with no AWS variables but `env`.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    match command.output() {
        Ok(output) => output,
        Err(e) => panic!("could not start {BIN}: {e}"),
    }
}

/// Asserts exit code 2 with a single-line error on stderr that mentions `needle`.
fn assert_argument_error(output: &Output, needle: &str) {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "stderr {stderr:?} lacks {needle:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr:?}");
    assert!(output.stdout.is_empty());
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a failed run with a single-line error on stderr that mentions `needle`.
fn assert_fails_with(args: &[&str], needle: &str) {
    let output = run(args);
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{args:?}: stderr {stderr:?} lacks {needle:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
}

#[test]
fn unknown_format_is_refused() {
    assert_fails_with(&["generate", "--count", "10", "--format", "xml"], "xml");
}

#[test]
fn zero_count_is_refused() {
    assert_fails_with(&["generate", "--count", "0"], "--count");
}

#[test]
fn non_numeric_count_is_refused() {
    assert_fails_with(&["generate", "--count", "lots"], "lots");
}

#[test]
fn missing_count_is_refused() {
    assert_fails_with(&["generate"], "--count");
}

#[test]
fn zero_threads_are_refused() {
    assert_fails_with(&["generate", "--count", "10", "--threads", "0"], "--threads");
}

#[test]
fn unwritable_output_path_is_refused() {
    assert_fails_with(
        &["generate", "--count", "10", "--out", "/nonexistent-dir/calls.csv"],
        "cannot create /nonexistent-dir/calls.csv",
    );
}

#[test]
fn oversized_kinesis_event_is_refused() {
    assert_fails_with(&["generate", "--count", "1001", "--format", "kinesis-event"], "at most 1000 records");
}

#[test]
fn bad_start_time_is_refused() {
    assert_fails_with(&["generate", "--count", "10", "--start", "yesterday"], "RFC 3339");
}

#[test]
fn load_without_a_bound_is_refused() {
    assert_fails_with(&["load", "--url", "http://127.0.0.1:9"], "--count N or --duration D");
}

#[test]
fn load_with_a_bad_url_is_refused() {
    assert_fails_with(&["load", "--url", "localhost:3000", "--count", "1"], "invalid URL");
}

#[test]
fn load_with_a_bad_rate_is_refused() {
    assert_fails_with(&["load", "--url", "http://127.0.0.1:9", "--count", "1", "--rate", "-5"], "-5");
}

#[test]
fn load_against_a_closed_port_fails_with_a_summary() {
    let output = run(&["load", "--url", "http://127.0.0.1:9", "--count", "5", "--quiet", "--no-verify"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = stderr_of(&output);
    assert!(!output.status.success());
    assert!(stdout.contains("failed      5"), "{stdout}");
    assert!(stderr.contains("no event could be delivered"), "{stderr}");
}

#[test]
fn sign_without_credentials_is_an_argument_error() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--sign"];
    assert_argument_error(&run_with_env(&args, &[]), "--sign needs credentials");
    let replay = ["replay", "--url", "http://127.0.0.1:9", "--file", "x.ndjson", "--sign"];
    assert_argument_error(&run_with_env(&replay, &[("AWS_REGION", "eu-west-1")]), "AWS_ACCESS_KEY_ID");
}

#[test]
fn half_of_a_key_pair_is_an_argument_error_unless_signing_is_off() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--quiet", "--no-verify"];
    let only_id = run_with_env(&args, &[("AWS_ACCESS_KEY_ID", "AKID")]);
    assert_argument_error(&only_id, "AWS_SECRET_ACCESS_KEY is not");
    // With --no-sign the variables are not looked at: the run goes ahead (and fails to connect).
    let unsigned = run_with_env(&[&args[..], &["--no-sign"]].concat(), &[("AWS_ACCESS_KEY_ID", "AKID")]);
    assert_eq!(unsigned.status.code(), Some(1), "{}", stderr_of(&unsigned));
    assert!(stderr_of(&unsigned).contains("no event could be delivered"));
}

#[test]
fn sign_and_no_sign_together_are_refused() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--sign", "--no-sign"];
    assert_argument_error(&run_with_env(&args, &[]), "--no-sign");
}

const WRITE_KEY: &str = "wk_0123456789abcdef_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";

#[test]
fn write_key_and_the_signing_options_together_are_refused() {
    for sign in ["--sign", "--no-sign"] {
        let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--write-key", WRITE_KEY, sign];
        let output = run_with_env(&args, &[]);
        assert_argument_error(&output, "'--write-key <KEY>' cannot be used with");
        assert_argument_error(&output, sign);
    }
}

#[test]
fn a_malformed_write_key_is_an_argument_error_that_does_not_repeat_it() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--write-key", "wk_secret-looking-typo"];
    let output = run(&args);
    assert_argument_error(&output, "--write-key: not a write key");
    assert!(!stderr_of(&output).contains("secret-looking-typo"), "{}", stderr_of(&output));
}

#[test]
fn a_write_key_needs_its_source_to_verify() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--write-key", WRITE_KEY];
    assert_argument_error(&run(&args), "(--source)");
    // Without verifying, no source is needed: the run goes ahead (and fails to connect).
    let unverified = run(&[&args[..], &["--no-verify", "--quiet"]].concat());
    assert_eq!(unverified.status.code(), Some(1), "{}", stderr_of(&unverified));
    assert!(stderr_of(&unverified).contains("no event could be delivered"));
}

#[test]
fn source_and_gzip_need_a_write_key() {
    for extra in [&["--source", "web"][..], &["--gzip"][..]] {
        let args = [&["load", "--url", "http://127.0.0.1:9", "--count", "1"][..], extra].concat();
        assert_argument_error(&run(&args), "--write-key");
    }
}

#[test]
fn more_than_100_events_a_request_need_a_write_key() {
    let args = ["load", "--url", "http://127.0.0.1:9", "--count", "1", "--batch", "101"];
    assert_argument_error(&run(&args), "between 1 and 100");
    assert_argument_error(&run(&[&args[..5], &["--batch", "0"]].concat()), "--batch");
}

#[test]
fn a_reference_file_that_is_not_a_table_stops_the_run_before_sending() {
    let dir = std::env::temp_dir().join(format!("eventline-gen-cli-ref-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("events.json");
    assert!(std::fs::write(&path, "[{\"id\":\"x\"}]").is_ok());
    let path_text = path.to_string_lossy().into_owned();
    assert_fails_with(
        &["load", "--url", "http://127.0.0.1:9", "--count", "1", "--reference", &path_text],
        "\"user_metadata\" object",
    );
    assert_fails_with(
        &["load", "--url", "http://127.0.0.1:9", "--count", "1", "--reference", "/nonexistent/ref.json"],
        "reading the reference table /nonexistent/ref.json",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_of_a_missing_file_is_refused() {
    assert_fails_with(
        &["replay", "--url", "http://127.0.0.1:9", "--file", "/nonexistent/events.ndjson"],
        "/nonexistent/events.ndjson",
    );
}

#[test]
fn same_seed_gives_the_same_bytes_for_any_thread_count() {
    let args = ["generate", "--count", "25000", "--seed", "99", "--format", "ndjson"];
    let first = run(&[&args[..], &["--threads", "1"]].concat());
    let second = run(&[&args[..], &["--threads", "1"]].concat());
    let two = run(&[&args[..], &["--threads", "2"]].concat());
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert_eq!(first.stdout.iter().filter(|b| **b == b'\n').count(), 25_000);
    assert!(first.stdout == second.stdout, "two runs differ");
    assert!(first.stdout == two.stdout, "1 and 2 threads differ");
}

#[test]
fn different_seeds_give_different_output() {
    let a = run(&["generate", "--count", "100", "--seed", "1"]);
    let b = run(&["generate", "--count", "100", "--seed", "2"]);
    assert!(a.status.success() && b.status.success());
    assert_ne!(a.stdout, b.stdout);
}

#[test]
fn output_file_matches_standard_output() {
    let dir = std::env::temp_dir().join(format!("eventline-gen-cli-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("calls.csv");
    let path_text = path.to_string_lossy().into_owned();
    let to_file = run(&["generate", "--count", "3000", "--seed", "5", "--out", &path_text]);
    let to_stdout = run(&["generate", "--count", "3000", "--seed", "5"]);
    assert!(to_file.status.success(), "{}", stderr_of(&to_file));
    assert!(to_file.stdout.is_empty());
    assert_eq!(std::fs::read(&path).ok(), Some(to_stdout.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seed_is_printed_with_verbose_only() {
    let quiet = run(&["generate", "--count", "5"]);
    assert!(stderr_of(&quiet).is_empty(), "{}", stderr_of(&quiet));
    let verbose = run(&["generate", "--count", "5", "--seed", "42", "--verbose"]);
    assert_eq!(stderr_of(&verbose).trim(), "seed: 42");
}

#[test]
fn closed_pipe_ends_quietly_without_a_panic() {
    let child = Command::new(BIN)
        .args(["generate", "--count", "5000000", "--seed", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!("could not start {BIN}: {e}"),
    };
    let mut first = [0u8; 100];
    let read = child.stdout.take().map(|mut out| out.read_exact(&mut first));
    assert!(matches!(read, Some(Ok(()))), "{read:?}");
    // The read end is closed here, like `| head -c 100` exiting.
    let output = child.wait_with_output();
    let Ok(output) = output else {
        panic!("waiting failed: {output:?}");
    };
    let stderr = stderr_of(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "status {:?}, stderr {stderr}", output.status);
    assert!(first.starts_with(b"event_source,event_ref,"));
}

#[test]
fn help_lists_the_subcommands() {
    let output = run(&["--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for word in ["generate", "load", "replay", "reference"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn load_help_lists_the_write_key_options() {
    let output = run(&["load", "--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for option in ["--write-key <KEY>", "--source <SOURCE>", "--gzip", "/v1/batch"] {
        assert!(text.contains(option), "{text}");
    }
}

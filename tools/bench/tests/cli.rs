//! `figures` answers a mistyped command with its usage instead of running the whole bench.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_figures");

#[test]
fn help_prints_the_usage_and_succeeds() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let usage = String::from_utf8(output.stdout).unwrap();
    assert!(usage.contains("figures --cold-start NAME=PATH..."), "{usage}");
}

#[test]
fn an_unknown_argument_or_a_bare_cold_start_is_a_usage_error() {
    for args in [&["--cold-starts"][..], &["ingest=target/x"], &["--cold-start"]] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?} measured something");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: figures"), "{args:?}");
    }
}

//! The emulator's log file: removed with the emulator, kept when someone may need to read it.

mod common;

use eventline_local::{Emulator, Options};

async fn start() -> Emulator {
    let options = Options::for_checkout(&common::checkout());
    Emulator::start(&options.venv, &options.emulator_launcher)
        .await
        .expect("emulator starts (run `make test` so .venv is installed)")
}

#[tokio::test]
async fn the_log_goes_with_the_emulator() {
    let stopped = start().await;
    let stopped_log = stopped.log_path.clone();
    assert!(stopped_log.exists());
    stopped.stop().await;
    assert!(!stopped_log.exists(), "{} left behind by stop", stopped_log.display());

    let dropped = start().await;
    let dropped_log = dropped.log_path.clone();
    drop(dropped);
    assert!(!dropped_log.exists(), "{} left behind by drop", dropped_log.display());
}

#[tokio::test]
async fn the_log_stays_when_kept_or_when_a_test_fails() {
    let mut kept = start().await;
    kept.keep_log();
    let kept_log = kept.log_path.clone();
    kept.stop().await;
    assert!(kept_log.exists());
    std::fs::remove_file(&kept_log).unwrap();

    let failing = start().await;
    let failing_log = failing.log_path.clone();
    let outcome = std::thread::spawn(move || {
        let _emulator = failing;
        panic!("a test fails while its emulator runs");
    })
    .join();
    assert!(outcome.is_err());
    assert!(failing_log.exists(), "{} removed although the test failed", failing_log.display());
    std::fs::remove_file(&failing_log).unwrap();
}

#[test]
fn a_stack_that_cannot_be_created_keeps_its_log() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_eventline-local"))
        .arg("--root")
        .arg(common::checkout())
        .args(["--addr", "127.0.0.1:0", "--jwks", "/nonexistent/jwks.json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let log = stderr
        .lines()
        .find_map(|line| line.strip_prefix("emulator log kept: "))
        .unwrap_or_else(|| panic!("no kept log named in:\n{stderr}"));
    assert!(std::path::Path::new(log).exists(), "{log} named but missing");
    std::fs::remove_file(log).unwrap();
}

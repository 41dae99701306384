//! The emulator's log file: removed with the emulator, kept when something went wrong.

mod common;

use std::time::{Duration, Instant};

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
async fn the_log_stays_when_a_test_fails() {
    let emulator = start().await;
    let log = emulator.log_path.clone();
    let outcome = std::thread::spawn(move || {
        let _emulator = emulator;
        panic!("a test fails while its emulator runs");
    })
    .join();
    assert!(outcome.is_err());
    assert!(log.exists(), "{} removed although the test failed", log.display());
    std::fs::remove_file(&log).unwrap();
}

#[tokio::test]
async fn the_log_stays_when_the_emulator_exits_by_itself() {
    let emulator = start().await;
    let log = emulator.log_path.clone();
    let pid = emulator.pid().expect("the emulator runs").to_string();
    let killed = std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success());
    // Dead once it is a zombie, waiting for its parent to collect it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_zombie(&pid) {
        assert!(Instant::now() < deadline, "the emulator still runs after SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emulator.stop().await;
    assert!(log.exists(), "{} removed although the emulator had died", log.display());
    std::fs::remove_file(&log).unwrap();
}

fn is_zombie(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
}

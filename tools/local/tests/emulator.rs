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

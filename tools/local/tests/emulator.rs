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
    let pid = emulator.pid().expect("the emulator runs");
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has_exited(pid) {
        assert!(Instant::now() < deadline, "the emulator still runs after SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emulator.stop().await;
    assert!(log.exists(), "{} removed although the emulator had died", log.display());
    std::fs::remove_file(&log).unwrap();
}

/// Whether the child `pid` can be collected, without collecting it. A zombie in /proc is not
/// enough: the emulator is threaded, and its main thread shows as a zombie while the other
/// threads still wind down; until they have, waiting for it finds nothing.
fn has_exited(pid: u32) -> bool {
    // SAFETY: `info` is a plain C struct, zeroed so that "nothing yet" reads as pid 0.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let options = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` outlives the call; WNOWAIT leaves the child to be collected by its owner.
    let found = unsafe { libc::waitid(libc::P_PID, pid, &mut info, options) };
    assert_eq!(found, 0, "waitid: {}", std::io::Error::last_os_error());
    // SAFETY: waitid filled in a child's state, or left the zeroed pid.
    unsafe { info.si_pid() != 0 }
}

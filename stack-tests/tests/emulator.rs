//! The emulator's log file: removed with the emulator, kept when something went wrong; the
//! emulator's life: it ends with the stack that started it, however the stack ends; and how
//! `eventline-local` stops: a second Ctrl-C stops the drain at once and says what was left.

use eventline_stack_tests as common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use eventline_local::{Emulator, Options};
use serde_json::json;

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

/// `eventline-local` run as a user runs it, on a free port, its emulator's address read from
/// what it prints.
struct StackProcess {
    child: Child,
    emulator_endpoint: String,
    ingest_stream: String,
}

impl StackProcess {
    fn start(parameters: &[&str]) -> Self {
        let mut command = Command::new(common::workspace_binary("eventline-local"));
        command.args(["--addr", "127.0.0.1:0", "--root"]).arg(common::checkout());
        for parameter in parameters {
            command.args(["--parameter", parameter]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("eventline-local starts");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut emulator_endpoint, mut ingest_stream) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while emulator_endpoint.is_none() || ingest_stream.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("eventline-local did not start serving; it wrote:\n{stderr}");
            };
            let field = |name: &str| line.trim_start().strip_prefix(name).map(|rest| rest.trim().to_owned());
            if let Some(rest) = field("emulator") {
                emulator_endpoint = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = field("ingest stream") {
                ingest_stream = Some(rest);
            }
        }
        Self { child, emulator_endpoint: emulator_endpoint.unwrap(), ingest_stream: ingest_stream.unwrap() }
    }

    /// The emulator this stack started.
    fn emulator_pid(&self) -> u32 {
        let children = running_children(self.child.id(), "moto_server.py");
        assert_eq!(children.len(), 1, "one emulator under the stack: {children:?}");
        children[0]
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of a child this test started and has not collected.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for StackProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live processes whose parent is `parent` and whose command line mentions `needle`.
fn running_children(parent: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if fields.get(1) == Some(&parent.to_string().as_str())
            && is_running(pid)
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` is a live process. A zombie has ended: when its parent was killed, no one
/// may be left to collect it.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned)))
        .is_some_and(|state| state != "Z")
}

/// Waits up to `within` for the emulator `pid` to end; kills it if it does not (a test must
/// not leave one behind) and fails.
fn assert_ends(pid: u32, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while is_running(pid) {
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the emulator this test's stack started, found by its parent.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the emulator (pid {pid}) still ran {} s after {what}", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_emulator_ends_with_a_stack_killed_outright() {
    let mut stack = StackProcess::start(&[]);
    let emulator = stack.emulator_pid();
    stack.child.kill().unwrap(); // SIGKILL: nothing of the stack's own code runs
    stack.child.wait().unwrap();
    assert_ends(emulator, Duration::from_secs(5), "its stack was killed");
}

#[tokio::test]
async fn a_second_interrupt_stops_the_drain_at_once_and_says_what_was_left() {
    // One record per batch: a thousand records take the transform far longer than the test
    // waits between the two interrupts.
    let mut stack = StackProcess::start(&["TransformBatchSize=1"]);
    let emulator = stack.emulator_pid();
    let sdk = eventline_local::emulator_sdk_config(&stack.emulator_endpoint, common::REGION).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    for round in 0..2 {
        let entries = (0..500)
            .map(|i| {
                let id = format!("drain-{round}-{i}");
                let event = json!({"id": id, "source": "web", "type": "t", "timestamp": "2026-01-01T00:00:00Z",
                    "received_at": "2026-01-01T00:00:00Z"});
                PutRecordsRequestEntry::builder().partition_key(id).data(Blob::new(event.to_string())).build().unwrap()
            })
            .collect();
        let put = kinesis.put_records().stream_name(&stack.ingest_stream).set_records(Some(entries)).send().await;
        assert_eq!(put.unwrap().failed_record_count(), Some(0));
    }

    stack.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.child.try_wait().unwrap().is_none(), "the first Ctrl-C drains; it does not stop at once");
    stack.signal(libc::SIGINT);
    let second = Instant::now();
    let status = loop {
        if let Some(status) = stack.child.try_wait().unwrap() {
            break status;
        }
        assert!(second.elapsed() < Duration::from_secs(10), "eventline-local still drains 10 s after a second Ctrl-C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    stack.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "a stop that leaves work undone is not a success: {stderr}");
    let said = stderr
        .lines()
        .find_map(|line| line.split_once("left undrained: ").map(|(_, left)| left.to_owned()))
        .unwrap_or_else(|| panic!("no word of what was left undrained in:\n{stderr}"));
    let records: u64 = said
        .split_whitespace()
        .next()
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of records left in {said:?}"));
    assert!(records > 0 && records <= 1000, "{said}");
    assert!(
        said.contains("on the ingest stream not processed") && said.contains("no HTTP request in flight"),
        "{said}"
    );
    assert_ends(emulator, Duration::from_secs(5), "its stack stopped");
}

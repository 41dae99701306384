//! Cold start as Lambda sees it: the time from starting a function's process to its first
//! `GET /2018-06-01/runtime/invocation/next`, on a stub of the Lambda Runtime API. The stub
//! never answers `/next`, so the process is measured up to the moment it is ready for work
//! and then stopped. Every other request that reaches the stub first is recorded: with the
//! functions' AWS endpoint pointed at the stub too, an AWS call made during init shows up.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// The request a runtime makes when it is ready for its first event.
pub const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";

/// The variables Lambda itself sets in a function's environment (provided.al2023, 256 MB,
/// JSON logs), with dummy credentials; a function's own variables come on top.
pub fn lambda_environment(function_name: &str, runtime_api: SocketAddr) -> BTreeMap<String, String> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function_name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/30/[$LATEST]0123456789abcdef".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE00".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "example-secret-access-key".to_owned()),
        ("AWS_SESSION_TOKEN", "example-session-token".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One measured start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdStart {
    /// From just before the process was started to its `/next` arriving at the stub.
    pub to_next: Duration,
    /// Requests (`METHOD /path`) that reached the stub before `/next`.
    pub requests_before_next: Vec<String>,
}

/// The stub, listening on a free loopback port until dropped with the process.
pub struct RuntimeApiStub {
    addr: SocketAddr,
    requests: Receiver<(Instant, String)>,
}

impl RuntimeApiStub {
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let (sender, requests) = channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sender = sender.clone();
                std::thread::spawn(move || serve(stream, &sender));
            }
        });
        Ok(Self { addr, requests })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts `program` with exactly `env`, waits for its first `/next`, then kills it.
    /// Its stderr goes to `log`, which an error names when the process never got there.
    pub fn cold_start(
        &self,
        program: &Path,
        env: &BTreeMap<String, String>,
        log: &Path,
        timeout: Duration,
    ) -> Result<ColdStart, String> {
        while self.requests.try_recv().is_ok() {}
        let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let start = Instant::now();
        let mut child = Command::new(program)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut requests_before_next = Vec::new();
        let outcome = loop {
            match self.requests.recv_timeout(Duration::from_millis(20)) {
                Ok((at, request)) if request.ends_with(NEXT_PATH) => {
                    break Ok(ColdStart { to_next: at - start, requests_before_next });
                }
                Ok((_, request)) => requests_before_next.push(request),
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        break Err(format!(
                            "{} exited with {status} before /next; see {}",
                            program.display(),
                            log.display()
                        ));
                    }
                    if start.elapsed() > timeout {
                        break Err(format!(
                            "{} made no /next within {timeout:?}; see {}",
                            program.display(),
                            log.display()
                        ));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break Err("the stub stopped".to_owned()),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        outcome
    }
}

/// Serves one connection: records each request's line; answers anything but `/next` with
/// a 500 (nothing here is a real AWS endpoint) and leaves `/next` unanswered.
fn serve(stream: TcpStream, sender: &Sender<(Instant, String)>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let at = Instant::now();
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let request = line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let next = request.ends_with(NEXT_PATH);
        if sender.send((at, request)).is_err() || next {
            // Wait for the process to go away; the connection closes with it.
            let _ = io::copy(&mut reader, &mut io::sink());
            return;
        }
        if writer.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(median(&ms(&[5, 1, 3])), Some(Duration::from_millis(3)));
        assert_eq!(median(&ms(&[4, 1, 3, 2])), Some(Duration::from_micros(2500)));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_stub_times_a_process_to_its_first_next_and_records_what_came_before() {
        let stub = RuntimeApiStub::start().unwrap();
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /other HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n' >&3; \
             read -r status <&3; printf 'GET {NEXT_PATH} HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n' >&3; sleep 5",
            port = stub.addr().port()
        );
        let dir = std::env::temp_dir().join(format!("runtime-api-stub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("fake-runtime.sh");
        std::fs::write(&program, format!("#!/bin/bash\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let start = stub.cold_start(&program, &env, &dir.join("stderr"), Duration::from_secs(5)).unwrap();
        assert_eq!(start.requests_before_next, ["GET /other"]);
        assert!(start.to_next < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

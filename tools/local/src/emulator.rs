//! The AWS API emulator (moto server) as a child process on a free loopback port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Error;

/// A running emulator; it is stopped when this is dropped, and it ends with this process
/// however this process ends: it is started with `--exit-with-parent` and a pipe on its
/// standard input, whose other end this holds; when this process dies, even by SIGKILL, the
/// kernel closes that end and the launcher exits.
///
/// Its output goes to a log file in the temporary directory, removed when the emulator is
/// stopped or dropped unless something went wrong: it failed to start (the error names the
/// log), it exited by itself, or the thread stopping it is panicking (a failing test). Then
/// the log stays and its path is printed.
pub struct Emulator {
    child: Child,
    /// The write end of the emulator's standard input, never written: held open for its life.
    _lifeline: OwnedFd,
    pub endpoint: String,
    pub log_path: PathBuf,
    /// Whether the log has been kept or removed already.
    log_settled: bool,
}

impl Emulator {
    /// Starts moto's server (through `launcher`, see `moto_server.py`) from the virtual
    /// environment and waits until it answers.
    pub async fn start(venv: &Path, launcher: &Path) -> Result<Self, Error> {
        let program = venv.join("bin").join("python");
        if !venv.join("bin").join("moto_server").exists() {
            return Err(Error::Setup(format!(
                "moto is not installed in {}; `make run` or `make test` install it (or `python3 -m venv .venv && .venv/bin/pip install -r tools/local/requirements.txt`)",
                venv.display()
            )));
        }
        let port = free_port()?;
        let log_path = std::env::temp_dir().join(format!("eventline-moto-{port}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| Error::Setup(format!("{}: {e}", log_path.display())))?;
        let mut child = Command::new(&program)
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "--exit-with-parent"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(|e| Error::Setup(e.to_string()))?)
            .stderr(log)
            // Its own process group: Ctrl-C in the terminal reaches us, and we stop it after draining.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot start {}: {e}", program.display())))?;
        let lifeline = child
            .stdin
            .take()
            .ok_or_else(|| Error::Setup("the emulator's standard input was not piped".into()))?
            .into_owned_fd()
            .map_err(|e| Error::Setup(format!("the emulator's standard input: {e}")))?;
        let mut emulator = Self {
            child,
            _lifeline: lifeline,
            endpoint: format!("http://127.0.0.1:{port}"),
            log_path,
            log_settled: false,
        };
        // The error names the log, so it stays.
        emulator.wait_ready(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.inspect_err(|_| {
            emulator.log_settled = true;
        })?;
        Ok(emulator)
    }

    /// The emulator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_ready(&mut self, addr: SocketAddr) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Setup(format!("moto_server exited with {status}; see {}", self.log_path.display())));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Setup(format!("moto_server did not answer on {addr} within 30 s; see {}", self.log_path.display())))
    }

    pub async fn stop(mut self) {
        self.settle_log();
        let _ = self.child.kill().await;
    }

    /// Keeps the log if the emulator exited by itself or a test is failing, else removes it.
    /// Called before the emulator is stopped, so that an exit found here is its own.
    fn settle_log(&mut self) {
        if std::mem::replace(&mut self.log_settled, true) {
            return;
        }
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if exited || std::thread::panicking() {
            eprintln!("emulator log kept: {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.settle_log();
    }
}

fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::Setup(format!("no free port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| Error::Setup(e.to_string()))
}

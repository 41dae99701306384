//! The generation pipeline: worker threads format chunks, one writer emits them in order.
//!
//! Chunk `k` is always made by worker `k % threads` and handed over through that worker's
//! bounded channel, so the writer can take chunks in order without a reorder buffer, and at
//! most `threads × (QUEUE_DEPTH + 2)` chunk buffers ever exist: memory stays flat however many
//! events are asked for. Buffers go back to their worker after writing, so steady state
//! allocates nothing.

use std::io::{self, IsTerminal, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use crate::cdr::{CallEvent, ChunkGen, GenConfig};
use crate::clock::{self, MICROS_PER_SEC};
use crate::format::{API_MAX_BATCH, EventWriter, Format, KINESIS_MAX_RECORDS, kinesis_event};

/// A chunk's buffer and how much of it holds output. Buffers keep their full length between
/// uses so they never need zeroing again.
type Filled = (Vec<u8>, usize);

/// Filled chunks each worker may have waiting for the writer.
const QUEUE_DEPTH: usize = 2;

/// Longest the service lets an event's timestamp run ahead of its clock.
const MAX_FUTURE_MICROS: i64 = 5 * 60 * MICROS_PER_SEC;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub count: u64,
    pub seed: u64,
    pub threads: usize,
    pub format: Format,
    /// Time of the first event, microseconds since the epoch.
    pub start_micros: i64,
    /// Events per line in the `api` format.
    pub batch: usize,
    /// Draw a progress bar on stderr when it is a terminal and the run takes a while.
    pub progress: bool,
}

impl GenerateOptions {
    pub fn new(count: u64, seed: u64, format: Format) -> Self {
        Self {
            count,
            seed,
            threads: default_threads(),
            format,
            start_micros: crate::cdr::DEFAULT_START_MICROS,
            batch: API_MAX_BATCH,
            progress: false,
        }
    }

    pub fn config(&self) -> GenConfig {
        GenConfig { start_micros: self.start_micros, ..GenConfig::new(self.seed, self.count) }
    }

    /// Checks the options that the argument parser cannot.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let invalid = |m: String| Err(GenerateError::InvalidOptions(m));
        if self.count == 0 {
            return invalid("--count must be at least 1".into());
        }
        if self.threads == 0 {
            return invalid("--threads must be at least 1".into());
        }
        if !(1..=API_MAX_BATCH).contains(&self.batch) {
            return invalid(format!("--batch must be between 1 and {API_MAX_BATCH}"));
        }
        if self.format == Format::KinesisEvent && self.count > KINESIS_MAX_RECORDS {
            return invalid(format!(
                "kinesis-event documents hold at most {KINESIS_MAX_RECORDS} records (Lambda's 6 MB \
                 invocation payload limit); asked for {}",
                self.count
            ));
        }
        let last = self.config().last_time_micros();
        if last / MICROS_PER_SEC > 253_402_300_799 || self.start_micros < 0 {
            return invalid("event times must fall between 1970 and 9999".into());
        }
        let future_limited = matches!(self.format, Format::Api | Format::KinesisEvent);
        if future_limited && last > clock::now_micros() + MAX_FUTURE_MICROS {
            return invalid(format!(
                "the last event would be dated {}, more than 5 minutes in the future, which the \
                 service rejects; use an earlier --start",
                String::from_utf8_lossy(&clock::format_secs(last / MICROS_PER_SEC))
            ));
        }
        Ok(())
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    InvalidOptions(String),
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    #[error("encoding the Kinesis event: {0}")]
    Encode(#[source] serde_json::Error),
}

impl GenerateError {
    /// True when the reader went away (e.g. `| head`), which is not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, GenerateError::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// What a finished run produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateStats {
    pub events: u64,
    pub bytes: u64,
}

/// Generates `options.count` events into `out`.
pub fn generate_to(options: &GenerateOptions, out: &mut dyn Write) -> Result<GenerateStats, GenerateError> {
    options.validate()?;
    let config = options.config();
    let Some(format) = options.format.line_format() else {
        return write_kinesis_event(&config, out);
    };
    let chunks = config.chunk_count();
    let threads = (options.threads as u64).clamp(1, chunks.max(1)) as usize;
    let prototype = EventWriter::new(format, options.count, options.batch);
    let mut progress = Progress::new(options.progress && io::stderr().is_terminal(), options.count);

    std::thread::scope(|scope| {
        let mut filled = Vec::with_capacity(threads);
        let mut returns = Vec::with_capacity(threads);
        for worker in 0..threads {
            let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Filled>(QUEUE_DEPTH);
            let (return_tx, return_rx) = mpsc::channel::<Vec<u8>>();
            filled.push(chunk_rx);
            returns.push(return_tx);
            let writer = prototype.clone();
            scope.spawn(move || produce(worker as u64, threads as u64, &config, writer, &chunk_tx, &return_rx));
        }
        let result = drain(out, &prototype, &filled, &returns, chunks, &mut progress);
        // Dropping the receivers makes any worker still sending stop, so the scope can end.
        drop(filled);
        progress.finish();
        result.map(|bytes| GenerateStats { events: options.count, bytes })
    })
}

/// The Kinesis test event as one line of JSON.
fn write_kinesis_event(config: &GenConfig, out: &mut dyn Write) -> Result<GenerateStats, GenerateError> {
    let document = kinesis_event(config).map_err(GenerateError::Encode)?;
    let mut bytes = serde_json::to_vec(&document).map_err(GenerateError::Encode)?;
    bytes.push(b'\n');
    out.write_all(&bytes).map_err(GenerateError::Write)?;
    out.flush().map_err(GenerateError::Write)?;
    Ok(GenerateStats { events: config.count, bytes: bytes.len() as u64 })
}

/// A worker: formats chunks `first, first + step, …` and hands them to the writer.
fn produce(
    first: u64,
    step: u64,
    config: &GenConfig,
    mut writer: EventWriter,
    filled: &SyncSender<Filled>,
    returned: &Receiver<Vec<u8>>,
) {
    let room = writer.max_event_len();
    let chunk_events = crate::cdr::CHUNK_EVENTS.min(config.count) as usize;
    let size = chunk_events * writer.typical_event_len() + room;
    let mut chunk = first;
    while chunk < config.chunk_count() {
        let mut buf = returned.try_recv().unwrap_or_else(|_| vec![0; size]);
        let mut used = 0;
        let mut events = ChunkGen::new(config, chunk);
        let mut index = events.position();
        let mut event = CallEvent::EMPTY;
        while events.next_into(&mut event) {
            if buf.len() - used < room {
                buf.resize(buf.len() * 2, 0);
            }
            used += writer.write_into(index, &event, &mut buf[used..]);
            index += 1;
        }
        if filled.send((buf, used)).is_err() {
            // The writer stopped (write error or closed pipe); nothing left to do.
            return;
        }
        chunk += step;
    }
}

/// The writer: takes chunks in order and writes them out; returns the bytes written.
fn drain(
    out: &mut dyn Write,
    prototype: &EventWriter,
    filled: &[Receiver<Filled>],
    returns: &[mpsc::Sender<Vec<u8>>],
    chunks: u64,
    progress: &mut Progress,
) -> Result<u64, GenerateError> {
    let mut bytes = 0u64;
    let header = prototype.header();
    out.write_all(header).map_err(GenerateError::Write)?;
    bytes += header.len() as u64;
    let workers = filled.len() as u64;
    for chunk in 0..chunks {
        let worker = (chunk % workers) as usize;
        let Ok((buf, used)) = filled[worker].recv() else {
            // A worker only hangs up early if it panicked; the scope will report that.
            break;
        };
        out.write_all(&buf[..used]).map_err(GenerateError::Write)?;
        bytes += used as u64;
        // The worker may already be gone after its last chunk; then the buffer is just freed.
        let _ = returns[worker].send(buf);
        progress.update(((chunk + 1) * crate::cdr::CHUNK_EVENTS).min(progress.total));
    }
    out.flush().map_err(GenerateError::Write)?;
    Ok(bytes)
}

/// A one-line progress bar on stderr, drawn only for runs longer than half a second.
struct Progress {
    enabled: bool,
    total: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool, total: u64) -> Self {
        Self { enabled, total, started: Instant::now(), last_draw: None }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.started);
        let due = match self.last_draw {
            None => elapsed >= Duration::from_millis(500),
            Some(at) => now.duration_since(at) >= Duration::from_millis(200),
        };
        if !due {
            return;
        }
        self.last_draw = Some(now);
        let line = progress_line(done, self.total, elapsed);
        // Progress is best effort: a failing stderr must not stop generation.
        let _ = write!(io::stderr(), "\r{line}");
    }

    fn finish(&mut self) {
        if self.last_draw.is_some() {
            let _ = write!(io::stderr(), "\r{:79}\r", "");
        }
    }
}

fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.saturating_mul(WIDTH) / total.max(1)) as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "[{}{}] {:>3}% {}/{} events, {:.1} M events/s",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done.saturating_mul(100) / total.max(1),
        done,
        total,
        rate / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(options: &GenerateOptions) -> Vec<u8> {
        let mut out = Vec::new();
        let stats = generate_to(options, &mut out);
        assert!(stats.is_ok(), "{stats:?}");
        out
    }

    #[test]
    fn output_is_identical_for_any_thread_count() {
        for format in Format::ALL {
            let mut options = GenerateOptions::new(1000, 77, format);
            options.threads = 1;
            let one = run(&options);
            options.threads = 2;
            let two = run(&options);
            options.threads = 5;
            let five = run(&options);
            assert!(!one.is_empty());
            assert!(one == two && two == five, "{format} differs between thread counts");
        }
    }

    #[test]
    fn multi_chunk_runs_are_identical_for_one_and_three_threads() {
        let mut options = GenerateOptions::new(45_017, 3, Format::Csv);
        options.threads = 1;
        let one = run(&options);
        options.threads = 3;
        assert_eq!(one, run(&options));
        let rows = one.iter().filter(|b| **b == b'\n').count();
        assert_eq!(rows, 45_018);
    }

    #[test]
    fn stats_count_every_byte() {
        for format in Format::ALL {
            let options = GenerateOptions::new(250, 1, format);
            let mut out = Vec::new();
            let stats = generate_to(&options, &mut out).ok();
            assert_eq!(stats, Some(GenerateStats { events: 250, bytes: out.len() as u64 }), "{format}");
        }
    }

    #[test]
    fn too_many_kinesis_records_are_refused() {
        let options = GenerateOptions::new(KINESIS_MAX_RECORDS + 1, 1, Format::KinesisEvent);
        let err = generate_to(&options, &mut Vec::new()).err();
        assert!(matches!(err, Some(GenerateError::InvalidOptions(m)) if m.contains("at most 1000")));
    }

    #[test]
    fn future_start_is_refused_for_api_output_only() {
        let mut options = GenerateOptions::new(10, 1, Format::Api);
        options.start_micros = clock::now_micros() + 3600 * MICROS_PER_SEC;
        assert!(options.validate().is_err());
        options.format = Format::Csv;
        assert!(options.validate().is_ok());
    }

    #[test]
    fn write_errors_stop_the_run_with_an_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let options = GenerateOptions::new(100_000, 1, Format::Csv);
        let err = generate_to(&options, &mut Full).err();
        assert!(matches!(err, Some(GenerateError::Write(e)) if e.kind() == io::ErrorKind::StorageFull));
    }

    #[test]
    fn progress_line_shows_share_and_counts() {
        let line = progress_line(500, 1000, Duration::from_secs(1));
        assert!(line.contains(" 50% 500/1000 events"), "{line}");
        assert_eq!(line.matches('#').count(), 15);
    }
}

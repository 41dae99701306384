//! Generation benchmark: events/s and MB/s for CSV and NDJSON, against a naive baseline.
//!
//! Run with `cargo run --release -p eventline-gen --bin bench-generate`. Options:
//! `--quick` (fewer and smaller runs), `--dir DIR` (where the temporary files go; default the
//! system temp dir), `--split` (only time generation alone vs generation plus formatting).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eventline_gen::cdr::{CallEvent, ChunkGen, GenConfig};
use eventline_gen::format::{EventWriter, Format};
use eventline_gen::generate::{GenerateOptions, generate_to};
use serde::Serialize;

const SEED: u64 = 20_250_101;

/// The naive way: an owned struct per event, serialised straight into an unbuffered file.
#[derive(Serialize)]
struct PlainEvent {
    event_source: String,
    event_ref: String,
    event_type: u8,
    event_date: String,
    calling_number: u64,
    called_number: u64,
    location: String,
    duration_seconds: u32,
    attr_1: Option<String>,
    attr_2: Option<String>,
    attr_3: Option<String>,
    attr_4: Option<String>,
    attr_5: Option<String>,
    attr_6: Option<String>,
    attr_7: Option<String>,
    attr_8: Option<String>,
}

impl PlainEvent {
    fn from(e: &eventline_gen::cdr::CallEvent) -> Self {
        Self {
            event_source: e.source.as_str().to_owned(),
            event_ref: e.event_ref_text(),
            event_type: e.event_type.code(),
            event_date: e.event_date(),
            calling_number: e.calling_number(),
            called_number: e.called_number(),
            location: e.location(),
            duration_seconds: e.duration_seconds,
            attr_1: e.attr(1),
            attr_2: e.attr(2),
            attr_3: e.attr(3),
            attr_4: e.attr(4),
            attr_5: e.attr(5),
            attr_6: e.attr(6),
            attr_7: e.attr(7),
            attr_8: e.attr(8),
        }
    }

    fn csv_line(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            self.event_source,
            self.event_ref,
            self.event_type,
            self.event_date,
            self.calling_number,
            self.called_number,
            self.location,
            self.duration_seconds,
            o(&self.attr_1),
            o(&self.attr_2),
            o(&self.attr_3),
            o(&self.attr_4),
            o(&self.attr_5),
            o(&self.attr_6),
            o(&self.attr_7),
            o(&self.attr_8)
        )
    }
}

fn baseline(format: Format, count: u64, path: &Path) -> io::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut file = File::create(path)?;
    let mut bytes = 0u64;
    for e in GenConfig::new(SEED, count).events() {
        let plain = PlainEvent::from(&e);
        let line = match format {
            Format::Csv => plain.csv_line().into_bytes(),
            _ => {
                let mut json = serde_json::to_vec(&plain).map_err(io::Error::other)?;
                json.push(b'\n');
                json
            }
        };
        file.write_all(&line)?;
        bytes += line.len() as u64;
    }
    Ok((started.elapsed(), bytes))
}

/// Times the real pipeline writing to `path`, opened (and truncated) inside the timed region.
fn fast(format: Format, count: u64, threads: usize, path: &Path) -> io::Result<(Duration, u64)> {
    let mut options = GenerateOptions::new(count, SEED, format);
    options.threads = threads;
    let started = Instant::now();
    let stats = generate_to(&options, &mut File::create(path)?).map_err(io::Error::other)?;
    Ok((started.elapsed(), stats.bytes))
}

/// Prints a result line; a closed stdout ends the run with an error instead of a panic.
fn emit(line: &str) -> io::Result<()> {
    writeln!(io::stdout(), "{line}")
}

fn median(mut runs: Vec<(Duration, u64)>) -> (Duration, u64) {
    runs.sort_by_key(|r| r.0);
    runs[runs.len() / 2]
}

fn rate_line(label: &str, count: u64, (time, bytes): (Duration, u64)) -> String {
    let secs = time.as_secs_f64().max(1e-9);
    format!(
        "{label:<62} {:>7.3} s {:>8.2} M events/s {:>8.1} MB/s",
        secs,
        count as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    )
}

/// Peak resident set size so far, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak RSS counter so the next run's peak can be read (Linux 4.0+).
fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn repeat(runs: usize, mut f: impl FnMut() -> io::Result<(Duration, u64)>) -> io::Result<(Duration, u64)> {
    let mut results = Vec::with_capacity(runs);
    for _ in 0..runs {
        results.push(f()?);
    }
    Ok(median(results))
}

/// Generation alone versus generation plus formatting, single-threaded, no output.
fn split(count: u64) -> io::Result<()> {
    let config = GenConfig::new(SEED, count);
    let started = Instant::now();
    let mut checksum = 0u64;
    for chunk in 0..config.chunk_count() {
        let mut events = ChunkGen::new(&config, chunk);
        let mut e = CallEvent::EMPTY;
        while events.next_into(&mut e) {
            checksum = checksum.wrapping_add(e.event_ref as u64 ^ u64::from(e.duration_seconds));
        }
    }
    let generate_only = started.elapsed();
    for format in [Format::Csv, Format::Ndjson] {
        let mut writer = EventWriter::new(format, count, 100);
        let mut buf = vec![0u8; writer.max_event_len()];
        let started = Instant::now();
        let mut bytes = 0u64;
        for chunk in 0..config.chunk_count() {
            let mut events = ChunkGen::new(&config, chunk);
            let mut index = events.position();
            let mut e = CallEvent::EMPTY;
            while events.next_into(&mut e) {
                bytes += writer.write_into(index, &e, &mut buf) as u64;
                index += 1;
            }
        }
        let label = format!("generate + format {format}, 1 thread");
        emit(&rate_line(&label, count, (started.elapsed(), bytes)))?;
    }
    emit(&rate_line("generate only, 1 thread", count, (generate_only, 0)))?;
    emit(&format!("(checksum {checksum})"))
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map_or_else(std::env::temp_dir, PathBuf::from);
    if args.iter().any(|a| a == "--split") {
        return split(if quick { 1_000_000 } else { 10_000_000 });
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let path = dir.join(format!("eventline-gen-bench-{}.out", std::process::id()));
    let baseline_count: u64 = if quick { 50_000 } else { 200_000 };
    let sizes: &[(u64, usize)] = if quick { &[(1_000_000, 3)] } else { &[(1_000_000, 5), (10_000_000, 3)] };

    emit(&format!("machine: {threads} cores; output file {}", path.display()))?;
    emit(&format!("fast writer: {threads} threads unless stated; median of the runs shown"))?;
    // Each timed file is deleted right after its run: deleting drops its dirty pages, so no
    // background writeback from one run eats into the next. That is also why the /dev/null runs
    // come first and the slow baselines last.
    let remove = |p: &Path| {
        let _ = fs::remove_file(p);
    };
    let null_count = if quick { 2_000_000 } else { 10_000_000 };
    for t in [1, 2] {
        let result = repeat(3, || fast(Format::Csv, null_count, t, Path::new("/dev/null")))?;
        let label = format!("csv {null_count} events to /dev/null, {t} thread(s)");
        emit(&rate_line(&label, null_count, result))?;
    }
    for &(count, runs) in sizes {
        for format in [Format::Csv, Format::Ndjson] {
            let result = repeat(runs, || {
                let timed = fast(format, count, threads, &path);
                remove(&path);
                timed
            })?;
            let label = format!("{format} {count} events to a file ({runs} runs)");
            emit(&rate_line(&label, count, result))?;
        }
    }
    for format in [Format::Csv, Format::Ndjson] {
        let base = repeat(1, || {
            let timed = baseline(format, baseline_count, &path);
            remove(&path);
            timed
        })?;
        let label = format!("baseline {format}: struct + serde/format!, unbuffered, {baseline_count} events");
        emit(&rate_line(&label, baseline_count, base))?;
    }

    for count in [1_000_000u64, 10_000_000] {
        if quick && count > 1_000_000 {
            break;
        }
        let reset = reset_peak_rss();
        fast(Format::Csv, count, threads, &path)?;
        remove(&path);
        match (reset, peak_rss_kib()) {
            (true, Some(kib)) => {
                emit(&format!("peak RSS while writing {count} CSV events: {:.1} MiB", kib as f64 / 1024.0))?
            }
            _ => emit(&format!("peak RSS for {count} events: not available on this system"))?,
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into something like `head` that has stopped reading.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

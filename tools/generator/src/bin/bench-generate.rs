//! Generation benchmark: events/s and MB/s for CSV and NDJSON, beside the plain serde writers
//! (the `csv` crate and `serde_json` behind a `BufWriter`) writing the same bytes.
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
use eventline_gen::format::{EventWriter, Format, LineFormat};
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_gen::plain;

const SEED: u64 = 20_250_101;

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `count` events as `format` (CSV or NDJSON) the plain way.
fn write_plain(format: Format, count: u64, out: impl Write) -> io::Result<()> {
    let events = GenConfig::new(SEED, count).events();
    match format {
        Format::Csv => plain::write_csv(events, out).map(drop).map_err(io::Error::other),
        _ => plain::write_ndjson(events, out).map(drop),
    }
}

/// Times the plain writer for `format` writing to `path`, opened inside the timed region.
fn plain(format: Format, count: u64, path: &Path) -> io::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut out = Counting { inner: File::create(path)?, bytes: 0 };
    write_plain(format, count, &mut out)?;
    Ok((started.elapsed(), out.bytes))
}

/// Fails unless the fast and the plain writer give the same bytes for `format`.
fn check_same_output(format: Format, count: u64) -> io::Result<()> {
    let mut fast = Vec::new();
    generate_to(&GenerateOptions::new(count, SEED, format), &mut fast).map_err(io::Error::other)?;
    let mut plain = Vec::new();
    write_plain(format, count, &mut plain)?;
    if fast != plain {
        return Err(io::Error::other(format!("{format}: the fast and the plain writer differ for {count} events")));
    }
    Ok(())
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

/// Where the timed runs write.
#[derive(Clone, Copy)]
enum Target<'a> {
    DevNull,
    /// A new file, deleted right after each run: deleting drops its dirty pages, so no
    /// background writeback from one run eats into the next.
    File(&'a Path),
}

impl Target<'_> {
    fn path(&self) -> &Path {
        match self {
            Target::DevNull => Path::new("/dev/null"),
            Target::File(path) => path,
        }
    }

    fn done(&self) {
        if let Target::File(path) = self {
            let _ = fs::remove_file(path);
        }
    }
}

/// Medians of the fast writer on `threads` threads, on one thread, and the plain writer, over
/// `runs` rounds in which they take turns in a rotating order, so load from other users of the
/// machine falls on each alike. Prints them and how many times faster the fast writer is.
fn compare(format: Format, count: u64, runs: usize, threads: usize, target: Target<'_>) -> io::Result<()> {
    let mut results: [Vec<(Duration, u64)>; 3] = Default::default();
    for round in 0..runs {
        for turn in 0..3 {
            let writer = (round + turn) % 3;
            let timed = match writer {
                0 => fast(format, count, threads, target.path()),
                1 => fast(format, count, 1, target.path()),
                _ => plain(format, count, target.path()),
            };
            target.done();
            results[writer].push(timed?);
        }
    }
    let [many, one, base] = results.map(median);
    let place = match target {
        Target::DevNull => "/dev/null",
        Target::File(_) => "a file",
    };
    let label = |who: &str| format!("{format} {count} to {place}, {who}, {runs} runs");
    emit(&rate_line(&label(&format!("fast {threads} threads")), count, many))?;
    emit(&rate_line(&label("fast 1 thread"), count, one))?;
    emit(&rate_line(&label("plain serde"), count, base))?;
    let ratio = |fast: (Duration, u64)| base.0.as_secs_f64() / fast.0.as_secs_f64().max(1e-9);
    emit(&format!("  fast is {:.1}x plain on 1 thread, {:.1}x on {threads} threads", ratio(one), ratio(many)))
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
    for format in [LineFormat::Csv, LineFormat::Ndjson] {
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
        let label = format!("generate + format {format:?}, 1 thread");
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
    let sizes: &[(u64, usize)] = if quick { &[(1_000_000, 3)] } else { &[(1_000_000, 5), (10_000_000, 3)] };

    emit(&format!("machine: {threads} cores; output file {}", path.display()))?;
    // First, while no earlier run has left memory with the allocator.
    for count in [1_000_000u64, 10_000_000] {
        if quick && count > 1_000_000 {
            break;
        }
        let reset = reset_peak_rss();
        let written = fast(Format::Csv, count, threads, &path);
        Target::File(&path).done();
        written?;
        match (reset, peak_rss_kib()) {
            (true, Some(kib)) => {
                emit(&format!("peak RSS while writing {count} CSV events: {:.1} MiB", kib as f64 / 1024.0))?
            }
            _ => emit(&format!("peak RSS for {count} events: not available on this system"))?,
        }
    }

    // A comparison is only fair if both sides write the same thing.
    for format in [Format::Csv, Format::Ndjson] {
        check_same_output(format, 25_013)?;
    }
    emit("fast and plain writers checked to write the same bytes; medians of the runs shown")?;
    // Formatting alone first, then with a disk that other users of the machine share.
    let null_count = if quick { 2_000_000 } else { 10_000_000 };
    compare(Format::Csv, null_count, 3, threads, Target::DevNull)?;
    for &(count, runs) in sizes {
        for format in [Format::Csv, Format::Ndjson] {
            compare(format, count, runs, threads, Target::File(&path))?;
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

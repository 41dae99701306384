//! A generated CSV file loads into SQLite with the DDL and command the README documents, and the
//! README's aggregate views over it agree with the pipeline events of the same seed.
//!
//! Needs the `sqlite3` command-line shell (Debian package `sqlite3`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_eventline-gen");
const DDL: &str = include_str!("../sql/sqlite.sql");
const AGGREGATES: &str = include_str!("../sql/sqlite-aggregates.sql");
const PG_DDL: &str = include_str!("../sql/postgres.sql");
const README: &str = include_str!("../README.md");

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eventline-gen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// Runs `sqlite3 DB` with `script` on standard input and returns standard output.
fn sqlite(db: &Path, script: &str) -> String {
    let child =
        Command::new("sqlite3").arg(db).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!("cannot run sqlite3 ({e}); this test needs the SQLite shell: apt-get install -y sqlite3"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let written = stdin.write_all(script.as_bytes());
        assert!(written.is_ok(), "{written:?}");
    }
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(e) => panic!("sqlite3 failed: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "sqlite3: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn generated_csv_loads_into_sqlite_with_the_documented_commands() {
    let dir = scratch_dir("sqlite");
    let csv = dir.join("calls.csv");
    let ndjson = dir.join("calls.ndjson");
    for (format, path) in [("csv", &csv), ("ndjson", &ndjson)] {
        let status = Command::new(BIN)
            .args(["generate", "--count", "5000", "--seed", "77", "--format", format, "--out"])
            .arg(path)
            .status();
        assert!(matches!(status, Ok(s) if s.success()), "{status:?}");
    }
    let db = dir.join("calls.db");
    let import = format!(".import --csv --skip 1 {} calls\n", csv.display());
    sqlite(&db, &format!("{DDL}\n{import}"));

    let summary = sqlite(
        &db,
        "SELECT count(*), count(DISTINCT event_ref), sum(event_type = 1), sum(event_type = 2), \
         sum(event_type = 3), sum(event_type = 5), typeof(calling_number), typeof(duration_seconds) \
         FROM calls;\n",
    );
    assert_eq!(summary.trim(), "5000|5000|750|1000|1000|2250|integer|integer");

    // The first and last rows hold exactly what the NDJSON output says.
    let lines: Vec<String> = std::fs::read_to_string(&ndjson).unwrap_or_default().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5000);
    for (rowid, line) in [(1, &lines[0]), (5000, &lines[4999])] {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let row = sqlite(
            &db,
            &format!(
                "SELECT event_source, event_ref, event_type, event_date, calling_number, \
                 called_number, location, duration_seconds, attr_1, attr_3, attr_8 \
                 FROM calls WHERE rowid = {rowid};\n"
            ),
        );
        let text = |k: &str| match &event[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let expected = [
            "event_source",
            "event_ref",
            "event_type",
            "event_date",
            "calling_number",
            "called_number",
            "location",
            "duration_seconds",
            "attr_1",
            "attr_3",
            "attr_8",
        ]
        .map(text)
        .join("|");
        assert_eq!(row.trim_end_matches('\n'), expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readme_shows_the_tested_ddl_and_commands() {
    for (name, ddl) in [("sqlite.sql", DDL), ("postgres.sql", PG_DDL), ("sqlite-aggregates.sql", AGGREGATES)] {
        assert!(README.contains(ddl.trim()), "README lacks the SQL of sql/{name}");
    }
    for command in
        [".import --csv --skip 1 calls.csv calls", "\\copy calls FROM 'calls.csv' WITH (FORMAT csv, HEADER true)"]
    {
        assert!(README.contains(command), "README lacks {command}");
    }
}

fn generate(args: &[&str], path: &Path) {
    let status = Command::new(BIN).arg("generate").args(args).arg("--out").arg(path).status();
    assert!(matches!(status, Ok(s) if s.success()), "{args:?}: {status:?}");
}

/// What an aggregate of the pipeline holds for one period (and user).
#[derive(Default)]
struct Totals {
    events: u64,
    /// In the order `call_out`, `call_in`, `sms`, `data_session`.
    by_type: [u64; 4],
    duration_seconds: u64,
    bytes_up: u64,
    bytes_down: u64,
}

impl Totals {
    fn add(&mut self, event: &serde_json::Value) {
        let types = ["call_out", "call_in", "sms", "data_session"];
        let Some(slot) = types.iter().position(|t| event["type"] == *t) else {
            panic!("unknown type in {event}");
        };
        let data = &event["data"];
        let number = |key: &str| match data.get(key) {
            None => 0,
            Some(value) => match value.as_u64() {
                Some(n) => n,
                None => panic!("{key} is not a non-negative integer in {event}"),
            },
        };
        self.events += 1;
        self.by_type[slot] += 1;
        self.duration_seconds += number("duration_seconds");
        self.bytes_up += number("bytes_up");
        self.bytes_down += number("bytes_down");
    }

    /// The row as the `sqlite3` shell prints it after the key columns.
    fn row(&self) -> String {
        let [call_out, call_in, sms, data_session] = self.by_type;
        format!(
            "{}|{call_out}|{call_in}|{sms}|{data_session}|{}|{}|{}",
            self.events, self.duration_seconds, self.bytes_up, self.bytes_down
        )
    }
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn documented_aggregates_of_a_csv_match_the_api_events_of_the_same_seed() {
    let dir = scratch_dir("aggregates");
    let (csv, api) = (dir.join("calls.csv"), dir.join("calls.api"));
    // 4000 events, 7 ms apart, from ten seconds before midnight: two days and two months.
    let run = ["--count", "4000", "--seed", "23", "--start", "2025-01-31T23:59:50Z"];
    generate(&[&run[..], &["--format", "csv"]].concat(), &csv);
    generate(&[&run[..], &["--format", "api"]].concat(), &api);
    let db = dir.join("calls.db");
    sqlite(&db, &format!("{DDL}\n.import --csv --skip 1 {} calls\n{AGGREGATES}", csv.display()));

    // The same figures from the events the pipeline receives.
    let mut users: BTreeMap<String, Totals> = BTreeMap::new();
    let mut global: BTreeMap<String, Totals> = BTreeMap::new();
    let mut user_sources: BTreeMap<String, u64> = BTreeMap::new();
    let mut global_sources: BTreeMap<String, u64> = BTreeMap::new();
    let text = std::fs::read_to_string(&api).unwrap_or_default();
    let mut events = 0;
    for line in text.lines() {
        let batch: Vec<serde_json::Value> = serde_json::from_str(line).unwrap_or_default();
        for event in batch {
            let (Some(timestamp), Some(user), Some(source)) =
                (event["timestamp"].as_str(), event["user_id"].as_str(), event["source"].as_str())
            else {
                panic!("event without timestamp, user_id or source: {event}");
            };
            for (period, start) in [("day", &timestamp[..10]), ("month", &timestamp[..7])] {
                users.entry(format!("{period}|{start}|{user}")).or_default().add(&event);
                global.entry(format!("{period}|{start}")).or_default().add(&event);
                *user_sources.entry(format!("{period}|{start}|{user}|{source}")).or_default() += 1;
                *global_sources.entry(format!("{period}|{start}|{source}")).or_default() += 1;
            }
            events += 1;
        }
    }
    assert_eq!(events, 4000);
    // One subscriber of this seed has two events here, so per-user sums are exercised too.
    assert!(users.values().any(|t| t.events > 1));
    let rows = |totals: &BTreeMap<String, Totals>| {
        sorted_lines(&totals.iter().map(|(key, t)| format!("{key}|{}\n", t.row())).collect::<String>())
    };
    let counts = |counts: &BTreeMap<String, u64>| {
        sorted_lines(&counts.iter().map(|(key, n)| format!("{key}|{n}\n")).collect::<String>())
    };

    let global_rows = rows(&global);
    assert_eq!(global_rows.len(), 4, "{global_rows:?}");
    assert!(global.values().all(|t| t.bytes_up > 0 && t.bytes_down > t.bytes_up), "{global_rows:?}");
    assert_eq!(sorted_lines(&sqlite(&db, "SELECT * FROM global_totals;\n")), global_rows);
    assert_eq!(sorted_lines(&sqlite(&db, "SELECT * FROM user_totals;\n")), rows(&users));
    assert_eq!(sorted_lines(&sqlite(&db, "SELECT * FROM global_source_counts;\n")), counts(&global_sources));
    assert_eq!(sorted_lines(&sqlite(&db, "SELECT * FROM user_source_counts;\n")), counts(&user_sources));
    let _ = std::fs::remove_dir_all(&dir);
}

//! A generated CSV file loads into SQLite with the DDL and command the README documents.
//!
//! Needs the `sqlite3` command-line shell (Debian package `sqlite3`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_eventline-gen");
const DDL: &str = include_str!("../sql/sqlite.sql");
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
    for (name, ddl) in [("sqlite.sql", DDL), ("postgres.sql", PG_DDL)] {
        assert!(README.contains(ddl.trim()), "README lacks the DDL of sql/{name}");
    }
    for command in
        [".import --csv --skip 1 calls.csv calls", "\\copy calls FROM 'calls.csv' WITH (FORMAT csv, HEADER true)"]
    {
        assert!(README.contains(command), "README lacks {command}");
    }
}

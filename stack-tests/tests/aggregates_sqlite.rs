//! Day and month aggregates of a generated call-detail set through the pipeline, checked
//! against SQLite: the same seed's CSV loaded with the generator's DDL and grouped by the
//! generator's SQL, an independent computation of what the aggregates must say.

use eventline_stack_tests as common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{call, checkout, stack, until};
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use serde_json::Value;

const SEED: u64 = 31;
const EVENTS: u64 = 1200;

fn generated(format: Format, start_micros: i64) -> Vec<u8> {
    let mut options = GenerateOptions::new(EVENTS, SEED, format);
    options.threads = 1;
    options.start_micros = start_micros;
    let mut out = Vec::new();
    generate_to(&options, &mut out).unwrap();
    out
}

/// `sqlite3` on a fresh database: the generator's table, the CSV, its aggregate views, then `query`.
fn sqlite(csv: &[u8], query: &str) -> Vec<Vec<String>> {
    let dir = std::env::temp_dir().join(format!("eventline-aggregates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv_path = dir.join("calls.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let sql = checkout().join("tools/generator/sql");
    let ddl = std::fs::read_to_string(sql.join("sqlite.sql")).unwrap();
    let views = std::fs::read_to_string(sql.join("sqlite-aggregates.sql")).unwrap();
    let script = format!("{ddl}\n.import --csv --skip 1 {} calls\n{views}\n.mode tabs\n{query}\n", csv_path.display());
    let mut child = Command::new("sqlite3")
        .arg(dir.join("calls.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell (make test installs it)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

/// One period: count, duration, bytes up, bytes down, counts by type.
type Totals = (u64, i64, i64, i64, BTreeMap<String, u64>);

/// An aggregates answer by period.
fn periods(body: &Value) -> BTreeMap<String, Totals> {
    body["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let sum = |name: &str| p["sums"][name].as_i64().unwrap_or(0);
            let types =
                p["by_type"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
            let key = p["period"].as_str().unwrap().to_owned();
            (key, (p["count"].as_u64().unwrap(), sum("duration_seconds"), sum("bytes_up"), sum("bytes_down"), types))
        })
        .collect()
}

/// SQLite rows of a totals view as the same map.
fn expected(rows: &[Vec<String>]) -> BTreeMap<String, Totals> {
    rows.iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<i64>().unwrap();
            let types: BTreeMap<String, u64> = ["call_out", "call_in", "sms", "data_session"]
                .iter()
                .enumerate()
                .filter(|(i, _)| n(2 + i) > 0)
                .map(|(i, t)| ((*t).to_owned(), n(2 + i) as u64))
                .collect();
            (r[0].clone(), (n(1) as u64, n(6), n(7), n(8), types))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_of_a_generated_set_match_sqlite_on_its_csv() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    // Two days back from now, so the set spans at least a day boundary.
    let start = (time::OffsetDateTime::now_utc().unix_timestamp() - 2 * 86_400) * 1_000_000;
    let api = generated(Format::Api, start);
    for line in String::from_utf8(api).unwrap().lines() {
        let (status, body) = call(&stack, "POST", "/events", Some(line.to_owned())).await;
        assert_eq!(status, 202, "{body}");
    }
    until(Duration::from_secs(180), "the set to be processed", || async {
        let (_, t) = call(&stack, "GET", "/metrics", None).await;
        (t["current_queue_depth"] == 0 && t["events_processed"] == EVENTS).then_some(())
    })
    .await;
    common::finished(&running).await;

    let csv = generated(Format::Csv, start);
    // Within one answer's span limit (366 days, 120 months) and well before the set.
    let from = time::OffsetDateTime::now_utc().unix_timestamp() - 300 * 86_400;
    let columns = "period_start, events, call_out, call_in, sms, data_session, duration_seconds, bytes_up, bytes_down";
    for (granularity, period) in [("day", "day"), ("month", "month")] {
        let rows = sqlite(
            &csv,
            &format!("SELECT {columns} FROM global_totals WHERE period = '{period}' ORDER BY period_start;"),
        );
        assert!(!rows.is_empty());
        let uri = format!("/aggregates?granularity={granularity}&from={from}");
        let (status, body) = call(&stack, "GET", &uri, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(periods(&body), expected(&rows), "everyone's {granularity}s");
    }

    // The subscribers with the most events, by day and by month.
    let users =
        sqlite(&csv, "SELECT user_id FROM pipeline_events GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 5;");
    for user in users.iter().map(|r| r[0].clone()) {
        for (granularity, period) in [("day", "day"), ("month", "month")] {
            let query = format!(
                "SELECT {columns} FROM user_totals WHERE period = '{period}' AND user_id = {user} ORDER BY period_start;"
            );
            let rows = sqlite(&csv, &query);
            let uri = format!("/users/{user}/aggregates?granularity={granularity}&from={from}");
            let (_, body) = call(&stack, "GET", &uri, None).await;
            assert_eq!(periods(&body), expected(&rows), "user {user}'s {granularity}s");
        }
    }
    running.stop(Duration::from_secs(60)).await.unwrap();
}

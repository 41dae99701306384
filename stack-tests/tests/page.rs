//! The local dashboard at `/`, rendered by headless Chromium against a live local stack: the
//! figures its script fills in are those of what was sent, and a later render shows the later
//! figures.

use eventline_stack_tests as common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use common::{eventually, http, http_unsigned, stack};
use eventline_local::page::FIGURES_PATH;
use eventline_local::{LocalStack, Running};
use serde_json::{Value, json};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);
/// Virtual time the page runs for before its DOM is read: a few of its 1 s refreshes, so the
/// throughput is computed from successive samples. Virtual time stands still while a fetch
/// is in flight, so a slow stack gets as many refreshes.
const RENDER_BUDGET_MS: u32 = 4_000;
const RENDER_TIMEOUT: Duration = Duration::from_secs(90);
const CHROMIUM: &str = "chromium";

/// Fails the test, rather than skipping it, when the browser is missing.
async fn require_chromium() {
    match Command::new(CHROMIUM).arg("--version").output().await {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!("`{CHROMIUM} --version` failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(error) => panic!(
            "cannot run {CHROMIUM} ({error}): this test renders the dashboard in headless Chromium; `make test` \
             installs it (apt-get install chromium)"
        ),
    }
}

/// The page's DOM after its script has run for [`RENDER_BUDGET_MS`] of virtual time.
async fn render(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("eventline-page-{}", uuid::Uuid::new_v4().simple()));
    let run = Command::new(CHROMIUM)
        .arg("--headless")
        .arg("--disable-gpu")
        .arg("--no-sandbox")
        .arg("--no-first-run")
        .arg("--disable-extensions")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={RENDER_BUDGET_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RENDER_TIMEOUT, run).await;
    let _ = std::fs::remove_dir_all(&profile);
    let output = output.expect("chromium renders the page in time").expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// The text of the element with `id`, as the page's script left it.
fn text<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let tag = dom.find(&marker).unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let start = tag + dom[tag..].find('>').expect("a closed tag") + 1;
    let end = dom[start..].find('<').map_or(dom.len(), |end| start + end);
    &dom[start..end]
}

fn number(dom: &str, id: &str) -> f64 {
    let text = text(dom, id);
    text.parse().unwrap_or_else(|_| panic!("#{id} shows {text:?}, not a figure"))
}

/// The rows of a breakdown table: name and count.
fn breakdown(dom: &str, id: &str) -> BTreeMap<String, u64> {
    let start = dom.find(&format!("<tbody id=\"{id}\">")).unwrap_or_else(|| panic!("no table #{id}"));
    let body = &dom[start..start + dom[start..].find("</tbody>").expect("a closed table")];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            let cell = |open: &str, close: &str| {
                let from = row.find(open).unwrap_or_else(|| panic!("a {open} in {row}")) + open.len();
                row[from..from + row[from..].find(close).expect("a closed cell")].to_owned()
            };
            (cell("<th>", "</th>"), cell("<td>", "</td>").parse().expect("a count"))
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn event(id: &str, source: &str, kind: &str, user: &str) -> Value {
    json!({"id": id, "source": source, "type": kind, "user_id": user})
}

async fn send(running: &Running, events: Vec<Value>) {
    let response = http(running.addr, "POST", "/events", Some(&Value::Array(events))).await;
    assert_eq!(response.status, 202, "{}", response.body);
}

/// Waits until GET /metrics shows these totals and nothing left on the stream.
async fn drained(running: &Running, processed: u64, duplicate: u64, failed: u64) {
    eventually(WAIT, "the events to be processed", || async {
        let metrics = http(running.addr, "GET", "/metrics", None).await.body;
        metrics["events_processed"] == processed
            && metrics["events_duplicate"] == duplicate
            && metrics["events_failed"] == failed
            && metrics["current_queue_depth"] == 0
    })
    .await;
}

/// A record no producer of events would write, straight onto the ingest stream.
async fn put_poison(stack: &LocalStack) {
    aws_sdk_kinesis::Client::new(&stack.sdk)
        .put_record()
        .stream_name(&stack.manifest.outputs["IngestStreamName"])
        .partition_key("poison")
        .data(Blob::new("not json"))
        .send()
        .await
        .unwrap();
}

/// What every render must show, whatever was sent: the page is live, and its figures agree
/// with each other and with the poller.
async fn assert_consistent(dom: &str, running: &Running, latency_bound: Duration) {
    assert!(text(dom, "status").starts_with("live"), "the page is not live: {}", text(dom, "status"));
    // Everything sent was processed before the render, so successive samples differ by nothing.
    assert_eq!(text(dom, "received_rate"), "0.0");
    assert_eq!(text(dom, "processed_rate"), "0.0");
    assert_eq!(number(dom, "queue_depth"), 0.0);

    let stats = running.stats().await;
    assert_eq!(number(dom, "poller_batches"), stats.batches as f64);
    assert_eq!(number(dom, "poller_records"), stats.records as f64);
    assert_eq!(number(dom, "poller_retries"), stats.retries as f64);
    assert_eq!(number(dom, "poller_largest_batch"), stats.largest_batch as f64);
    assert_eq!(number(dom, "on_failure"), stats.sent_to_on_failure as f64);

    // No event took longer than the test waited for it (the histogram's buckets are within
    // 1/16 of a value).
    let (p50, p90, p99) = (number(dom, "latency_p50"), number(dom, "latency_p90"), number(dom, "latency_p99"));
    let bound = latency_bound.as_millis() as f64 * 17.0 / 16.0;
    assert!(0.0 <= p50 && p50 <= p90 && p90 <= p99 && p99 <= bound, "p50 {p50}, p90 {p90}, p99 {p99}, bound {bound}");
    assert!(number(dom, "latency_average") <= bound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_figures_of_what_was_sent() {
    require_chromium().await;
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let addr = running.addr;

    // Local conveniences: open to anyone, and no route of the template, which keeps its signatures.
    assert!(stack.app().route_list().iter().all(|route| !route.ends_with(" /") && !route.contains("/_local")));
    assert_eq!(http_unsigned(addr, "GET", FIGURES_PATH, None).await.status, 200);
    assert_eq!(http_unsigned(addr, "GET", "/metrics", None).await.status, 403);
    assert_eq!(http_unsigned(addr, "POST", "/", None).await.status, 404);

    let reference = json!({
        "user_metadata": {"u-1": {"plan": "pro", "region": "eu"}, "u-2": {"plan": "free", "region": "us"}},
        "ts": eventline_model::format_rfc3339(time::OffsetDateTime::now_utc()),
    });
    assert_eq!(http(addr, "PUT", "/reference/users", Some(&reference)).await.status, 200);

    let started = Instant::now();
    let mut first = vec![];
    first.extend((0..3).map(|i| event(&format!("c-{i}"), "web", "click", "u-1")));
    first.extend((0..2).map(|i| event(&format!("v-{i}"), "app", "view", "u-2")));
    send(&running, first).await;
    drained(&running, 5, 0, 0).await;
    let dom = render(&running.url()).await;

    assert_consistent(&dom, &running, started.elapsed()).await;
    assert_eq!(number(&dom, "events_received"), 5.0);
    assert_eq!(number(&dom, "events_processed"), 5.0);
    assert_eq!(number(&dom, "events_duplicate"), 0.0);
    assert_eq!(number(&dom, "events_conflict"), 0.0);
    assert_eq!(number(&dom, "events_failed"), 0.0);
    assert_eq!(number(&dom, "dead_letters"), 0.0);
    assert_eq!(text(&dom, "window_sec"), "60");
    assert_eq!(number(&dom, "window_unique_users"), 2.0);
    assert_eq!(breakdown(&dom, "by_type"), counts(&[("click", 3), ("view", 2)]));
    assert_eq!(breakdown(&dom, "by_source"), counts(&[("web", 3), ("app", 2)]));
    assert_eq!(breakdown(&dom, "by_plan"), counts(&[("pro", 3), ("free", 2)]));
    assert_eq!(breakdown(&dom, "by_region"), counts(&[("eu", 3), ("us", 2)]));

    // Four more clicks from another source, one event sent again, one identity sent again
    // with other content (a conflict) and one poison record.
    let mut second: Vec<Value> = (3..7).map(|i| event(&format!("c-{i}"), "mobile", "click", "u-1")).collect();
    second.push(event("v-0", "app", "view", "u-2"));
    second.push(event("c-0", "web", "view", "u-1"));
    send(&running, second).await;
    put_poison(&stack).await;
    drained(&running, 9, 1, 1).await;
    let dom = render(&running.url()).await;

    assert_consistent(&dom, &running, started.elapsed()).await;
    assert_eq!(number(&dom, "events_received"), 12.0, "5 + 6 through ingest, and the poison record");
    assert_eq!(number(&dom, "events_processed"), 9.0);
    assert_eq!(number(&dom, "events_duplicate"), 1.0);
    assert_eq!(number(&dom, "events_conflict"), 1.0);
    assert_eq!(number(&dom, "events_failed"), 1.0);
    assert_eq!(number(&dom, "dead_letters"), 1.0);
    assert_eq!(breakdown(&dom, "by_type"), counts(&[("click", 7), ("view", 2)]));
    assert_eq!(breakdown(&dom, "by_source"), counts(&[("web", 3), ("mobile", 4), ("app", 2)]));
    assert_eq!(breakdown(&dom, "by_plan"), counts(&[("pro", 7), ("free", 2)]));
    assert_eq!(breakdown(&dom, "by_region"), counts(&[("eu", 7), ("us", 2)]));

    running.stop(WAIT).await.unwrap();
}

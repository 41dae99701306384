//! Per-user timelines and day/month aggregates through the functions against the emulator:
//! pages with no gaps or repeats, bounds, order; aggregates checked against a computation
//! of the same events made here; duplicates and redelivery change nothing; a backfilled
//! event lands in its own day.

use eventline_stack_tests as common;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{call, http, read_stream, stack, until};
use eventline_local::LocalStack;
use eventline_local::poller::kinesis_event;
use serde_json::{Value, json};

async fn post(stack: &LocalStack, events: &[Value]) {
    for chunk in events.chunks(100) {
        let (status, body) = call(stack, "POST", "/events", Some(Value::Array(chunk.to_vec()).to_string())).await;
        assert_eq!(status, 202, "{body}");
    }
}

async fn drained(stack: &LocalStack, processed: u64, duplicate: u64) {
    until(Duration::from_secs(120), "the stream to drain", || async {
        let (_, t) = call(stack, "GET", "/metrics", None).await;
        let done = t["current_queue_depth"] == 0
            && t["events_processed"].as_u64() == Some(processed)
            && t["events_duplicate"].as_u64() == Some(duplicate);
        done.then_some(())
    })
    .await;
}

/// Calls from 2026-11-28 to 30 for three subscribers, two sources, three types; a
/// backfilled one from 2025-01-07. Six at a time share a timestamp, so each subscriber has
/// pairs whose order falls to source and id.
fn events() -> Vec<Value> {
    let base = 1_795_950_000; // 2026-11-29T10:20:00Z
    let mut events: Vec<Value> = (0..240)
        .map(|i: i64| {
            let kind = ["call_out", "call_in", "data_session"][(i % 3) as usize];
            let mut data = json!({"duration_seconds": 10 + i % 50, "note": "x"});
            if kind == "data_session" {
                data["bytes_up"] = json!(1000 * i);
                data["bytes_down"] = json!(12_345_678_901_i64 + i);
            }
            let source = ["switch-a", "switch-b"][(i % 2) as usize];
            json!({
                "id": format!("t-{i:03}"),
                "source": source,
                "type": kind,
                "user_id": format!("sub-{}", i % 3),
                "timestamp": base + (i - 120) / 6 * 2700,
                "data": data,
            })
        })
        .collect();
    events.push(json!({"id": "backfill", "source": "switch-a", "type": "sms", "user_id": "sub-0", "timestamp": "2025-01-07T10:00:00Z", "data": {"duration_seconds": 0}}));
    events
}

fn day(event: &Value) -> String {
    let ts = &event["timestamp"];
    let t = match ts.as_i64() {
        Some(secs) => time::OffsetDateTime::from_unix_timestamp(secs).unwrap(),
        None => {
            time::OffsetDateTime::parse(ts.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
        }
    };
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// One period as computed here.
#[derive(Default)]
struct Period {
    count: u64,
    by_type: BTreeMap<String, u64>,
    by_source: BTreeMap<String, u64>,
    sums: BTreeMap<String, i64>,
}

/// Count, by type, by source and sums per period, computed from the events sent.
fn expected(events: &[Value], user: Option<&str>, month: bool) -> BTreeMap<String, Value> {
    let mut periods: BTreeMap<String, Period> = BTreeMap::new();
    for e in events.iter().filter(|e| user.is_none_or(|u| e["user_id"] == u)) {
        let label = if month { day(e)[..7].to_owned() } else { day(e) };
        let p = periods.entry(label).or_default();
        p.count += 1;
        *p.by_type.entry(e["type"].as_str().unwrap().to_owned()).or_default() += 1;
        *p.by_source.entry(e["source"].as_str().unwrap().to_owned()).or_default() += 1;
        for measure in ["duration_seconds", "bytes_up", "bytes_down"] {
            if let Some(n) = e["data"][measure].as_i64() {
                *p.sums.entry(measure.to_owned()).or_default() += n;
            }
        }
    }
    periods
        .into_iter()
        .map(|(label, p)| {
            let view = json!({"period": label, "count": p.count, "by_type": p.by_type, "by_source": p.by_source, "sums": p.sums});
            (label, view)
        })
        .collect()
}

async fn aggregates(stack: &LocalStack, path: &str) -> BTreeMap<String, Value> {
    let (status, body) = call(stack, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["periods"].as_array().unwrap().iter().map(|p| (p["period"].as_str().unwrap().to_owned(), p.clone())).collect()
}

/// Days of both years the events fall in: one answer covers at most 366 days.
async fn days(stack: &LocalStack, route: &str) -> BTreeMap<String, Value> {
    let mut days = BTreeMap::new();
    for span in
        ["from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z"]
    {
        days.extend(aggregates(stack, &format!("{route}?granularity=day&{span}")).await);
    }
    days
}

/// Every user's and everyone's days and months, as the API answers them, against the events.
async fn check(stack: &LocalStack, events: &[Value]) {
    let all = "from=2025-01-01T00:00:00Z&to=2026-12-01T00:00:00Z";
    for user in ["sub-0", "sub-1", "sub-2"] {
        let by_day = days(stack, &format!("/users/{user}/aggregates")).await;
        assert_eq!(by_day, expected(events, Some(user), false), "{user} by day");
        let by_month = aggregates(stack, &format!("/users/{user}/aggregates?granularity=month&{all}")).await;
        assert_eq!(by_month, expected(events, Some(user), true), "{user} by month");
    }
    assert_eq!(days(stack, "/aggregates").await, expected(events, None, false));
    assert_eq!(aggregates(stack, &format!("/aggregates?granularity=month&{all}")).await, expected(events, None, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_page_in_order_and_aggregates_count_each_event_once() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let events = events();
    post(&stack, &events).await;
    drained(&stack, events.len() as u64, 0).await;
    common::finished(&running).await;

    // sub-0's 81 events in pages of 30: no gap, no repeat, by time then source then id.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/users/sub-0/events?limit=30&cursor={c}"),
            None => "/users/sub-0/events?limit=30".to_owned(),
        };
        let (status, body) = call(&stack, "GET", &uri, None).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 81, "no repeats");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|e| {
        (
            e["timestamp"].as_str().unwrap().to_owned(),
            e["source"].as_str().unwrap().to_owned(),
            e["id"].as_str().unwrap().to_owned(),
        )
    });
    assert_eq!(seen, sorted, "ordered by event time, then source and id");
    assert_eq!(ids[0], "backfill");

    // from is inclusive, to exclusive.
    let (from, to) = ("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z");
    let (_, body) = call(&stack, "GET", &format!("/users/sub-1/events?from={from}&to={to}&limit=1000"), None).await;
    let inside: Vec<&Value> = events.iter().filter(|e| e["user_id"] == "sub-1" && day(e) == "2026-11-29").collect();
    assert_eq!(body["events"].as_array().unwrap().len(), inside.len());
    assert!(body.get("next_cursor").is_none());
    assert_eq!(call(&stack, "GET", "/users/nobody/events", None).await.1["events"], json!([]));

    check(&stack, &events).await;
    let backfilled =
        aggregates(&stack, "/users/sub-0/aggregates?from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z").await;
    assert_eq!(backfilled.keys().collect::<Vec<_>>(), ["2025-01-07"], "the backfilled event is in its own day");

    // A client sending 50 events again, and a whole batch redelivered: nothing changes.
    post(&stack, &events[..50]).await;
    drained(&stack, events.len() as u64, 50).await;
    common::finished(&running).await;
    let records = read_stream(&stack, &stack.manifest.outputs["IngestStreamName"]).await;
    let batch = kinesis_event(
        &records[..100],
        "shardId-000000000000",
        &stack.manifest.event_sources[0].stream_arn,
        "us-east-1",
    )
    .unwrap();
    assert!(stack.functions.transform.handle(batch).await.batch_item_failures.is_empty());
    check(&stack, &events).await;

    for bad in [
        "/users/sub-0/events?limit=1001",
        "/users/sub-0/events?cursor=bm9wZQ",
        "/aggregates?granularity=year",
        "/users/sub-0/aggregates?from=tomorrow",
    ] {
        assert_eq!(call(&stack, "GET", bad, None).await.0, 400, "{bad}");
    }
    running.stop(Duration::from_secs(60)).await.unwrap();
}

/// Lambda's limit on a function's response, the payload-2.0 JSON with the body as a string.
const LAMBDA_RESPONSE_LIMIT: usize = 6_291_556;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_events_stay_under_lambdas_response_limit() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let addr = running.addr;
    // 40 events of 100,000 quotes: 200 KB each as sent and in the body, 400 KB each once the
    // body is the JSON string Lambda carries. All in one answer: 16 MB.
    let quotes = "\"".repeat(100_000);
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("big-{i:02}"), "source": "web", "user_id": "heavy", "timestamp": 1_795_000_000 + i, "payload": quotes}))
        .collect();
    for event in &events {
        post(&stack, std::slice::from_ref(event)).await;
    }
    drained(&stack, 40, 0).await;
    common::finished(&running).await;

    // Through the HTTP API, signed: the local gateway refuses what Lambda would.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/users/heavy/events?limit=1000".to_owned();
    loop {
        let response = http(addr, "GET", &path, None).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        pages += 1;
        let carried = serde_json::to_string(&response.body.to_string()).unwrap().len();
        assert!(carried < LAMBDA_RESPONSE_LIMIT, "a page of {carried} bytes in Lambda's response");
        let page = response.body["events"].as_array().unwrap();
        assert!(page.iter().all(|e| e["payload"] == quotes.as_str()));
        seen.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match response.body["next_cursor"].as_str() {
            Some(next) => path = format!("/users/heavy/events?limit=1000&cursor={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..40).map(|i| format!("big-{i:02}")).collect();
    assert_eq!(seen, expected, "every event once, in order");
    assert!(pages >= 4, "{pages} pages");

    // One event is one item (at most 400 KB): always under the limit.
    let one = http(addr, "GET", "/events/web/big-00", None).await;
    assert_eq!((one.status, one.body["id"].as_str()), (200, Some("big-00")));
    // Aggregates cover at most 120 months (or 366 days) per answer.
    let months = |to: i64| format!("/aggregates?granularity=month&from=1451606400&to={to}");
    let within = http(addr, "GET", &months(1_767_225_600), None).await;
    assert_eq!(within.status, 200, "{}", within.body);
    let beyond = http(addr, "GET", &months(1_769_904_000), None).await;
    assert_eq!(beyond.status, 400, "{}", beyond.body);
    assert!(beyond.body["detail"].as_str().unwrap().contains("at most 120"), "{}", beyond.body);
    let user_days = http(addr, "GET", "/users/heavy/aggregates?from=1704067200&to=1735776000", None).await;
    assert_eq!(user_days.status, 400, "{}", user_days.body);

    // A cursor used with other bounds than the page it came from is refused.
    let (_, first) = call(&stack, "GET", "/users/heavy/events?limit=2", None).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) =
        call(&stack, "GET", &format!("/users/heavy/events?cursor={cursor}&from=2030-01-01T00:00:00Z"), None).await;
    assert_eq!(status, 400, "{body}");
    running.stop(Duration::from_secs(60)).await.unwrap();
}

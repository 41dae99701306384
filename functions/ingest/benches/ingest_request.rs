//! CPU per request: the ingest handler on one `POST /events` of 100 events, through its
//! ports with the in-memory adapters the unit tests use (a stream that keeps nothing, so
//! that iterations do not pile up records), beside the least any handler must do with the
//! same bytes: `serde_json` parsing them into `Vec<serde_json::Value>`.
//!
//! `cargo bench -p eventline-ingest --bench ingest_request`; `make bench` reads the two medians from
//! `target/criterion/ingest_request/{handler,serde_json_values}/new/estimates.json`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use eventline_ingest::handler::Ingest;
use eventline_ingest::memory::MemoryCounter;
use eventline_ingest::routes::routed;
use eventline_model::Rules;
use eventline_model::memory::MemoryStream;
use eventline_model::retry::Backoff;
use lambda_http::{Body, Request};
use serde_json::{Value, json};

const EVENTS: usize = 100;

/// 100 call-detail events as a switch sends them: a user, an event time, a payload and
/// three numeric measures each.
fn body() -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let kind = ["call_out", "call_in", "sms", "data_session"][i % 4];
            json!({
                "id": format!("c-{i}"), "source": "switch-a", "type": kind,
                "user_id": format!("sub-{}", i % 200), "timestamp": now - 60 + i as i64 / 17, "payload": "cell 4711",
                "data": {"duration_seconds": i % 300, "bytes_up": i * 10, "bytes_down": i * 40},
            })
        })
        .collect();
    Value::Array(events).to_string()
}

/// The request as API Gateway hands it over, route key and all.
fn request(body: &str) -> Request {
    routed(
        http::Request::builder()
            .method("POST")
            .uri("https://api.example.com/events")
            .header("content-type", "application/json")
            .body(Body::Text(body.to_owned()))
            .expect("a valid request"),
    )
}

fn ingest_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let ingest = Ingest {
        sink: MemoryStream::discarding(),
        counter: MemoryCounter::new(),
        rules: Rules::default(),
        user_claim: "sub".to_owned(),
        write_keys: eventline_ingest::write_keys::WriteKeyGate::in_memory(),
        backoff: Backoff::default(),
    };
    let body = body();
    let answer = runtime.block_on(ingest.handle(request(&body)));
    assert_eq!(answer.status(), 202, "every event of the benchmark's request is valid");

    let mut group = c.benchmark_group("ingest_request");
    group.bench_function("handler", |b| {
        b.iter_batched(|| request(&body), |request| runtime.block_on(ingest.handle(request)), BatchSize::SmallInput)
    });
    group.bench_function("serde_json_values", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Value>>(black_box(body.as_bytes())).expect("a JSON array"))
    });
    group.finish();
}

criterion_group!(benches, ingest_request);
criterion_main!(benches);

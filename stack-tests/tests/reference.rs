//! The reference table through the functions against the emulator: replacing it (atomic,
//! newer only, concurrent writers), reading it, and enrichment switching generations
//! between batches, never within one.

use eventline_stack_tests as common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{call, read_stream, stack, until};
use serde_json::{Value, json};

fn table(users: impl IntoIterator<Item = (String, &'static str, &'static str)>, ts: &str) -> String {
    let metadata: serde_json::Map<String, Value> =
        users.into_iter().map(|(u, plan, region)| (u, json!({"plan": plan, "region": region}))).collect();
    json!({"user_metadata": metadata, "ts": ts}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_user_table_is_stored_read_back_and_replaced_only_by_a_newer_one() {
    let stack = stack(&[]).await;
    assert_eq!(call(&stack, "GET", "/reference/users", None).await.0, 404, "no table yet");

    let plans = ["free", "pro", "enterprise"];
    let users = (0..100_000).map(|i| (format!("user-{i:06}"), plans[i % 3], if i % 2 == 0 { "eu" } else { "us" }));
    let started = Instant::now();
    let (status, body) = call(&stack, "PUT", "/reference/users", Some(table(users, "2026-11-30T12:00:00Z"))).await;
    eprintln!("100,000 users stored in {:?}", started.elapsed());
    assert_eq!((status, &body), (200, &json!({"generation": 1, "users": 100_000, "ts": "2026-11-30T12:00:00Z"})));

    let (status, body) = call(&stack, "GET", "/reference/users", None).await;
    assert_eq!((status, &body), (200, &json!({"generation": 1, "users": 100_000, "ts": "2026-11-30T12:00:00Z"})));
    for (user, plan, region) in
        [("user-000000", "free", "eu"), ("user-099998", "enterprise", "eu"), ("user-000007", "pro", "us")]
    {
        let (status, body) = call(&stack, "GET", &format!("/reference/users?user_id={user}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"user_id": user, "plan": plan, "region": region, "generation": 1}));
    }
    assert_eq!(call(&stack, "GET", "/reference/users?user_id=nobody", None).await.0, 404);

    let small = || table([("user-000000".to_owned(), "pro", "apac")], "2026-11-30T12:00:00Z");
    let (status, body) = call(&stack, "PUT", "/reference/users", Some(small())).await;
    assert_eq!((status, body["current_ts"].as_str()), (409, Some("2026-11-30T12:00:00Z")), "an equal ts is stale");
    let older = table([("user-000000".to_owned(), "pro", "apac")], "2026-11-30T11:00:00Z");
    assert_eq!(call(&stack, "PUT", "/reference/users", Some(older)).await.0, 409);

    let newer = table([("user-000000".to_owned(), "pro", "apac")], "2026-11-30T13:00:00Z");
    let (status, body) = call(&stack, "PUT", "/reference/users", Some(newer)).await;
    assert_eq!((status, body["generation"].as_u64(), body["users"].as_u64()), (200, Some(2), Some(1)));
    let (_, body) = call(&stack, "GET", "/reference/users?user_id=user-000000", None).await;
    assert_eq!(body, json!({"user_id": "user-000000", "plan": "pro", "region": "apac", "generation": 2}));
    assert_eq!(
        call(&stack, "GET", "/reference/users?user_id=user-000001", None).await.0,
        404,
        "the whole table was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replacements_cannot_both_win() {
    let stack = stack(&[]).await;
    for round in 0..3 {
        let ts = format!("2026-11-30T12:00:0{round}Z");
        let a = table([("a".to_owned(), "free", "eu")], &ts);
        let b = table([("b".to_owned(), "pro", "us")], &ts);
        let (first, second) = tokio::join!(
            call(&stack, "PUT", "/reference/users", Some(a)),
            call(&stack, "PUT", "/reference/users", Some(b))
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: one table wins, the other is told it is stale");
        let (_, current) = call(&stack, "GET", "/reference/users", None).await;
        assert_eq!(current["generation"], round + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_swap_takes_effect_between_batches_never_within_one() {
    let stack = stack(&[]).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let users = || (0..20).map(|i| (format!("u-{i}"), "free", "eu"));
    assert_eq!(call(&stack, "PUT", "/reference/users", Some(table(users(), "2026-11-30T12:00:00Z"))).await.0, 200);

    let events = |prefix: &str| {
        let items: Vec<Value> = (0..40)
            .map(|i| json!({"id": format!("{prefix}-{i}"), "source": "web", "user_id": format!("u-{}", i % 25)}))
            .collect();
        Value::Array(items).to_string()
    };
    let stored = |id: String| {
        let stack = &stack;
        async move {
            let (status, body) = call(stack, "GET", &format!("/events/web/{id}"), None).await;
            (status == 200).then_some(body)
        }
    };
    assert_eq!(call(&stack, "POST", "/events", Some(events("before"))).await.0, 202);
    until(Duration::from_secs(60), "the first events to be stored", || stored("before-39".into())).await;

    let swapped = (0..20).map(|i| (format!("u-{i}"), "pro", "us"));
    assert_eq!(call(&stack, "PUT", "/reference/users", Some(table(swapped, "2026-11-30T13:00:00Z"))).await.0, 200);
    // Events sent during the swap, then after it.
    assert_eq!(call(&stack, "POST", "/events", Some(events("after"))).await.0, 202);
    until(Duration::from_secs(60), "the later events to be stored", || stored("after-39".into())).await;

    for i in 0..40 {
        let known = i % 25 < 20;
        let before = stored(format!("before-{i}")).await.unwrap();
        assert_eq!(
            (before["generation"].as_u64(), before["plan"].as_str()),
            (Some(1), Some(if known { "free" } else { "unknown" }))
        );
        let after = stored(format!("after-{i}")).await.unwrap();
        assert_eq!(
            (after["generation"].as_u64(), after["region"].as_str()),
            (Some(2), Some(if known { "us" } else { "unknown" }))
        );
    }
    // Every record of one transform batch shares its processing time: one generation each.
    let mut generation_of_batch: HashMap<String, u64> = HashMap::new();
    for record in read_stream(&stack, &stack.manifest.outputs["OutputStreamName"]).await {
        let event: Value = serde_json::from_slice(record.data().as_ref()).unwrap();
        let batch = event["processed_at"].as_str().unwrap().to_owned();
        let generation = event["generation"].as_u64().unwrap();
        assert_eq!(*generation_of_batch.entry(batch).or_insert(generation), generation, "a batch mixed generations");
    }
    running.stop(Duration::from_secs(60)).await.unwrap();
}

//! Producers nobody here wrote, against a live local stack: Segment's Python SDK (gzip on)
//! and Node SDK through `/v1/batch` with a write key in the Authorization header, and
//! headless Chromium sending from a page on another origin with `fetch` and `sendBeacon`.
//! Each call must be stored as the Segment mapping says; a page on an origin the key does
//! not allow stores nothing.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{checkout, http, until};
use eventline_local::Running;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

async fn write_key(addr: SocketAddr, body: Value) -> String {
    let made = http(addr, "POST", "/write-keys", Some(&body)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    made.body["write_key"].as_str().expect("the key is shown once").to_owned()
}

/// The stored event, once the transform has stored it.
async fn stored(addr: SocketAddr, source: &str, id: &str) -> Value {
    until(WAIT, &format!("event {source}/{id} stored"), || async move {
        let response = http(addr, "GET", &format!("/events/{source}/{id}"), None).await;
        (response.status == 200).then_some(response.body)
    })
    .await
}

async fn run(command: &mut Command, what: &str) {
    let output = tokio::time::timeout(WAIT, command.output()).await.expect("in time").expect("runs");
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn serve_stack(parameters: &[(&str, &str)]) -> (eventline_local::LocalStack, Running) {
    let stack = common::stack(parameters).await;
    let running = stack.spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    (stack, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_python_and_node_sdks_send_track_identify_and_page_calls_that_are_stored_mapped() {
    let (stack, running) = serve_stack(&[]).await;
    let addr = running.addr;
    let key = write_key(addr, json!({"source": "sdk"})).await;
    let producers = checkout().join("stack-tests/producers");

    run(
        Command::new(checkout().join(".venv/bin/python"))
            .arg(producers.join("segment_python.py"))
            .arg(running.url())
            .arg(&key),
        "segment-analytics-python",
    )
    .await;
    let track = stored(addr, "sdk", "py-track-1").await;
    assert_eq!(track["type"], "order_completed");
    assert_eq!(track["user_id"], "py-user");
    assert_eq!(track["data"]["revenue"], 12.5);
    assert_eq!(track["data"]["$segment"]["event"], "Order Completed");
    assert_eq!(track["data"]["$segment"]["context"]["library"]["name"], "analytics-python");
    let identify = stored(addr, "sdk", "py-identify-1").await;
    assert_eq!((identify["type"].as_str(), identify["data"]["plan"].as_str()), (Some("identify"), Some("pro")));
    let page = stored(addr, "sdk", "py-page-1").await;
    assert_eq!((page["type"].as_str(), page["data"]["path"].as_str()), (Some("page"), Some("/docs/start")));
    assert_eq!(page["data"]["$segment"]["name"], "Getting started");

    // A call that can never be stored is answered in the batch's refusals and kept, with why.
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{key}:"));
    let batch = json!({"batch": [{"type": "track", "event": "No User", "messageId": "py-refused-1"}]}).to_string();
    let answer =
        common::http_raw(addr, "POST", "/v1/batch", batch, vec![("authorization".into(), format!("Basic {basic}"))])
            .await;
    assert_eq!((answer.status, answer.body["accepted"].as_u64()), (200, Some(0)), "{}", answer.body);
    assert_eq!(answer.body["refused"][0]["messageId"], "py-refused-1");
    let table = &stack.manifest.outputs["EventsTableName"];
    let kept =
        eventline_redrive::refused::list(&aws_sdk_dynamodb::Client::new(&stack.sdk), table, None, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0].source.as_str(), kept[0].message_id.as_deref()), ("sdk", Some("py-refused-1")));
    assert_eq!(kept[0].errors[0]["field"], "userId");
    assert!(kept[0].call.contains("No User"));

    run(
        Command::new("node")
            .arg(producers.join("segment_node.mjs"))
            .arg(running.url())
            .arg(&key)
            .current_dir(&producers),
        "@segment/analytics-node (npm ci --prefix stack-tests/producers installs it)",
    )
    .await;
    let track = stored(addr, "sdk", "node-track-1").await;
    assert_eq!((track["type"].as_str(), track["user_id"].as_str()), (Some("signed_up"), Some("node-user")));
    assert_eq!(track["data"]["referrer"], "ad");
    assert_eq!(track["data"]["$segment"]["context"]["library"]["name"], "@segment/analytics-node");
    let identify = stored(addr, "sdk", "node-identify-1").await;
    assert_eq!(identify["data"]["plan"], "team");
    let page = stored(addr, "sdk", "node-page-1").await;
    assert_eq!((page["type"].as_str(), page["data"]["path"].as_str()), (Some("page"), Some("/pricing")));
    running.stop(Duration::from_secs(10)).await.unwrap();
}

/// A page served on its own port, a different origin from the stack's.
async fn serve_page(listener: TcpListener, html: String) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let html = html.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                html.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(html.as_bytes()).await;
        });
    }
}

/// The page a shop would embed: one call with `fetch` and the key in the header, one with
/// `sendBeacon` and the key in the body.
fn page(api: &str, key: &str, tag: &str) -> String {
    format!(
        r#"<!doctype html><html><body><p id="fetch">pending</p><script>
const api = "{api}", key = "{key}";
fetch(api + "/v1/track", {{method: "POST",
  headers: {{"Authorization": "Basic " + btoa(key + ":"), "Content-Type": "application/json"}},
  body: JSON.stringify({{event: "Added To Cart", userId: "browser-user", messageId: "{tag}-fetch", properties: {{sku: "a-1"}}}})}})
  .then(r => r.json()).then(a => document.getElementById("fetch").textContent = "accepted " + a.accepted)
  .catch(e => document.getElementById("fetch").textContent = "refused " + e);
navigator.sendBeacon(api + "/v1/t", JSON.stringify({{writeKey: key, event: "Viewed", userId: "browser-user", messageId: "{tag}-beacon"}}));
</script></body></html>"#
    )
}

async fn render(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("eventline-producer-{}", uuid::Uuid::new_v4().simple()));
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new("chromium")
            .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--virtual-time-budget=5000")
            .arg("--dump-dom")
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium renders the page in time")
    .expect("chromium runs (make test installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_an_allowed_origin_sends_with_fetch_and_beacon_and_another_origin_is_refused() {
    let allowed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let allowed_origin = format!("http://{}", allowed.local_addr().unwrap());
    let other_origin = format!("http://{}", other.local_addr().unwrap());
    let (_stack, running) = serve_stack(&[("CorsAllowedOrigins", &format!("{allowed_origin},{other_origin}"))]).await;
    let addr = running.addr;
    // The deployment allows both origins; the key narrows them to the shop's.
    let key = write_key(addr, json!({"source": "web", "allowed_origins": [allowed_origin]})).await;
    tokio::spawn(serve_page(allowed, page(&running.url(), &key, "shop")));
    tokio::spawn(serve_page(other, page(&running.url(), &key, "other")));

    let dom = render(&format!("{allowed_origin}/")).await;
    assert!(dom.contains("accepted 1"), "the page read the answer to its fetch: {dom}");
    let fetched = stored(addr, "web", "shop-fetch").await;
    assert_eq!((fetched["type"].as_str(), fetched["data"]["sku"].as_str()), (Some("added_to_cart"), Some("a-1")));
    let beaconed = stored(addr, "web", "shop-beacon").await;
    assert_eq!((beaconed["type"].as_str(), beaconed["user_id"].as_str()), (Some("viewed"), Some("browser-user")));

    let dom = render(&format!("{other_origin}/")).await;
    assert!(!dom.contains("accepted 1"), "the other origin's fetch is refused: {dom}");
    // Both of its calls would be processed by now, as the shop's were.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ["other-fetch", "other-beacon"] {
        assert_eq!(http(addr, "GET", &format!("/events/web/{id}"), None).await.status, 404, "{id} was stored");
    }
    running.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizers_answer_is_cached_by_the_key_for_its_ttl_so_a_revoked_key_stops_within_it() {
    let (stack, running) = serve_stack(&[("WriteKeyCacheSeconds", "2")]).await;
    let addr = running.addr;
    let made = http(addr, "POST", "/write-keys", Some(&json!({"source": "cache"}))).await;
    assert_eq!(made.status, 201);
    let (key, key_id) = (made.body["write_key"].as_str().unwrap(), made.body["key_id"].as_str().unwrap());
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{key}:"));
    let send = |id: &str| {
        let call = json!({"event": "Cached", "userId": "u", "messageId": id}).to_string();
        common::http_raw(addr, "POST", "/v1/track", call, vec![("authorization".into(), format!("Basic {basic}"))])
    };
    let gateway = stack.app();
    let before = gateway.authorizer_cache.invocations();
    for id in ["c-1", "c-2", "c-3"] {
        assert_eq!(send(id).await.status, 200);
    }
    assert_eq!(
        gateway.authorizer_cache.invocations(),
        before + 1,
        "one invocation for the key, then its cached answer"
    );
    let unsigned = common::http_unsigned(addr, "POST", "/v1/track", Some(&json!({"event": "e", "userId": "u"}))).await;
    assert_eq!(unsigned.status, 401, "no identity source: API Gateway's 401, the authorizer not called");
    assert_eq!(gateway.authorizer_cache.invocations(), before + 1);

    assert_eq!(http(addr, "DELETE", &format!("/write-keys/{key_id}"), None).await.status, 204);
    assert_eq!(send("c-4").await.status, 200, "revoked, but the cached answer holds for the TTL");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let refused = send("c-5").await;
    assert_eq!((refused.status, refused.body["message"].as_str()), (403, Some("Forbidden")), "after the TTL");
    assert_eq!(gateway.authorizer_cache.invocations(), before + 2);
    running.stop(Duration::from_secs(10)).await.unwrap();
}

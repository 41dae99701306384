//! Identity squatting, end to end on the local stack: two producers (two signing
//! identities) send the same `(source, id)` with other content. The first copy stays stored
//! unchanged, the other is counted as a conflict and listed by `eventline-conflicts`, and the
//! first producer sending the same content again is a duplicate. In JWT mode a caller sends
//! only its own user's events.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{checkout, http, http_as, http_raw, until};
use eventline_local::auth::OTHER_ACCESS_KEY;
use eventline_local::{LocalStack, Options};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "arn:aws:iam::123456789012:user/testing";
const BOB: &str = "arn:aws:iam::123456789012:user/testing-other";

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

async fn drained(addr: SocketAddr, received: u64) -> Value {
    until(WAIT, "every received event accounted for", || async move {
        let totals = http(addr, "GET", "/metrics", None).await.body;
        (totals["events_received"] == received && totals["current_queue_depth"] == 0).then_some(totals)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_producers_copy_of_a_stored_identity_is_a_conflict_kept_for_inspection() {
    let stack = common::stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;

    let first = json!({"id": "c-1", "source": "web", "payload": "alice's", "data": {"n": 1, "m": 2}});
    assert_eq!(http(addr, "POST", "/events", Some(&first)).await.status, 202);
    drained(addr, 1).await;

    // Another principal sends the same identity with its own content: accepted by ingest,
    // which cannot know, and judged by the transform.
    let squatter = json!({"id": "c-1", "source": "web", "payload": "bob's"});
    assert_eq!(http_as(OTHER_ACCESS_KEY, addr, "POST", "/events", Some(&squatter)).await.status, 202);
    // The first producer retries: the same content, its keys in another order.
    let retry = r#"{"data":{"m":2,"n":1},"payload":"alice's","source":"web","id":"c-1"}"#;
    let retry: Value = serde_json::from_str(retry).unwrap();
    assert_eq!(http(addr, "POST", "/events", Some(&retry)).await.status, 202);
    // The first producer again, with other content.
    let changed = json!({"id": "c-1", "source": "web", "payload": "alice's, edited"});
    assert_eq!(http(addr, "POST", "/events", Some(&changed)).await.status, 202);

    let totals = drained(addr, 4).await;
    assert_eq!(totals["events_processed"], 1, "{totals}");
    assert_eq!(totals["events_duplicate"], 1, "{totals}");
    assert_eq!(totals["events_conflict"], 2, "{totals}");
    assert_eq!(totals["events_failed"], 0, "{totals}");

    let stored = http(addr, "GET", "/events/web/c-1", None).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.body["payload"], "ALICE'S", "the first copy is never overwritten");
    assert_eq!(stored.body["data"], json!({"n": 1, "m": 2}));
    assert!(stored.body.get("sender").is_none(), "the sender is kept with the item, not answered");

    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let table = &stack.manifest.outputs["EventsTableName"];
    let conflicts = eventline_redrive::conflicts::list(&dynamodb, table, None, 10).await.unwrap();
    assert_eq!(conflicts.len(), 2, "{conflicts:#?}");
    let mut senders: Vec<&str> = conflicts.iter().map(|c| c.sender.as_deref().unwrap()).collect();
    senders.sort();
    assert_eq!(senders, [ALICE, BOB]);
    for conflict in &conflicts {
        assert_eq!((conflict.source.as_str(), conflict.id.as_str()), ("web", "c-1"));
        assert_eq!(conflict.stored_sender.as_deref(), Some(ALICE));
        assert_ne!(
            conflict.digest,
            conflict.stored_digest.clone().filter(|_| conflict.sender.as_deref() == Some(ALICE))
        );
        assert!(!conflict.sequence_number.is_empty());
        let copy: Value = serde_json::from_str(conflict.copy.as_deref().unwrap()).unwrap();
        assert!(copy["payload"] == "BOB'S" || copy["payload"] == "ALICE'S, EDITED", "{copy}");
    }
    let bob = conflicts.iter().find(|c| c.sender.as_deref() == Some(BOB)).unwrap();
    assert!(bob.to_string().contains("from arn:aws:iam::123456789012:user/testing-other"), "{bob}");

    let published = common::read_stream(&stack, &stack.manifest.outputs["OutputStreamName"]).await;
    assert_eq!(published.len(), 1, "conflicts and duplicates are not published");
    running.stop(WAIT).await.unwrap();
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

const ISSUER: &str = "https://issuer.eventline.test";

async fn jwt_stack() -> LocalStack {
    let mut options = Options::for_checkout(&checkout());
    options.stack_name = format!("jwtuser-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    options.parameters = [("IngestAuthorization", "JWT"), ("JwtIssuer", ISSUER), ("JwtAudience", "app")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    options.jwks = Some(fixture("jwks.json"));
    LocalStack::start(&options).await.unwrap()
}

fn bearer(subject: &str) -> Vec<(String, String)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": ISSUER, "aud": "app", "sub": subject, "iat": now - 5, "exp": now + 600});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("local-1".into());
    let pem = std::fs::read(fixture("issuer-private.pem")).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap();
    vec![("authorization".to_owned(), format!("Bearer {token}"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_caller_sends_only_its_own_users_events_and_is_its_own_sender() {
    let stack = jwt_stack().await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let post = |body: Value, subject: &'static str| async move {
        http_raw(addr, "POST", "/events", body.to_string(), bearer(subject)).await
    };

    let other_user = post(json!({"id": "j-1", "source": "app", "user_id": "device-8"}), "device-7").await;
    assert_eq!(other_user.status, 400, "{}", other_user.body);
    assert_eq!(other_user.body["errors"][0]["field"], "user_id");
    assert!(other_user.body["errors"][0]["message"].as_str().unwrap().contains("sub claim"), "{}", other_user.body);
    let batch = json!([{"id": "j-2", "source": "app"}, {"id": "j-3", "source": "app", "user_id": "device-8"}]);
    let mixed = post(batch, "device-7").await;
    assert_eq!(mixed.status, 207, "{}", mixed.body);
    assert_eq!(mixed.body["results"][1]["status"], "rejected");
    // Another subject sends j-2 with the same content: a conflict, not a duplicate.
    assert_eq!(post(json!({"id": "j-2", "source": "app"}), "device-9").await.status, 202);

    running.stop(WAIT).await.unwrap();
    let (status, stored) = common::call(&stack, "GET", "/events/app/j-2", None).await;
    assert_eq!(status, 200);
    assert_eq!(stored["user_id"], "device-7", "a missing user_id is the caller's");
    let (_, totals) = common::call(&stack, "GET", "/metrics", None).await;
    assert_eq!(
        (totals["events_processed"].as_u64(), totals["events_conflict"].as_u64()),
        (Some(1), Some(1)),
        "{totals}"
    );
}

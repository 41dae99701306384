//! Route authorization of the local gateway, as the template sets it: every route but the
//! health checks takes only SigV4-signed requests (refused unsigned or wrongly signed, served
//! when signed with `testing`/`testing` by the SDK's signer or by `curl --aws-sigv4`), and
//! `IngestAuthorization` opens the ingest routes to anyone (`NONE`) or to bearer tokens of one
//! issuer and audience (`JWT`), while read and administrator routes stay IAM.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{SECRET_ACCESS_KEY, checkout, http, http_raw, http_unsigned, sigv4_headers, stack};
use eventline_local::{LocalStack, Options};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const REFERENCE_USERS: &str = "/reference/users";
const BODY: &str = r#"{"user_metadata":{"u-1":{"plan":"pro","region":"eu"}},"ts":"2026-11-30T12:00:00Z"}"#;
const ISSUER: &str = "https://issuer.eventline.test";
const AUDIENCE: &str = "collector,mobile-app";

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

/// A path that matches `route`'s template, with a plausible value for each parameter, and a
/// body its handler can read.
fn request_for(route: &str) -> (String, String, Option<Value>) {
    let (method, template) = route.split_once(' ').unwrap();
    let path = template.replace("{source}", "web").replace("{id}", "e-1").replace("{user_id}", "u-1");
    let body = match (method, template) {
        ("POST", "/events") => Some(json!({"id": "e-1", "source": "web", "payload": "hi"})),
        ("POST", "/events/batch") => Some(json!({"events": [{"id": "e-2", "source": "web", "payload": "hi"}]})),
        ("PUT", REFERENCE_USERS) => Some(serde_json::from_str(BODY).unwrap()),
        _ => None,
    };
    (method.to_owned(), path, body)
}

fn is_health(route: &str) -> bool {
    route.ends_with(" /health") || route.ends_with(" /healthz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_route_but_health_takes_only_signed_requests() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let routes = stack.app().route_list();
    assert_eq!(routes.len(), 11, "{routes:?}");

    for route in &routes {
        let (method, path, body) = request_for(route);
        let unsigned = http_unsigned(addr, &method, &path, body.as_ref()).await;
        let signed = http(addr, &method, &path, body.as_ref()).await;
        if is_health(route) {
            assert_eq!((unsigned.status, signed.status), (200, 200), "{route} is open");
        } else {
            assert_eq!(unsigned.status, 403, "{route} unsigned: {}", unsigned.body);
            assert_eq!(unsigned.body["message"], "Forbidden");
            assert!(!matches!(signed.status, 401 | 403), "{route} signed got {}: {}", signed.status, signed.body);
        }
    }

    // A signature covers the body, and only the right secret makes it.
    let headers = sigv4_headers(addr, "PUT", REFERENCE_USERS, BODY, SECRET_ACCESS_KEY);
    let tampered = http_raw(addr, "PUT", REFERENCE_USERS, r#"{"users":[{"id":"x"}]}"#.into(), headers).await;
    assert_eq!(tampered.status, 403);
    assert!(tampered.body["message"].as_str().unwrap().starts_with("The request signature we calculated"));
    let wrong_secret = sigv4_headers(addr, "PUT", REFERENCE_USERS, BODY, "not-the-secret");
    let refused = http_raw(addr, "PUT", REFERENCE_USERS, BODY.into(), wrong_secret).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body["message"].as_str().unwrap().starts_with("The request signature we calculated"));

    running.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_collector_opens_the_ingest_routes_only() {
    let stack = stack(&[("IngestAuthorization", "NONE")]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;

    for route in stack.app().route_list() {
        let (method, path, body) = request_for(&route);
        let unsigned = http_unsigned(addr, &method, &path, body.as_ref()).await;
        let open = is_health(&route) || route == "POST /events" || route == "POST /events/batch";
        if open {
            assert!(unsigned.status < 300, "{route} is open: {} {}", unsigned.status, unsigned.body);
        } else {
            assert_eq!(unsigned.status, 403, "{route} stays IAM: {}", unsigned.body);
        }
    }
    running.stop(Duration::from_secs(30)).await.unwrap();
}

async fn jwt_stack(jwks: Option<PathBuf>) -> Result<LocalStack, eventline_local::Error> {
    let mut options = Options::for_checkout(&checkout());
    options.stack_name = format!("jwt-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    options.parameters = [("IngestAuthorization", "JWT"), ("JwtIssuer", ISSUER), ("JwtAudience", AUDIENCE)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    options.jwks = jwks;
    LocalStack::start(&options).await
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token signed with `key` (a PEM file in the fixtures) under kid `local-1`.
fn token(key: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("local-1".into());
    let pem = std::fs::read(fixture(key)).unwrap();
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn good_claims() -> Value {
    json!({"iss": ISSUER, "aud": "mobile-app", "sub": "device-7", "iat": now() - 5, "exp": now() + 600})
}

async fn post_with_token(addr: SocketAddr, id: &str, authorization: Option<String>) -> u16 {
    let body = json!({"id": id, "source": "app", "payload": "hi"}).to_string();
    let headers = authorization.map(|value| vec![("authorization".to_owned(), value)]).unwrap_or_default();
    http_raw(addr, "POST", "/events", body, headers).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_ingest_routes_take_only_current_tokens_of_the_issuer_for_the_audience() {
    let stack = jwt_stack(Some(fixture("jwks.json"))).await.unwrap();
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let bearer = |claims: Value| Some(format!("Bearer {}", token("issuer-private.pem", claims)));

    assert_eq!(post_with_token(addr, "j-1", bearer(good_claims())).await, 202);
    // Without the `Bearer ` prefix, as API Gateway also takes it.
    assert_eq!(post_with_token(addr, "j-2", Some(token("issuer-private.pem", good_claims()))).await, 202);
    // `client_id` stands in for a missing `aud` (Cognito access tokens).
    let mut client = good_claims();
    client.as_object_mut().unwrap().remove("aud");
    client["client_id"] = json!("collector");
    assert_eq!(post_with_token(addr, "j-3", bearer(client)).await, 202);

    let refused = [
        ("no token", None),
        ("another key under the same kid", Some(format!("Bearer {}", token("stranger-private.pem", good_claims())))),
        ("another issuer", bearer(json!({"iss": "https://elsewhere.test", "aud": "mobile-app", "exp": now() + 600}))),
        ("another audience", bearer(json!({"iss": ISSUER, "aud": "someone-else", "exp": now() + 600}))),
        ("expired", bearer(json!({"iss": ISSUER, "aud": "mobile-app", "exp": now() - 60}))),
        ("not yet valid", bearer(json!({"iss": ISSUER, "aud": "mobile-app", "nbf": now() + 300, "exp": now() + 600}))),
        ("no expiry", bearer(json!({"iss": ISSUER, "aud": "mobile-app"}))),
        ("not a JWT", Some("Bearer abc.def".to_owned())),
    ];
    for (case, authorization) in refused {
        assert_eq!(post_with_token(addr, "j-x", authorization).await, 401, "{case}");
    }
    let reply = http_raw(addr, "POST", "/events/batch", "{}".into(), Vec::new()).await;
    assert_eq!((reply.status, reply.body["message"].as_str()), (401, Some("Unauthorized")));
    // A SigV4 signature is not a token, and the other routes stay IAM.
    let body = json!({"id": "j-4", "source": "app", "payload": "hi"});
    assert_eq!(http(addr, "POST", "/events", Some(&body)).await.status, 401);
    assert_eq!(http_unsigned(addr, "GET", "/metrics", None).await.status, 403);
    assert_eq!(http(addr, "GET", "/metrics", None).await.status, 200);
    let token_on_metrics =
        vec![("authorization".to_owned(), format!("Bearer {}", token("issuer-private.pem", good_claims())))];
    assert_eq!(http_raw(addr, "GET", "/metrics", String::new(), token_on_metrics).await.status, 403);

    running.stop(Duration::from_secs(30)).await.unwrap();
    let stored = http::Request::builder().uri("/events/app/j-3").body(lambda_http::Body::Empty).unwrap();
    let stored = lambda_http::RequestExt::with_path_parameters(
        stored,
        std::collections::HashMap::from([("source".to_owned(), "app".to_owned()), ("id".to_owned(), "j-3".to_owned())]),
    );
    assert_eq!(stack.functions.metrics.handle(stored).await.status(), 200, "an accepted event was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_stack_without_the_issuers_keys_does_not_start() {
    let Err(error) = jwt_stack(None).await else { panic!("a JWT stack started without keys") };
    assert!(error.to_string().contains("--jwks"), "{error}");
}

/// Whether this curl signs requests itself (`--aws-sigv4` came with 7.75).
async fn curl_signs() -> bool {
    let Ok(output) = tokio::process::Command::new("curl").arg("--version").output().await else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u32> =
        version.split_whitespace().nth(1).unwrap_or_default().split('.').map_while(|part| part.parse().ok()).collect();
    matches!(numbers[..], [major, minor, ..] if (major, minor) >= (7, 75))
}

async fn curl_status(url: &str, user: &str) -> u16 {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--noproxy", "*", "--output", "/dev/null", "--write-out", "%{http_code}"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:execute-api", "--user", user])
        .args(["-X", "PUT", "-H", "content-type: application/json", "--data", "{}"])
        .arg(format!("{url}{REFERENCE_USERS}"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_aws_sigv4_is_accepted() {
    if !curl_signs().await {
        println!("skipped: this curl has no --aws-sigv4 (curl 7.75 or later has it)");
        return;
    }
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let url = running.url();

    let status = curl_status(&url, "testing:testing").await;
    assert_ne!(status, 403, "curl --aws-sigv4 with testing:testing was refused");
    assert_eq!(curl_status(&url, "testing:not-the-secret").await, 403);

    running.stop(Duration::from_secs(30)).await.unwrap();
}

//! Route authorization of the local gateway, as the template sets it: every route but the
//! health checks takes only SigV4-signed requests (refused unsigned or wrongly signed, served
//! when signed with `testing`/`testing` by the SDK's signer or by `curl --aws-sigv4`), and
//! `IngestAuthorization` opens the ingest routes to anyone (`NONE`) or to bearer tokens of one
//! issuer and audience (`JWT`), while read and administrator routes stay IAM. Signatures made
//! by botocore, awscurl and the Rust aws-sigv4 crate are held to API Gateway's readings: the
//! signed host is the one served, the payload is the body's hash, and a raw `+` in the query
//! is a space.

use eventline_stack_tests as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use common::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, checkout, http, http_raw, http_unsigned, sigv4_headers, stack};
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
        ("POST", "/write-keys") => Some(json!({"source": "web"})),
        ("POST", path) if path.starts_with("/v1/") => Some(json!({"type": "track", "event": "e", "userId": "u"})),
        _ => None,
    };
    (method.to_owned(), path, body)
}

fn is_health(route: &str) -> bool {
    route.ends_with(" /health") || route.ends_with(" /healthz")
}

/// Segment's routes take write keys, whatever `IngestAuthorization` says: in the header
/// through the write-key authorizer (no header is API Gateway's 401, a signature is not a
/// key and the authorizer denies it), or in the body, checked by ingest (no key is its 401).
async fn assert_write_key_route(addr: std::net::SocketAddr, route: &str) {
    let (method, path, body) = request_for(route);
    let unsigned = http_unsigned(addr, &method, &path, body.as_ref()).await;
    let signed = http(addr, &method, &path, body.as_ref()).await;
    let short = path.len() == "/v1/t".len();
    if short {
        assert_eq!((unsigned.status, signed.status), (401, 401), "{route}: {} {}", unsigned.body, signed.body);
        assert!(unsigned.body["detail"].as_str().unwrap().contains("writeKey"), "{route}: {}", unsigned.body);
    } else {
        assert_eq!(unsigned.status, 401, "{route} unsigned: {}", unsigned.body);
        assert_eq!(unsigned.body["message"], "Unauthorized");
        assert_eq!(signed.status, 403, "{route} signed: {}", signed.body);
        assert_eq!(signed.body["message"], "Forbidden");
    }
}

fn is_write_key_route(route: &str) -> bool {
    route.starts_with("POST /v1/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_route_but_health_takes_only_signed_requests() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let routes = stack.app().route_list();
    assert_eq!(routes.len(), 28, "{routes:?}");

    for route in &routes {
        if is_write_key_route(route) {
            assert_write_key_route(addr, route).await;
            continue;
        }
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
        if is_write_key_route(&route) {
            assert_write_key_route(addr, &route).await;
            continue;
        }
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
    let stored = eventline_query::routes::routed(stored);
    assert_eq!(stack.functions.query.handle(stored).await.status(), 200, "an accepted event was stored");
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

/// `(status, body)` of `method url` signed and sent by a Python signer (`botocore` or
/// `awscurl`) from the venv, optionally for another `Host`.
fn python_signed(signer: &str, method: &str, url: &str, host: Option<&str>) -> (u16, Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/signers/sign_and_send.py");
    let mut command = std::process::Command::new(checkout().join(".venv/bin/python"));
    command.arg(script).args([signer, method, url]);
    if let Some(host) = host {
        command.args(["--host", host]);
    }
    let output = command.output().expect("run the venv's python (`make test` installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{signer} failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    let (status, body) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    (status.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

const DAY_FROM: &str = "granularity=day&from=2026-11-30T23:30:00";
const DAY_TO: &str = "to=2026-12-01T00:30:00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plus_in_the_query_is_read_and_signed_as_api_gateway_reads_it_a_space() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let url = running.url();
    // An offset sent as `%2B01:00` reaches the function as `+01:00`: 23:30+01:00 is still the
    // 30th in UTC. Sent as a raw `+`, it is a space, and the function refuses the time.
    let encoded = format!("/aggregates?{DAY_FROM}%2B01:00&{DAY_TO}%2B01:00");
    let raw = format!("/aggregates?{DAY_FROM}+01:00&{DAY_TO}+01:00");

    // The Rust SDK's signer reads `+` as API Gateway does.
    let reply = http(addr, "GET", &encoded, None).await;
    assert_eq!((reply.status, reply.body["from"].as_str()), (200, Some("2026-11-30")), "{}", reply.body);
    let reply = http(addr, "GET", &raw, None).await;
    assert_eq!(reply.status, 400, "signed, then refused by the function for a space: {}", reply.body);
    assert!(reply.body["detail"].as_str().unwrap().starts_with("from must be"), "{}", reply.body);
    for query in ["/users/u-1/events?cursor=a+b", "/users/u-1/events?cursor=a%20b", "/users/u-1/events?cursor=a%2Bb"] {
        assert_eq!(http(addr, "GET", query, None).await.status, 400, "{query}: signed, a cursor it never gave");
    }

    // botocore signs the query as written: right when it is written canonically (every
    // reserved byte encoded, a space as %20, a plus as %2B), refused with a raw `+`.
    let canonical =
        format!("{url}/aggregates?{}%2B01%3A00&{}%2B01%3A00", DAY_FROM.replace(':', "%3A"), DAY_TO.replace(':', "%3A"));
    let (status, body) = python_signed("botocore", "GET", &canonical, None);
    assert_eq!((status, body["from"].as_str()), (200, Some("2026-11-30")), "{body}");
    assert_eq!(python_signed("botocore", "GET", &format!("{url}/users/u-1/events?cursor=a%20b"), None).0, 400);
    assert_eq!(python_signed("botocore", "GET", &format!("{url}/users/u-1/events?cursor=a%2Bb"), None).0, 400);
    let (status, body) = python_signed("botocore", "GET", &format!("{url}/users/u-1/events?cursor=a+b"), None);
    assert_eq!(status, 403, "botocore signs a raw + as written: {body}");
    assert!(body["message"].as_str().unwrap().starts_with("The request signature we calculated"), "{body}");

    // awscurl encodes the query once more: unencoded values are right, a space among them,
    // but it signs a raw `+` as a plus (and `%2B` as `%252B`), so no plus gets through.
    assert_eq!(python_signed("awscurl", "GET", &format!("{url}/users/u-1/events?cursor=a b"), None).0, 400);
    let (status, body) = python_signed("awscurl", "GET", &format!("{url}{raw}"), None);
    assert_eq!(status, 403, "awscurl signs + as %2B: {body}");
    assert_eq!(python_signed("awscurl", "GET", &format!("{url}{encoded}"), None).0, 403);

    running.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_for_another_host_or_over_an_unsigned_payload_is_refused() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;
    let url = running.url();
    let port = addr.port();

    // Another name of the address served is the same host.
    assert_eq!(python_signed("botocore", "GET", &format!("{url}/metrics"), Some(&format!("localhost:{port}"))).0, 200);
    for host in [
        format!("example.com:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "abc.execute-api.us-east-1.amazonaws.com".into(),
    ] {
        let (status, body) = python_signed("botocore", "GET", &format!("{url}/metrics"), Some(&host));
        assert_eq!(status, 403, "signed for {host}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with("The request signature we calculated"), "{body}");
    }

    // UNSIGNED-PAYLOAD is S3's; API Gateway signs the body's hash, so this does not match.
    let identity = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = addr.to_string();
    let headers =
        [("host", host.as_str()), ("content-type", "application/json"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let uri = format!("{url}{REFERENCE_USERS}");
    let request =
        SignableRequest::new("PUT", uri.as_str(), headers.into_iter(), SignableBody::UnsignedPayload).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut signed: Vec<(String, String)> =
        instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
    signed.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
    let reply = http_raw(addr, "PUT", REFERENCE_USERS, BODY.into(), signed).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().starts_with("The request signature we calculated"));
    // The same body with its hash signed is served.
    assert_eq!(
        http_raw(
            addr,
            "PUT",
            REFERENCE_USERS,
            BODY.into(),
            sigv4_headers(addr, "PUT", REFERENCE_USERS, BODY, SECRET_ACCESS_KEY)
        )
        .await
        .status,
        200
    );

    running.stop(Duration::from_secs(30)).await.unwrap();
}

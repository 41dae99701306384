//! `AWS_IAM` routes of the local gateway: refused unsigned or wrongly signed, served when
//! signed with `testing`/`testing` by the SDK's signer or by `curl --aws-sigv4`; routes
//! without authorization stay open.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use common::{http, stack};
use serde_json::Value;

const REFERENCE_USERS: &str = "/reference/users";
const BODY: &str = r#"{"user_metadata":{"u-1":{"plan":"pro","region":"eu"}},"ts":"2026-11-30T12:00:00Z"}"#;

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// The headers a client adds to sign `method path` with `body` for execute-api in us-east-1.
fn signature_headers(addr: SocketAddr, method: &str, path: &str, body: &str, secret: &str) -> Vec<(String, String)> {
    let identity = Credentials::new("testing", secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = addr.to_string();
    let headers = [("host", host.as_str()), ("content-type", "application/json")];
    let uri = format!("http://{addr}{path}");
    let request =
        SignableRequest::new(method, uri.as_str(), headers.into_iter(), SignableBody::Bytes(body.as_bytes())).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
}

struct Reply {
    status: u16,
    body: Value,
}

/// One HTTP/1.1 request with `extra` headers over a fresh connection.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str, extra: Vec<(String, String)>) -> Reply {
    let request = {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        format!("{head}\r\n{body}")
    };
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply { status, body: serde_json::from_str(body).unwrap_or(Value::Null) }
    })
    .await
    .unwrap()
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
async fn iam_routes_take_only_requests_signed_with_a_known_key() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;

    let unsigned = send(addr, "PUT", REFERENCE_USERS, BODY, Vec::new()).await;
    assert_eq!(unsigned.status, 403);
    assert_eq!(unsigned.body["message"], "Forbidden");

    let headers = signature_headers(addr, "PUT", REFERENCE_USERS, BODY, "testing");
    let signed = send(addr, "PUT", REFERENCE_USERS, BODY, headers.clone()).await;
    assert_eq!(signed.status, 200, "a request signed with testing/testing: {}", signed.body);
    assert_eq!(signed.body["generation"], 1);

    let tampered = send(addr, "PUT", REFERENCE_USERS, r#"{"users":[{"id":"x"}]}"#, headers).await;
    assert_eq!(tampered.status, 403);
    assert!(tampered.body["message"].as_str().unwrap().starts_with("The request signature we calculated"));

    let wrong_secret = signature_headers(addr, "PUT", REFERENCE_USERS, BODY, "not-the-secret");
    let refused = send(addr, "PUT", REFERENCE_USERS, BODY, wrong_secret).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body["message"].as_str().unwrap().starts_with("The request signature we calculated"));

    // Routes without an authorizer in the template stay open, including the same path's GET.
    assert_eq!(http(addr, "GET", "/health", None).await.status, 200);
    assert_ne!(send(addr, "GET", REFERENCE_USERS, "", Vec::new()).await.status, 403);

    running.stop(Duration::from_secs(30)).await.unwrap();
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

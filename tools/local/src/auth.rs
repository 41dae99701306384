//! `AWS_IAM` authorization of routes, checked as API Gateway checks it: the request is
//! signed again with the caller's secret, over exactly the headers the caller signed, and
//! the two SigV4 signatures are compared.
//!
//! Three readings follow what API Gateway (`execute-api`) does rather than what some signers do:
//! - The signed `Host` must name the address served, as API Gateway only ever sees its own.
//! - The payload is always the body's SHA-256. `x-amz-content-sha256: UNSIGNED-PAYLOAD` is
//!   documented for S3 (and operations modelled with Smithy's `unsignedPayload` trait), never
//!   for `execute-api`, so a signature over it does not match, as on API Gateway.
//! - In the query, a raw `+` is a space and `%2B` a plus. API Gateway's own "canonical
//!   string should have been" answers show `?q=a+b` canonicalised as `q=a%20b`, the AWS SDK
//!   signers (aws-sigv4 in Rust, after smithy-rs issue 4227 was looked into) read it so, and
//!   API Gateway hands the function a space in `queryStringParameters` too. Signers that take
//!   a raw `+` as a plus (awscurl) or sign the query as written (botocore's `SigV4Auth` on a
//!   URL) are refused here as there; send a plus as `%2B` and a space as `%20`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use subtle::ConstantTimeEq;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// What API Gateway signs for: the service name in every credential scope.
pub const SERVICE: &str = "execute-api";

/// The pair accepted whatever the environment holds: the emulator's own dummy credentials.
const TEST_ACCESS_KEY: &str = "testing";
const TEST_SECRET_KEY: &str = "testing";
/// A second local principal (`testing-other`/`testing`), for trying what two producers do.
pub const OTHER_ACCESS_KEY: &str = "testing-other";
/// The account of the local callers: the emulator's default account.
pub const LOCAL_ACCOUNT: &str = "123456789012";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
const AMZ_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]T[hour][minute][second]Z");

/// Why a request to an `AWS_IAM` route is refused; the text is API Gateway's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("Forbidden")]
    MissingAuthorization,
    #[error("{0}")]
    Malformed(String),
    #[error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")]
    InvalidDate,
    #[error("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")]
    HostNotSigned,
    #[error("Credential should be scoped with a valid terminator: 'aws4_request', not '{0}'.")]
    WrongTerminator(String),
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
         '{scope}' != '{date}', from '{amz_date}'."
    )]
    ScopeDate { scope: String, date: String, amz_date: String },
    #[error("Credential should be scoped to a valid region, not '{0}'.")]
    WrongRegion(String),
    #[error("Credential should be scoped to correct service: '{SERVICE}'.")]
    WrongService,
    #[error("Signature expired: {amz_date} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired { amz_date: String, earliest: String, now: String },
    #[error("Signature not yet current: {amz_date} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent { amz_date: String, latest: String, now: String },
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("{SIGNATURE_MISMATCH}")]
    SignatureMismatch,
    /// Signed for a host other than the one served: API Gateway signs again with its own host,
    /// so it answers as for any other mismatch.
    #[error("{SIGNATURE_MISMATCH}")]
    WrongHost { signed: String, served: String },
    /// Signed over `UNSIGNED-PAYLOAD` instead of the body's hash, which API Gateway does not take.
    #[error("{SIGNATURE_MISMATCH}")]
    UnsignedPayload,
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
                                  Check your AWS Secret Access Key and signing method. Consult the service \
                                  documentation for details.";

/// The address the gateway serves, as a request extension: the signed `Host` must name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served(pub SocketAddr);

impl Served {
    /// Whether `host` (a `Host` header) names this address: the same port (80 when none is
    /// given) and the listening IP, `localhost` too when that IP is a loopback one, and any name
    /// when listening on every interface.
    fn is_named_by(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<http::uri::Authority>() else { return false };
        if authority.port_u16().unwrap_or(80) != self.0.port() {
            return false;
        }
        let name = authority.host().trim_start_matches('[').trim_end_matches(']');
        let ip = self.0.ip();
        ip.is_unspecified()
            || name.parse::<std::net::IpAddr>().is_ok_and(|named| named == ip)
            || (ip.is_loopback() && name.eq_ignore_ascii_case("localhost"))
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.to_string() }).to_string();
        (StatusCode::FORBIDDEN, [("content-type", "application/json")], body).into_response()
    }
}

/// An access key pair whose signatures are accepted.
#[derive(Clone)]
pub struct AccessKey {
    id: String,
    secret: String,
}

impl AccessKey {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { id: id.into(), secret: secret.into() }
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey").field("id", &self.id).field("secret", &"** redacted **").finish()
    }
}

/// Checks SigV4 `Authorization` headers against a fixed set of access keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    region: String,
    keys: Vec<AccessKey>,
}

impl Verifier {
    pub fn new(region: impl Into<String>, keys: Vec<AccessKey>) -> Self {
        Self { region: region.into(), keys }
    }

    /// `testing`/`testing`, plus the pair in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` when
    /// both are set, so the caller's usual credentials work too.
    pub fn from_env(region: impl Into<String>) -> Self {
        Self::from_lookup(region, |name| std::env::var(name).ok())
    }

    fn from_lookup(region: impl Into<String>, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut keys =
            vec![AccessKey::new(TEST_ACCESS_KEY, TEST_SECRET_KEY), AccessKey::new(OTHER_ACCESS_KEY, TEST_SECRET_KEY)];
        if let (Some(id), Some(secret)) = (lookup("AWS_ACCESS_KEY_ID"), lookup("AWS_SECRET_ACCESS_KEY"))
            && !id.is_empty()
        {
            keys.push(AccessKey::new(id, secret));
        }
        Self::new(region, keys)
    }

    /// Accepts the request when signing it again with one of the keys, at its own
    /// `X-Amz-Date`, gives the signature it carries, that date is within 15 minutes of
    /// `now`, and the signed `Host` names the [`Served`] address in the request's extensions
    /// (refused without one).
    pub fn verify(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Result<(), Denied> {
        let authorization = parts.headers.get(http::header::AUTHORIZATION).ok_or(Denied::MissingAuthorization)?;
        let amz_date = parts.headers.get("x-amz-date").and_then(|v| v.to_str().ok());
        let header = parse_authorization(authorization.to_str().unwrap_or_default(), amz_date.is_some())?;
        let amz_date = amz_date.ok_or(Denied::InvalidDate)?;
        let signed_at = PrimitiveDateTime::parse(amz_date, AMZ_DATE).map_err(|_| Denied::InvalidDate)?.assume_utc();

        let scope = &header.scope;
        if scope.terminator != TERMINATOR {
            return Err(Denied::WrongTerminator(scope.terminator.to_owned()));
        }
        let date = amz_date.get(..8).unwrap_or_default();
        if scope.date != date {
            return Err(Denied::ScopeDate {
                scope: scope.date.to_owned(),
                date: date.to_owned(),
                amz_date: amz_date.to_owned(),
            });
        }
        if scope.region != self.region {
            return Err(Denied::WrongRegion(scope.region.to_owned()));
        }
        if scope.service != SERVICE {
            return Err(Denied::WrongService);
        }
        check_clock_skew(signed_at, now)?;
        if !header.signed_headers.iter().any(|h| h.eq_ignore_ascii_case("host")) {
            return Err(Denied::HostNotSigned);
        }
        check_host(parts)?;

        let secrets: Vec<&str> =
            self.keys.iter().filter(|k| k.id == scope.access_key).map(|k| k.secret.as_str()).collect();
        if secrets.is_empty() {
            return Err(Denied::UnknownAccessKey);
        }
        let request = Signable::of(parts, &header.signed_headers, body)?;
        let mut matched = false;
        for secret in secrets {
            let expected = request.signature(scope.access_key, secret, &self.region, signed_at.into())?;
            matched |= bool::from(expected.as_bytes().ct_eq(header.signature.as_bytes()));
        }
        if matched {
            Ok(())
        } else if parts.headers.get("x-amz-content-sha256").is_some_and(|v| v == UNSIGNED_PAYLOAD) {
            tracing::info!("signed over UNSIGNED-PAYLOAD: API Gateway takes only the body's SHA-256");
            Err(Denied::UnsignedPayload)
        } else {
            Err(Denied::SignatureMismatch)
        }
    }
}

/// The `Host` the caller signed (and sent) must name the address served.
fn check_host(parts: &Parts) -> Result<(), Denied> {
    let served = parts.extensions.get::<Served>();
    let host = parts.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match served {
        Some(served) if served.is_named_by(host) => Ok(()),
        _ => {
            let served = served.map_or_else(|| "no address".to_owned(), |s| s.0.to_string());
            tracing::info!(host, %served, "signed for another host than the one served");
            Err(Denied::WrongHost { signed: host.to_owned(), served })
        }
    }
}

/// The principal API Gateway reports as `userArn` for a request [`Verifier::verify`] accepted:
/// locally each access key is an IAM user of its own name, `testing` is
/// `arn:aws:iam::123456789012:user/testing`.
pub fn caller_arn(parts: &Parts) -> Option<String> {
    let authorization = parts.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let header = parse_authorization(authorization, true).ok()?;
    Some(format!("arn:aws:iam::{LOCAL_ACCOUNT}:user/{}", header.scope.access_key))
}

/// `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
#[derive(Debug, PartialEq, Eq)]
struct Scope<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
}

/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=a;b;c, Signature=hex`.
#[derive(Debug, PartialEq, Eq)]
struct AuthorizationHeader<'a> {
    scope: Scope<'a>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str, has_date: bool) -> Result<AuthorizationHeader<'_>, Denied> {
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for param in rest.split(',') {
        match param.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    // API Gateway names every missing part at once.
    let mut missing = Vec::new();
    for (name, part) in [("Credential", &credential), ("Signature", &signature), ("SignedHeaders", &signed_headers)] {
        if part.is_none() {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    if !has_date {
        missing.push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into());
    }
    let (Some(credential), Some(signed_headers), Some(signature), true) =
        (credential, signed_headers, signature, missing.is_empty())
    else {
        return Err(Denied::Malformed(missing.join(" ")));
    };
    if algorithm != ALGORITHM {
        return Err(Denied::Malformed(format!("Only the {ALGORITHM} signing algorithm is supported.")));
    }
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = parts[..] else {
        return Err(Denied::Malformed(
            "Credential must have the form <access key>/<yyyyMMdd>/<region>/<service>/aws4_request.".into(),
        ));
    };
    Ok(AuthorizationHeader {
        scope: Scope { access_key, date, region, service, terminator },
        signed_headers: signed_headers.split(';').filter(|h| !h.is_empty()).collect(),
        signature,
    })
}

fn check_clock_skew(signed_at: OffsetDateTime, now: SystemTime) -> Result<(), Denied> {
    let now = OffsetDateTime::from(now);
    let earliest = now - MAX_CLOCK_SKEW;
    let latest = now + MAX_CLOCK_SKEW;
    let amz_date = || format_amz_date(signed_at);
    if signed_at < earliest {
        return Err(Denied::Expired {
            amz_date: amz_date(),
            earliest: format_amz_date(earliest),
            now: format_amz_date(now),
        });
    }
    if signed_at > latest {
        return Err(Denied::NotYetCurrent {
            amz_date: amz_date(),
            latest: format_amz_date(latest),
            now: format_amz_date(now),
        });
    }
    Ok(())
}

fn format_amz_date(at: OffsetDateTime) -> String {
    at.format(AMZ_DATE).unwrap_or_default()
}

/// The request as API Gateway signs it again: method, path and query as sent, only the
/// signed headers, and the body itself.
struct Signable<'a> {
    method: &'a str,
    path_and_query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

impl<'a> Signable<'a> {
    fn of(parts: &'a Parts, signed_headers: &[&'a str], body: &'a [u8]) -> Result<Self, Denied> {
        let mut headers = Vec::with_capacity(signed_headers.len());
        for &name in signed_headers {
            for value in parts.headers.get_all(name) {
                // A value that is not text cannot have been signed as text.
                headers.push((name, value.to_str().map_err(|_| Denied::SignatureMismatch)?));
            }
        }
        // The signer would otherwise take the host from the URI, which has none here.
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            return Err(Denied::SignatureMismatch);
        }
        // Whatever `x-amz-content-sha256` declares (a hash, `UNSIGNED-PAYLOAD`), the payload
        // signed is the body received: a declared hash matches only when it is the body's.
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Ok(Self { method: parts.method.as_str(), path_and_query, headers, body })
    }

    fn signature(&self, access_key: &str, secret: &str, region: &str, at: SystemTime) -> Result<String, Denied> {
        // Session credentials sign their token as one more header; only the key pair matters here.
        let identity = Credentials::new(access_key, secret, None, None, "eventline-local").into();
        let mut settings = SigningSettings::default();
        // Exactly the caller's signed headers, including any the SDKs leave out by default.
        settings.excluded_headers = None;
        // The defaults are what API Gateway expects of execute-api: the path as sent is
        // URI-encoded once more (`%` becomes `%25`) after removing dot segments; the query is
        // decoded as a form (`+` is a space, `%2B` a plus), re-encoded and sorted.
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| signing_failed(&e))?
            .into();
        let body = SignableBody::Bytes(self.body);
        let request = SignableRequest::new(self.method, self.path_and_query, self.headers.iter().copied(), body)
            .map_err(|e| signing_failed(&e))?;
        let output = aws_sigv4::http_request::sign(request, &params).map_err(|e| signing_failed(&e))?;
        Ok(output.signature().to_owned())
    }
}

fn signing_failed(error: &dyn std::error::Error) -> Denied {
    tracing::info!(error = %error, "cannot rebuild the signed request");
    Denied::SignatureMismatch
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aws_sigv4::http_request::SigningInstructions;

    use super::*;

    const REGION: &str = "us-east-1";
    const HOST: &str = "127.0.0.1:3000";
    const BODY: &[u8] = br#"{"users":[{"id":"u-1"}]}"#;

    fn verifier() -> Verifier {
        Verifier::new(REGION, vec![AccessKey::new(TEST_ACCESS_KEY, TEST_SECRET_KEY)])
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
    }

    /// How a client signs: the SDK's signer with its default settings for execute-api.
    struct Client<'a> {
        host: &'a str,
        key: &'a str,
        secret: &'a str,
        token: Option<&'a str>,
        region: &'a str,
        service: &'a str,
        at: SystemTime,
        extra_headers: Vec<(&'a str, &'a str)>,
        /// What to sign instead of the body's hash.
        payload: Option<SignableBody<'a>>,
    }

    impl<'a> Client<'a> {
        fn new() -> Self {
            Self {
                host: HOST,
                key: TEST_ACCESS_KEY,
                secret: TEST_SECRET_KEY,
                token: None,
                region: REGION,
                service: SERVICE,
                at: now(),
                extra_headers: Vec::new(),
                payload: None,
            }
        }

        fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> Parts {
            let identity = Credentials::new(self.key, self.secret, self.token.map(str::to_owned), None, "test").into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(self.region)
                .name(self.service)
                .time(self.at)
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let mut headers = vec![("host", self.host), ("content-type", "application/json")];
            headers.extend(self.extra_headers.iter().copied());
            let uri = format!("http://{HOST}{path_and_query}");
            let payload = self.payload.clone().unwrap_or(SignableBody::Bytes(body));
            let signable = SignableRequest::new(method, uri.as_str(), headers.iter().copied(), payload).unwrap();
            let (instructions, _): (SigningInstructions, _) =
                aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
            let mut builder = http::Request::builder().method(method).uri(path_and_query);
            for (name, value) in &headers {
                builder = builder.header(*name, *value);
            }
            let mut request = builder.body(body.to_vec()).unwrap();
            instructions.apply_to_request_http1x(&mut request);
            served_at(request.into_parts().0, HOST)
        }
    }

    /// `parts` as the gateway serving `addr` hands them over.
    fn served_at(mut parts: Parts, addr: &str) -> Parts {
        parts.extensions.insert(Served(addr.parse().unwrap()));
        parts
    }

    fn signed() -> Parts {
        Client::new().sign("PUT", "/reference/users", BODY)
    }

    fn denied(parts: &Parts, body: &[u8]) -> Denied {
        verifier().verify(parts, body, now()).expect_err("the request should be refused")
    }

    fn message(denied: &Denied) -> String {
        denied.to_string()
    }

    #[test]
    fn when_signed_by_the_sdk_with_a_known_key_should_pass() {
        assert_eq!(verifier().verify(&signed(), BODY, now()), Ok(()));
    }

    #[test]
    fn when_the_query_is_unsorted_and_encoded_should_pass() {
        let parts = Client::new().sign("GET", "/reference/users?z=1&a=b%20c&a=a&empty&t=x~y%2Fz", b"");
        assert_eq!(verifier().verify(&parts, b"", now()), Ok(()));
    }

    #[test]
    fn canonical_form_is_the_one_api_gateway_computes() {
        // Signed outside this crate over the canonical request
        //   GET\n/events/web/a%253Ab\na=b%20c&z=1\nhost:127.0.0.1:3000\nx-amz-date:20260101T000000Z\n\n
        //   host;x-amz-date\n<SHA-256 of the empty body>
        // : the path as sent, encoded once more; the query decoded, re-encoded and sorted.
        let request = http::Request::builder()
            .uri("/events/web/a%3Ab?z=1&a=b+c")
            .header("host", HOST)
            .header("x-amz-date", "20260101T000000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=821a641eeea571dc128eb27f80419534ce2a8d26d0df1f20a3f29c5868d163b3",
            )
            .body(())
            .unwrap();
        assert_eq!(verifier().verify(&served_at(request.into_parts().0, HOST), b"", now()), Ok(()));
    }

    #[test]
    fn when_the_path_has_percent_encoded_characters_should_pass() {
        let parts = Client::new().sign("GET", "/events/web/a%3Ab%20c", b"");
        assert_eq!(verifier().verify(&parts, b"", now()), Ok(()));
    }

    #[test]
    fn when_session_credentials_sign_their_token_should_pass() {
        let client = Client { token: Some("session-token"), ..Client::new() };
        let parts = client.sign("PUT", "/reference/users", BODY);
        assert!(parts.headers.contains_key("x-amz-security-token"));
        assert_eq!(verifier().verify(&parts, BODY, now()), Ok(()));
    }

    #[test]
    fn when_the_payload_is_declared_unsigned_should_return_403_as_a_signature_mismatch() {
        let client = Client {
            extra_headers: vec![("x-amz-content-sha256", UNSIGNED_PAYLOAD)],
            payload: Some(SignableBody::UnsignedPayload),
            ..Client::new()
        };
        let parts = client.sign("PUT", "/reference/users", BODY);
        // Whatever the body, and even the one sent: API Gateway signs the body's hash.
        assert_eq!(denied(&parts, BODY), Denied::UnsignedPayload);
        assert_eq!(denied(&parts, b"anything"), Denied::UnsignedPayload);
        assert_eq!(message(&Denied::UnsignedPayload), message(&Denied::SignatureMismatch));
        assert_eq!(Denied::UnsignedPayload.into_response().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn when_an_unsigned_content_sha256_header_says_unsigned_payload_should_still_pass() {
        // An unsigned header does not change what was signed: the body's hash.
        let mut parts = signed();
        parts.headers.insert("x-amz-content-sha256", UNSIGNED_PAYLOAD.parse().unwrap());
        assert_eq!(verifier().verify(&parts, BODY, now()), Ok(()));
    }

    #[test]
    fn when_the_declared_payload_hash_is_not_hex_should_return_403() {
        let client = Client {
            extra_headers: vec![("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")],
            payload: Some(SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into())),
            ..Client::new()
        };
        let parts = client.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::SignatureMismatch);
    }

    #[test]
    fn when_signed_for_the_address_served_by_any_of_its_names_should_pass() {
        for (host, served) in [
            ("127.0.0.1:3000", "127.0.0.1:3000"),
            ("localhost:3000", "127.0.0.1:3000"),
            ("LocalHost:3000", "127.0.0.1:3000"),
            ("[::1]:3000", "[::1]:3000"),
            ("localhost:3000", "[::1]:3000"),
            ("eventline.internal:3000", "0.0.0.0:3000"),
            ("10.1.2.3", "10.1.2.3:80"),
        ] {
            let parts = Client { host, ..Client::new() }.sign("GET", "/metrics", b"");
            assert_eq!(verifier().verify(&served_at(parts, served), b"", now()), Ok(()), "{host} on {served}");
        }
    }

    #[test]
    fn when_signed_for_another_host_should_return_403() {
        for (host, served) in [
            ("127.0.0.1:3001", "127.0.0.1:3000"),
            ("127.0.0.1", "127.0.0.1:3000"),
            ("abc123.execute-api.us-east-1.amazonaws.com", "127.0.0.1:3000"),
            ("example.com:3000", "127.0.0.1:3000"),
            ("localhost:3000", "10.1.2.3:3000"),
            ("127.0.0.2:3000", "127.0.0.1:3000"),
            ("eventline.internal:3001", "0.0.0.0:3000"),
            ("not a host", "0.0.0.0:3000"),
        ] {
            let parts = Client { host, ..Client::new() }.sign("GET", "/metrics", b"");
            let denied = verifier().verify(&served_at(parts, served), b"", now()).expect_err(host);
            assert_eq!(
                denied,
                Denied::WrongHost { signed: host.into(), served: served.parse::<SocketAddr>().unwrap().to_string() }
            );
            // API Gateway signs again with its own host: the answer is a mismatch's.
            assert_eq!(message(&denied), message(&Denied::SignatureMismatch));
        }
    }

    #[test]
    fn when_the_address_served_is_unknown_should_return_403() {
        let mut parts = signed();
        parts.extensions.clear();
        assert!(matches!(denied(&parts, BODY), Denied::WrongHost { .. }));
    }

    /// The query's signature as the SDK signs it, sent with `sent` as the query.
    fn signed_query(signed: &str, sent: &str) -> Parts {
        let mut parts = Client::new().sign("GET", &format!("/users/u-1/events?{signed}"), b"");
        parts.uri = format!("/users/u-1/events?{sent}").parse().unwrap();
        parts
    }

    #[test]
    fn a_raw_plus_in_the_query_is_a_space_and_percent_2b_a_plus() {
        let verify = |parts: Parts| verifier().verify(&parts, b"", now());
        // As sent and as signed by the SDK's signer.
        for query in ["cursor=a+b", "cursor=a%2Bb", "cursor=a%20b", "from=2026-01-01T00:00:00%2B01:00"] {
            assert_eq!(verify(signed_query(query, query)), Ok(()), "{query}");
        }
        // `+` and `%20` are the same space: one's signature holds for the other.
        assert_eq!(verify(signed_query("cursor=a%20b", "cursor=a+b")), Ok(()));
        assert_eq!(verify(signed_query("cursor=a+b", "cursor=a%20b")), Ok(()));
        // A plus is not a space: signing `+` as `%2B` (awscurl) does not hold for a raw `+`,
        // nor a space's signature for `%2B`.
        assert_eq!(verify(signed_query("cursor=a%2Bb", "cursor=a+b")), Err(Denied::SignatureMismatch));
        assert_eq!(verify(signed_query("cursor=a+b", "cursor=a%2Bb")), Err(Denied::SignatureMismatch));
        assert_eq!(
            verify(signed_query("from=2026-01-01T00:00:00%2B01:00", "from=2026-01-01T00:00:00+01:00")),
            Err(Denied::SignatureMismatch)
        );
    }

    #[test]
    fn when_the_declared_payload_hash_is_the_body_hash_should_pass() {
        let hash = "d7e6b1d79c89bfa3a0e6ff7740a59049f61ad44360ad47a84f147671db040f31"; // SHA-256 of BODY
        let client = Client {
            extra_headers: vec![("x-amz-content-sha256", hash)],
            payload: Some(SignableBody::Precomputed(hash.to_owned())),
            ..Client::new()
        };
        let parts = client.sign("PUT", "/reference/users", BODY);
        assert_eq!(verifier().verify(&parts, BODY, now()), Ok(()));
    }

    #[test]
    fn when_a_declared_payload_hash_does_not_match_the_body_should_return_403() {
        let hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let client = Client {
            extra_headers: vec![("x-amz-content-sha256", hash)],
            payload: Some(SignableBody::Precomputed(hash.to_owned())),
            ..Client::new()
        };
        let parts = client.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::SignatureMismatch);
    }

    #[test]
    fn when_the_key_is_in_the_environment_should_pass() {
        let lookup = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDLOCAL".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("local-secret".to_owned()),
            _ => None,
        };
        let verifier = Verifier::from_lookup(REGION, lookup);
        let client = Client { key: "AKIDLOCAL", secret: "local-secret", ..Client::new() };
        assert_eq!(verifier.verify(&client.sign("PUT", "/reference/users", BODY), BODY, now()), Ok(()));
        assert_eq!(verifier.verify(&signed(), BODY, now()), Ok(()));
    }

    #[test]
    fn each_local_key_is_a_principal_of_its_own() {
        let verifier = Verifier::from_lookup(REGION, |_| None);
        let other = Client { key: OTHER_ACCESS_KEY, ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(verifier.verify(&other, BODY, now()), Ok(()));
        assert_eq!(caller_arn(&other).as_deref(), Some("arn:aws:iam::123456789012:user/testing-other"));
        assert_eq!(caller_arn(&signed()).as_deref(), Some("arn:aws:iam::123456789012:user/testing"));
    }

    #[test]
    fn when_the_authorization_header_is_missing_should_return_403_forbidden() {
        let mut parts = signed();
        parts.headers.remove(http::header::AUTHORIZATION);
        let response = denied(&parts, BODY).into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[test]
    fn when_the_authorization_header_is_not_sigv4_should_name_the_missing_parts() {
        let mut parts = signed();
        parts.headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        parts.headers.remove("x-amz-date");
        let Denied::Malformed(text) = denied(&parts, BODY) else { panic!("expected a malformed header") };
        assert!(text.contains("requires 'Credential' parameter"), "{text}");
        assert!(text.contains("requires 'SignedHeaders' parameter"), "{text}");
        assert!(text.contains("'X-Amz-Date'"), "{text}");
    }

    #[test]
    fn when_the_access_key_is_unknown_should_return_403() {
        let parts = Client { key: "AKIDUNKNOWN", ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::UnknownAccessKey);
    }

    #[test]
    fn when_the_secret_is_wrong_should_return_403() {
        let parts = Client { secret: "not-the-secret", ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::SignatureMismatch);
    }

    #[test]
    fn when_signed_for_another_region_should_return_403() {
        let parts = Client { region: "eu-west-1", ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::WrongRegion("eu-west-1".into()));
    }

    #[test]
    fn when_signed_for_another_service_should_return_403() {
        let parts = Client { service: "s3", ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(denied(&parts, BODY), Denied::WrongService);
    }

    #[test]
    fn when_the_body_is_tampered_with_should_return_403() {
        assert_eq!(denied(&signed(), br#"{"users":[{"id":"u-2"}]}"#), Denied::SignatureMismatch);
    }

    #[test]
    fn when_the_query_is_tampered_with_should_return_403() {
        let mut parts = Client::new().sign("GET", "/reference/users?limit=10", b"");
        parts.uri = "/reference/users?limit=1000".parse().unwrap();
        assert_eq!(denied(&parts, b""), Denied::SignatureMismatch);
    }

    #[test]
    fn when_the_path_is_signed_without_encoding_it_again_should_return_403() {
        // What curl before 8.x signs: the path exactly as sent. API Gateway canonicalises it
        // once more, so such a signature does not match there either.
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
        let identity = Credentials::new(TEST_ACCESS_KEY, TEST_SECRET_KEY, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(SERVICE)
            .time(now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = format!("http://{HOST}/events/web/a%3Ab");
        let signable =
            SignableRequest::new("GET", uri.as_str(), [("host", HOST)].into_iter(), SignableBody::Bytes(b"")).unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
        let mut request = http::Request::builder().uri("/events/web/a%3Ab").header("host", HOST).body(()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        assert_eq!(denied(&served_at(request.into_parts().0, HOST), b""), Denied::SignatureMismatch);
    }

    #[test]
    fn when_the_date_is_older_than_15_minutes_should_return_403() {
        let parts =
            Client { at: now() - Duration::from_secs(16 * 60), ..Client::new() }.sign("PUT", "/reference/users", BODY);
        let denied = denied(&parts, BODY);
        assert_eq!(
            message(&denied),
            "Signature expired: 20251231T234400Z is now earlier than 20251231T234500Z (20260101T000000Z - 15 min.)"
        );
    }

    #[test]
    fn when_the_date_is_more_than_15_minutes_ahead_should_return_403() {
        let parts =
            Client { at: now() + Duration::from_secs(16 * 60), ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert!(matches!(denied(&parts, BODY), Denied::NotYetCurrent { .. }));
    }

    #[test]
    fn when_the_date_is_within_15_minutes_should_pass() {
        let parts =
            Client { at: now() - Duration::from_secs(14 * 60), ..Client::new() }.sign("PUT", "/reference/users", BODY);
        assert_eq!(verifier().verify(&parts, BODY, now()), Ok(()));
    }

    #[test]
    fn when_the_scope_date_differs_from_x_amz_date_should_return_403() {
        let mut parts = signed();
        let header = parts.headers[http::header::AUTHORIZATION].to_str().unwrap().replace("/20260101/", "/20251231/");
        parts.headers.insert(http::header::AUTHORIZATION, header.parse().unwrap());
        assert!(matches!(denied(&parts, BODY), Denied::ScopeDate { .. }));
    }

    #[test]
    fn when_host_is_not_signed_should_return_403() {
        let mut parts = signed();
        let header = parts.headers[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;");
        parts.headers.insert(http::header::AUTHORIZATION, header.parse().unwrap());
        assert_eq!(denied(&parts, BODY), Denied::HostNotSigned);
    }

    #[test]
    fn when_an_unsigned_header_changes_should_still_pass() {
        let mut parts = signed();
        parts.headers.insert(http::header::USER_AGENT, "curl/8.0".parse().unwrap());
        parts.headers.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        assert_eq!(verifier().verify(&parts, BODY, now()), Ok(()));
    }

    #[test]
    fn when_a_signed_header_changes_should_return_403() {
        let mut parts = signed();
        parts.headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(denied(&parts, BODY), Denied::SignatureMismatch);
    }

    #[test]
    fn each_refusal_says_what_was_wrong() {
        let client = Client::new;
        let mut missing = signed();
        missing.headers.remove(http::header::AUTHORIZATION);
        let cases = [
            (missing, BODY),
            (Client { key: "AKIDUNKNOWN", ..client() }.sign("PUT", "/reference/users", BODY), BODY),
            (Client { secret: "wrong", ..client() }.sign("PUT", "/reference/users", BODY), BODY),
            (Client { region: "eu-west-1", ..client() }.sign("PUT", "/reference/users", BODY), BODY),
            (Client { service: "s3", ..client() }.sign("PUT", "/reference/users", BODY), BODY),
            (Client { at: now() - Duration::from_secs(3600), ..client() }.sign("PUT", "/reference/users", BODY), BODY),
        ];
        let messages: Vec<String> = cases.iter().map(|(parts, body)| message(&denied(parts, body))).collect();
        assert_eq!(messages.iter().collect::<BTreeSet<_>>().len(), messages.len(), "{messages:#?}");
        assert_eq!(messages[0], "Forbidden");
        assert_eq!(messages[1], "The security token included in the request is invalid.");
        assert!(messages[2].starts_with("The request signature we calculated does not match"), "{}", messages[2]);
    }

    #[test]
    fn refusals_are_403_with_a_json_message() {
        let response = Denied::SignatureMismatch.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[test]
    fn debug_output_does_not_show_secrets() {
        let verifier = Verifier::new(REGION, vec![AccessKey::new("AKID", "very-secret")]);
        let shown = format!("{verifier:?}");
        assert!(shown.contains("AKID") && !shown.contains("very-secret"), "{shown}");
    }
}

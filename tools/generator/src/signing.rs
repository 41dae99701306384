//! SigV4 signing of API requests, for deployments whose routes require IAM authorisation.
//!
//! Credentials and region come from the variables the AWS CLI and SDKs read
//! ([`Signer::from_env`]). Every request is signed just before it is sent, retries included,
//! so no signature is older than the request that carries it.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Request, Uri};

/// The signing name of API Gateway.
pub const SERVICE: &str = "execute-api";

/// The region signed for when neither `AWS_REGION` nor `AWS_DEFAULT_REGION` is set.
pub const DEFAULT_REGION: &str = "us-east-1";

pub const ACCESS_KEY_ID_VAR: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN_VAR: &str = "AWS_SESSION_TOKEN";
pub const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Request headers covered by the signature besides the `x-amz-*` ones the signer adds.
/// `user-agent` and `accept` stay out: proxies may rewrite them.
const SIGNED_HEADERS: [HeaderName; 2] = [HOST, CONTENT_TYPE];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningConfigError {
    #[error("{present} is set but {missing} is not: set both or neither, or pass --no-sign")]
    PartialCredentials { present: &'static str, missing: &'static str },
    #[error("{SESSION_TOKEN_VAR} holds characters an HTTP header cannot carry")]
    InvalidSessionToken,
    #[error("region '{0}' is not a region name such as eu-west-1")]
    InvalidRegion(String),
}

/// Signs requests with one set of credentials for one region.
#[derive(Clone)]
pub struct Signer {
    identity: Identity,
    access_key_id: String,
    region: String,
}

impl fmt::Debug for Signer {
    // The secret and the session token stay out of logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("access_key_id", &self.access_key_id).field("region", &self.region).finish()
    }
}

impl Signer {
    pub fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        region: &str,
    ) -> Result<Self, SigningConfigError> {
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(SigningConfigError::InvalidRegion(region.to_owned()));
        }
        // Checked here so that a bad token stops the run at start rather than failing every request.
        if session_token.is_some_and(|t| HeaderValue::from_str(t).is_err()) {
            return Err(SigningConfigError::InvalidSessionToken);
        }
        let credentials =
            Credentials::new(access_key_id, secret_access_key, session_token.map(str::to_owned), None, "environment");
        Ok(Self { identity: credentials.into(), access_key_id: access_key_id.to_owned(), region: region.to_owned() })
    }

    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`,
    /// region from `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`. `None` when no
    /// credentials are set; empty variables count as unset.
    pub fn from_env() -> Result<Option<Self>, SigningConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Signer::from_env`] with the variables looked up through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SigningConfigError> {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let (key, secret) = match (set(ACCESS_KEY_ID_VAR), set(SECRET_ACCESS_KEY_VAR)) {
            (None, None) => return Ok(None),
            (Some(key), Some(secret)) => (key, secret),
            (Some(_), None) => {
                return Err(SigningConfigError::PartialCredentials {
                    present: ACCESS_KEY_ID_VAR,
                    missing: SECRET_ACCESS_KEY_VAR,
                });
            }
            (None, Some(_)) => {
                return Err(SigningConfigError::PartialCredentials {
                    present: SECRET_ACCESS_KEY_VAR,
                    missing: ACCESS_KEY_ID_VAR,
                });
            }
        };
        let region = REGION_VARS.iter().find_map(|name| set(name)).unwrap_or_else(|| DEFAULT_REGION.to_owned());
        Self::new(&key, &secret, set(SESSION_TOKEN_VAR).as_deref(), &region).map(Some)
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Signs `request`, whose body is `body`, as of `time`: sets `host` explicitly (so the
    /// signed value is the one sent) and adds `x-amz-date`, `authorization` and, with a
    /// session token, `x-amz-security-token`.
    pub fn sign<B>(&self, request: &mut Request<B>, body: &[u8], time: SystemTime) -> Result<(), String> {
        let host = host_header(request.uri()).ok_or("the URL has no host to sign")?;
        let host = HeaderValue::from_str(&host).map_err(|e| format!("host header: {e}"))?;
        request.headers_mut().insert(HOST, host);
        // API Gateway checks signatures as every service but S3 does, which are the default
        // settings: each path segment encoded twice and the path normalised, no
        // x-amz-content-sha256 header. The body's hash is part of the signature all the same.
        let settings = SigningSettings::default();
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| format!("signing parameters: {e}"))?
            .into();
        let uri = request.uri().to_string();
        let headers =
            SIGNED_HEADERS.iter().filter_map(|name| Some((name.as_str(), request.headers().get(name)?.to_str().ok()?)));
        let signable = SignableRequest::new(request.method().as_str(), uri, headers, SignableBody::Bytes(body))
            .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| format!("signing: {e}"))?.into_parts();
        let (headers, _query) = instructions.into_parts();
        for header in headers {
            let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|e| format!("signing: {e}"))?;
            let mut value = HeaderValue::from_str(header.value()).map_err(|e| format!("signing: {e}"))?;
            // Kept out of debug output along with the session token the signer marks.
            value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// The `host` header for a URI: the host, and the port unless it is the scheme's default
/// (which is what HTTP clients send and what the signer would assume).
pub fn host_header(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    Some(match uri.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn signer() -> Signer {
        match Signer::new("AKIDTEST", "secret", Some("token"), "eu-west-1") {
            Ok(signer) => signer,
            Err(e) => panic!("valid signer refused: {e}"),
        }
    }

    fn signed_post(body: &'static [u8]) -> Request<&'static [u8]> {
        let request = Request::post("https://abc.execute-api.eu-west-1.amazonaws.com/prod/events")
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let Ok(mut request) = request else {
            panic!("request did not build");
        };
        // 2025-01-01T00:00:00Z.
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        let signed = signer().sign(&mut request, body, time);
        assert_eq!(signed, Ok(()));
        request
    }

    fn header<'a>(request: &'a Request<&[u8]>, name: &str) -> &'a str {
        request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[test]
    fn without_credentials_nothing_is_signed() {
        assert_eq!(Signer::from_vars(vars(&[("AWS_REGION", "eu-west-1")])).map(|s| s.is_some()), Ok(false));
        let empty = vars(&[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")]);
        assert_eq!(Signer::from_vars(empty).map(|s| s.is_some()), Ok(false));
    }

    #[test]
    fn when_only_one_key_is_set_should_say_which_is_missing() {
        let only_id = Signer::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "AKID")]));
        assert_eq!(
            only_id.map(|_| ()),
            Err(SigningConfigError::PartialCredentials {
                present: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY"
            })
        );
        let only_secret = Signer::from_vars(vars(&[("AWS_SECRET_ACCESS_KEY", "s")]));
        assert!(matches!(
            only_secret,
            Err(SigningConfigError::PartialCredentials { missing: "AWS_ACCESS_KEY_ID", .. })
        ));
    }

    #[test]
    fn region_comes_from_aws_region_then_aws_default_region_then_us_east_1() {
        let keys = [("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "s")];
        let region = |extra: &[(&str, &str)]| {
            let all: Vec<(&str, &str)> = keys.iter().chain(extra).copied().collect();
            Signer::from_vars(vars(&all)).ok().flatten().map(|s| s.region().to_owned())
        };
        assert_eq!(region(&[]).as_deref(), Some("us-east-1"));
        assert_eq!(region(&[("AWS_DEFAULT_REGION", "eu-central-1")]).as_deref(), Some("eu-central-1"));
        assert_eq!(
            region(&[("AWS_DEFAULT_REGION", "eu-central-1"), ("AWS_REGION", "ap-south-1")]).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(region(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "sa-east-1")]).as_deref(), Some("sa-east-1"));
    }

    #[test]
    fn bad_regions_and_tokens_are_refused_up_front() {
        assert!(matches!(Signer::new("A", "s", None, "EU West"), Err(SigningConfigError::InvalidRegion(_))));
        assert!(matches!(
            Signer::new("A", "s", Some("a\nb"), "eu-west-1"),
            Err(SigningConfigError::InvalidSessionToken)
        ));
    }

    #[test]
    fn debug_output_leaves_out_the_secret_and_token() {
        let text = format!("{:?}", signer());
        assert!(text.contains("AKIDTEST") && text.contains("eu-west-1"), "{text}");
        assert!(!text.contains("secret") && !text.contains("token"), "{text}");
    }

    #[test]
    fn signing_adds_the_date_token_and_an_authorization_for_execute_api() {
        let request = signed_post(b"[]");
        assert_eq!(header(&request, "x-amz-date"), "20250101T000000Z");
        assert_eq!(header(&request, "x-amz-security-token"), "token");
        assert_eq!(header(&request, "host"), "abc.execute-api.eu-west-1.amazonaws.com");
        let authorization = header(&request, "authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20250101/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authorization}"
        );
        assert!(request.headers().get("authorization").is_some_and(HeaderValue::is_sensitive));
    }

    #[test]
    fn the_signature_covers_the_body() {
        let one = signed_post(b"[1]");
        let other = signed_post(b"[2]");
        assert_ne!(header(&one, "authorization"), header(&other, "authorization"));
        assert_eq!(header(&one, "authorization"), header(&signed_post(b"[1]"), "authorization"));
    }

    #[test]
    fn host_headers_keep_only_non_default_ports() {
        let host = |uri: &str| uri.parse::<Uri>().ok().as_ref().and_then(host_header);
        assert_eq!(host("http://127.0.0.1:3000/events").as_deref(), Some("127.0.0.1:3000"));
        assert_eq!(host("https://api.example.com:443/prod").as_deref(), Some("api.example.com"));
        assert_eq!(host("http://api.example.com:8443/").as_deref(), Some("api.example.com:8443"));
        assert_eq!(host("http://[::1]:3000/").as_deref(), Some("[::1]:3000"));
        assert_eq!(host("/relative"), None);
    }
}

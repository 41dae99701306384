//! Starting the SDK in a function: the shared configuration (region, credentials, endpoint,
//! timeouts) and the HTTPS client with its trust roots, built once per cold start.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::SharedHttpClient;

/// How long an SDK call may take: one try, and all of a call's own retries together.
/// Both stay well below the functions' timeouts, so a slow call ends in an error the
/// function handles instead of a function timeout.
pub const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
pub const SDK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(SDK_CONNECT_TIMEOUT)
        .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build()
}

/// Loads the SDK configuration once per cold start. `ENDPOINT_URL` (declared empty in the
/// template, so `sam local --env-vars` can set it) or the SDK's own `AWS_ENDPOINT_URL` points
/// every client at another endpoint, such as a local emulator. `TLS_ROOTS` picks the
/// certificates the clients trust (see [`TrustedRoots`]).
///
/// Inside Lambda the configuration is built straight from what Lambda puts in the
/// environment (see [`LambdaEnvironment`]); anywhere else, or with any other `AWS_*`
/// setting, the SDK's default chains load it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let roots = TrustedRoots::from_setting(std::env::var(eventline_model::config::names::TLS_ROOTS).ok().as_deref());
    let endpoint = endpoint_override(|name| std::env::var(name).ok());
    let variables =
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    match LambdaEnvironment::read(variables) {
        Ok(lambda) => {
            tracing::debug!("AWS configuration from Lambda's environment");
            return lambda.sdk_config(https_client(roots), endpoint);
        }
        Err(reason) => tracing::debug!(reason, "AWS configuration from the SDK's default chains"),
    }
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .http_client(https_client(roots));
    // The SDK takes an empty AWS_ENDPOINT_URL as an endpoint and fails on first use, so the
    // template's variable has its own name and empty means unset.
    let loader = match endpoint {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    };
    loader.load().await
}

/// The region and the execution role's credentials, as Lambda sets them in a function's
/// environment. When they are all the SDK would find, the clients' configuration is built
/// from them directly: the default chains (profile files, container and instance metadata,
/// SSO, web identity, and a dozen settings each looked up in the environment and the
/// profile) added a tenth to the function's start (docs/design.md, "Clients built once").
#[derive(Debug, Clone, PartialEq, Eq)]
struct LambdaEnvironment {
    region: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// The `AWS_*` variables Lambda sets (besides the `AWS_LAMBDA_*` ones). Any other, such as
/// `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`, `AWS_USE_FIPS_ENDPOINT` or
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`, is a setting only the SDK's own loader honours.
const LAMBDA_AWS_VARIABLES: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_EXECUTION_ENV",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
];

impl LambdaEnvironment {
    /// Why not, when the process runs outside Lambda (no `AWS_LAMBDA_FUNCTION_NAME`), has no
    /// region or static credentials, or has an `AWS_*` setting Lambda does not make.
    fn read(variables: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut found = std::collections::HashMap::new();
        for (name, value) in variables {
            let lambda_set = name.starts_with("AWS_LAMBDA_") || LAMBDA_AWS_VARIABLES.contains(&name.as_str());
            // `AWS_LC_*` configure the build of the aws-lc crypto library (cargo-lambda sets
            // one), not the SDK.
            if name.starts_with("AWS_") && !lambda_set && !name.starts_with("AWS_LC_") {
                return Err(format!("{name} is set"));
            }
            if lambda_set && !value.is_empty() {
                found.insert(name, value);
            }
        }
        let mut take = |name: &str| found.remove(name).ok_or_else(|| format!("{name} is not set"));
        take("AWS_LAMBDA_FUNCTION_NAME")?;
        Ok(Self {
            region: take("AWS_REGION")?,
            access_key_id: take("AWS_ACCESS_KEY_ID")?,
            secret_access_key: take("AWS_SECRET_ACCESS_KEY")?,
            session_token: take("AWS_SESSION_TOKEN").ok(),
        })
    }

    /// What the default loader would make of the same environment: the standard retry
    /// mode, the clients' timeouts, these credentials (valid for the execution
    /// environment's life) and the region.
    fn sdk_config(self, http_client: SharedHttpClient, endpoint: Option<String>) -> aws_config::SdkConfig {
        use aws_sdk_dynamodb::config::{Credentials, Region, SharedCredentialsProvider};
        let credentials = Credentials::new(
            self.access_key_id,
            self.secret_access_key,
            self.session_token,
            None,
            "Lambda environment",
        );
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new(self.region))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .retry_config(aws_config::retry::RetryConfig::standard())
            .timeout_config(sdk_timeouts())
            .http_client(http_client);
        builder.set_endpoint_url(endpoint);
        builder.build()
    }
}

/// The root certificates of Amazon Trust Services, which issues the certificates of AWS
/// service endpoints: Amazon Root CA 1 to 4 and the Starfield Services root that
/// cross-signs them (public certificates, as every system's store carries them).
const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("amazon-trust-services.pem");

/// The certificates the AWS clients trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedRoots {
    /// Amazon Trust Services' roots only (the default): what AWS endpoints need, parsed in
    /// microseconds. Reading the system's store instead took most of a cold start.
    Amazon,
    /// The system's certificate store, for a network whose proxy re-signs TLS or an endpoint
    /// with another issuer (`TLS_ROOTS=system`).
    System,
}

impl TrustedRoots {
    /// `TLS_ROOTS`: unset, empty or `amazon`, or `system`; anything else is read as `system`,
    /// which trusts more rather than breaking every call, with a warning.
    pub fn from_setting(setting: Option<&str>) -> Self {
        match setting.map(str::trim) {
            None | Some("") => Self::Amazon,
            Some(value) if value.eq_ignore_ascii_case("amazon") => Self::Amazon,
            Some(value) if value.eq_ignore_ascii_case("system") => Self::System,
            Some(value) => {
                tracing::warn!(value, "TLS_ROOTS is neither amazon nor system; trusting the system's store");
                Self::System
            }
        }
    }
}

/// The HTTPS client of every AWS call: the SDK's default (rustls with aws-lc), trusting `roots`.
fn https_client(roots: TrustedRoots) -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let store = match roots {
        TrustedRoots::Amazon => TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS),
        TrustedRoots::System => TrustStore::default(),
    };
    // Building a context from a store cannot fail in this version; fall back to the
    // SDK's default context should a later one refuse it.
    let context = TlsContext::builder().with_trust_store(store).build().unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

fn endpoint_override(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    lookup(eventline_model::config::names::ENDPOINT_URL).filter(|url| !url.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trusted_roots_are_amazons_unless_the_system_store_is_asked_for() {
        assert_eq!(TrustedRoots::from_setting(None), TrustedRoots::Amazon);
        assert_eq!(TrustedRoots::from_setting(Some(" ")), TrustedRoots::Amazon);
        assert_eq!(TrustedRoots::from_setting(Some("Amazon")), TrustedRoots::Amazon);
        assert_eq!(TrustedRoots::from_setting(Some("system")), TrustedRoots::System);
        assert_eq!(TrustedRoots::from_setting(Some("webpki")), TrustedRoots::System);
    }

    #[test]
    fn the_embedded_roots_are_amazon_trust_services_five_certificates() {
        let pem = std::str::from_utf8(AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 5);
        assert_eq!(pem.matches("-----END CERTIFICATE-----").count(), 5);
    }

    fn lambda_variables(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_FUNCTION_NAME", "ingest"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("EVENTS_TABLE", "events"),
            ("ENDPOINT_URL", ""),
        ]
        .iter()
        .chain(extra)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
    }

    #[test]
    fn lambdas_own_environment_gives_the_region_and_credentials() {
        let lambda = LambdaEnvironment::read(lambda_variables(&[("AWS_LC_SYS_NO_JITTER_ENTROPY", "1")])).unwrap();
        assert_eq!(
            lambda,
            LambdaEnvironment {
                region: "eu-west-1".into(),
                access_key_id: "ASIAEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: Some("token".into()),
            }
        );
        let config = lambda.sdk_config(https_client(TrustedRoots::Amazon), Some("http://127.0.0.1:4566".into()));
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(config.timeout_config(), Some(&sdk_timeouts()));
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(3));
        assert!(config.credentials_provider().is_some() && config.http_client().is_some());
    }

    #[test]
    fn any_other_aws_setting_or_a_process_outside_lambda_uses_the_sdks_loader() {
        for setting in ["AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_PROFILE"] {
            let refused = LambdaEnvironment::read(lambda_variables(&[(setting, "x")]));
            assert_eq!(refused, Err(format!("{setting} is set")));
        }
        let without = |name: &str| lambda_variables(&[]).into_iter().filter(|(n, _)| n != name).collect::<Vec<_>>();
        for needed in ["AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            assert_eq!(LambdaEnvironment::read(without(needed)), Err(format!("{needed} is not set")));
        }
        let no_token = LambdaEnvironment::read(without("AWS_SESSION_TOKEN")).unwrap();
        assert_eq!(no_token.session_token, None);
        let mut empty_token = without("AWS_SESSION_TOKEN");
        empty_token.push(("AWS_SESSION_TOKEN".into(), String::new()));
        let empty_token = LambdaEnvironment::read(empty_token).unwrap();
        assert_eq!(empty_token.session_token, None);
    }

    #[test]
    fn an_empty_endpoint_url_means_aws_itself() {
        assert_eq!(endpoint_override(|_| Some(String::new())), None);
        assert_eq!(endpoint_override(|_| None), None);
        assert_eq!(
            endpoint_override(|_| Some("http://127.0.0.1:4566".into())),
            Some("http://127.0.0.1:4566".to_owned())
        );
    }
}

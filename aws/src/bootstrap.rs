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

/// Loads the SDK configuration once per cold start, through the SDK's own loader (region and
/// credentials from the variables Lambda sets, or the default chains elsewhere).
/// `ENDPOINT_URL` (declared empty in the template, so `sam local --env-vars` can set it) or
/// the SDK's own `AWS_ENDPOINT_URL` points every client at another endpoint, such as a local
/// emulator. `TLS_ROOTS` picks the certificates the clients trust (see [`TrustedRoots`]).
pub async fn sdk_config() -> aws_config::SdkConfig {
    let roots = TrustedRoots::from_setting(std::env::var(eventline_model::config::names::TLS_ROOTS).ok().as_deref());
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .http_client(https_client(roots));
    // The SDK takes an empty AWS_ENDPOINT_URL as an endpoint and fails on first use, so the
    // template's variable has its own name and empty means unset.
    let loader = match endpoint_override(|name| std::env::var(name).ok()) {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    };
    loader.load().await
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

//! AWS adapters and start-up helpers used by more than one function.

pub mod batch_get;
pub mod item;
pub mod reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{ConfigBag, HttpClient, RuntimeComponents, RuntimeComponentsBuilder, SharedHttpClient};
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpConnectorSettings, SharedHttpConnector};
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::sink::{OutRecord, PutFailure, RecordSink};

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
    let roots = TrustedRoots::from_setting(std::env::var(crate::config::names::TLS_ROOTS).ok().as_deref());
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
/// profile) took about as long to build as the rest of a cold start.
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

/// The HTTPS client of every AWS call: the SDK's default (rustls with aws-lc), trusting `roots`,
/// one for all the clients (see [`CheckedOnce`]).
fn https_client(roots: TrustedRoots) -> SharedHttpClient {
    SharedHttpClient::new(CheckedOnce {
        inner: sdk_https_client(roots),
        checked: AtomicBool::new(roots == TrustedRoots::Amazon),
    })
}

/// The SDK's HTTP client checks itself each time a client is built on it, by building a TLS
/// connector (certificates, crypto provider, rustls configuration) and dropping it, so that a
/// system certificate store is read at start rather than on a first call; the connectors the
/// calls use are built apart from it, once, on first use. One HTTP client serves every SDK
/// client here, so one check does for all of them, and with Amazon's roots (embedded, parsed
/// when a connector is built) there is nothing to read at start and no check is made.
#[derive(Debug)]
struct CheckedOnce {
    inner: SharedHttpClient,
    checked: AtomicBool,
}

impl HttpClient for CheckedOnce {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.checked.load(Ordering::Acquire) {
            self.inner.validate_base_client_config(components, cfg)?;
            self.checked.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

fn sdk_https_client(roots: TrustedRoots) -> SharedHttpClient {
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
    lookup(crate::config::names::ENDPOINT_URL).filter(|url| !url.trim().is_empty())
}

/// Installs the recorder of the pipeline's own metrics (namespace `Eventline`, dimension
/// `Stack` from `STACK_NAME`), once per cold start; [`flush_metrics`] writes what an
/// invocation recorded as one CloudWatch embedded-metric-format log line.
pub fn metrics_recorder() -> Result<&'static metrics_cloudwatch_embedded::Collector, metrics_cloudwatch_embedded::Error>
{
    let stack = std::env::var(crate::config::names::STACK_NAME).unwrap_or_else(|_| "unknown".to_owned());
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(crate::telemetry::NAMESPACE)
        .with_dimension(crate::telemetry::STACK_DIMENSION, stack)
        .init()
}

/// Writes the metrics recorded since the last flush to stdout, where Lambda's log capture
/// turns them into CloudWatch metrics. A failed write loses metrics, never the invocation.
pub fn flush_metrics(collector: &metrics_cloudwatch_embedded::Collector) {
    if let Err(error) = collector.flush(std::io::stdout().lock()) {
        tracing::warn!(%error, "could not write the invocation's metrics");
    }
}

/// Structured logs: JSON when the Lambda logging configuration asks for it, text otherwise,
/// filtered as [`log_filter`] reads the environment.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, problem) =
        log_filter(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(), std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: CloudWatch and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().without_time().with_target(false).with_ansi(ansi);
    let installed =
        if json { builder.json().finish().with(filter).try_init() } else { builder.finish().with(filter).try_init() };
    // A second initialisation (tests, the local stack) keeps the first subscriber.
    if let (Ok(()), Some(problem)) = (installed, problem) {
        tracing::warn!("{problem}");
    }
}

/// Which events are logged: Lambda's application log level (`AWS_LAMBDA_LOG_LEVEL`, from the
/// template's `LogLevel`: `TRACE` to `FATAL`, where `FATAL` keeps errors, the most severe
/// level a Rust event has); without it `RUST_LOG`, as `level` and `target=level` directives
/// (`info,aws_smithy_runtime=debug`); else `info`. A value that cannot be read is reported
/// (the second part, to be logged once logging works) and falls back to the next setting.
///
/// A target filter rather than `tracing_subscriber`'s `EnvFilter`, whose span-name and
/// field-value directives nothing here uses and whose regex engine made up 0.4 MB of each
/// function's binary.
pub fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> (Targets, Option<String>) {
    let mut problems = Vec::new();
    let report = |problems: Vec<String>, instead: &str| {
        (!problems.is_empty()).then(|| format!("{}; {instead}", problems.join("; ")))
    };
    if let Some(level) = lambda_level.map(str::trim).filter(|level| !level.is_empty()) {
        let parsed = if level.eq_ignore_ascii_case("fatal") { Ok(LevelFilter::ERROR) } else { level.parse() };
        match parsed {
            Ok(level) => return (Targets::new().with_default(level), None),
            Err(_) => problems.push(format!("AWS_LAMBDA_LOG_LEVEL={level:?} is not a log level (TRACE to FATAL)")),
        }
    }
    if let Some(directives) = rust_log.map(str::trim).filter(|directives| !directives.is_empty()) {
        match directives.parse::<Targets>() {
            Ok(targets) => return (targets, report(problems, "logging as RUST_LOG says")),
            Err(error) => problems.push(format!("RUST_LOG={directives:?} is not read ({error})")),
        }
    }
    (Targets::new().with_default(LevelFilter::INFO), report(problems, "logging at INFO"))
}

/// Whether a service refused a call for what it is (invalid, too large, not allowed, no such
/// resource), so that trying it again cannot help: such a refusal is never retried.
pub fn refused_for_good<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    match error {
        aws_sdk_dynamodb::error::SdkError::ServiceError(service) => {
            crate::sink::is_permanent_code(service.err().code().unwrap_or_default())
        }
        aws_sdk_dynamodb::error::SdkError::ConstructionFailure(_) => true,
        _ => false,
    }
}

/// The whole error chain of an SDK error, for logs.
pub fn error_chain(error: &(impl std::error::Error + 'static)) -> String {
    DisplayErrorContext(error).to_string()
}

/// A Kinesis stream as a [`RecordSink`].
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Self {
        Self { client, stream_name: stream_name.into() }
    }
}

impl RecordSink for KinesisSink {
    #[tracing::instrument(skip_all, fields(stream = %self.stream_name, records = records.len()))]
    async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.data.clone()))
                    .build()
                    .map_err(|e| PutFailure { code: "InvalidRequest".into(), message: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output =
            self.client.put_records().stream_name(&self.stream_name).set_records(Some(entries)).send().await.map_err(
                |e| {
                    let chain = error_chain(&e);
                    tracing::warn!(error = %chain, "PutRecords call failed");
                    PutFailure { code: e.code().unwrap_or("PutRecordsFailed").to_owned(), message: chain }
                },
            )?;
        Ok(output
            .records()
            .iter()
            .map(|entry| match entry.error_code() {
                None => Ok(()),
                Some(code) => Err(PutFailure {
                    code: code.to_owned(),
                    message: entry.error_message().unwrap_or_default().to_owned(),
                }),
            })
            .collect())
    }
}

use aws_sdk_kinesis::error::ProvideErrorMetadata;

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(filter: &Targets, target: &str) -> Vec<tracing::Level> {
        use tracing::Level;
        [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE]
            .into_iter()
            .filter(|level| filter.would_enable(target, level))
            .collect()
    }

    #[test]
    fn lambdas_log_level_sets_the_level_of_every_target() {
        use tracing::Level;
        let (filter, problem) = log_filter(Some("DEBUG"), Some("error"));
        assert_eq!(levels(&filter, "ingest::handler"), [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]);
        assert_eq!(levels(&filter, "aws_smithy_runtime::client"), levels(&filter, "ingest::handler"));
        assert_eq!(problem, None);
        let (filter, _) = log_filter(Some("trace"), None);
        assert_eq!(levels(&filter, "ingest").len(), 5);
        let (filter, _) = log_filter(Some(" WARN "), None);
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN]);
    }

    #[test]
    fn lambdas_fatal_keeps_errors_only() {
        let (filter, problem) = log_filter(Some("FATAL"), None);
        assert_eq!(levels(&filter, "transform"), [tracing::Level::ERROR]);
        assert_eq!(problem, None);
    }

    #[test]
    fn rust_log_directives_apply_without_a_lambda_level() {
        use tracing::Level;
        let (filter, problem) = log_filter(None, Some("warn,eventline_model=debug"));
        assert_eq!(levels(&filter, "eventline_model::aws"), [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]);
        assert_eq!(levels(&filter, "aws_smithy_runtime"), [Level::ERROR, Level::WARN]);
        assert_eq!(problem, None);
        let (filter, _) = log_filter(Some(""), Some("error"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR]);
    }

    #[test]
    fn unreadable_settings_are_reported_and_the_next_one_used() {
        use tracing::Level;
        let (filter, problem) = log_filter(Some("LOUD"), Some("warn"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN]);
        let problem = problem.expect("the unreadable level is reported");
        assert!(
            problem.contains("AWS_LAMBDA_LOG_LEVEL=\"LOUD\"") && problem.ends_with("as RUST_LOG says"),
            "{problem}"
        );

        let (filter, problem) = log_filter(None, Some("info,ingest=loud"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN, Level::INFO]);
        let problem = problem.expect("the unreadable directives are reported");
        assert!(problem.contains("RUST_LOG=\"info,ingest=loud\"") && problem.ends_with("logging at INFO"), "{problem}");

        let (filter, problem) = log_filter(Some("LOUD"), Some("ingest=loud"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN, Level::INFO]);
        let problem = problem.expect("both are reported");
        assert!(problem.contains("AWS_LAMBDA_LOG_LEVEL") && problem.contains("RUST_LOG"), "{problem}");
    }

    #[test]
    fn info_when_nothing_is_set() {
        let (filter, problem) = log_filter(None, Some("  "));
        assert_eq!(levels(&filter, "metrics").len(), 3);
        assert_eq!(problem, None);
    }

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
    fn metrics_are_written_as_one_embedded_metric_format_document() {
        let collector = metrics_recorder().expect("the first recorder in this process");
        crate::telemetry::ingested(7, 2);
        crate::telemetry::processing_latency(&[120, 80]);
        let mut line = Vec::new();
        collector.flush(&mut line).unwrap();
        let document: serde_json::Value = serde_json::from_slice(&line).expect("one JSON document");
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], crate::telemetry::NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([[crate::telemetry::STACK_DIMENSION]]));
        assert_eq!(document[crate::telemetry::EVENTS_ACCEPTED], 7);
        assert_eq!(document[crate::telemetry::EVENTS_REJECTED], 2);
        assert_eq!(document[crate::telemetry::PROCESSING_LATENCY], serde_json::json!([120.0, 80.0]));
        assert!(document["_aws"]["Timestamp"].is_u64());
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

    /// An HTTP client that only counts the checks made on it.
    #[derive(Debug)]
    struct CountedChecks(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl HttpClient for CountedChecks {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            unreachable!("no call is made")
        }

        fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// How many checks building three SDK clients on `http` makes on the client underneath.
    fn checks_for_three_clients(wrap: impl Fn(SharedHttpClient) -> SharedHttpClient) -> usize {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let http = wrap(SharedHttpClient::new(CountedChecks(count.clone())));
        let config = LambdaEnvironment::read(lambda_variables(&[])).unwrap().sdk_config(http, None);
        let _clients = (
            aws_sdk_dynamodb::Client::new(&config),
            aws_sdk_kinesis::Client::new(&config),
            aws_sdk_dynamodb::Client::new(&config),
        );
        count.load(Ordering::SeqCst)
    }

    #[test]
    fn one_check_of_the_http_client_serves_every_client_and_amazons_roots_need_none() {
        let checked_once =
            |checked| move |inner| SharedHttpClient::new(CheckedOnce { inner, checked: AtomicBool::new(checked) });
        assert_eq!(checks_for_three_clients(|http| http), 3, "the SDK checks its HTTP client per client");
        assert_eq!(checks_for_three_clients(checked_once(false)), 1, "the system store: checked at start, once");
        assert_eq!(checks_for_three_clients(checked_once(true)), 0, "Amazon's roots: nothing to read at start");
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

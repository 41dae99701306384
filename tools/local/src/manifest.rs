//! What `deploy_template.py` created from `template.yaml`, as the functions need it.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tokio::process::Command;

use crate::Error;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub stack: String,
    pub region: String,
    pub outputs: HashMap<String, String>,
    /// Keyed by binary name: `ingest`, `transform`, `metrics`, `admin`.
    pub functions: HashMap<String, Function>,
    pub event_sources: Vec<EventSource>,
    /// The HTTP API's CORS configuration, if it has one.
    #[serde(default)]
    pub cors: Option<Cors>,
}

/// What an HTTP API's CORS configuration allows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age: Option<u64>,
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Function {
    pub logical_id: String,
    pub environment: HashMap<String, String>,
    pub routes: Vec<Route>,
    /// The function's timeout as the template sets it.
    pub timeout_seconds: u64,
    /// Concurrency reserved for the function, if any.
    #[serde(default)]
    pub reserved_concurrency: Option<u64>,
    /// The level of Lambda's own lines (start, report) the function's logs keep:
    /// `DEBUG`, `INFO` or `WARN` (none of them).
    pub system_log_level: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub method: String,
    pub path: String,
    /// `AWS_IAM` when the route takes only SigV4-signed requests, `JWT` when it takes bearer
    /// tokens (see `jwt`), `LAMBDA` when a Lambda authorizer decides (see `lambda_authorizer`),
    /// `NONE` when it is open.
    #[serde(default = "no_authorizer")]
    pub auth: String,
    /// The JWT authorizer's settings when `auth` is `JWT`.
    #[serde(default)]
    pub jwt: Option<JwtAuthorizer>,
    /// The Lambda authorizer's settings when `auth` is `LAMBDA`.
    #[serde(default)]
    pub lambda_authorizer: Option<LambdaAuthorizer>,
}

/// An HTTP API Lambda authorizer (request type): the function that answers it, and how its
/// answers are cached.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LambdaAuthorizer {
    pub name: String,
    /// The binary of the authorizer function.
    pub function: String,
    /// `$request.header.Authorization`, ...: each must be present, and together they key the cache.
    pub identity_sources: Vec<String>,
    /// 0 caches nothing.
    pub ttl_seconds: u64,
    pub simple_responses: bool,
}

/// What an API Gateway JWT authorizer checks besides the signature.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwtAuthorizer {
    pub issuer: String,
    /// A token must name one of these in `aud`, or in `client_id` when it has no `aud`.
    pub audience: Vec<String>,
}

fn no_authorizer() -> String {
    "NONE".to_owned()
}

/// A Kinesis event source mapping with the settings the template gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSource {
    pub function: String,
    pub stream_arn: String,
    pub starting_position: String,
    pub batch_size: usize,
    pub batching_window_seconds: u64,
    pub report_batch_item_failures: bool,
    pub bisect_on_error: bool,
    /// -1 means retry until the records expire.
    pub maximum_retry_attempts: i64,
    /// -1 means no limit.
    pub maximum_record_age_seconds: i64,
    pub on_failure_destination: Option<String>,
    /// The mapping's id, which names its failure records in an S3 destination.
    pub uuid: String,
    pub function_arn: String,
}

impl Manifest {
    pub fn function(&self, name: &str) -> Result<&Function, Error> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::Setup(format!("template.yaml has no function with Binary {name}")))
    }
}

/// Creates the template's resources in the emulator as a stack and reads back what was made.
pub async fn deploy(
    venv: &Path,
    script: &Path,
    template: &Path,
    endpoint: &str,
    stack_name: &str,
    parameters: &[(String, String)],
) -> Result<Manifest, Error> {
    let mut command = Command::new(venv.join("bin").join("python"));
    command.arg(script).args(["--endpoint", endpoint, "--stack-name", stack_name]).arg("--template").arg(template);
    for (key, value) in parameters {
        command.arg("--parameter").arg(format!("{key}={value}"));
    }
    let output = command.output().await.map_err(|e| Error::Setup(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Setup(format!(
            "creating the stack from {} failed: {}",
            template.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Setup(format!("unexpected output from {}: {e}", script.display())))
}

//! The whole pipeline on one machine: a local AWS API emulator with the resources of
//! `template.yaml`, the HTTP routes served by the functions' own handlers, and the
//! transform driven from the ingest stream as the event source mapping would.

pub mod auth;
pub mod cors;
pub mod cost;
pub mod emulator;
pub mod jwt;
pub mod lambda_authorizer;
pub mod manifest;
pub mod on_failure;
pub mod page;
pub mod poller;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::emulator::Emulator;
pub use crate::manifest::Manifest;
use crate::poller::{PollStats, Poller};
use crate::server::App;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("AWS call failed: {0}")]
    Aws(String),
    #[error("function configuration: {0}")]
    Config(#[from] eventline_model::config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The functions, built from the environment the template gives each of them.
pub struct Functions {
    pub ingest: eventline_ingest::AwsIngest,
    pub transform: eventline_transform::AwsTransform,
    pub query: eventline_query::AwsQuery,
    pub admin: eventline_admin::AwsAdmin,
    pub authorizer: eventline_authorizer::AwsAuthorizer,
}

/// Where things are and what to create.
#[derive(Debug, Clone)]
pub struct Options {
    pub venv: PathBuf,
    pub template: PathBuf,
    pub deploy_script: PathBuf,
    pub emulator_launcher: PathBuf,
    pub stack_name: String,
    pub parameters: Vec<(String, String)>,
    /// The JSON Web Key Set that tokens for JWT routes are checked against.
    pub jwks: Option<PathBuf>,
}

impl Options {
    /// The defaults for a checkout at `root`.
    pub fn for_checkout(root: &Path) -> Self {
        Self {
            venv: root.join(".venv"),
            template: root.join("template.yaml"),
            deploy_script: root.join("tools/local/deploy_template.py"),
            emulator_launcher: root.join("tools/local/moto_server.py"),
            stack_name: "eventline-local".to_owned(),
            parameters: Vec::new(),
            jwks: None,
        }
    }
}

pub struct LocalStack {
    pub emulator: Emulator,
    pub manifest: Manifest,
    pub sdk: aws_config::SdkConfig,
    pub functions: Arc<Functions>,
    app: Arc<App>,
}

fn kinesis_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: aws_sdk_kinesis::error::SdkError<E, R>,
) -> Error {
    Error::Aws(aws_sdk_kinesis::error::DisplayErrorContext(error).to_string())
}

impl LocalStack {
    /// Every record on one of the stack's streams, from the oldest, over all shards.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<aws_sdk_kinesis::types::Record>, Error> {
        let kinesis = aws_sdk_kinesis::Client::new(&self.sdk);
        let shards = kinesis.list_shards().stream_name(stream).send().await.map_err(kinesis_error)?;
        let mut records = Vec::new();
        for shard in shards.shards() {
            let mut iterator = kinesis
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(kinesis_error)?
                .shard_iterator;
            while let Some(it) = iterator {
                let out = kinesis.get_records().shard_iterator(it).limit(1000).send().await.map_err(kinesis_error)?;
                if out.records().is_empty() {
                    break;
                }
                records.extend(out.records().iter().cloned());
                iterator = out.next_shard_iterator;
            }
        }
        Ok(records)
    }

    /// Starts the emulator, creates the template's resources in it and builds the functions.
    pub async fn start(options: &Options) -> Result<Self, Error> {
        let emulator = Emulator::start(&options.venv, &options.emulator_launcher).await?;
        let manifest = manifest::deploy(
            &options.venv,
            &options.deploy_script,
            &options.template,
            &emulator.endpoint,
            &options.stack_name,
            &options.parameters,
        )
        .await?;
        let sdk = emulator_sdk_config(&emulator.endpoint, &manifest.region).await;
        let functions = Arc::new(build_functions(&manifest, &sdk)?);
        let jwt = options.jwks.as_deref().map(jwt::JwtVerifier::from_file).transpose()?;
        let app = Arc::new(App::new(Arc::clone(&functions), &manifest, jwt)?);
        Ok(Self { emulator, manifest, sdk, functions, app })
    }

    /// The event source mapping of the transform function.
    pub fn poller(&self) -> Result<Arc<Poller>, Error> {
        let source = self
            .manifest
            .event_sources
            .iter()
            .find(|s| s.function == "transform")
            .cloned()
            .ok_or_else(|| Error::Setup("template.yaml has no Kinesis event source for the transform".into()))?;
        Ok(Arc::new(Poller::new(Arc::clone(&self.functions), &self.sdk, source, self.manifest.region.clone())))
    }

    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves HTTP on `addr` and polls the stream until [`Running::stop`].
    pub async fn spawn(&self, addr: SocketAddr) -> Result<Running, Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Setup(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let poller = self.poller()?;
        let dashboard =
            page::Dashboard::new(Arc::clone(&self.functions), Arc::clone(&poller), &self.sdk, &self.manifest)?;
        // The local dashboard answers its own two paths; the template's routes answer the rest.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&in_flight);
        let router = page::router(Arc::new(dashboard), self.app().router())
            .layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
                let _request = InFlight::enter(Arc::clone(&counter));
                async move { next.run(request).await }
            }))
            .layer(axum::Extension(auth::Served(local_addr)));
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|stop| *stop).await;
                })
                .await
        });

        let (poll_stop_tx, poll_stop_rx) = watch::channel(false);
        let polling = tokio::spawn(Arc::clone(&poller).run(poll_stop_rx));
        Ok(Running { addr: local_addr, stop_tx, _stop_rx: stop_rx, http, poll_stop_tx, polling, poller, in_flight })
    }
}

/// One HTTP request being answered, counted in [`Progress::requests_in_flight`] until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a stopping stack has yet to finish, readable while [`Running::stop`] runs.
#[derive(Clone)]
pub struct Progress {
    in_flight: Arc<AtomicUsize>,
    poller: Arc<Poller>,
}

impl Progress {
    /// HTTP requests taken and not answered yet.
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records on the ingest stream the transform has not finished yet.
    pub async fn records_unprocessed(&self) -> Result<u64, Error> {
        self.poller.unprocessed().await
    }
}

/// A serving stack.
pub struct Running {
    pub addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    _stop_rx: watch::Receiver<bool>,
    http: JoinHandle<std::io::Result<()>>,
    poll_stop_tx: watch::Sender<bool>,
    polling: JoinHandle<Result<(), Error>>,
    poller: Arc<Poller>,
    in_flight: Arc<AtomicUsize>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stats(&self) -> PollStats {
        self.poller.stats().await
    }

    /// What is left to finish, to be read while [`Running::stop`] runs.
    pub fn progress(&self) -> Progress {
        Progress { in_flight: Arc::clone(&self.in_flight), poller: Arc::clone(&self.poller) }
    }

    /// Stops taking requests, lets in-flight ones finish, then processes everything already
    /// on the stream (bounded by `drain_timeout`) before returning.
    pub async fn stop(self, drain_timeout: Duration) -> Result<PollStats, Error> {
        let _ = self.stop_tx.send(true);
        match self.http.await {
            Ok(result) => result?,
            Err(error) => return Err(Error::Setup(format!("HTTP server task failed: {error}"))),
        }
        let _ = self.poll_stop_tx.send(true);
        match tokio::time::timeout(drain_timeout, self.polling).await {
            Ok(Ok(result)) => result?,
            Ok(Err(error)) => return Err(Error::Setup(format!("poller task failed: {error}"))),
            Err(_) => {
                return Err(Error::Setup(format!("the stream was not drained within {} s", drain_timeout.as_secs())));
            }
        }
        Ok(self.poller.stats().await)
    }
}

/// SDK configuration that reaches the emulator, with dummy credentials.
pub async fn emulator_sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("local", "local", None, None, "eventline-local"))
        .timeout_config(eventline_aws::sdk_timeouts())
        .load()
        .await
}

/// Each function's handler, configured from its own environment in the template.
pub fn build_functions(manifest: &Manifest, sdk: &aws_config::SdkConfig) -> Result<Functions, Error> {
    let env =
        |name: &str| -> Result<HashMap<String, String>, Error> { Ok(manifest.function(name)?.environment.clone()) };
    Ok(Functions {
        ingest: eventline_ingest::with_aws(eventline_ingest::config::Config::from_lookup(&env("ingest")?)?, sdk),
        transform: eventline_transform::with_aws(
            eventline_transform::config::Config::from_lookup(&env("transform")?)?,
            sdk,
        ),
        query: eventline_query::with_aws(eventline_query::config::Config::from_lookup(&env("query")?)?, sdk),
        admin: eventline_admin::with_aws(eventline_admin::config::Config::from_lookup(&env("admin")?)?, sdk),
        authorizer: eventline_authorizer::with_aws(&env("authorizer")?, sdk)?,
    })
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

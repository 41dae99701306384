use eventline_aws::{flush_metrics, init_tracing, metrics_recorder, sdk_config};
use eventline_ingest::config::Config;
use eventline_model::config::ProcessEnv;
use lambda_http::{Error, Request, run, service_fn};

// Lambda sends one invocation at a time; one thread starts sooner (docs/design.md, "A one-thread runtime").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config =
        Config::from_lookup(&ProcessEnv).inspect_err(|error| tracing::error!(%error, "invalid configuration"))?;
    let metrics = metrics_recorder()?;
    let ingest = eventline_ingest::with_aws(config, &sdk_config().await);
    let ingest = &ingest;
    run(service_fn(move |request: Request| async move {
        let response = ingest.handle(request).await;
        flush_metrics(metrics);
        Ok::<_, Error>(response)
    }))
    .await
}

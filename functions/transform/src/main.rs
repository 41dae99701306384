// The handler future nests several retrying AWS calls deeper than the default limit allows.
#![recursion_limit = "256"]

use eventline_aws::{flush_metrics, init_tracing, metrics_recorder, sdk_config};
use eventline_model::config::ProcessEnv;
use eventline_transform::config::Config;
use eventline_transform::event::StreamEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// Lambda sends one invocation at a time; one thread starts sooner (docs/design.md, "A one-thread runtime").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config =
        Config::from_lookup(&ProcessEnv).inspect_err(|error| tracing::error!(%error, "invalid configuration"))?;
    let metrics = metrics_recorder()?;
    let transform = eventline_transform::with_aws(config, &sdk_config().await);
    let transform = &transform;
    run(service_fn(move |event: LambdaEvent<StreamEvent>| async move {
        let response = transform.handle(event.payload.0).await;
        flush_metrics(metrics);
        Ok::<_, Error>(response)
    }))
    .await
}

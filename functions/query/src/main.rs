use eventline_aws::{init_tracing, sdk_config};
use eventline_model::config::ProcessEnv;
use eventline_query::config::Config;
use lambda_http::{Error, Request, run, service_fn};

// Lambda sends one invocation at a time; one thread starts sooner (docs/design.md, "A one-thread runtime").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config =
        Config::from_lookup(&ProcessEnv).inspect_err(|error| tracing::error!(%error, "invalid configuration"))?;
    let query = eventline_query::with_aws(config, &sdk_config().await);
    let query = &query;
    run(service_fn(move |request: Request| async move { Ok::<_, Error>(query.handle(request).await) })).await
}

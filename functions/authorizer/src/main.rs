use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use eventline_aws::{init_tracing, sdk_config};
use eventline_model::config::ProcessEnv;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// Lambda sends one invocation at a time; one thread starts sooner (docs/design.md, "A one-thread runtime").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let authorizer = eventline_authorizer::with_aws(&ProcessEnv, &sdk_config().await)
        .inspect_err(|error| tracing::error!(%error, "invalid configuration"))?;
    let authorizer = &authorizer;
    run(service_fn(move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
        authorizer.authorize(&event.payload).await.map_err(Error::from)
    }))
    .await
}

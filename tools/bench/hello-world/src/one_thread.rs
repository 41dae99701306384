//! The same hello-world on a one-thread Tokio runtime, as the functions run: `make bench`
//! shows their cold start over this one too, so that what the runtime flavour saves is not
//! read as the functions' own.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) })).await
}

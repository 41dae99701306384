//! The smallest `lambda_runtime` function, as in the runtime's own basic example: it echoes
//! its event. `make bench` builds it with the functions' release profile and compares their
//! cold start and package size with it.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) })).await
}

//! Reading many items by key with BatchGetItem, within its limits, and which SDK errors
//! are worth retrying.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::KeysAndAttributes;

use crate::error_chain;
use crate::item::Item;
use eventline_model::retry::Backoff;

/// BatchGetItem takes at most this many keys per call.
pub const MAX_KEYS_PER_CALL: usize = 100;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Throttling, timeouts and server errors; anything the service refuses for cause is not.
pub fn is_transient<E: ProvideErrorMetadata, R: std::fmt::Debug>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            code.contains("Throttl")
                || code == "ProvisionedThroughputExceededException"
                || code == "RequestLimitExceeded"
                || code.starts_with("InternalServer")
                || code == "ServiceUnavailable"
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// The items of `keys` that exist, in any order: calls of at most 100 keys, unprocessed keys
/// sent again, transient errors retried within `backoff`'s budget.
pub async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table_name: &str,
    keys: Vec<Item>,
    consistent: bool,
    backoff: Backoff,
) -> Result<Vec<Item>, BoxError> {
    let mut found = Vec::with_capacity(keys.len());
    let mut retries = backoff.start();
    for chunk in keys.chunks(MAX_KEYS_PER_CALL) {
        let mut pending =
            Some(KeysAndAttributes::builder().set_keys(Some(chunk.to_vec())).consistent_read(consistent).build()?);
        while let Some(request) = pending.take() {
            match client.batch_get_item().request_items(table_name, request.clone()).send().await {
                Ok(mut output) => {
                    found.extend(output.responses.as_mut().and_then(|r| r.remove(table_name)).unwrap_or_default());
                    pending = output.unprocessed_keys.and_then(|mut m| m.remove(table_name));
                }
                Err(error) if is_transient(&error) => {
                    tracing::warn!(error = %error_chain(&error), "BatchGetItem failed; retrying");
                    pending = Some(request);
                }
                Err(error) => return Err(error.into()),
            }
            if pending.is_some() && !retries.wait().await {
                return Err("items not read within the retry budget".into());
            }
        }
    }
    Ok(found)
}

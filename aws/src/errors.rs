//! What an SDK error says about trying again, and how it is logged.

use aws_sdk_kinesis::error::DisplayErrorContext;

/// Whether a service refused a call for what it is (invalid, too large, not allowed, no such
/// resource), so that trying it again cannot help: such a refusal is never retried.
pub fn refused_for_good<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    match error {
        aws_sdk_dynamodb::error::SdkError::ServiceError(service) => {
            eventline_model::sink::is_permanent_code(service.err().code().unwrap_or_default())
        }
        aws_sdk_dynamodb::error::SdkError::ConstructionFailure(_) => true,
        _ => false,
    }
}

/// The whole error chain of an SDK error, for logs.
pub fn error_chain(error: &(impl std::error::Error + 'static)) -> String {
    DisplayErrorContext(error).to_string()
}

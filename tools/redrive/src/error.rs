//! Why a redrive could not run, by what to do about it.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use eventline_aws::error_chain;

/// An error that stops the command. Problems with single records or messages are not errors:
/// they are counted in the [`Summary`](crate::Summary) and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags cannot work together; fix them and run again.
    #[error("{0}")]
    Usage(String),
    /// A resource the flags name is not there (or not in this region).
    #[error("{what} does not exist: {hint}")]
    NotFound { what: String, hint: String },
    /// The credentials may not do `action`; grant it or use other credentials.
    #[error("access denied: {action} on {what}; the credentials need that permission")]
    AccessDenied { action: &'static str, what: String },
    /// The request could not be signed or sent, or its credentials were refused: the
    /// environment is not set up for this account.
    #[error(
        "{action} on {what} could not be made: {detail}; check the credentials (AWS_PROFILE or the AWS_* variables), AWS_REGION and --endpoint-url"
    )]
    Setup { action: &'static str, what: String, detail: String },
    /// Throttling, a server error or the network: running the command again later may work.
    #[error("{action} on {what} failed and may work later: {detail}")]
    Unavailable { action: &'static str, what: String, detail: String },
    /// The service refused the request for a reason waiting will not cure.
    #[error("{action} on {what} was refused: {detail}")]
    Refused { action: &'static str, what: String, detail: String },
}

/// Error codes that mean the caller lacks a permission.
const ACCESS_DENIED: &[&str] = &["AccessDenied", "AccessDeniedException", "AllAccessDisabled", "AuthorizationError"];
/// Error codes that mean the credentials are not accepted at all.
const BAD_CREDENTIALS: &[&str] = &[
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
];
/// Error codes of throttling, which the SDK's own retries did not outlast.
const THROTTLED: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "RequestLimitExceeded",
];

/// Sorts an SDK error by what to do next: the error code is the service's contract, and the
/// HTTP status answers for responses without a body (403 and 404 of HEAD-like calls).
/// `not_found` is the error for a missing resource, when the caller knows which one it is.
pub(crate) fn classify<E>(
    error: &SdkError<E, HttpResponse>,
    action: &'static str,
    what: &str,
    not_found: impl FnOnce(&E) -> Option<Error>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = error_chain(error);
    let what = what.to_owned();
    match error {
        SdkError::ServiceError(service) => {
            if let Some(error) = not_found(service.err()) {
                return error;
            }
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            if ACCESS_DENIED.contains(&code) || (code.is_empty() && status == 403) {
                Error::AccessDenied { action, what }
            } else if BAD_CREDENTIALS.contains(&code) {
                Error::Setup { action, what, detail }
            } else if THROTTLED.contains(&code) || status >= 500 {
                Error::Unavailable { action, what, detail }
            } else {
                Error::Refused { action, what, detail }
            }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Error::Unavailable { action, what, detail },
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            Error::Unavailable { action, what, detail }
        }
        // Credentials are loaded while the request is dispatched.
        SdkError::DispatchFailure(_) => Error::Setup { action, what, detail },
        _ => Error::Refused { action, what, detail },
    }
}

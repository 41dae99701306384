//! Why an administrator request is refused, and the status and problem each reason gets:
//! the one place that turns an error into an answer, for every route of the function.

use http::{Method, StatusCode, header};
use lambda_http::Response;

use eventline_aws::http::{Problem, retry_after};
use eventline_model::FieldError;
use eventline_model::format_rfc3339;
use eventline_model::reference::{Generation, ReferenceError};
use eventline_model::write_key::KeyStoreError;

/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Why a request is refused. The one place that turns an error into a status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no route for {method} {path}")]
    NotFound { method: Method, path: String },
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed { method: Method, allowed: &'static str },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is {size} bytes; the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    BadBody(String),
    #[error("the reference table is invalid")]
    InvalidReference(Vec<FieldError>),
    /// A reference table not newer than the current one.
    #[error("the table's ts is not newer than the current generation's ({})", format_rfc3339(.0.ts))]
    StaleReference(Generation),
    #[error("the reference table could not be stored now; retry later")]
    ReferenceUnavailable(#[source] ReferenceError),
    #[error("the write key is invalid")]
    InvalidWriteKey(Vec<FieldError>),
    #[error("no write key {0}")]
    NoWriteKey(String),
    #[error("the write keys could not be read or written now; retry later")]
    KeysUnavailable(#[source] KeyStoreError),
}

impl RequestError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) | Self::InvalidReference(_) | Self::InvalidWriteKey(_) => StatusCode::BAD_REQUEST,
            Self::NoWriteKey(_) => StatusCode::NOT_FOUND,
            Self::StaleReference(_) => StatusCode::CONFLICT,
            Self::ReferenceUnavailable(_) | Self::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn into_response(self) -> Response<String> {
        let status = self.status();
        let detail = self.to_string();
        match self {
            Self::MethodNotAllowed { allowed, .. } => {
                let mut response = Problem::new(status, detail).into_response();
                response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static(allowed));
                response
            }
            Self::InvalidReference(errors) | Self::InvalidWriteKey(errors) => {
                Problem::new(status, detail).with_errors(errors).into_response()
            }
            Self::KeysUnavailable(error) => {
                tracing::error!(%error, "write keys not available");
                retry_after(Problem::new(status, detail).into_response(), RETRY_AFTER_SECONDS)
            }
            Self::StaleReference(current) => Problem::new(status, detail)
                .with_extension("current_generation", current.number)
                .with_extension("current_ts", format_rfc3339(current.ts))
                .into_response(),
            Self::ReferenceUnavailable(error) => {
                tracing::error!(error = %eventline_aws::error_chain(&error), "reference table not stored");
                retry_after(Problem::new(status, detail).into_response(), RETRY_AFTER_SECONDS)
            }
            _ => Problem::new(status, detail).into_response(),
        }
    }
}

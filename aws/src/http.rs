//! HTTP responses both HTTP functions build: JSON bodies and RFC 9457 problem details.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use eventline_model::validation::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as `application/problem+json`. `detail` is meant for the client: 5xx problems
/// carry no internal detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Members particular to one kind of problem (RFC 9457 extension members).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    pub fn with_extension(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn into_response(self) -> Response<String> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        with_body(status, PROBLEM_JSON, &self)
    }
}

/// Why a request's body cannot be read as JSON text; each function maps it to its own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the content type is not application/json")]
    NotJson,
    #[error("request body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("request body is empty")]
    Empty,
    #[error("request body is not UTF-8 (byte {0})")]
    NotUtf8(usize),
}

/// The body as UTF-8 text, after its content type (JSON) and size (at most `limit` bytes)
/// are checked.
pub fn json_text(request: &lambda_http::Request, limit: usize) -> Result<&str, BodyError> {
    if !is_json(request.headers().get(header::CONTENT_TYPE)) {
        return Err(BodyError::NotJson);
    }
    let bytes: &[u8] = match request.body() {
        lambda_http::Body::Text(text) => text.as_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > limit {
        return Err(BodyError::TooLarge { size: bytes.len(), limit });
    }
    if bytes.is_empty() {
        return Err(BodyError::Empty);
    }
    std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))
}

/// `application/json` or any `+json` type, with or without parameters.
pub fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn json(status: StatusCode, body: &impl Serialize) -> Response<String> {
    with_body(status, "application/json", body)
}

fn with_body(status: StatusCode, content_type: &'static str, body: &impl Serialize) -> Response<String> {
    // JSON is text: sent as text, API Gateway passes it on as is (binary bodies go base64,
    // a third larger, towards Lambda's 6 MB response limit).
    let mut response = Response::new(serde_json::to_string(body).unwrap_or_default());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Adds `Retry-After` (seconds) to a response.
pub fn retry_after(mut response: Response<String>, seconds: u32) -> Response<String> {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_content_type_status_and_errors() {
        let response = Problem::new(StatusCode::BAD_REQUEST, "bad")
            .with_errors(vec![FieldError::new("id", eventline_model::validation::Rule::Format, "must be short")])
            .into_response();
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["errors"][0]["field"], "id");
    }
}

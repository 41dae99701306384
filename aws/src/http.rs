//! HTTP responses both HTTP functions build: JSON bodies and RFC 9457 problem details.

use std::borrow::Cow;

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use eventline_model::validation::{FieldError, echo};

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

/// Why a request's body cannot be read as text; each function maps it to its own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the content type is not application/json")]
    NotJson,
    #[error("the content type must be one of: {0}")]
    UnsupportedType(String),
    #[error("content encoding {0} is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("request body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("request body inflates to more than {limit} bytes, the limit")]
    InflatesTooLarge { limit: usize },
    #[error("request body is not valid gzip: {0}")]
    NotGzip(String),
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
    let bytes = body_bytes(request);
    if bytes.len() > limit {
        return Err(BodyError::TooLarge { size: bytes.len(), limit });
    }
    if bytes.is_empty() {
        return Err(BodyError::Empty);
    }
    std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))
}

/// What a body holds, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json` or a `+json` type.
    Json,
    /// `application/x-ndjson`: one JSON value a line.
    Ndjson,
    /// `text/plain`, holding JSON: what `navigator.sendBeacon` sends a string as, without a
    /// CORS preflight.
    Text,
}

impl MediaType {
    fn of(content_type: Option<&HeaderValue>) -> Option<Self> {
        if is_json(content_type) {
            return Some(Self::Json);
        }
        let value = content_type.and_then(|v| v.to_str().ok())?;
        match value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
            "application/x-ndjson" => Some(Self::Ndjson),
            "text/plain" => Some(Self::Text),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Text => "text/plain",
        }
    }
}

/// The body as UTF-8 text with its media type, which must be one of `accepted`. A body sent
/// with `Content-Encoding: gzip` is inflated first, and inflating stops at `limit` bytes, so
/// a small body that would inflate to gigabytes costs no more than the limit in memory.
pub fn body_text<'r>(
    request: &'r lambda_http::Request,
    accepted: &[MediaType],
    limit: usize,
) -> Result<(MediaType, Cow<'r, str>), BodyError> {
    let media = MediaType::of(request.headers().get(header::CONTENT_TYPE))
        .filter(|media| accepted.contains(media))
        .ok_or_else(|| BodyError::UnsupportedType(accepted.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")))?;
    let bytes = body_bytes(request);
    let encoding = request.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim());
    let bytes: Cow<'r, [u8]> = match encoding.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "identity") => {
            if bytes.len() > limit {
                return Err(BodyError::TooLarge { size: bytes.len(), limit });
            }
            Cow::Borrowed(bytes)
        }
        Some("gzip" | "x-gzip") => Cow::Owned(inflate(bytes, limit)?),
        Some(other) => return Err(BodyError::UnsupportedEncoding(echo(other, 64))),
    };
    if bytes.is_empty() {
        return Err(BodyError::Empty);
    }
    let text = match bytes {
        Cow::Borrowed(bytes) => {
            Cow::Borrowed(std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?)
        }
        Cow::Owned(bytes) => {
            Cow::Owned(String::from_utf8(bytes).map_err(|e| BodyError::NotUtf8(e.utf8_error().valid_up_to()))?)
        }
    };
    Ok((media, text))
}

/// A gzip body inflated, all its members, to at most `limit` bytes.
fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    use std::io::Read as _;
    let mut inflated = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    decoder.read_to_end(&mut inflated).map_err(|e| BodyError::NotGzip(e.to_string()))?;
    if inflated.len() > limit {
        return Err(BodyError::InflatesTooLarge { limit });
    }
    Ok(inflated)
}

fn body_bytes(request: &lambda_http::Request) -> &[u8] {
    match request.body() {
        lambda_http::Body::Text(text) => text.as_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => &[],
    }
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

    fn post(headers: &[(&str, &str)], body: lambda_http::Body) -> lambda_http::Request {
        let mut builder = http::Request::builder().method("POST").uri("/events");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(body).unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const JSON_OR_NDJSON: &[MediaType] = &[MediaType::Json, MediaType::Ndjson];

    #[test]
    fn a_gzip_body_is_inflated_and_its_limit_applies_to_what_it_inflates_to() {
        let text = r#"{"type":"click"}"#;
        let request =
            post(&[("content-type", "application/json"), ("content-encoding", "gzip")], gzip(text.as_bytes()).into());
        let (media, body) = body_text(&request, JSON_OR_NDJSON, 1024).unwrap();
        assert_eq!((media, body.as_ref()), (MediaType::Json, text));
        let err = body_text(&request, JSON_OR_NDJSON, text.len() - 1).unwrap_err();
        assert_eq!(err, BodyError::InflatesTooLarge { limit: text.len() - 1 });
        let junk =
            post(&[("content-type", "application/json"), ("content-encoding", "gzip")], b"not gzip".to_vec().into());
        assert!(matches!(body_text(&junk, JSON_OR_NDJSON, 1024), Err(BodyError::NotGzip(_))));
        let br = post(&[("content-type", "application/json"), ("content-encoding", "br")], text.into());
        assert_eq!(body_text(&br, JSON_OR_NDJSON, 1024).unwrap_err(), BodyError::UnsupportedEncoding("br".into()));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB; inflating stops one byte past 4 MiB.
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let request = post(&[("content-type", "application/json"), ("content-encoding", "gzip")], bomb.into());
        assert_eq!(
            body_text(&request, JSON_OR_NDJSON, 4 << 20).unwrap_err(),
            BodyError::InflatesTooLarge { limit: 4 << 20 }
        );
    }

    #[test]
    fn only_the_routes_media_types_are_taken() {
        let ndjson = post(&[("content-type", "application/x-ndjson")], "{}\n{}".into());
        assert_eq!(body_text(&ndjson, JSON_OR_NDJSON, 100).unwrap().0, MediaType::Ndjson);
        let text = post(&[("content-type", "text/plain;charset=UTF-8")], "{}".into());
        assert!(matches!(body_text(&text, JSON_OR_NDJSON, 100), Err(BodyError::UnsupportedType(_))));
        assert_eq!(body_text(&text, &[MediaType::Json, MediaType::Text], 100).unwrap().0, MediaType::Text);
        let plain = post(&[("content-type", "application/json")], "{}".into());
        assert!(matches!(body_text(&plain, JSON_OR_NDJSON, 100).unwrap().1, Cow::Borrowed(_)), "no copy");
        assert_eq!(body_text(&plain, JSON_OR_NDJSON, 1).unwrap_err(), BodyError::TooLarge { size: 2, limit: 1 });
    }
}

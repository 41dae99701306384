//! The HTTP API's CORS configuration as API Gateway applies it: it answers preflights itself,
//! without calling a route's authorizer or function, and adds the CORS headers to the answers
//! of allowed origins.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::manifest::Cors;

impl Cors {
    fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    fn allows_method(&self, method: &str) -> bool {
        self.allow_methods.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(method))
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`),
    /// or `None` when the request is not one. A preflight from an origin or for a method the
    /// configuration does not allow gets no CORS headers, so the browser refuses the request.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        if method != Method::OPTIONS {
            return None;
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        if !self.allows_origin(origin) || !self.allows_method(requested) {
            return Some(response);
        }
        let out = response.headers_mut();
        insert(out, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        insert(out, header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods.join(","));
        if !self.allow_headers.is_empty() {
            insert(out, header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers.join(","));
        }
        if let Some(max_age) = self.max_age {
            insert(out, header::ACCESS_CONTROL_MAX_AGE, &max_age.to_string());
        }
        if self.allow_credentials {
            insert(out, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        Some(response)
    }

    /// Adds the CORS headers to the answer to a request from an allowed origin.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut Response) {
        let Some(origin) = origin.and_then(|o| o.to_str().ok()).filter(|o| self.allows_origin(o)) else { return };
        let out = response.headers_mut();
        insert(out, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if !self.expose_headers.is_empty() {
            insert(out, header::ACCESS_CONTROL_EXPOSE_HEADERS, &self.expose_headers.join(","));
        }
        if self.allow_credentials {
            insert(out, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            allow_origins: vec!["https://shop.example".into()],
            allow_methods: vec!["POST".into()],
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: Vec::new(),
            max_age: Some(600),
            allow_credentials: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect()
    }

    #[test]
    fn an_allowed_preflight_gets_the_configuration_and_another_gets_nothing() {
        let allowed = cors()
            .preflight(
                &Method::OPTIONS,
                &headers(&[("origin", "https://shop.example"), ("access-control-request-method", "POST")]),
            )
            .unwrap();
        assert_eq!(allowed.status(), 204);
        assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
        assert_eq!(allowed.headers()["access-control-allow-headers"], "authorization,content-type");
        assert_eq!(allowed.headers()["access-control-max-age"], "600");
        let other = cors()
            .preflight(
                &Method::OPTIONS,
                &headers(&[("origin", "https://evil.example"), ("access-control-request-method", "POST")]),
            )
            .unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());
        let wrong_method = cors()
            .preflight(
                &Method::OPTIONS,
                &headers(&[("origin", "https://shop.example"), ("access-control-request-method", "DELETE")]),
            )
            .unwrap();
        assert!(wrong_method.headers().get("access-control-allow-origin").is_none());
        assert!(
            cors().preflight(&Method::OPTIONS, &headers(&[("origin", "https://shop.example")])).is_none(),
            "not a preflight"
        );
    }

    #[test]
    fn answers_to_allowed_origins_carry_the_origin() {
        let mut response = StatusCode::OK.into_response();
        cors().decorate(Some(&HeaderValue::from_static("https://shop.example")), &mut response);
        assert_eq!(response.headers()["access-control-allow-origin"], "https://shop.example");
        let mut other = StatusCode::OK.into_response();
        cors().decorate(Some(&HeaderValue::from_static("https://evil.example")), &mut other);
        assert!(other.headers().get("access-control-allow-origin").is_none());
    }
}

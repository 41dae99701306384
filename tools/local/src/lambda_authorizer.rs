//! A route's Lambda authorizer as an HTTP API runs it: every identity source must be present
//! (else `401` without calling the authorizer), the authorizer's answer is cached by the
//! identity sources' values for its TTL, a denial is `403`, and a failed invocation `500`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2CustomAuthorizerV2Request, ApiGatewayV2httpRequestContext};
use serde_json::Value;

use crate::Functions;
use crate::manifest::LambdaAuthorizer;

/// What an authorizer answered: allowed with its context, or denied.
type Answer = Option<HashMap<String, Value>>;

/// An authorizer's name and the values of its identity sources: what its answers are cached by.
type Identity = (String, Vec<String>);

/// The answers of every Lambda authorizer, by authorizer and identity.
#[derive(Default)]
pub struct AuthorizerCache {
    answers: Mutex<HashMap<Identity, (Instant, Answer)>>,
    /// Invocations of the authorizer functions, for tests of the cache.
    invocations: std::sync::atomic::AtomicUsize,
}

impl AuthorizerCache {
    pub fn invocations(&self) -> usize {
        self.invocations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The context the authorizer gives the function, or the gateway's own answer.
    pub async fn authorize(
        &self,
        authorizer: &LambdaAuthorizer,
        functions: &Functions,
        parts: &Parts,
        route_key: &str,
    ) -> Result<HashMap<String, Value>, Response> {
        let identity: Option<Vec<String>> =
            authorizer.identity_sources.iter().map(|source| identity_value(source, parts)).collect();
        let Some(identity) = identity else {
            return Err(gateway(StatusCode::UNAUTHORIZED, "Unauthorized"));
        };
        let key = (authorizer.name.clone(), identity.clone());
        let ttl = Duration::from_secs(authorizer.ttl_seconds);
        let cached = self.answers.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let answer = match cached.filter(|(at, _)| authorizer.ttl_seconds > 0 && at.elapsed() < ttl) {
            Some((_, answer)) => answer,
            None => {
                let answer = self.invoke(authorizer, functions, parts, route_key, identity).await?;
                if authorizer.ttl_seconds > 0 {
                    self.answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (Instant::now(), answer.clone()));
                }
                answer
            }
        };
        answer.ok_or_else(|| gateway(StatusCode::FORBIDDEN, "Forbidden"))
    }

    async fn invoke(
        &self,
        authorizer: &LambdaAuthorizer,
        functions: &Functions,
        parts: &Parts,
        route_key: &str,
        identity: Vec<String>,
    ) -> Result<Answer, Response> {
        if authorizer.function != "authorizer" || !authorizer.simple_responses {
            tracing::error!(function = %authorizer.function, "the local stack runs the write-key authorizer with simple responses only");
            return Err(gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"));
        }
        self.invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut request = ApiGatewayV2CustomAuthorizerV2Request::default();
        request.version = Some("2.0".into());
        request.type_ = Some("REQUEST".into());
        request.identity_source = Some(identity);
        request.route_key = Some(route_key.to_owned());
        request.raw_path = Some(parts.uri.path().to_owned());
        request.raw_query_string = Some(parts.uri.query().unwrap_or_default().to_owned());
        request.headers = parts.headers.clone();
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.route_key = Some(route_key.to_owned());
        request.request_context = context;
        match functions.authorizer.authorize(&request).await {
            Ok(response) if response.is_authorized => {
                Ok(Some(serde_json::from_value(response.context).unwrap_or_default()))
            }
            Ok(_) => Ok(None),
            Err(error) => {
                tracing::error!(%error, "the authorizer failed");
                Err(gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"))
            }
        }
    }
}

/// The value of one identity source (`$request.header.Authorization`), if present and not empty.
fn identity_value(source: &str, parts: &Parts) -> Option<String> {
    if let Some(name) = source.strip_prefix("$request.header.") {
        return parts.headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned);
    }
    if let Some(name) = source.strip_prefix("$request.querystring.") {
        return parts.uri.query().unwrap_or_default().split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name && !value.is_empty()).then(|| value.to_owned())
        });
    }
    None
}

fn gateway(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], format!(r#"{{"message":"{message}"}}"#)).into_response()
}

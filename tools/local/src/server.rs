//! The template's HTTP routes on a local port, answered by the functions' own handlers
//! with the request shaped as API Gateway hands it to Lambda, after the route's
//! authorization as API Gateway applies it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription, ApiGatewayRequestAuthorizerJwtDescription,
    ApiGatewayV2httpRequestContext, ApiGatewayV2httpResponse,
};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::request::RequestContext;

use crate::auth::Verifier;
use crate::jwt::JwtVerifier;
use crate::lambda_authorizer::AuthorizerCache;
use crate::manifest::{Cors, JwtAuthorizer, LambdaAuthorizer, Manifest};
use crate::{Error, Functions};

/// API Gateway's payload limit.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// Lambda's limit on a synchronous invocation's response: the JSON the function hands back,
/// the body inside it as a JSON string (base64 if binary). Lambda refuses a larger one
/// ("Exceeded maximum allowed payload size (6291556 bytes)") and the HTTP API answers 500.
const MAX_RESPONSE_BYTES: usize = 6_291_556;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ingest,
    Query,
    Admin,
}

/// What a route asks of a request before its handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Authorization {
    None,
    /// A valid SigV4 signature (`AWS_IAM`).
    Iam,
    /// A valid bearer token for this JWT authorizer.
    Jwt(JwtAuthorizer),
    /// What this Lambda authorizer allows.
    Lambda(LambdaAuthorizer),
}

impl Authorization {
    /// `JWT` with its settings, `NONE`, and anything else requires a signature, so a route the
    /// template protects is never served unchecked.
    fn of(auth: &str, jwt: Option<&JwtAuthorizer>, lambda: Option<&LambdaAuthorizer>) -> Self {
        match (auth, jwt, lambda) {
            ("NONE", _, _) => Self::None,
            ("JWT", Some(jwt), _) => Self::Jwt(jwt.clone()),
            ("LAMBDA", _, Some(lambda)) => Self::Lambda(lambda.clone()),
            _ => Self::Iam,
        }
    }
}

#[derive(Debug, Clone)]
struct RouteEntry {
    method: String,
    /// The route's path as the template writes it, like `/events/{source}/{id}`.
    path: String,
    target: Target,
    authorization: Authorization,
}

impl RouteEntry {
    /// Path parameters when `path` matches this route's template, percent-decoded.
    fn matches(&self, method: &str, path: &str) -> Option<HashMap<String, String>> {
        if self.method != "ANY" && self.method != method {
            return None;
        }
        eventline_aws::routes::path_parameters(&self.path, path)
    }

    /// The route key API Gateway sends with a request this route matched: `METHOD /path`
    /// as the template writes it.
    fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Segments of the path that are not parameters.
    fn literal_segments(&self) -> usize {
        self.path.split('/').filter(|s| !s.is_empty() && !s.starts_with('{')).count()
    }
}

pub struct App {
    functions: Arc<Functions>,
    routes: Vec<RouteEntry>,
    verifier: Verifier,
    jwt: Option<JwtVerifier>,
    cors: Option<Cors>,
    pub authorizer_cache: AuthorizerCache,
}

impl App {
    /// Serves the manifest's routes; `jwt` holds the issuer's keys, which routes behind a JWT
    /// authorizer need.
    pub fn new(functions: Arc<Functions>, manifest: &Manifest, jwt: Option<JwtVerifier>) -> Result<Self, Error> {
        let mut routes = Vec::new();
        for (name, function) in &manifest.functions {
            let target = match name.as_str() {
                "ingest" => Target::Ingest,
                "query" => Target::Query,
                "admin" => Target::Admin,
                _ => continue,
            };
            for route in &function.routes {
                routes.push(RouteEntry {
                    method: route.method.clone(),
                    path: route.path.clone(),
                    target,
                    authorization: Authorization::of(&route.auth, route.jwt.as_ref(), route.lambda_authorizer.as_ref()),
                });
            }
        }
        // Literal segments win over parameters, as in API Gateway.
        routes.sort_by_key(|r| std::cmp::Reverse(r.literal_segments()));
        if jwt.is_none()
            && let Some(route) = routes.iter().find(|r| matches!(r.authorization, Authorization::Jwt(_)))
        {
            return Err(Error::Setup(format!(
                "{} takes JWTs (IngestAuthorization=JWT): give the local stack the issuer's signing keys \
                 with --jwks FILE (a JSON Web Key Set)",
                route.route_key()
            )));
        }
        Ok(Self {
            functions,
            routes,
            verifier: Verifier::from_env(&manifest.region),
            jwt,
            cors: manifest.cors.clone(),
            authorizer_cache: AuthorizerCache::default(),
        })
    }

    /// `METHOD /path` of every route served.
    pub fn route_list(&self) -> Vec<String> {
        let mut list: Vec<String> = self.routes.iter().map(RouteEntry::route_key).collect();
        list.sort();
        list
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }
}

async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let Some(cors) = &app.cors else { return route(&app, request).await };
    if let Some(preflight) = cors.preflight(request.method(), request.headers()) {
        return preflight;
    }
    let origin = request.headers().get(http::header::ORIGIN).cloned();
    let mut response = route(&app, request).await;
    cors.decorate(origin.as_ref(), &mut response);
    response
}

async fn route(app: &App, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let Some((route, params)) = app.routes.iter().find_map(|r| r.matches(&method, &path).map(|p| (r, p))) else {
        return (StatusCode::NOT_FOUND, [("content-type", "application/json")], r#"{"message":"Not Found"}"#)
            .into_response();
    };
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match http_body_util::Limited::new(body, MAX_PAYLOAD_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                [("content-type", "application/json")],
                r#"{"message":"Request Entity Too Large"}"#,
            )
                .into_response();
        }
    };
    // What the authorizer tells the function about the caller, as API Gateway puts it in the
    // request context.
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    match &route.authorization {
        Authorization::None => {}
        Authorization::Iam => {
            if let Err(denied) = app.verifier.verify(&parts, &bytes, SystemTime::now()) {
                tracing::info!(method = %method, path = %path, reason = %denied, "request refused by the IAM authorizer");
                return denied.into_response();
            }
            let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
            iam.user_arn = crate::auth::caller_arn(&parts);
            authorizer.iam = Some(iam);
        }
        Authorization::Jwt(jwt_authorizer) => match app.jwt.as_ref().map(|jwt| jwt.verify(&parts, jwt_authorizer)) {
            Some(Err(rejected)) => {
                tracing::info!(method = %method, path = %path, reason = %rejected, "request refused by the JWT authorizer");
                return rejected.into_response();
            }
            Some(Ok(claims)) => {
                let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
                jwt.claims = claims;
                authorizer.jwt = Some(jwt);
            }
            None => {}
        },
        Authorization::Lambda(lambda_authorizer) => {
            match app.authorizer_cache.authorize(lambda_authorizer, &app.functions, &parts, &route.route_key()).await {
                Ok(context) => authorizer.fields = context,
                Err(refused) => {
                    tracing::info!(method = %method, path = %path, status = refused.status().as_u16(), "request refused by the Lambda authorizer");
                    return refused;
                }
            }
        }
    }
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(route.route_key());
    if authorizer != ApiGatewayRequestAuthorizer::default() {
        context.authorizer = Some(authorizer);
    }
    // API Gateway passes UTF-8 bodies as text and anything else base64-encoded, which
    // lambda_http turns into binary.
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => lambda_http::Body::Text(text),
            Err(_) => lambda_http::Body::Binary(bytes.to_vec()),
        }
    };
    let query = query_map(parts.uri.query());
    let lambda_request = http::Request::from_parts(parts, body)
        .with_path_parameters(QueryMap::from(params))
        .with_query_string_parameters(query)
        .with_request_context(RequestContext::ApiGatewayV2(context));

    let response = match route.target {
        Target::Ingest => app.functions.ingest.handle(lambda_request).await,
        Target::Query => app.functions.query.handle(lambda_request).await,
        Target::Admin => app.functions.admin.handle(lambda_request).await,
    };
    into_http(response)
}

/// The function's answer as the HTTP API sends it, or the HTTP API's own 500 when Lambda
/// would have refused it for size.
fn into_http(response: lambda_http::Response<lambda_http::Body>) -> Response {
    let size = invocation_size(&response);
    if size > MAX_RESPONSE_BYTES {
        tracing::error!(size, limit = MAX_RESPONSE_BYTES, "the function's response is over Lambda's limit");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/json")],
            r#"{"message":"Internal Server Error"}"#,
        )
            .into_response();
    }
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Bytes of the response as the function hands it to Lambda: the payload format 2.0 JSON
/// that lambda_http writes for an HTTP API.
fn invocation_size(response: &lambda_http::Response<lambda_http::Body>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut payload = ApiGatewayV2httpResponse::default();
    payload.status_code = response.status().as_u16().into();
    payload.headers = response.headers().clone();
    payload.is_base64_encoded = matches!(response.body(), lambda_http::Body::Binary(_));
    payload.body = Some(response.body().clone()).filter(|body| !matches!(body, lambda_http::Body::Empty));
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, &payload) {
        Ok(()) => count.0,
        // Lambda could not carry what cannot be written either.
        Err(_) => usize::MAX,
    }
}

fn query_map(query: Option<&str>) -> QueryMap {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        map.entry(decode(key)).or_default().push(decode(value));
    }
    QueryMap::from(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> RouteEntry {
        RouteEntry {
            method: method.into(),
            path: path.into(),
            target: Target::Query,
            authorization: Authorization::None,
        }
    }

    #[test]
    fn path_parameters_are_matched_and_decoded() {
        let params = route("GET", "/events/{source}/{id}").matches("GET", "/events/web/a%3Ab").unwrap();
        assert_eq!(params["source"], "web");
        assert_eq!(params["id"], "a:b");
        assert!(route("GET", "/events/{source}/{id}").matches("GET", "/events/web").is_none());
        assert!(route("GET", "/events/{source}/{id}").matches("POST", "/events/web/1").is_none());
        assert!(route("POST", "/events/batch").matches("POST", "/events/batch/").is_some());
        assert_eq!(route("GET", "/events/{source}/{id}").route_key(), "GET /events/{source}/{id}");
    }

    #[test]
    fn routes_require_a_signature_unless_the_template_says_none_or_jwt() {
        let jwt = JwtAuthorizer { issuer: "https://issuer.example".into(), audience: vec!["app".into()] };
        assert_eq!(Authorization::of("NONE", None, None), Authorization::None);
        assert_eq!(Authorization::of("AWS_IAM", None, None), Authorization::Iam);
        assert_eq!(Authorization::of("JWT", Some(&jwt), None), Authorization::Jwt(jwt.clone()));
        // A JWT or Lambda route whose settings went missing is not served open.
        assert_eq!(Authorization::of("JWT", None, None), Authorization::Iam);
        assert_eq!(Authorization::of("LAMBDA", None, None), Authorization::Iam);
        assert_eq!(Authorization::of("SomeLambdaAuthorizer", None, None), Authorization::Iam);
    }

    fn text_response(body: String) -> lambda_http::Response<lambda_http::Body> {
        let mut response = lambda_http::Response::new(lambda_http::Body::Text(body));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    }

    #[test]
    fn a_response_over_lambdas_limit_is_the_gateways_500() {
        let fits = format!("\"{}\"", "a".repeat(MAX_RESPONSE_BYTES - 200));
        assert_eq!(into_http(text_response(fits)).status(), StatusCode::OK);
        let over = format!("\"{}\"", "a".repeat(MAX_RESPONSE_BYTES));
        assert_eq!(into_http(text_response(over)).status(), StatusCode::INTERNAL_SERVER_ERROR);
        // 4 MB of quotes in the body is 8 MB once the body is a JSON string.
        let quotes = serde_json::to_string(&"\"".repeat(2_000_000)).unwrap();
        assert!(quotes.len() < MAX_RESPONSE_BYTES);
        assert_eq!(into_http(text_response(quotes)).status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Binary bodies travel in base64, a third larger.
        let binary = lambda_http::Response::new(lambda_http::Body::Binary(vec![0xff; 5_000_000]));
        assert_eq!(into_http(binary).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn the_refusal_is_the_gateways_own_message() {
        let over = format!("\"{}\"", "a".repeat(MAX_RESPONSE_BYTES));
        let response = into_http(text_response(over));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"message":"Internal Server Error"}"#);
    }

    #[test]
    fn query_strings_are_decoded() {
        let map = query_map(Some("window=60&x=a%20b&x=c"));
        assert_eq!(map.first("window"), Some("60"));
        assert_eq!(map.all("x"), Some(vec!["a b", "c"]));
    }
}

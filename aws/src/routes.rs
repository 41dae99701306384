//! Routing by the route API Gateway matched. Each HTTP function keeps one table of the route
//! keys it serves (`"GET /users/{user_id}/events"`, written as template.yaml and openapi.yaml
//! write them) and dispatches on the key API Gateway puts in the request context, taking the
//! values of the path's parameters from the path parameters it sends. No handler reads a
//! path to find its route.

use std::collections::HashMap;

use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use percent_encoding::percent_decode_str;

/// A function's routes: each route key API Gateway may send it, with the route it names.
pub type Routes<R> = [(&'static str, R)];

/// What a request's route key names in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<R> {
    Found(R),
    /// The table has the key's path, with other methods only.
    MethodNotAllowed,
    /// No route key (not an HTTP API request), or one whose path the table does not have.
    NotFound,
}

/// The route key of a request from an HTTP API (payload format 2.0).
pub fn route_key(request: &Request) -> Option<&str> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.route_key.as_deref(),
        _ => None,
    }
}

/// The route the request's route key names. `HEAD` is answered as `GET` (RFC 9110), so a
/// `HEAD /path` key finds the `GET /path` route.
pub fn lookup<R: Copy>(routes: &Routes<R>, request: &Request) -> Lookup<R> {
    let Some(key) = route_key(request) else { return Lookup::NotFound };
    let find = |key: &str| routes.iter().find(|(route, _)| *route == key).map(|(_, route)| *route);
    if let Some(route) = find(key) {
        return Lookup::Found(route);
    }
    let Some((method, path)) = key.split_once(' ') else { return Lookup::NotFound };
    if method == "HEAD"
        && let Some(route) = find(&format!("GET {path}"))
    {
        return Lookup::Found(route);
    }
    if routes.iter().any(|(route, _)| route.split_once(' ').is_some_and(|(_, other)| other == path)) {
        Lookup::MethodNotAllowed
    } else {
        Lookup::NotFound
    }
}

/// The value API Gateway sent for a parameter of the route's path (already percent-decoded).
pub fn path_parameter(request: &Request, name: &str) -> Option<String> {
    request.path_parameters_ref().and_then(|parameters| parameters.first(name)).map(str::to_owned)
}

/// The parameters of `path` when it matches the route path `template`
/// (`/events/{source}/{id}`), percent-decoded as API Gateway passes them. Empty segments
/// are skipped, so a trailing slash matches too.
pub fn path_parameters(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut parameters = HashMap::new();
    for (segment, part) in segments.iter().zip(parts) {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                parameters.insert(name.to_owned(), percent_decode_str(part).decode_utf8_lossy().into_owned());
            }
            None if *segment == part => {}
            None => return None,
        }
    }
    Some(parameters)
}

/// `request` as API Gateway hands it to the function, for calling a handler in process (tests,
/// benches, the local dashboard): the route key of the table's route whose path matches, the
/// most literal one first, as API Gateway picks, and the path's parameters. The key has the
/// request's own method, so a method the route does not serve reaches the handler as it would
/// through a gateway with such a route, and is refused there. A request whose path matches no
/// route is returned as it is. An existing request context (its authorizer) is kept.
pub fn routed<R>(routes: &Routes<R>, mut request: Request) -> Request {
    let path = request.uri().path().to_owned();
    let matched = routes
        .iter()
        .filter_map(|(key, _)| key.split_once(' '))
        .filter_map(|(_, template)| path_parameters(template, &path).map(|parameters| (template, parameters)))
        .max_by_key(|(template, _)| template.split('/').filter(|s| !s.is_empty() && !s.starts_with('{')).count());
    let Some((template, parameters)) = matched else { return request };
    let key = format!("{} {template}", request.method());
    match request.extensions_mut().get_mut::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.route_key = Some(key),
        _ => {
            let mut context = ApiGatewayV2httpRequestContext::default();
            context.route_key = Some(key);
            request = request.with_request_context(RequestContext::ApiGatewayV2(context));
        }
    }
    request.with_path_parameters(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Route {
        Event,
        Latest,
        Metrics,
    }

    const ROUTES: &Routes<Route> = &[
        ("GET /events/{source}/{id}", Route::Event),
        ("GET /events/web/latest", Route::Latest),
        ("GET /metrics", Route::Metrics),
    ];

    fn request(method: &str, path: &str) -> Request {
        http::Request::builder().method(method).uri(path).body(lambda_http::Body::Empty).unwrap()
    }

    fn with_key(key: &str) -> Request {
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.route_key = Some(key.to_owned());
        request("GET", "/anything").with_request_context(RequestContext::ApiGatewayV2(context))
    }

    #[test]
    fn the_route_key_alone_picks_the_route() {
        assert_eq!(lookup(ROUTES, &with_key("GET /metrics")), Lookup::Found(Route::Metrics));
        assert_eq!(lookup(ROUTES, &with_key("GET /events/{source}/{id}")), Lookup::Found(Route::Event));
        assert_eq!(lookup(ROUTES, &with_key("HEAD /metrics")), Lookup::Found(Route::Metrics));
        assert_eq!(lookup(ROUTES, &with_key("POST /metrics")), Lookup::MethodNotAllowed);
        assert_eq!(lookup(ROUTES, &with_key("GET /other")), Lookup::NotFound);
        assert_eq!(lookup(ROUTES, &with_key("$default")), Lookup::NotFound);
        // A path alone, without the gateway's route key, names nothing.
        assert_eq!(lookup(ROUTES, &request("GET", "/metrics")), Lookup::NotFound);
    }

    #[test]
    fn path_parameters_are_matched_and_decoded() {
        let parameters = path_parameters("/events/{source}/{id}", "/events/web/a%3Ab").unwrap();
        assert_eq!((parameters["source"].as_str(), parameters["id"].as_str()), ("web", "a:b"));
        assert!(path_parameters("/events/{source}/{id}", "/events/web").is_none());
        assert!(path_parameters("/events/batch", "/events/batch/").is_some());
        assert!(path_parameters("/events/batch", "/events/other").is_none());
    }

    #[test]
    fn a_routed_request_carries_the_key_and_parameters_and_keeps_its_context() {
        let routed = routed(ROUTES, request("GET", "/events/web/e-1"));
        assert_eq!(route_key(&routed), Some("GET /events/{source}/{id}"));
        assert_eq!(path_parameter(&routed, "id").as_deref(), Some("e-1"));
        // The literal route wins over the parameters, as in API Gateway.
        assert_eq!(
            route_key(&super::routed(ROUTES, request("GET", "/events/web/latest"))),
            Some("GET /events/web/latest")
        );
        assert_eq!(
            route_key(&super::routed(ROUTES, request("GET", "/events/app/latest"))),
            Some("GET /events/{source}/{id}")
        );
        assert_eq!(route_key(&super::routed(ROUTES, request("DELETE", "/metrics"))), Some("DELETE /metrics"));
        assert_eq!(route_key(&super::routed(ROUTES, request("GET", "/nowhere"))), None);

        let mut context = ApiGatewayV2httpRequestContext::default();
        context.request_id = Some("r-1".into());
        let signed = request("GET", "/metrics").with_request_context(RequestContext::ApiGatewayV2(context));
        let routed = super::routed(ROUTES, signed);
        let Some(RequestContext::ApiGatewayV2(context)) = routed.request_context_ref() else { panic!("a context") };
        assert_eq!((context.route_key.as_deref(), context.request_id.as_deref()), (Some("GET /metrics"), Some("r-1")));
    }
}

//! The routes API Gateway sends this function, by route key: template.yaml's HttpApi events
//! of `QueryFunction`, and openapi.yaml's operations (tools/local/tests/routes.rs checks
//! that the three agree).

use eventline_aws::routes::Routes;
use lambda_http::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One processed event, by the path parameters `source` and `id`.
    Event,
    Metrics,
    /// `/health` and `/healthz`, the same answer.
    Health,
    ReferenceUsers,
    /// A user's timeline, by the path parameter `user_id`.
    UserEvents,
    /// A user's aggregates, by the path parameter `user_id`.
    UserAggregates,
    /// Everyone's aggregates.
    Aggregates,
}

pub const ROUTES: &Routes<Route> = &[
    ("GET /events/{source}/{id}", Route::Event),
    ("GET /metrics", Route::Metrics),
    ("GET /health", Route::Health),
    ("GET /healthz", Route::Health),
    ("GET /reference/users", Route::ReferenceUsers),
    ("GET /users/{user_id}/events", Route::UserEvents),
    ("GET /users/{user_id}/aggregates", Route::UserAggregates),
    ("GET /aggregates", Route::Aggregates),
];

/// `request` with the route key and path parameters API Gateway would send with it, for
/// calling the handler in process.
pub fn routed(request: Request) -> Request {
    eventline_aws::routes::routed(ROUTES, request)
}

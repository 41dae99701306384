//! The routes API Gateway sends this function, by route key: template.yaml's HttpApi events
//! of `AdminFunction`, and openapi.yaml's operations (tools/local/tests/routes.rs checks
//! that the three agree).

use eventline_aws::routes::Routes;
use lambda_http::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Replaces the user reference table.
    ReferenceUsers,
    /// Makes a write key, shown once.
    CreateWriteKey,
    /// Lists the write keys, without their secrets.
    ListWriteKeys,
    /// Revokes the write key named by the `key_id` path parameter.
    RevokeWriteKey,
}

pub const ROUTES: &Routes<Route> = &[
    ("PUT /reference/users", Route::ReferenceUsers),
    ("POST /write-keys", Route::CreateWriteKey),
    ("GET /write-keys", Route::ListWriteKeys),
    ("DELETE /write-keys/{key_id}", Route::RevokeWriteKey),
];

/// `request` with the route key and path parameters API Gateway would send with it, for
/// calling the handler in process.
pub fn routed(request: Request) -> Request {
    eventline_aws::routes::routed(ROUTES, request)
}

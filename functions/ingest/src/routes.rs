//! The routes API Gateway sends this function, by route key: template.yaml's HttpApi events
//! of `IngestFunction`, and openapi.yaml's operations (tools/local/tests/routes.rs checks
//! that the three agree).

use eventline_aws::routes::Routes;
use eventline_model::segment::CallType;
use lambda_http::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One event, answered alone, or an array of events (JSON or NDJSON), answered per item.
    Events,
    /// `{"events": [...]}`, answered per item.
    EventsBatch,
    /// Segment's tracking API: a batch (`call` is `None`) or one call.
    Segment { call: Option<CallType>, key: KeyPlace },
}

/// Where a Segment route's write key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPlace {
    /// The Basic `Authorization` header, checked by the write-key authorizer before the
    /// function is called.
    Header,
    /// `writeKey` in the body, checked by the function (browsers' beacons cannot set headers).
    Body,
}

const fn header(call: Option<CallType>) -> Route {
    Route::Segment { call, key: KeyPlace::Header }
}

const fn body(call: Option<CallType>) -> Route {
    Route::Segment { call, key: KeyPlace::Body }
}

pub const ROUTES: &Routes<Route> = &[
    ("POST /events", Route::Events),
    ("POST /events/batch", Route::EventsBatch),
    ("POST /v1/batch", header(None)),
    ("POST /v1/track", header(Some(CallType::Track))),
    ("POST /v1/identify", header(Some(CallType::Identify))),
    ("POST /v1/page", header(Some(CallType::Page))),
    ("POST /v1/screen", header(Some(CallType::Screen))),
    ("POST /v1/group", header(Some(CallType::Group))),
    ("POST /v1/alias", header(Some(CallType::Alias))),
    // analytics.js's paths: the call's first letter, `b` for a batch.
    ("POST /v1/b", body(None)),
    ("POST /v1/t", body(Some(CallType::Track))),
    ("POST /v1/i", body(Some(CallType::Identify))),
    ("POST /v1/p", body(Some(CallType::Page))),
    ("POST /v1/s", body(Some(CallType::Screen))),
    ("POST /v1/g", body(Some(CallType::Group))),
    ("POST /v1/a", body(Some(CallType::Alias))),
];

/// `request` with the route key and path parameters API Gateway would send with it, for
/// calling the handler in process.
pub fn routed(request: Request) -> Request {
    eventline_aws::routes::routed(ROUTES, request)
}

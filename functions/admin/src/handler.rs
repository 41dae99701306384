//! `PUT /reference/users`: decode the table, check it, replace the current generation, and
//! answer with the new one. The write-key routes are in `write_keys.rs`.

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use time::OffsetDateTime;

use eventline_aws::http::{BodyError, json, json_text};
use eventline_aws::routes::{Lookup, lookup};
use eventline_model::format_rfc3339;
use eventline_model::reference::ReferenceError;
use eventline_model::reference::{Generation, ReferenceTable};
use eventline_model::validation::echo;
use eventline_model::{FieldError, Rule};

pub use crate::error::RequestError;
use crate::reference::{MAX_REFERENCE_BODY_BYTES, ReferenceWriter};
use crate::routes::{ROUTES, Route};
use crate::write_keys::KeyAdmin;
use eventline_model::write_key::KeyStore;

pub struct Admin<R, K> {
    pub reference: R,
    /// The write keys, and what a new key gets by default.
    pub write_keys: KeyAdmin<K>,
    /// How far in the future a table's `ts` may be. A later one would make every
    /// replacement until that date a 409.
    pub max_future_skew: time::Duration,
}

impl<R: ReferenceWriter, K: KeyStore> Admin<R, K> {
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let response = match self.respond(&request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%error, status = error.status().as_u16(), "request refused");
                error.into_response()
            }
        };
        response.map(Body::Text)
    }

    async fn respond(&self, request: &Request) -> Result<Response<String>, RequestError> {
        match route_of(request)? {
            Route::ReferenceUsers => {}
            Route::CreateWriteKey => return self.write_keys.create(request).await,
            Route::ListWriteKeys => return self.write_keys.list().await,
            Route::RevokeWriteKey => return self.write_keys.revoke(request).await,
        }
        let table = decode(request)?;
        refuse_future(&table, OffsetDateTime::now_utc(), self.max_future_skew)?;
        let generation = self.replace(&table).await?;
        Ok(report(&generation))
    }

    /// Makes the table the current generation, unless the current one is as new or newer.
    async fn replace(&self, table: &ReferenceTable) -> Result<Generation, RequestError> {
        let generation = self.reference.replace(table).await.map_err(|error| match error {
            ReferenceError::Stale(current) => RequestError::StaleReference(current),
            other => RequestError::ReferenceUnavailable(other),
        })?;
        tracing::info!(generation = generation.number, users = generation.users, "reference table replaced");
        Ok(generation)
    }
}

/// The route API Gateway matched, from its route key.
fn route_of(request: &Request) -> Result<Route, RequestError> {
    let method = request.method().clone();
    match lookup(ROUTES, request) {
        Lookup::Found(route) => Ok(route),
        Lookup::MethodNotAllowed => {
            let allowed = if request.uri().path().starts_with("/write-keys/") {
                "DELETE"
            } else if request.uri().path().starts_with("/write-keys") {
                "GET, POST"
            } else {
                "PUT"
            };
            Err(RequestError::MethodNotAllowed { method, allowed })
        }
        Lookup::NotFound => {
            Err(RequestError::NotFound { method, path: echo(request.uri().path().trim_end_matches('/'), 256) })
        }
    }
}

/// The table, after the content type and size are checked.
fn decode(request: &Request) -> Result<ReferenceTable, RequestError> {
    let text = json_text(request, MAX_REFERENCE_BODY_BYTES).map_err(|error| match error {
        BodyError::NotJson => RequestError::UnsupportedMediaType,
        BodyError::TooLarge { size, limit } => RequestError::BodyTooLarge { size, limit },
        other => RequestError::BadBody(other.to_string()),
    })?;
    ReferenceTable::parse(text).map_err(RequestError::InvalidReference)
}

/// A table dated beyond `now` plus the skew ingest allows event timestamps is refused: it
/// would stay current, and refuse every later table as stale, until that date.
fn refuse_future(table: &ReferenceTable, now: OffsetDateTime, max_skew: time::Duration) -> Result<(), RequestError> {
    if table.ts - now > max_skew {
        return Err(RequestError::InvalidReference(vec![FieldError::new(
            "ts",
            Rule::Future,
            format!("must not be more than {} seconds in the future", max_skew.whole_seconds()),
        )]));
    }
    Ok(())
}

fn report(generation: &Generation) -> Response<String> {
    json(
        StatusCode::OK,
        &serde_json::json!({"generation": generation.number, "users": generation.users, "ts": format_rfc3339(generation.ts)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryReference;
    use crate::routes::routed;
    use eventline_model::memory::MemoryKeys;
    use serde_json::{Value, json};
    use time::format_description::well_known::Rfc3339;

    /// Refuses every write as the table would when unreachable.
    struct DownReference;

    impl ReferenceWriter for DownReference {
        async fn replace(&self, _: &ReferenceTable) -> Result<Generation, ReferenceError> {
            Err(ReferenceError::Unavailable("the table is unreachable".into()))
        }
    }

    fn admin() -> Admin<MemoryReference, MemoryKeys> {
        Admin {
            reference: MemoryReference::new(),
            write_keys: KeyAdmin::in_memory(),
            max_future_skew: time::Duration::seconds(300),
        }
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        lambda_http::request::from_str(&text).unwrap()
    }

    /// A request as API Gateway hands it over when `path` is one of the function's routes.
    fn request(method: &str, path: &str, content_type: &str, body: impl Into<Body>) -> Request {
        routed(
            http::Request::builder()
                .method(method)
                .uri(format!("https://api.example.com{path}"))
                .header("content-type", content_type)
                .body(body.into())
                .unwrap(),
        )
    }

    fn put(body: impl Into<Body>) -> Request {
        request("PUT", "/reference/users", "application/json", body)
    }

    async fn call<R: ReferenceWriter>(admin: &Admin<R, MemoryKeys>, request: Request) -> (u16, Value, http::HeaderMap) {
        let response = admin.handle(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let Body::Text(text) = response.body() else { panic!("JSON answers are sent as text") };
        (status, serde_json::from_str(text).unwrap_or(Value::Null), headers)
    }

    fn table(ts: &str) -> String {
        json!({"user_metadata": {"u-1": {"plan": "pro", "region": "eu"}}, "ts": ts}).to_string()
    }

    fn from_now(offset: time::Duration) -> String {
        (OffsetDateTime::now_utc() + offset).format(&Rfc3339).unwrap()
    }

    #[tokio::test]
    async fn the_sample_event_replaces_the_table() {
        let admin = admin();
        let (status, body, _) = call(&admin, fixture("admin-put-reference-users.json")).await;
        assert_eq!((status, &body), (200, &json!({"generation": 1, "users": 2, "ts": "2026-11-30T12:00:00Z"})));
    }

    #[tokio::test]
    async fn a_reference_table_replaces_the_current_one_only_when_newer() {
        let admin = admin();
        let (status, body, _) = call(&admin, put(table("2026-11-30T12:00:00Z"))).await;
        assert_eq!((status, &body), (200, &json!({"generation": 1, "users": 1, "ts": "2026-11-30T12:00:00Z"})));
        for stale in ["2026-11-30T12:00:00Z", "2026-11-30T11:00:00Z"] {
            let (status, body, _) = call(&admin, put(table(stale))).await;
            assert_eq!(status, 409, "{stale}");
            assert_eq!(body["current_ts"], "2026-11-30T12:00:00Z");
            assert_eq!(body["current_generation"], 1);
        }
        let (status, body, _) = call(&admin, put(table("2026-11-30T13:00:00Z"))).await;
        assert_eq!((status, body["generation"].as_u64()), (200, Some(2)));
    }

    #[tokio::test]
    async fn a_table_dated_beyond_the_allowed_skew_is_400_and_does_not_block_later_tables() {
        let admin = admin();
        for ts in ["9999-12-31T23:59:59Z".to_owned(), from_now(time::Duration::seconds(360))] {
            let (status, body, headers) = call(&admin, put(table(&ts))).await;
            assert_eq!(status, 400, "{ts}");
            assert_eq!(headers["content-type"], "application/problem+json");
            assert_eq!(
                (body["errors"][0]["field"].as_str(), body["errors"][0]["rule"].as_str()),
                (Some("ts"), Some("future"))
            );
            assert!(body["errors"][0]["message"].as_str().unwrap().contains("300 seconds"), "{body}");
        }
        assert!(admin.reference.current().is_none(), "nothing was stored");
        // Within the skew (a client's clock a little ahead) is taken, and a later table still is.
        let (status, _, _) = call(&admin, put(table(&from_now(time::Duration::seconds(240))))).await;
        assert_eq!(status, 200);
        let (status, body, _) = call(&admin, put(table(&from_now(time::Duration::seconds(280))))).await;
        assert_eq!((status, body["generation"].as_u64()), (200, Some(2)));
    }

    #[tokio::test]
    async fn the_skew_is_the_configured_one() {
        let strict = Admin {
            reference: MemoryReference::new(),
            write_keys: KeyAdmin::in_memory(),
            max_future_skew: time::Duration::ZERO,
        };
        let (status, body, _) = call(&strict, put(table(&from_now(time::Duration::seconds(30))))).await;
        assert_eq!((status, body["errors"][0]["rule"].as_str()), (400, Some("future")));
        let (status, _, _) = call(&strict, put(table(&from_now(time::Duration::seconds(-1))))).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn an_invalid_reference_table_is_400_naming_the_field() {
        let body = json!({"user_metadata": {"u-1": {"plan": "Pro", "region": "eu"}}, "ts": "2026-11-30T12:00:00Z"});
        let (status, body, _) = call(&admin(), put(body.to_string())).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "user_metadata.u-1.plan");
    }

    #[tokio::test]
    async fn other_methods_routes_types_and_bodies_are_refused() {
        let (status, _, headers) = call(&admin(), request("POST", "/reference/users", "application/json", "{}")).await;
        assert_eq!((status, headers["allow"].to_str().unwrap()), (405, "PUT"));
        let (status, _, _) = call(&admin(), request("PUT", "/events", "application/json", "{}")).await;
        assert_eq!(status, 404);
        let (status, _, _) = call(&admin(), request("PUT", "/reference/users", "text/csv", "a,b")).await;
        assert_eq!(status, 415);
        let (status, _, _) = call(&admin(), put(Body::Empty)).await;
        assert_eq!(status, 400);
        let (status, _, _) = call(&admin(), put(vec![b'{', 0xff, b'}'])).await;
        assert_eq!(status, 400);
        let (status, _, _) = call(&admin(), put("x".repeat(MAX_REFERENCE_BODY_BYTES + 1))).await;
        assert_eq!(status, 413);
    }

    #[tokio::test]
    async fn when_the_table_cannot_be_written_should_return_503_with_retry_after() {
        let admin = Admin {
            reference: DownReference,
            write_keys: KeyAdmin::in_memory(),
            max_future_skew: time::Duration::seconds(300),
        };
        let (status, body, headers) = call(&admin, put(table("2026-11-30T12:00:00Z"))).await;
        assert_eq!((status, headers["retry-after"].to_str().unwrap()), (503, "1"));
        assert!(!body["detail"].as_str().unwrap().contains("unreachable"), "5xx bodies say nothing internal");
    }
}

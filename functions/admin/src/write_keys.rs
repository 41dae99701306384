//! `POST /write-keys`, `GET /write-keys` and `DELETE /write-keys/{key_id}`: the write keys
//! browsers, apps and collectors send events with. A key's secret is shown once, in the
//! answer that makes it, and stored only as a hash.

use http::StatusCode;
use lambda_http::{Request, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use eventline_aws::http::json;
use eventline_aws::routes::path_parameter;
use eventline_model::memory::MemoryKeys;
use eventline_model::validation::echo;
use eventline_model::write_key::{
    DEFAULT_EVENTS_PER_SECOND, KeyGrant, KeyId, KeyStore, MAX_ALLOWED_ORIGINS, StoredKey, WriteKey, parse_origin,
};
use eventline_model::{FieldError, Rule, Source, format_rfc3339};

use crate::error::RequestError;

/// The largest body `POST /write-keys` reads.
const MAX_KEY_BODY_BYTES: usize = 16 * 1024;
/// The highest rate a key may ask for: a shard of the ingest stream takes 1,000 records a
/// second, and a key's rate is what bounds a copied key.
pub const MAX_EVENTS_PER_SECOND: u32 = 100_000;

pub struct KeyAdmin<K> {
    pub keys: K,
    /// The rate a key gets when it asks for none (`WriteKeyEventsPerSecond`).
    pub default_events_per_second: u32,
    /// The origins the deployment's CORS allows: a key's origins must be among them.
    pub cors_origins: Vec<String>,
}

impl KeyAdmin<MemoryKeys> {
    pub fn in_memory() -> Self {
        Self {
            keys: MemoryKeys::default(),
            default_events_per_second: DEFAULT_EVENTS_PER_SECOND,
            cors_origins: vec!["*".to_owned()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    source: String,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    events_per_second: Option<u32>,
}

impl<K: KeyStore> KeyAdmin<K> {
    pub async fn create(&self, request: &Request) -> Result<Response<String>, RequestError> {
        let text = eventline_aws::http::json_text(request, MAX_KEY_BODY_BYTES).map_err(|error| match error {
            eventline_aws::http::BodyError::NotJson => RequestError::UnsupportedMediaType,
            eventline_aws::http::BodyError::TooLarge { size, limit } => RequestError::BodyTooLarge { size, limit },
            other => RequestError::BadBody(other.to_string()),
        })?;
        let new: NewKey = serde_json::from_str(text).map_err(|e| {
            RequestError::InvalidWriteKey(vec![FieldError::new("", Rule::Format, echo(&e.to_string(), 200))])
        })?;
        let grant_of = |key: &WriteKey| self.grant(key, new);
        let key = WriteKey::generate();
        let grant = grant_of(&key).map_err(RequestError::InvalidWriteKey)?;
        self.keys
            .put(&StoredKey { grant: grant.clone(), secret_hash: key.hash() })
            .await
            .map_err(RequestError::KeysUnavailable)?;
        tracing::info!(key_id = %grant.key_id, source = %grant.source, "write key created");
        let mut answer = serde_json::to_value(&grant).unwrap_or_default();
        answer["write_key"] = key.reveal().into();
        Ok(json(StatusCode::CREATED, &answer))
    }

    pub async fn list(&self) -> Result<Response<String>, RequestError> {
        let keys = self.keys.list().await.map_err(RequestError::KeysUnavailable)?;
        Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
    }

    pub async fn revoke(&self, request: &Request) -> Result<Response<String>, RequestError> {
        let text = path_parameter(request, "key_id").unwrap_or_default();
        let id = KeyId::parse(text.as_str()).map_err(|_| RequestError::NoWriteKey(echo(&text, 64)))?;
        if !self.keys.delete(&id).await.map_err(RequestError::KeysUnavailable)? {
            return Err(RequestError::NoWriteKey(id.to_string()));
        }
        tracing::info!(key_id = %id, "write key revoked");
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// Whether the deployment's CORS allows `origin` (`*` only when it allows any).
    fn deployment_allows(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|allowed| allowed == "*" || allowed == origin)
    }

    /// What a new key may send, or every rule the request breaks.
    fn grant(&self, key: &WriteKey, new: NewKey) -> Result<KeyGrant, Vec<FieldError>> {
        let mut errors = Vec::new();
        let source = Source::parse(new.source.as_str())
            .map_err(|rule| errors.push(FieldError::new("source", Rule::Format, rule)))
            .ok();
        if new.allowed_origins.len() > MAX_ALLOWED_ORIGINS {
            errors.push(FieldError::new(
                "allowed_origins",
                Rule::Range,
                format!("at most {MAX_ALLOWED_ORIGINS} origins"),
            ));
        }
        let mut origins = Vec::new();
        for (index, text) in new.allowed_origins.iter().enumerate() {
            let field = format!("allowed_origins[{index}]");
            match parse_origin(text) {
                Err(message) => errors.push(FieldError::new(&field, Rule::Format, echo(&message, 200))),
                Ok(origin) if !self.deployment_allows(&origin) => errors.push(FieldError::new(
                    &field,
                    Rule::NotAllowed,
                    "is not among the deployment's CorsAllowedOrigins (a key's origins narrow them)",
                )),
                Ok(origin) if origins.contains(&origin) => {}
                Ok(origin) => origins.push(origin),
            }
        }
        let events_per_second = new.events_per_second.unwrap_or(self.default_events_per_second);
        if !(1..=MAX_EVENTS_PER_SECOND).contains(&events_per_second) {
            errors.push(FieldError::new(
                "events_per_second",
                Rule::Range,
                format!("must be between 1 and {MAX_EVENTS_PER_SECOND}"),
            ));
        }
        match source {
            Some(source) if errors.is_empty() => Ok(KeyGrant {
                key_id: key.id.clone(),
                source,
                allowed_origins: origins,
                events_per_second,
                created_at: format_rfc3339(OffsetDateTime::now_utc()),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Admin;
    use crate::memory::MemoryReference;
    use crate::routes::routed;
    use eventline_model::write_key::check_key;
    use lambda_http::Body;
    use serde_json::{Value, json};

    fn admin(cors: &[&str]) -> Admin<MemoryReference, MemoryKeys> {
        let mut write_keys = KeyAdmin::in_memory();
        write_keys.cors_origins = cors.iter().map(|o| (*o).to_owned()).collect();
        Admin { reference: MemoryReference::new(), write_keys, max_future_skew: time::Duration::seconds(300) }
    }

    fn request(method: &str, path: &str, body: &str) -> Request {
        routed(
            http::Request::builder()
                .method(method)
                .uri(format!("https://api.example.com{path}"))
                .header("content-type", "application/json")
                .body(Body::Text(body.to_owned()))
                .unwrap(),
        )
    }

    async fn call(admin: &Admin<MemoryReference, MemoryKeys>, request: Request) -> (u16, Value) {
        let response = admin.handle(request).await;
        let status = response.status().as_u16();
        let body = match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        (status, body)
    }

    #[tokio::test]
    async fn a_key_is_shown_once_listed_without_its_secret_and_revoked() {
        let admin = admin(&["https://shop.example"]);
        let body = json!({"source": "web", "allowed_origins": ["https://shop.example"], "events_per_second": 50});
        let (status, made) = call(&admin, request("POST", "/write-keys", &body.to_string())).await;
        assert_eq!(status, 201, "{made}");
        assert_eq!((made["source"].as_str(), made["events_per_second"].as_u64()), (Some("web"), Some(50)));
        let key = WriteKey::parse(made["write_key"].as_str().unwrap()).unwrap();
        assert_eq!(made["key_id"], key.id.as_str());
        let grant = check_key(&admin.write_keys.keys, Some(&key)).await.unwrap().unwrap();
        assert_eq!(grant.allowed_origins, ["https://shop.example"]);

        let (status, listed) = call(&admin, request("GET", "/write-keys", "")).await;
        assert_eq!(status, 200);
        assert_eq!(listed["keys"][0]["key_id"], key.id.as_str());
        assert!(!listed.to_string().contains(made["write_key"].as_str().unwrap()), "no secret in a list");
        assert!(listed["keys"][0].get("secret_hash").is_none());

        let path = format!("/write-keys/{}", key.id);
        assert_eq!(call(&admin, request("DELETE", &path, "")).await.0, 204);
        assert!(check_key(&admin.write_keys.keys, Some(&key)).await.unwrap().is_err(), "revoked");
        assert_eq!(call(&admin, request("DELETE", &path, "")).await.0, 404);
        assert_eq!(call(&admin, request("DELETE", "/write-keys/nope", "")).await.0, 404);
    }

    #[tokio::test]
    async fn a_source_may_have_several_keys_at_once() {
        let admin = admin(&[]);
        for _ in 0..2 {
            assert_eq!(call(&admin, request("POST", "/write-keys", r#"{"source": "app"}"#)).await.0, 201);
        }
        let (_, listed) = call(&admin, request("GET", "/write-keys", "")).await;
        let keys = listed["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k["source"] == "app" && k["events_per_second"] == DEFAULT_EVENTS_PER_SECOND));
    }

    #[tokio::test]
    async fn bad_keys_are_refused_naming_each_field() {
        let admin = admin(&["https://shop.example"]);
        let body = json!({"source": "Bad Source", "allowed_origins": ["https://other.example", "nope"], "events_per_second": 0});
        let (status, answer) = call(&admin, request("POST", "/write-keys", &body.to_string())).await;
        assert_eq!(status, 400);
        let fields: Vec<&str> =
            answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["source", "allowed_origins[0]", "allowed_origins[1]", "events_per_second"]);
        let (status, _) = call(&admin, request("POST", "/write-keys", r#"{"source": "web", "extra": 1}"#)).await;
        assert_eq!(status, 400, "unknown fields are refused");
        let (status, _) = call(&admin, request("POST", "/write-keys", r#"{}"#)).await;
        assert_eq!(status, 400, "source is required");
        let any = json!({"source": "web", "allowed_origins": ["*"]});
        let (status, answer) = call(&admin, request("POST", "/write-keys", &any.to_string())).await;
        assert_eq!(status, 400, "a key's * would widen the deployment's origins: {answer}");
        let twice = json!({"source": "web", "allowed_origins": ["https://shop.example", "https://SHOP.example"]});
        let (status, made) = call(&admin, request("POST", "/write-keys", &twice.to_string())).await;
        assert_eq!(status, 201);
        assert_eq!(
            made["allowed_origins"],
            json!(["https://shop.example"]),
            "kept once (a DynamoDB set holds no repeats)"
        );
        assert_eq!(call(&admin, request("PUT", "/write-keys", "{}")).await.0, 405);
    }
}

//! The write-key authorizer: API Gateway calls it before a `/v1/*` route whose key comes in
//! the `Authorization` header (Basic, the key as user name), and caches its answer by that
//! header for the authorizer's TTL. It answers whether the key is valid and, in the context
//! the function receives, what the key may send (`KeyGrant::to_context`).
//!
//! The answer does not depend on the request's `Origin`: HTTP APIs answer 401 without
//! calling the authorizer when an identity source is missing, and servers send no `Origin`,
//! so the cache is keyed by the key alone. The function applies the key's origins on every
//! request, from the context, so a cached answer never lets one origin's allowance carry to
//! another.

use aws_lambda_events::apigw::{ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request};
use eventline_aws::write_keys::DynamoKeys;
use eventline_model::config::{ConfigError, Lookup, names, required};
use eventline_model::write_key::{KeyStore, KeyStoreError, WriteKey, check_key};

pub struct Authorizer<K> {
    pub keys: K,
}

/// The handler wired to AWS, as deployed.
pub type AwsAuthorizer = Authorizer<DynamoKeys>;

pub fn with_aws(env: &impl Lookup, sdk: &aws_config::SdkConfig) -> Result<AwsAuthorizer, ConfigError> {
    let table_name = required(env, names::EVENTS_TABLE)?;
    Ok(Authorizer { keys: DynamoKeys::new(aws_sdk_dynamodb::Client::new(sdk), table_name) })
}

impl<K: KeyStore> Authorizer<K> {
    /// Allowed with the key's grant, or denied (API Gateway answers `403`). When the keys
    /// cannot be read the invocation fails, API Gateway answers `500`, and an SDK retries.
    pub async fn authorize(
        &self,
        request: &ApiGatewayV2CustomAuthorizerV2Request,
    ) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, KeyStoreError> {
        let key = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(WriteKey::from_basic);
        let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
        match check_key(&self.keys, key.as_ref()).await? {
            Ok(grant) => {
                tracing::info!(key_id = %grant.key_id, source = %grant.source, "write key allowed");
                response.is_authorized = true;
                response.context = grant.to_context().into();
            }
            Err(denied) => {
                tracing::info!(reason = %denied, key_id = key.map(|k| k.id.to_string()).unwrap_or_default(), "write key denied");
                response.is_authorized = false;
                response.context = serde_json::Value::Object(serde_json::Map::new());
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_model::Source;
    use eventline_model::memory::MemoryKeys;
    use eventline_model::write_key::{KeyGrant, StoredKey};

    fn request(authorization: Option<String>) -> ApiGatewayV2CustomAuthorizerV2Request {
        let text = format!("{}/../../events/authorizer-request.json", env!("CARGO_MANIFEST_DIR"));
        let mut request: ApiGatewayV2CustomAuthorizerV2Request =
            serde_json::from_str(&std::fs::read_to_string(text).unwrap()).unwrap();
        request.headers.remove(http::header::AUTHORIZATION);
        if let Some(value) = authorization {
            request.headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        request
    }

    fn basic(key: &str) -> String {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
    }

    #[tokio::test]
    async fn a_stored_key_is_allowed_with_its_grant_and_anything_else_denied() {
        let keys = MemoryKeys::default();
        let key = WriteKey::generate();
        let grant = KeyGrant {
            key_id: key.id.clone(),
            source: Source::parse("web").unwrap(),
            allowed_origins: vec!["https://shop.example".into()],
            events_per_second: 20,
            created_at: String::new(),
        };
        keys.put(&StoredKey { grant: grant.clone(), secret_hash: key.hash() }).await.unwrap();
        let authorizer = Authorizer { keys };

        let allowed = authorizer.authorize(&request(Some(basic(&key.reveal())))).await.unwrap();
        assert!(allowed.is_authorized);
        let context: std::collections::HashMap<String, serde_json::Value> =
            serde_json::from_value(allowed.context.clone()).unwrap();
        assert_eq!(KeyGrant::from_context(&context), Some(grant));
        let wire = serde_json::to_value(&allowed).unwrap();
        assert_eq!(wire["isAuthorized"], true, "the simple response's field names");

        for denied in [None, Some(basic(&WriteKey::generate().reveal())), Some(format!("Bearer {}", key.reveal()))] {
            let answer = authorizer.authorize(&request(denied.clone())).await.unwrap();
            assert!(!answer.is_authorized, "{denied:?}");
        }
    }
}

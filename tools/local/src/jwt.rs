//! JWT authorization of routes, checked as an API Gateway JWT authorizer checks it: a token
//! from the `Authorization` header (with or without `Bearer `), signed with an RSA key of the
//! issuer's key set named by its `kid`, from the configured issuer, for one of the configured
//! audiences (`aud`, else `client_id`), and current (`exp`, `nbf`, `iat`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::Error;
use crate::manifest::JwtAuthorizer;

/// The signature algorithms an HTTP API's JWT authorizer accepts: RSA only.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// Why a request to a JWT route is refused. Every case answers API Gateway's 401
/// `Unauthorized`; the variant is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no Authorization header")]
    MissingToken,
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}; only RSA signatures are accepted")]
    Algorithm(Algorithm),
    #[error("no key in the issuer's key set has the token's kid")]
    UnknownKey,
    #[error("the token failed validation: {0}")]
    Invalid(String),
    #[error("the token names none of the authorizer's audiences")]
    Audience,
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let description = match self {
            Self::MissingToken => "",
            Self::Invalid(_) => "the token is invalid or has expired",
            _ => "the token is invalid",
        };
        let challenge = if description.is_empty() {
            "Bearer".to_owned()
        } else {
            format!(r#"Bearer error="invalid_token" error_description="{description}""#)
        };
        (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json"), ("www-authenticate", challenge.as_str())],
            r#"{"message":"Unauthorized"}"#,
        )
            .into_response()
    }
}

/// The issuer's signing keys, as its `jwks_uri` serves them.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: JwkSet,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.keys.iter().filter_map(|k| k.common.key_id.as_deref()).collect();
        f.debug_struct("JwtVerifier").field("kids", &kids).finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl JwtVerifier {
    pub fn new(keys: JwkSet) -> Self {
        Self { keys }
    }

    /// Reads a JSON Web Key Set file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Setup(format!("cannot read the JWT key set {}: {e}", path.display())))?;
        let keys: JwkSet = serde_json::from_str(&text).map_err(|e| {
            Error::Setup(format!("{} is not a JSON Web Key Set ({{\"keys\": [...]}}): {e}", path.display()))
        })?;
        if keys.keys.is_empty() {
            return Err(Error::Setup(format!("the JWT key set {} has no keys", path.display())));
        }
        Ok(Self::new(keys))
    }

    /// Accepts the request when its token passes every check of `authorizer`, with the
    /// token's claims as API Gateway hands them to the function (`authorizer.jwt.claims`:
    /// strings as they are, other values as JSON text).
    pub fn verify(&self, parts: &Parts, authorizer: &JwtAuthorizer) -> Result<HashMap<String, String>, Rejected> {
        let header = parts.headers.get(http::header::AUTHORIZATION).ok_or(Rejected::MissingToken)?;
        let value = header.to_str().map_err(|_| Rejected::Malformed("not ASCII".into()))?.trim();
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        let token_header = jsonwebtoken::decode_header(token).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if !ALGORITHMS.contains(&token_header.alg) {
            return Err(Rejected::Algorithm(token_header.alg));
        }
        let kid = token_header.kid.as_deref().ok_or(Rejected::UnknownKey)?;
        let jwk = self.keys.find(kid).ok_or(Rejected::UnknownKey)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| Rejected::UnknownKey)?;

        let mut validation = Validation::new(token_header.alg);
        validation.set_issuer(&[&authorizer.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        // `aud` or `client_id`: checked below, since the library knows only `aud`.
        validation.validate_aud = false;
        let all = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|e| Rejected::Invalid(e.to_string()))?
            .claims;
        let claims: Claims = serde_json::from_value(serde_json::Value::Object(all.clone()))
            .map_err(|e| Rejected::Invalid(e.to_string()))?;

        if claims.iat.is_some_and(|iat| iat > jsonwebtoken::get_current_timestamp()) {
            return Err(Rejected::Invalid("issued in the future (iat)".into()));
        }
        let allowed: HashSet<&str> = authorizer.audience.iter().map(String::as_str).collect();
        let named = match (&claims.aud, &claims.client_id) {
            (Some(Audience::One(aud)), _) => allowed.contains(aud.as_str()),
            (Some(Audience::Many(auds)), _) => auds.iter().any(|aud| allowed.contains(aud.as_str())),
            (None, Some(client_id)) => allowed.contains(client_id.as_str()),
            (None, None) => false,
        };
        if !named {
            return Err(Rejected::Audience);
        }
        Ok(all
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect())
    }
}

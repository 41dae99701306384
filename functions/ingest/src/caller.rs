//! Who is calling: what API Gateway's authorizer put in the request context (payload 2.0),
//! as the sender recorded with each event and, for a JWT caller, the user its events belong to.

use eventline_model::write_key::KeyGrant;
use eventline_model::{Sender, UserId};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sender: Sender,
    /// For a JWT caller, the user its events must name: the value of the configured claim,
    /// or why the token gives none.
    pub user: Option<Result<UserId, String>>,
}

impl Caller {
    /// The caller of `request`: the IAM principal (`authorizer.iam.userArn`), the token's
    /// issuer and subject with `user_claim` bound (`authorizer.jwt.claims`), or anonymous
    /// when the route has no authorizer.
    pub fn of(request: &Request, user_claim: &str) -> Self {
        let authorizer = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.as_ref(),
            _ => None,
        };
        if let Some(jwt) = authorizer.and_then(|a| a.jwt.as_ref()) {
            let claim = |name: &str| jwt.claims.get(name).map(String::as_str);
            let subject = claim("sub").or_else(|| claim("client_id")).unwrap_or_default();
            let user = match claim(user_claim) {
                Some(value) => UserId::parse(value).map_err(|rule| format!("the token's {user_claim} claim {rule}")),
                None => Err(format!("the token has no {user_claim} claim to bind user_id to")),
            };
            return Self { sender: Sender::jwt(claim("iss").unwrap_or_default(), subject), user: Some(user) };
        }
        match authorizer.and_then(|a| a.iam.as_ref()).and_then(|iam| iam.user_arn.as_deref()) {
            Some(arn) => Self { sender: Sender::iam(arn), user: None },
            None => Self { sender: Sender::anonymous(), user: None },
        }
    }
}

impl Caller {
    /// What the write-key authorizer found the request's key may send, from the context it
    /// put in the request (`authorizer.lambda`).
    pub fn write_key_grant(request: &Request) -> Option<KeyGrant> {
        match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => {
                context.authorizer.as_ref().and_then(|authorizer| KeyGrant::from_context(&authorizer.fields))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
        ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
    };

    /// A request as API Gateway hands it over after an IAM authorizer.
    pub(crate) fn with_iam(request: Request, user_arn: &str) -> Request {
        let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
        iam.user_arn = Some(user_arn.to_owned());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.iam = Some(iam);
        with_authorizer(request, authorizer)
    }

    /// A request as API Gateway hands it over after a JWT authorizer.
    pub(crate) fn with_jwt(request: Request, claims: &[(&str, &str)]) -> Request {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        with_authorizer(request, authorizer)
    }

    /// Puts the authorizer in the request's context, keeping what is there (its route key).
    pub(crate) fn with_authorizer(mut request: Request, authorizer: ApiGatewayRequestAuthorizer) -> Request {
        if let Some(RequestContext::ApiGatewayV2(context)) = request.extensions_mut().get_mut::<RequestContext>() {
            context.authorizer = Some(authorizer);
            return request;
        }
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = Some(authorizer);
        request.with_request_context(RequestContext::ApiGatewayV2(context))
    }

    fn request() -> Request {
        http::Request::builder().uri("/events").body(lambda_http::Body::Empty).unwrap()
    }

    #[test]
    fn an_iam_caller_is_its_role_without_the_session() {
        let caller = Caller::of(&with_iam(request(), "arn:aws:sts::123456789012:assumed-role/Writer/i-1"), "sub");
        assert_eq!(caller.sender.as_str(), "arn:aws:sts::123456789012:assumed-role/Writer");
        assert_eq!(caller.user, None, "an IAM caller may send any user's events");
    }

    #[test]
    fn a_jwt_caller_is_issuer_and_subject_with_its_user_bound() {
        let claims = [("iss", "https://issuer.example"), ("sub", "device-7"), ("uid", "u-9")];
        let caller = Caller::of(&with_jwt(request(), &claims), "sub");
        assert_eq!(caller.sender.as_str(), "jwt:https://issuer.example device-7");
        assert_eq!(caller.user, Some(Ok(UserId::parse("device-7").unwrap())));
        let by_uid = Caller::of(&with_jwt(request(), &claims), "uid");
        assert_eq!(by_uid.user, Some(Ok(UserId::parse("u-9").unwrap())));
        let missing = Caller::of(&with_jwt(request(), &claims), "email");
        assert!(matches!(missing.user, Some(Err(reason)) if reason.contains("no email claim")));
    }

    #[test]
    fn without_an_authorizer_the_caller_is_anonymous() {
        assert_eq!(Caller::of(&request(), "sub"), Caller { sender: Sender::anonymous(), user: None });
    }
}

use crate::error::ApiError;
use crate::startup::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use store::Principal;

/// The caller, from `Authorization: Bearer <token>`. Tokens are stored as SHA-256 hashes.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(ApiError::Unauthorized);
        };
        match state.store.principal_for_token(token).await? {
            Some(p) => Ok(Caller(p)),
            None => Err(ApiError::Unauthorized),
        }
    }
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs an admin token".into()))
        }
    }

    pub fn name(&self) -> String {
        format!("token:{}", self.0.name)
    }
}

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

    /// A token limited to some task types may start (and cancel or retry) only those.
    pub fn require_task_type(&self, task_type: domain::TaskType) -> Result<(), ApiError> {
        match &self.0.allowed_task_types {
            Some(allowed) if !allowed.contains(&task_type) => {
                let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
                Err(ApiError::Forbidden(format!(
                    "this token may not run '{task_type}' tasks; it may run: {}",
                    names.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> String {
        format!("token:{}", self.0.name)
    }
}

//! The API's one error type. 4xx errors say what to fix; 5xx errors say only that something
//! failed, with an id to find the details in the gateway's log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unprocessable(String),
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn field(field: &str, e: domain::ParseError) -> Self {
        ApiError::Unprocessable(format!("{field}: {e}"))
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound(what) => {
                ApiError::NotFound(format!("{what} does not exist"))
            }
            store::StoreError::Conflict(msg) => ApiError::Conflict(msg),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an API token in the header 'Authorization: Bearer <token>' (make up wrote the admin token to .stack/admin.token)".into(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            ApiError::Internal(e) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(error_id = %id, error = %format!("{e:#}"), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("internal error {id}; the gateway's log has the details"))
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose syntax and shape errors become 400s that say what is wrong.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::BadRequest(format!("the body is not the JSON this endpoint takes: {e}"))
        })
    }
}

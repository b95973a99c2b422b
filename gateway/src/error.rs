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
    MethodNotAllowed(String),
    Conflict(String),
    TooLarge(String),
    UnsupportedMediaType(String),
    Unprocessable(String),
    /// Too many failed authentications from one address: try again after this many seconds.
    TooManyRequests(u64),
    /// A dependency (the state database) is down: try again after this many seconds.
    Unavailable(String, u64),
    Internal(anyhow::Error),
}

/// What a 503 for an unreachable state database tells the client to wait.
pub const STATE_RETRY_AFTER_SECS: u64 = 5;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How deeply a request body's JSON may nest (arrays and objects).
pub const MAX_JSON_DEPTH: usize = 32;

impl ApiError {
    /// The state database is away: nothing was read or changed.
    pub fn state_unavailable() -> Self {
        ApiError::Unavailable(
            "the state database is unreachable, so nothing was read or changed; try again in a few seconds".into(),
            STATE_RETRY_AFTER_SECS,
        )
    }

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
            store::StoreError::Invalid(msg) => ApiError::Unprocessable(msg),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the state database is unreachable");
                ApiError::state_unavailable()
            }
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
        let mut retry_after = None;
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            ApiError::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m)
            }
            ApiError::TooManyRequests(secs) => {
                retry_after = Some(secs);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!("too many failed authentications from this address; try again in {secs} s"),
                )
            }
            ApiError::Unavailable(m, secs) => {
                retry_after = Some(secs);
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
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
        let mut response = (
            status,
            Json(serde_json::json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        if let Some(secs) = retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// How deeply `bytes` nest arrays and objects, strings skipped; stops counting past `limit`.
fn json_depth_exceeds(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose syntax and shape errors become 400s that say what is wrong, and where
/// (`aliases[2]: invalid type: integer 5, expected a string`). Bodies over
/// [`MAX_BODY_BYTES`] are refused with 413, nesting deeper than [`MAX_JSON_DEPTH`] with 422, and
/// a content type that is not JSON with 415 (a body that `curl -d` sends as a form, but that
/// is JSON, is read as JSON).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(format!(
                        "the body is larger than {MAX_BODY_BYTES} bytes, the limit of this API"
                    ))
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {e}"))
                }
            })?;
        let json_type = match content_type.as_deref() {
            None => true,
            Some(t) => {
                t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
            }
        };
        let curl_form = content_type.as_deref() == Some("application/x-www-form-urlencoded");
        if !json_type && !curl_form {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body is {}; send JSON, with Content-Type: application/json",
                content_type.unwrap_or_default()
            )));
        }
        if json_depth_exceeds(&bytes, MAX_JSON_DEPTH) {
            return Err(ApiError::Unprocessable(format!(
                "the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels, the limit of this API"
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
        if parsed.is_ok() {
            if let Err(e) = de.end() {
                return Err(ApiError::BadRequest(format!(
                    "the body is not the JSON this endpoint takes: {e}"
                )));
            }
        }
        match parsed {
            Ok(v) => Ok(ApiJson(v)),
            Err(_) if curl_form && serde_json::from_slice::<serde_json::Value>(&bytes).is_err() => {
                Err(ApiError::UnsupportedMediaType(
                    "the body is a form; send JSON, with Content-Type: application/json".into(),
                ))
            }
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                Err(ApiError::BadRequest(if path == "." || path.is_empty() {
                    format!("the body is not the JSON this endpoint takes: {inner}")
                } else {
                    format!("{path}: {inner}")
                }))
            }
        }
    }
}

/// An id in the path (`/sites/{id}`), refused with a JSON 400 that says what an id is.
pub struct PathId(pub i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("the path: {e}")))?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(PathId(id)),
            _ => Err(ApiError::BadRequest(format!(
                "'{}' in the path is not an id: ids are whole numbers from 1",
                raw.chars().take(64).collect::<String>()
            ))),
        }
    }
}

/// A query string, refused with a JSON 400 that names the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::BadRequest(format!("query parameter {path}: {}", e.into_inner()))
            })
    }
}

/// Turns every refusal the router or an extractor makes on its own (an unknown method, a
/// body too large, a rejection in plain text) into the API's JSON error, so that a client
/// always reads `{"error": {"code", "message"}}`.
pub async fn json_refusals(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    // JSON is the API's own; HTML is a page for people (the dashboard's, the public pages').
    let answered = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if status.as_u16() < 400 || answered {
        return response;
    }
    let allow = response
        .headers()
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(format!(
            "{method} is not allowed on {path}; allowed: {}",
            allow.unwrap_or_default()
        )),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes, the limit of this API"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        StatusCode::NOT_FOUND => ApiError::NotFound(if text.is_empty() {
            format!("no such endpoint: {path}")
        } else {
            text
        }),
        s if s.is_server_error() => ApiError::Internal(anyhow::anyhow!("{s}: {text}")),
        _ => ApiError::BadRequest(if text.is_empty() {
            status.to_string()
        } else {
            text
        }),
    };
    let mut out = error.into_response();
    *out.status_mut() = status;
    out
}

/// A handler that panics (a bug) answers 500 with the API's JSON error, and the connection
/// and the gateway live on.
pub async fn catch_panics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(panic) => ApiError::Internal(anyhow::anyhow!(
            "a handler panicked: {}",
            bus::panic_message(&panic)
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_depth_is_counted_outside_strings() {
        assert!(!super::json_depth_exceeds(
            b"{\"a\": [[1]], \"b\": \"[[[[[[\"}",
            3
        ));
        assert!(super::json_depth_exceeds(b"[[[[1]]]]", 3));
        assert!(!super::json_depth_exceeds(b"\"\\\"[[[[\"", 1));
    }
}

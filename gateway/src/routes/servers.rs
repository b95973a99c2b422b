use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::startup::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::{Name, ServerKind};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    name: String,
    kind: String,
    host: Option<String>,
    port: Option<i32>,
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<store::Server>)> {
    caller.require_admin()?;
    let name = Name::parse(&body.name).map_err(|e| ApiError::field("name", e))?;
    let kind = ServerKind::parse(&body.kind).map_err(|e| ApiError::field("kind", e))?;
    let host = body.host.unwrap_or_else(|| "127.0.0.1".into());
    platform::check_db_host(&host).map_err(|e| ApiError::Unprocessable(format!("host: {e}")))?;
    let port = body.port.unwrap_or(match kind {
        ServerKind::Web => 8088,
        ServerKind::Db => 3306,
    });
    if !(1..=65535).contains(&port) {
        return Err(ApiError::Unprocessable(format!(
            "port: {port} is not between 1 and 65535"
        )));
    }
    let server = s.store.create_server(&name, kind, &host, port).await?;
    Ok((StatusCode::CREATED, Json(server)))
}

pub async fn list(
    State(s): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<store::Server>>> {
    Ok(Json(s.store.servers().await?))
}

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{Email, Name};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    name: String,
    email: String,
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewClient>,
) -> ApiResult<(StatusCode, Json<store::Client>)> {
    caller.require_admin()?;
    let name = Name::parse(&body.name).map_err(|e| ApiError::field("name", e))?;
    let email = Email::parse(&body.email).map_err(|e| ApiError::field("email", e))?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_client(&name, &email).await?),
    ))
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<store::Client>> {
    let clients = s.store.clients(caller.0.client).await?;
    Page::from_list(clients, &q, &uri, "after", |c| c.id.0)
}

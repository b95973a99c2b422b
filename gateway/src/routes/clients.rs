use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{Email, Name};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    name: String,
    email: String,
}

#[utoipa::path(post, path = "/clients", tag = "clients", request_body = NewClient, responses((status = 201, description = "The client", body = Object), crate::openapi::WriteErrors), operation_id = "clients_create")]
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

#[utoipa::path(get, path = "/clients", tag = "clients", params(ListQuery), responses((status = 200, description = "Clients (a client's token sees its own)", body = [Object]), crate::openapi::ReadErrors), operation_id = "clients_list")]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<store::Client>> {
    let clients = s.store.clients(caller.0.client).await?;
    Page::from_list(clients, &q, &uri, "after", |c| c.id.0)
}

//! API tokens, managed by the admin: a client's token sees and acts on that client's sites
//! only; a token may be limited to some task types. Tokens are stored as hashes: the token
//! itself is in the answer to its creation and nowhere else.

use super::Ref;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{Name, Scope};
use serde_json::{json, Value};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    /// The client whose sites the token may see; absent: an admin token.
    client: Option<Ref>,
    /// What the token may do: site task types (`install` makes sites) and `backup-schedule`;
    /// absent: all its client may.
    task_types: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, description = "The token record with the token itself, shown only here", body = Object), crate::openapi::WriteErrors), operation_id = "tokens_create")]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let name = Name::parse(&body.name).map_err(|e| ApiError::field("name", e))?;
    let client = match &body.client {
        None => None,
        Some(r) => Some(super::client_ref(&s, r, "client").await?.id),
    };
    let task_types = match &body.task_types {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ApiError::Unprocessable(
                "task_types: give at least one task type, or leave it out for all".into(),
            ))
        }
        Some(list) if list.len() > Scope::ALL.len() => {
            return Err(ApiError::Unprocessable(format!(
                "task_types: at most {} entries, each once: {}",
                Scope::ALL.len(),
                Scope::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        Some(list) => {
            let mut scopes = Vec::new();
            for t in list {
                let scope = Scope::parse(t).map_err(|_| {
                    ApiError::Unprocessable(format!(
                        "task_types: '{}' is not a site task type (platform tasks are for admin tokens); give any of: {}",
                        t.chars().take(64).collect::<String>(),
                        Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if scopes.contains(&scope) {
                    return Err(ApiError::Unprocessable(format!(
                        "task_types: '{scope}' is listed twice"
                    )));
                }
                scopes.push(scope);
            }
            Some(scopes)
        }
    };
    let (token, record) = s
        .store
        .create_token(name.as_str(), client, task_types.as_deref(), &caller.name())
        .await?;
    let mut out = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.into()))?;
    out["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/tokens", tag = "tokens", params(ListQuery), responses((status = 200, description = "Tokens (never their secret)", body = [Object]), crate::openapi::ReadErrors), operation_id = "tokens_list")]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<store::ApiToken>> {
    caller.require_admin()?;
    Page::from_list(s.store.tokens().await?, &q, &uri, "after", |t| t.id)
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = i64, Path, minimum = 1, description = "the token's id")), responses((status = 200, description = "The token, revoked", body = Object), crate::openapi::WriteErrors), operation_id = "tokens_revoke")]
pub async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<store::ApiToken>> {
    caller.require_admin()?;
    if id == caller.0.token_id {
        return Err(ApiError::Conflict(
            "this is the token you are calling with; revoke it with another admin token".into(),
        ));
    }
    let revoked = s.store.revoke_token(id).await?;
    // Refused from now on by this gateway (others within `auth::PRINCIPAL_TTL`).
    s.principals.clear();
    Ok(Json(revoked))
}

//! Dead letters, for the admin: messages no consumer could take, with the reason, to look at,
//! drop, or replay (published again, as they were, where they first went).

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult, PathId};
use crate::paging::{page_size, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::Json;
use serde_json::{json, Value};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only dead letters older than this id (the next page).
    before: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

fn letter_json(d: &store::DeadLetter) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["body"] = match std::str::from_utf8(&d.body) {
        Ok(text) => json!(text),
        Err(_) => json!(format!("{} bytes, not text", d.body.len())),
    };
    v
}

#[utoipa::path(get, path = "/dead-letters", tag = "dead-letters", params(DeadLetterQuery), responses((status = 200, description = "Dead letters, newest first, with why each was refused", body = [Object]), crate::openapi::ReadErrors), operation_id = "dead_letters_list")]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Page<Value>> {
    caller.require_admin()?;
    let limit = page_size(q.limit)?;
    let letters = s
        .store
        .dead_letters(q.before, limit.saturating_add(1))
        .await?;
    let total = s.store.dead_letters_count().await?;
    let items = letters.iter().map(letter_json).collect();
    Ok(Page::from_overfetch(
        items,
        limit,
        total,
        &uri,
        "before",
        |d| d.get("id").and_then(Value::as_i64).unwrap_or(0),
    ))
}

#[utoipa::path(delete, path = "/dead-letters/{id}", tag = "dead-letters", params(("id" = i64, Path, minimum = 1, description = "the dead letter's id")), responses((status = 200, description = "Dropped", body = Object), crate::openapi::WriteErrors), operation_id = "dead_letters_drop")]
pub async fn drop(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if !s.store.drop_dead_letter(id).await? {
        return Err(ApiError::NotFound(format!(
            "dead letter {id} does not exist"
        )));
    }
    Ok(Json(json!({"dropped": id})))
}

#[utoipa::path(post, path = "/dead-letters/{id}/replay", tag = "dead-letters", params(("id" = i64, Path, minimum = 1, description = "the dead letter's id")), responses((status = 200, description = "Published again to where it came from", body = Object), crate::openapi::WriteErrors), operation_id = "dead_letters_replay")]
pub async fn replay(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let d = s.store.dead_letter(id).await?;
    let (Some(exchange), Some(key)) = (&d.exchange, &d.routing_key) else {
        return Err(ApiError::Conflict(format!(
            "dead letter {id} does not say where it went first; it cannot be replayed, only dropped"
        )));
    };
    let message_type = d.message_type.clone().unwrap_or_default();
    s.bus
        .publish(exchange, key, &message_type, &d.body)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the broker did not take it: {e}"), 5))?;
    s.store.mark_dead_letter_replayed(id).await?;
    Ok(Json(
        json!({"replayed": id, "exchange": exchange, "routing_key": key}),
    ))
}

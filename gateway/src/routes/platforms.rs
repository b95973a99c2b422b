use super::Ref;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::startup::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{Driver, HostPath, Name, PlatformId, ServerKind, TaskType};
use serde_json::{json, Value};
use store::{NewTask, Platform, Store};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlatform {
    name: String,
    server: Ref,
    root: String,
    driver: String,
}

pub async fn platform_json(store: &Store, p: &Platform) -> ApiResult<Value> {
    let mut v = serde_json::to_value(p).map_err(anyhow::Error::from)?;
    v["packages"] =
        serde_json::to_value(store.platform_packages(p.id).await?).map_err(anyhow::Error::from)?;
    v["profiles"] =
        serde_json::to_value(store.platform_profiles(p.id).await?).map_err(anyhow::Error::from)?;
    Ok(v)
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewPlatform>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let name = Name::parse(&body.name).map_err(|e| ApiError::field("name", e))?;
    let root = HostPath::parse(&body.root).map_err(|e| ApiError::field("root", e))?;
    let driver = Driver::parse(&body.driver).map_err(|e| ApiError::field("driver", e))?;
    let server = match &body.server {
        Ref::Name(n) => {
            let n = Name::parse(n).map_err(|e| ApiError::field("server", e))?;
            s.store.server_by_name(&n, ServerKind::Web).await
        }
        Ref::Id(id) => s.store.server(domain::ServerId(*id)).await,
    }
    .map_err(|_| {
        ApiError::Unprocessable(format!(
            "server: there is no web server {:?}; create it with POST /api/v1/servers",
            body.server
        ))
    })?;
    if server.kind != ServerKind::Web {
        return Err(ApiError::Unprocessable(format!(
            "server: '{}' is a {} server; platforms live on web servers",
            server.name, server.kind
        )));
    }
    let (platform, task) = s
        .store
        .create_platform(
            &name,
            server.id,
            &root,
            driver,
            &caller.name(),
            bus::current_traceparent(),
        )
        .await?;
    s.wake_relay.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "platform": platform_json(&s.store, &platform).await?, "task": task })),
    ))
}

pub async fn list(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    let mut out = Vec::new();
    for p in s.store.platforms().await? {
        out.push(platform_json(&s.store, &p).await?);
    }
    Ok(Json(out))
}

pub async fn get(
    State(s): State<AppState>,
    _caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let p = s.store.platform(PlatformId(id)).await?;
    Ok(Json(platform_json(&s.store, &p).await?))
}

#[derive(serde::Deserialize)]
pub struct NewPlatformTask {
    #[serde(rename = "type")]
    task_type: String,
}

pub async fn create_task(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<NewPlatformTask>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let p = s.store.platform(PlatformId(id)).await?;
    let task_type = match body.task_type.as_str() {
        "verify" => TaskType::PlatformVerify,
        "lock" | "unlock" | "delete" | "migrate-sites" => {
            return Err(ApiError::Conflict(format!("the platform task '{}' is not available in this version; available: verify", body.task_type)))
        }
        other => return Err(ApiError::Unprocessable(format!("type: '{other}' is not a platform task; use verify, lock, unlock, delete or migrate-sites"))),
    };
    if p.status == domain::PlatformStatus::Deleted {
        return Err(ApiError::Conflict("the platform is deleted".into()));
    }
    let task = s
        .store
        .create_task(
            &NewTask::for_platform(task_type, p.id, &caller.name())
                .traced(bus::current_traceparent()),
        )
        .await?;
    s.wake_relay.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "task": task }))))
}

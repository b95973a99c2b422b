use super::Ref;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{Driver, HostPath, Name, PlatformId, ServerKind, TaskType};
use serde_json::{json, Value};
use store::{NewTask, Platform, Store};

#[derive(serde::Deserialize, utoipa::ToSchema)]
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

#[utoipa::path(post, path = "/platforms", tag = "platforms", request_body = NewPlatform, responses((status = 202, description = "The platform registered and its first verify task", body = Object), crate::openapi::WriteErrors), operation_id = "platforms_create")]
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
    check_root(&s, &server, &root).await?;
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

/// A platform root must lie in one of its server's platform directories, never in (or
/// around) a system directory or the control plane's own, and exist there as a directory.
async fn check_root(s: &AppState, server: &store::Server, root: &HostPath) -> ApiResult<()> {
    if let Some(why) = crate::policy::forbidden_path(root, &crate::policy::own_dirs()) {
        return Err(ApiError::Unprocessable(format!(
            "root: {why}; platforms live in the server's platform directories"
        )));
    }
    let dirs: Vec<&str> = server.platform_dirs.iter().map(|d| d.as_str()).collect();
    if !server
        .platform_dirs
        .iter()
        .any(|d| root.as_path().starts_with(d.as_path()) && root != d)
    {
        return Err(ApiError::Unprocessable(format!(
            "root: {root} is not inside a platform directory of server {}: [{}] (PATCH /api/v1/servers/{} {{\"platform_dirs\": [...]}} changes them)",
            server.name,
            dirs.join(", "),
            server.id
        )));
    }
    // The web server's agent says what is there. If it does not answer, the platform's
    // verify task finds out, before anything is made.
    let asked: Result<contract::WebconfReply, _> = s
        .rpc
        .ask::<contract::WebconfRpc>(
            &server.name,
            &contract::WebconfRequest::InspectPath { path: root.clone() },
            std::time::Duration::from_secs(5),
        )
        .await;
    match asked.ok().and_then(|r| r.path) {
        Some(contract::PathKind::Missing) => Err(ApiError::Unprocessable(format!(
            "root: {root} does not exist on web server {}; copy the codebase there first",
            server.name
        ))),
        Some(contract::PathKind::Directory) | None => Ok(()),
        Some(other) => Err(ApiError::Unprocessable(format!(
            "root: {root} on web server {} is a {}, not a directory",
            server.name,
            match other {
                contract::PathKind::Symlink => "symlink",
                contract::PathKind::File => "file",
                _ => "special file",
            }
        ))),
    }
}

#[utoipa::path(get, path = "/platforms", tag = "platforms", params(ListQuery), responses((status = 200, description = "Platforms with their packages and profiles", body = [Object]), crate::openapi::ReadErrors), operation_id = "platforms_list")]
pub async fn list(
    State(s): State<AppState>,
    _caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<Value>> {
    // A web server holds tens of platforms, not thousands: the page is cut from the list, and
    // only its own platforms are read in full.
    let all = s.store.platforms().await?;
    let page = Page::from_list(all, &q, &uri, "after", |p| p.id.0)?;
    let mut items = Vec::with_capacity(page.items.len());
    for p in &page.items {
        items.push(platform_json(&s.store, p).await?);
    }
    Ok(Page {
        items,
        total: page.total,
        next: page.next,
    })
}

#[utoipa::path(get, path = "/platforms/{id}", tag = "platforms", params(("id" = i64, Path, minimum = 1, description = "the platform's id")), responses((status = 200, description = "The platform with its packages and profiles", body = Object), crate::openapi::ReadErrors), operation_id = "platforms_get")]
pub async fn get(
    State(s): State<AppState>,
    _caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let p = s.store.platform(PlatformId(id)).await?;
    Ok(Json(platform_json(&s.store, &p).await?))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlatformTask {
    #[serde(rename = "type")]
    task_type: String,
    /// migrate-sites: the platform the sites go to, by name or id.
    target: Option<Ref>,
    /// migrate-sites: how many sites move at once (default 4).
    concurrency: Option<i64>,
    /// migrate-sites: no new site is started after this many failed (default 3).
    failure_budget: Option<i64>,
    /// migrate-sites: the database server every site's database moves to, by name or id
    /// (default: each keeps its own).
    db_server: Option<Ref>,
}

#[utoipa::path(post, path = "/platforms/{id}/tasks", tag = "platforms", params(("id" = i64, Path, minimum = 1, description = "the platform's id")), request_body = NewPlatformTask, responses((status = 202, description = "The platform task accepted", body = Object), crate::openapi::WriteErrors), operation_id = "platforms_create_task")]
pub async fn create_task(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<NewPlatformTask>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let p = s.store.platform(PlatformId(id)).await?;
    let task_type = match body.task_type.as_str() {
        "verify" => TaskType::PlatformVerify,
        "lock" => TaskType::PlatformLock,
        "unlock" => TaskType::PlatformUnlock,
        "delete" => TaskType::PlatformDelete,
        "migrate-sites" => TaskType::MigrateSites,
        other => return Err(ApiError::Unprocessable(format!("type: '{other}' is not a platform task; use verify, lock, unlock, delete or migrate-sites"))),
    };
    if p.status == domain::PlatformStatus::Deleted {
        return Err(ApiError::Conflict("the platform is deleted".into()));
    }
    if task_type == TaskType::PlatformDelete {
        let live: Vec<String> = s
            .store
            .sites(&store::SiteFilter {
                platform: Some(p.id),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|site| site.status != domain::SiteStatus::Deleted)
            .map(|site| site.domain.to_string())
            .collect();
        if !live.is_empty() {
            return Err(ApiError::Conflict(format!(
                "platform {} still has {} sites ({}{}); migrate or delete them first",
                p.name,
                live.len(),
                live.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if live.len() > 5 { ", ..." } else { "" }
            )));
        }
    }
    let mut args = contract::TaskArgs::none();
    if task_type == TaskType::MigrateSites {
        let target = body.target.as_ref().ok_or_else(|| {
            ApiError::Unprocessable("target: give the platform the sites move to".into())
        })?;
        let target = super::platform_ref(&s, target, "target").await?;
        if target.id == p.id {
            return Err(ApiError::Unprocessable(
                "target: the sites are on that platform already".into(),
            ));
        }
        if target.status != domain::PlatformStatus::Enabled {
            return Err(ApiError::Conflict(format!(
                "platform {} is {}; sites can only move to an enabled platform",
                target.name, target.status
            )));
        }
        let concurrency = body.concurrency.unwrap_or(4);
        let budget = body.failure_budget.unwrap_or(3);
        if !(1..=64).contains(&concurrency) {
            return Err(ApiError::Unprocessable(
                "concurrency: give a number from 1 to 64".into(),
            ));
        }
        if !(1..=100_000).contains(&budget) {
            return Err(ApiError::Unprocessable(
                "failure_budget: give a number from 1 to 100000".into(),
            ));
        }
        let db_server = match &body.db_server {
            Some(r) => Some(super::db_server_ref(&s, r, "db_server").await?.id),
            None => None,
        };
        args = contract::TaskArgs::MigrateSites(contract::MigrateSitesArgs {
            target: target.id,
            // In range (checked above).
            concurrency: u32::try_from(concurrency).unwrap_or(1),
            failure_budget: u32::try_from(budget).unwrap_or(1),
            db_server,
        });
    } else if body.target.is_some()
        || body.concurrency.is_some()
        || body.failure_budget.is_some()
        || body.db_server.is_some()
    {
        return Err(ApiError::Unprocessable(format!(
            "target, concurrency, failure_budget and db_server are for migrate-sites, not {}",
            body.task_type
        )));
    }
    let mut new =
        NewTask::for_platform(task_type, p.id, &caller.name()).traced(bus::current_traceparent());
    new.args = args;
    let task = s.store.create_task(&new).await?;
    s.wake_relay.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "task": task }))))
}

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{page_size, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use domain::{SiteId, TaskId, TaskStatus, TaskType};
use std::convert::Infallible;
use std::time::Duration;
use store::{LogLine, Task, TaskFilter};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    site: Option<i64>,
    status: Option<String>,
    #[serde(rename = "type")]
    task_type: Option<String>,
    parent: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The cursor: the last (oldest) task id of the previous page; tasks come newest first.
    before: Option<i64>,
}

/// A task the caller may see: a client token sees its own sites' tasks only.
async fn visible_task(s: &AppState, caller: &Caller, id: i64) -> ApiResult<Task> {
    let task = s.store.task(TaskId(id)).await?;
    if let Some(own) = caller.0.client {
        let mine = match task.site {
            Some(site) => s.store.site(site).await?.client_id == own,
            None => false,
        };
        if !mine {
            return Err(ApiError::NotFound(format!("task {id} does not exist")));
        }
    }
    Ok(task)
}

#[utoipa::path(get, path = "/tasks", tag = "tasks", params(TaskQuery), responses((status = 200, description = "Tasks, newest first", body = [Object]), crate::openapi::ReadErrors), operation_id = "tasks_list")]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Page<Task>> {
    let filter = TaskFilter {
        site: q.site.map(SiteId),
        sites_of_client: caller.0.client,
        status: q
            .status
            .as_deref()
            .map(TaskStatus::parse)
            .transpose()
            .map_err(|e| ApiError::field("status", e))?,
        task_type: q
            .task_type
            .as_deref()
            .map(TaskType::parse)
            .transpose()
            .map_err(|e| ApiError::field("type", e))?,
        parent: q.parent.map(TaskId),
        limit: page_size(q.limit)?,
    };
    let (tasks, total) = s.store.tasks_page(&filter, q.before.map(TaskId)).await?;
    Ok(Page::from_overfetch(
        tasks,
        filter.limit,
        total,
        &uri,
        "before",
        |t| t.id.0,
    ))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSystemTask {
    #[serde(rename = "type")]
    task_type: String,
}

/// Starts a task of the control plane itself, about no site or platform (admins only):
/// `purge-tasks` applies the task retention now rather than at the backupper's daily run.
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = NewSystemTask, responses((status = 202, description = "The control plane's own task (purge-tasks) accepted", body = Object), crate::openapi::WriteErrors), operation_id = "tasks_create")]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewSystemTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    caller.require_admin()?;
    let task_type = match TaskType::parse(&body.task_type) {
        Ok(t @ TaskType::PurgeTasks) => t,
        Ok(t @ TaskType::Noop) if s.config.bench_tasks => t,
        _ => {
            return Err(ApiError::Unprocessable(format!(
                "type: '{}' is not a task of the control plane; the one there is: purge-tasks \
                 (site tasks: POST /api/v1/sites/{{id}}/tasks, platform tasks: POST /api/v1/platforms/{{id}}/tasks)",
                body.task_type.chars().take(64).collect::<String>()
            )))
        }
    };
    let task = s
        .store
        .create_task(&store::NewTask {
            task_type,
            site: None,
            platform: None,
            parent: None,
            retry_of: None,
            args: contract::TaskArgs::none(),
            requested_by: caller.name(),
            traceparent: bus::current_traceparent(),
        })
        .await?;
    s.wake_relay.notify_one();
    Ok((StatusCode::ACCEPTED, Json(task)))
}

#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", params(("id" = i64, Path, minimum = 1, description = "the task's id")), responses((status = 200, description = "The task: type, status, arguments, result or error", body = Object), crate::openapi::ReadErrors), operation_id = "tasks_get")]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Task>> {
    Ok(Json(visible_task(&s, &caller, id).await?))
}

#[utoipa::path(get, path = "/tasks/{id}/log", tag = "tasks", params(("id" = i64, Path, minimum = 1, description = "the task's id")), responses((status = 200, description = "The task's log lines, oldest first", body = [Object]), crate::openapi::ReadErrors), operation_id = "tasks_log")]
pub async fn log(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<LogLine>>> {
    let task = visible_task(&s, &caller, id).await?;
    Ok(Json(s.store.task_log(task.id, 0).await?))
}

/// Server-sent events: each log line as a `log` event and each status change as a `status`
/// event, until the task ends. Read from the state database, so any gateway instance can
/// serve any task's stream and a reconnecting client misses nothing.
#[utoipa::path(get, path = "/tasks/{id}/events", tag = "tasks", params(("id" = i64, Path, minimum = 1, description = "the task's id")), responses((status = 200, description = "Server-sent events: `log` (a log line) and `status` (the task) as they happen; the stream ends with the task", content_type = "text/event-stream", body = crate::openapi::TaskEventMessage), crate::openapi::ReadErrors), operation_id = "tasks_events")]
pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let task = visible_task(&s, &caller, id).await?;
    let store = s.store.clone();
    let stream = futures_util::stream::unfold(
        (task.id, 0i64, None::<TaskStatus>, false),
        move |(id, after, last, done)| {
            let store = store.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let lines = store.task_log(id, after).await.unwrap_or_default();
                    if let Some(line) = lines.first() {
                        return Some((Ok(log_event(line)), (id, line.id, last, false)));
                    }
                    let task = store.task(id).await.ok()?;
                    // Lines written just before the task ended come before its last status.
                    if task.status.is_terminal() {
                        let late = store.task_log(id, after).await.unwrap_or_default();
                        if let Some(line) = late.first() {
                            return Some((Ok(log_event(line)), (id, line.id, last, false)));
                        }
                    }
                    if Some(task.status) != last {
                        let event = Event::default()
                            .event("status")
                            .json_data(&task)
                            .unwrap_or_default();
                        return Some((
                            Ok(event),
                            (id, after, Some(task.status), task.status.is_terminal()),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn log_event(line: &LogLine) -> Event {
    Event::default()
        .event("log")
        .json_data(line)
        .unwrap_or_default()
}

/// Cancels a task that has not started. One that runs already is not interrupted: its steps
/// undo themselves only on failure, and stopping one halfway would leave the site neither
/// old nor new.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", params(("id" = i64, Path, minimum = 1, description = "the task's id")), responses((status = 200, description = "The task, cancelled before it started", body = Object), crate::openapi::WriteErrors), operation_id = "tasks_cancel")]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Task>> {
    let task = visible_task(&s, &caller, id).await?;
    caller.require_task_type(task.task_type)?;
    if task.status != TaskStatus::Queued {
        return Err(ApiError::Conflict(format!(
            "task {id} is {}; only a queued task can be cancelled",
            task.status
        )));
    }
    match s.store.cancel_task(task.id, &caller.name()).await? {
        Some(t) => Ok(Json(t)),
        None => Err(ApiError::Conflict(format!(
            "task {id} started meanwhile; only a queued task can be cancelled"
        ))),
    }
}

/// Retries a failed task: a new task with the same type and arguments, pointing at the
/// failed one (`retry_of`). The site's rules apply as for a new task.
#[utoipa::path(post, path = "/tasks/{id}/retry", tag = "tasks", params(("id" = i64, Path, minimum = 1, description = "the task's id")), responses((status = 202, description = "A new task running the failed one again", body = Object), crate::openapi::WriteErrors), operation_id = "tasks_retry")]
pub async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let task = visible_task(&s, &caller, id).await?;
    caller.require_task_type(task.task_type)?;
    if task.status != TaskStatus::Error {
        return Err(ApiError::Conflict(format!(
            "task {id} is {}; only a failed (error) task can be retried",
            task.status
        )));
    }
    match (task.site, task.task_type) {
        (Some(_), TaskType::Clone) => {
            return Err(ApiError::Conflict(
                "a clone's new site is gone with its failed task; start a new clone".into(),
            ))
        }
        (Some(site), TaskType::Install) => {
            let site = s.store.site(site).await?;
            let open = s.store.open_tasks_of_site(site.id).await?;
            if site.status != domain::SiteStatus::Failed || !open.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "the install of {} can be retried only while the site is failed and idle; it is {}{}",
                    site.domain,
                    site.status,
                    if open.is_empty() { "" } else { " with tasks pending" }
                )));
            }
        }
        (Some(site), t) => {
            let site = s.store.site(site).await?;
            crate::routes::sites::ensure_available(&s, &site, t, &task.args).await?;
        }
        (None, _) => caller.require_admin()?,
    }
    let new = s.store.retry_task(&task, &caller.name()).await?;
    s.wake_relay.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "task": new })),
    ))
}

//! The task queue, a task's page with its log live from the task's event stream, and
//! cancel and retry.

use super::api::{task_page, Listed};
use super::page::{badge, csrf, pager, query, refused, text, when, Layout};
use super::{CsrfOnly, Dashboard, Session};
use axum::extract::{Form, Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;
use std::collections::HashMap;

const PAGE: i64 = 50;

/// Tasks as a table: newest first, each linking to its page (and its site's, if `site`).
pub fn table(tasks: &[Value], site: bool) -> Markup {
    html! {
        @if tasks.is_empty() {
            p.empty { "No tasks." }
        } @else {
            table.tasks {
                thead { tr {
                    th { "Task" } th { "Type" } th { "Status" }
                    @if site { th { "Site" } }
                    th { "By" } th { "Created" } th { "Finished" }
                } }
                tbody {
                    @for t in tasks {
                        tr {
                            td { a href=(format!("/ui/tasks/{}", text(&t["id"]))) { "#" (text(&t["id"])) } }
                            td { (text(&t["type"])) }
                            td { (badge(&text(&t["status"]))) }
                            @if site {
                                td { @if !t["site"].is_null() { a href=(format!("/ui/sites/{}", text(&t["site"]))) { "site " (text(&t["site"])) } } }
                            }
                            td { (text(&t["requested_by"])) }
                            td { (when(&t["created"])) }
                            td { (when(&t["finished"])) }
                        }
                    }
                }
            }
        }
    }
}

/// The queue: every task the session may see, with the API's filters.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let filters: Vec<(&str, String)> = ["status", "type", "site"]
        .into_iter()
        .map(|k| (k, filter(k)))
        .collect();
    let mut pairs = filters.clone();
    // A site may be given by its domain, as hostctl takes it.
    let site = filter("site");
    if !site.is_empty() && site.parse::<i64>().is_err() {
        let found = d
            .get_or_empty(
                &session,
                &format!("/sites?{}", query([("domain", site.clone())])),
            )
            .await;
        match found.first() {
            Some(s) => {
                for pair in pairs.iter_mut().filter(|(k, _)| *k == "site") {
                    pair.1 = text(&s["id"]);
                }
            }
            None => {
                return super::page::error_page(
                    Some(&session),
                    axum::http::StatusCode::NOT_FOUND,
                    &format!("site: there is no site {site}; give its id or its domain"),
                )
            }
        }
    }
    pairs.push(("before", filter("before")));
    pairs.push(("limit", PAGE.to_string()));
    let Listed {
        items: tasks,
        total,
        next,
    } = match d
        .get_page(&session, &format!("/tasks?{}", query(pairs)), "before")
        .await
    {
        Ok(page) => page,
        Err(e) => return refused(&session, e),
    };
    let next = next.map(|before| {
        let mut p = filters.clone();
        p.push(("before", before.to_string()));
        format!("/ui/tasks?{}", query(p))
    });
    let body = html! {
        h1 { "Tasks" }
        form.filters method="get" action="/ui/tasks" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in domain::TaskStatus::ALL.iter().map(|s| s.as_str()) { option value=(s) selected[filter("status") == s] { (s) } }
                }
            }
            label { "Type " input name="type" value=(filter("type")) placeholder="backup"; }
            label { "Site " input name="site" value=(filter("site")) placeholder="id or domain"; }
            button type="submit" { "Filter" }
        }
        (table(&tasks, true))
        (pager(total, tasks.len(), next))
    };
    Layout::page(&session, "Tasks", body)
}

/// A task: what it is, how it ended, and its log, which streams while it runs.
pub async fn show(State(d): State<Dashboard>, session: Session, Path(id): Path<i64>) -> Response {
    let task = match d.get(&session, &format!("/tasks/{id}")).await {
        Ok(t) => t,
        Err(e) => return refused(&session, e),
    };
    let status = text(&task["status"]);
    let finished = !task["finished"].is_null();
    // The log comes from the task's event stream, which replays a finished task's lines and
    // follows a running one's; without scripts, a finished task's log is on the page.
    let log = if finished {
        d.get_or_empty(&session, &format!("/tasks/{id}/log")).await
    } else {
        vec![]
    };
    let site_name = match task["site"].as_i64() {
        Some(site) => d
            .get(&session, &format!("/sites/{site}"))
            .await
            .map(|s| text(&s["domain"]))
            .unwrap_or_else(|_| format!("site {site}")),
        None => String::new(),
    };
    let args = match &task["args"] {
        Value::Object(m) if !m.is_empty() => Some(task["args"].to_string()),
        _ => None,
    };
    let body = html! {
        div.title {
            h1 { "Task #" (id) ": " (text(&task["type"])) " " span #task-status { (badge(&status)) } }
            // Both are on the page; the script shows the one the task's status allows.
            div.buttons {
                form.inline #cancel-form method="post" action=(format!("/ui/tasks/{id}/cancel")) hidden[status != "queued"] {
                    (csrf(&session)) button #cancel type="submit" { "Cancel" }
                }
                form.inline #retry-form method="post" action=(format!("/ui/tasks/{id}/retry")) hidden[status != "error"] {
                    (csrf(&session)) button #retry type="submit" { "Retry" }
                }
            }
        }
        dl.facts {
            @if !task["site"].is_null() {
                dt { "Site" } dd { a #task-site href=(format!("/ui/sites/{}", text(&task["site"]))) { (site_name) } }
            }
            @if !task["platform"].is_null() {
                dt { "Platform" } dd { a href=(format!("/ui/platforms/{}", text(&task["platform"]))) { "platform " (text(&task["platform"])) } }
            }
            @if let Some(a) = &args { dt { "Arguments" } dd { code { (a) } } }
            dt { "Requested by" } dd { (text(&task["requested_by"])) }
            dt { "Created" } dd { (when(&task["created"])) }
            dt { "Started" } dd #task-started { (when(&task["started"])) }
            dt { "Finished" } dd #task-finished { (when(&task["finished"])) }
            @if !task["retry_of"].is_null() {
                dt { "Retry of" } dd { a href=(format!("/ui/tasks/{}", text(&task["retry_of"]))) { "#" (text(&task["retry_of"])) } }
            }
        }
        p.error #task-error hidden[task["error"].is_null()] { (text(&task["error"])) }
        h2 { "Log" }
        ol.log #log data-events=(format!("/ui/tasks/{id}/events")) {}
        @if finished {
            noscript { ol.log { @for l in &log { (line(l)) } } }
        } @else {
            p.hint #log-hint { "The log follows the task as it runs." }
        }
    };
    Layout::page(&session, &format!("Task {id}"), body)
}

fn line(l: &Value) -> Markup {
    html! {
        li class=(format!("level-{}", text(&l["level"]))) {
            time { (when(&l["at"])) } " " (text(&l["message"]))
        }
    }
}

/// The task's server-sent events, for the page's script: the API's own stream, through the
/// session's cookie (an EventSource cannot send a token).
pub async fn events(State(d): State<Dashboard>, session: Session, Path(id): Path<i64>) -> Response {
    d.stream(&session, &format!("/tasks/{id}/events")).await
}

pub async fn cancel(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    act(d, session, id, f, "cancel").await
}

pub async fn retry(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    act(d, session, id, f, "retry").await
}

async fn act(d: Dashboard, session: Session, id: i64, f: CsrfOnly, what: &str) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    // A retry answers the new task; a cancel, the task itself.
    d.send_then(
        &session,
        Method::POST,
        &format!("/tasks/{id}/{what}"),
        None,
        task_page,
    )
    .await
}

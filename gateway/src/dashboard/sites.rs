//! Sites: the list, the site form, a site's page with its task buttons, and the task forms
//! (the reference's front end: migrate and clone with their platform comparison, restore with
//! its list of backups, delete and disable with a confirmation).

use super::api::{task_page, Listed};
use super::page::{badge, csrf, pager, query, refused, size, text, when, Layout};
use super::{Dashboard, Session};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Sites per page of the list.
const PAGE: i64 = 50;

/// The list, with the API's own filters: status, client, platform and a search in domains.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let filters: Vec<(&str, String)> = ["status", "client", "platform", "search"]
        .into_iter()
        .map(|k| (k, filter(k)))
        .collect();
    let mut pairs = filters.clone();
    pairs.push(("after", filter("after")));
    pairs.push(("limit", PAGE.to_string()));
    let Listed {
        items: sites,
        total,
        next,
    } = match d
        .get_page(&session, &format!("/sites?{}", query(pairs)), "after")
        .await
    {
        Ok(page) => page,
        Err(e) => return refused(&session, e),
    };
    let clients = if session.is_admin() {
        d.get_or_empty(&session, "/clients?limit=1000").await
    } else {
        vec![]
    };
    let platforms = d.get_or_empty(&session, "/platforms?limit=1000").await;
    let next = next.map(|after| {
        let mut p = filters.clone();
        p.push(("after", after.to_string()));
        format!("/ui/sites?{}", query(p))
    });
    let chosen = |k: &str, v: &str| filter(k) == v;
    let body = html! {
        div.title {
            h1 { "Sites" }
            @if session.may("install") { a.button href="/ui/sites/new" { "Add site" } }
        }
        form.filters method="get" action="/ui/sites" {
            label { "Search " input type="search" name="search" value=(filter("search")) placeholder="part of a domain"; }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in domain::SiteStatus::ALL.iter().map(|s| s.as_str()) {
                        option value=(s) selected[chosen("status", s)] { (s) }
                    }
                }
            }
            @if !clients.is_empty() {
                label { "Client "
                    select name="client" {
                        option value="" { "any" }
                        @for c in &clients {
                            option value=(text(&c["id"])) selected[chosen("client", &text(&c["id"]))] { (text(&c["name"])) }
                        }
                    }
                }
            }
            label { "Platform "
                select name="platform" {
                    option value="" { "any" }
                    @for p in &platforms {
                        option value=(text(&p["id"])) selected[chosen("platform", &text(&p["id"]))] { (text(&p["name"])) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if sites.is_empty() {
            p.empty { "No sites match." }
        } @else {
            table #sites {
                thead { tr { th { "Domain" } th { "Status" } th { "Client" } th { "Platform" } th { "Profile" } th { "Created" } } }
                tbody {
                    @for s in &sites {
                        tr {
                            td { a href=(format!("/ui/sites/{}", text(&s["id"]))) { (text(&s["domain"])) } }
                            td { (badge(&text(&s["status"]))) }
                            td { (text(&s["client"])) }
                            td { (text(&s["platform"])) }
                            td { (text(&s["profile"])) " / " (text(&s["language"])) }
                            td { (when(&s["created"])) }
                        }
                    }
                }
            }
        }
        (pager(total, sites.len(), next))
    };
    Layout::page(&session, "Sites", body)
}

/// The site form. The platforms offered are those whose verify found the chosen profile, and
/// the languages those that profile has there: choose the profile first (the script sends
/// the form again when it changes; without scripts, the "Choose" button does).
pub async fn new_form(
    State(d): State<Dashboard>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let platforms = d.get_or_empty(&session, "/platforms?limit=1000").await;
    let clients = d.get_or_empty(&session, "/clients?limit=1000").await;
    let servers = d.get_or_empty(&session, "/servers?limit=1000").await;
    let db_servers: Vec<&Value> = servers.iter().filter(|s| s["kind"] == "db").collect();
    let usable: Vec<&Value> = platforms
        .iter()
        .filter(|p| p["status"] == "enabled")
        .collect();
    // Every profile any usable platform offers, and per profile its platforms and languages.
    let mut profiles: BTreeMap<String, (Vec<&Value>, BTreeSet<String>)> = BTreeMap::new();
    for p in &usable {
        for prof in p["profiles"].as_array().into_iter().flatten() {
            let entry = profiles.entry(text(&prof["name"])).or_default();
            entry.0.push(p);
            for l in prof["languages"].as_array().into_iter().flatten() {
                entry.1.insert(text(l));
            }
        }
    }
    let profile = q.get("profile").cloned().unwrap_or_default();
    let narrowed = profiles.get(&profile);
    let body = html! {
        h1 { "Add site" }
        form.card #profile-form method="get" action="/ui/sites/new" {
            label for="profile" { "Profile" }
            select #profile name="profile" data-autosubmit="" required {
                option value="" { "choose a profile" }
                @for name in profiles.keys() {
                    option value=(name) selected[*name == profile] { (name) }
                }
            }
            noscript { button type="submit" { "Choose" } }
            @if profiles.is_empty() {
                p.error { "No platform is verified yet: add one (Platforms) and wait for its verify." }
            }
        }
        @if let Some((offering, languages)) = narrowed {
            form.card #site-form method="post" action="/ui/sites" {
                (csrf(&session))
                input type="hidden" name="profile" value=(profile);
                label for="domain" { "Domain" }
                input #domain name="domain" required placeholder="www.example.com" autocomplete="off";
                label for="aliases" { "Aliases" }
                input #aliases name="aliases" placeholder="example.com, shop.example.com (optional)" autocomplete="off";
                label for="client" { "Client" }
                select #client name="client" required {
                    @for c in &clients { option value=(text(&c["id"])) { (text(&c["name"])) } }
                }
                @if clients.is_empty() { p.error { "No client yet: add one under Clients first." } }
                label for="platform" { "Platform" }
                select #platform name="platform" required {
                    @for p in offering {
                        option value=(text(&p["id"])) { (text(&p["name"])) " (" (text(&p["server"])) ")" }
                    }
                }
                label for="language" { "Language" }
                select #language name="language" required {
                    @for l in languages { option value=(l) selected[l == "en"] { (l) } }
                }
                label for="db_server" { "Database server" }
                select #db_server name="db_server" required {
                    @for s in &db_servers {
                        option value=(text(&s["id"])) { (text(&s["name"])) " (" (text(&s["host"])) ")" }
                    }
                }
                button type="submit" { "Install" }
            }
        }
    };
    Layout::page(&session, "Add site", body)
}

#[derive(serde::Deserialize)]
pub struct SiteForm {
    #[serde(default)]
    csrf: String,
    domain: String,
    #[serde(default)]
    aliases: String,
    client: String,
    platform: String,
    profile: String,
    language: String,
    db_server: String,
}

/// A form field naming a record: an id when it is one, else a name, as the API takes it.
pub(super) fn reference(v: &str) -> Value {
    let v = v.trim();
    v.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(v))
}

pub async fn create(
    State(d): State<Dashboard>,
    session: Session,
    axum::extract::Form(f): axum::extract::Form<SiteForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    let aliases: Vec<&str> = f
        .aliases
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let body = json!({
        "domain": f.domain.trim(),
        "aliases": aliases,
        "client": reference(&f.client),
        "platform": reference(&f.platform),
        "profile": f.profile.trim(),
        "language": f.language.trim(),
        "db_server": reference(&f.db_server),
    });
    d.send_then(&session, Method::POST, "/sites", Some(body), task_page)
        .await
}

/// Tasks that run from their button at once; the others open a form first.
const ONE_CLICK: &[&str] = &["verify", "login-reset", "enable"];

/// What each task does, for its button's title and its form.
fn describe(task: &str) -> &'static str {
    match task {
        "verify" => "Checks the site's files, database and vhost and reads its packages",
        "login-reset" => "Makes a new one-time login link for the site's admin",
        "enable" => "Serves the site again",
        "disable" => "Takes the site offline; visitors see the disabled page",
        "delete" => "Removes the site: its database, files and vhost",
        "backup" => "Archives the site's files and database",
        "restore" => "Puts the site back as a backup has it",
        "verify-backup" => "Proves a backup can be restored",
        "backup-delete" => "Removes backups",
        "migrate" => "Moves the site to another platform (and may rename it)",
        "clone" => "Copies the site to a new domain",
        _ => "",
    }
}

/// A site's page: its link, its tasks, its backups and its history.
pub async fn show(State(d): State<Dashboard>, session: Session, Path(id): Path<i64>) -> Response {
    let site = match d.get(&session, &format!("/sites/{id}")).await {
        Ok(s) => s,
        Err(e) => return refused(&session, e),
    };
    let backups = d
        .get_or_empty(&session, &format!("/sites/{id}/backups?limit=100"))
        .await;
    let history = d
        .get_or_empty(&session, &format!("/tasks?site={id}&limit=25"))
        .await;
    let schedule = d
        .get(&session, &format!("/sites/{id}/backup-schedule"))
        .await
        .unwrap_or(Value::Null);
    let domain = text(&site["domain"]);
    let available: Vec<String> = site["available_tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .filter(|t| session.may(t))
        .collect();
    let link = &site["link"];
    let body = html! {
        div.title {
            h1 { (domain) " " (badge(&text(&site["status"]))) }
            @if site["status"] == "enabled" {
                @if link["kind"] == "login" {
                    a.button #site-link href=(text(&link["url"])) target="_blank" rel="noopener noreferrer" { "Login to " (domain) }
                } @else {
                    a.button #site-link href=(text(&link["url"])) target="_blank" rel="noopener noreferrer" { "Go to " (domain) }
                }
            }
        }
        dl.facts {
            dt { "Client" } dd { (text(&site["client"])) }
            dt { "Platform" } dd { a href=(format!("/ui/platforms/{}", text(&site["platform_id"]))) { (text(&site["platform"])) } }
            dt { "Profile" } dd { (text(&site["profile"])) }
            dt { "Language" } dd { (text(&site["language"])) }
            dt { "Database server" } dd { (text(&site["db_server"])) }
            dt { "Database" } dd { code { (text(&site["db_name"])) } }
            dt { "System user" } dd { code { (text(&site["system_user"])) } }
            @if let Some(a) = site["aliases"].as_array().filter(|a| !a.is_empty()) {
                dt { "Aliases" } dd { (a.iter().map(text).collect::<Vec<_>>().join(", ")) }
            }
            dt { "Created" } dd { (when(&site["created"])) }
        }
        section #tasks {
            h2 { "Tasks" }
            @if available.is_empty() {
                p.empty { "No task can run now (a task is running, or the site is being deleted)." }
            }
            div.buttons {
                @for t in &available {
                    @if ONE_CLICK.contains(&t.as_str()) {
                        form.inline method="post" action=(format!("/ui/sites/{id}/tasks")) {
                            (csrf(&session))
                            input type="hidden" name="type" value=(t);
                            button type="submit" title=(describe(t)) data-task=(t) { (label(t)) }
                        }
                    } @else if t == "backup" {
                        form.inline method="post" action=(format!("/ui/sites/{id}/tasks")) {
                            (csrf(&session))
                            input type="hidden" name="type" value="backup";
                            input name="description" placeholder="reason (optional)" maxlength="255";
                            button type="submit" title=(describe(t)) data-task="backup" { "Backup" }
                        }
                    } @else {
                        a.button href=(format!("/ui/sites/{id}/tasks/{t}")) title=(describe(t)) data-task=(t) { (label(t)) "…" }
                    }
                }
            }
        }
        section #backups {
            h2 { "Backups" }
            (backups_table(&backups))
            (schedule_form(&session, id, &schedule))
        }
        @if let Some(p) = site["packages"].as_array().filter(|p| !p.is_empty()) {
            section #packages {
                h2 { "Packages" }
                table {
                    thead { tr { th { "Package" } th { "Type" } th { "Version" } th { "Schema" } } }
                    tbody { @for p in p { tr { td { (text(&p["name"])) } td { (text(&p["type"])) } td { (text(&p["version"])) } td { (text(&p["schema_version"])) } } } }
                }
            }
        }
        section #history {
            h2 { "Task history" }
            (super::tasks::table(&history, false))
            p { a href=(format!("/ui/tasks?site={id}")) { "All of this site's tasks" } }
        }
    };
    Layout::page(&session, &domain, body)
}

fn label(task: &str) -> String {
    let mut chars = task.replace('-', " ").chars().collect::<Vec<_>>();
    if let Some(c) = chars.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    chars.into_iter().collect()
}

fn backups_table(backups: &[Value]) -> Markup {
    html! {
        @if backups.is_empty() {
            p.empty { "No backups yet." }
        } @else {
            table {
                thead { tr { th { "Date/time" } th { "Reason" } th { "Size" } th { "Verified" } } }
                tbody {
                    @for b in backups {
                        tr {
                            td { (when(&b["created"])) }
                            td { (text(&b["description"])) }
                            td { (size(b["size"].as_i64().unwrap_or(0))) }
                            td { @if b["verified"].is_null() { "no" } @else { (when(&b["verified"])) } }
                        }
                    }
                }
            }
        }
    }
}

fn schedule_form(session: &Session, id: i64, schedule: &Value) -> Markup {
    let inherits = schedule["inherits"].as_bool().unwrap_or(true);
    let mode = match (inherits, schedule["source"].as_str()) {
        (true, _) => "inherit",
        (false, Some("site")) => "custom",
        (false, _) => "off",
    };
    let shown = match &schedule["schedule"] {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    let custom = if mode == "custom" {
        shown.clone()
    } else {
        String::new()
    };
    let summary = match mode {
        "inherit" if shown.is_empty() => "follows the global schedule (none is set)".to_owned(),
        "inherit" => format!("follows the global schedule {shown}"),
        "custom" => format!("its own: {shown}"),
        _ => "no automated backups".to_owned(),
    };
    html! {
        details.card {
            summary {
                "Backup schedule: " (summary)
                @if let Some(next) = schedule["next_run"].as_str() { " · next " (when(&json!(next))) }
            }
            @if let Some(bad) = schedule["invalid"].as_str() { p.error { "The stored schedule cannot be used: " (bad) } }
            form method="post" action=(format!("/ui/sites/{id}/backup-schedule")) {
                (csrf(session))
                label { input type="radio" name="mode" value="inherit" checked[mode == "inherit"]; " Follow the global schedule" }
                label { input type="radio" name="mode" value="off" checked[mode == "off"]; " No automated backups" }
                label { input type="radio" name="mode" value="custom" checked[mode == "custom"]; " Its own: " }
                input name="schedule" value=(custom) placeholder=r#"{"interval": "daily", "window": [1, 5]}"#;
                button type="submit" { "Save schedule" }
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    mode: String,
    #[serde(default)]
    schedule: String,
}

pub async fn set_schedule(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    axum::extract::Form(f): axum::extract::Form<ScheduleForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    let schedule = match f.mode.as_str() {
        "off" | "inherit" => json!(f.mode),
        _ => match serde_json::from_str::<Value>(&f.schedule) {
            Ok(v) => v,
            Err(e) => {
                return super::page::error_page(
                    Some(&session),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("schedule: not JSON ({e}); write it as {{\"interval\": \"daily\", \"window\": [1, 5]}}"),
                )
            }
        },
    };
    d.send_then(
        &session,
        Method::PUT,
        &format!("/sites/{id}/backup-schedule"),
        Some(json!({ "schedule": schedule })),
        |_| format!("/ui/sites/{id}#backups"),
    )
    .await
}

/// A task's form: what it will do, what it needs chosen, and a button to confirm.
pub async fn task_form(
    State(d): State<Dashboard>,
    session: Session,
    Path((id, task)): Path<(i64, String)>,
) -> Response {
    let site = match d.get(&session, &format!("/sites/{id}")).await {
        Ok(s) => s,
        Err(e) => return refused(&session, e),
    };
    let domain = text(&site["domain"]);
    if !session.may(&task) {
        return super::page::error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            &format!("This token may not run '{task}'."),
        );
    }
    if !site["available_tasks"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| *t == task.as_str()))
        && task != "delete"
    {
        return super::page::error_page(
            Some(&session),
            StatusCode::CONFLICT,
            &format!("{domain} does not offer '{task}' now; its page lists the tasks it offers."),
        );
    }
    let fields = match task.as_str() {
        "restore" | "verify-backup" | "backup-delete" => {
            let backups = d
                .get_or_empty(&session, &format!("/sites/{id}/backups?limit=100"))
                .await;
            let (kind, name) = if task == "backup-delete" {
                ("checkbox", "backups")
            } else {
                ("radio", "backup")
            };
            html! {
                fieldset #backup-choice {
                    legend { "Backup" }
                    @if backups.is_empty() { p.empty { "The site has no backups." } }
                    @for b in &backups {
                        label.choice {
                            input type=(kind) name=(name) value=(text(&b["id"])) required[kind == "radio"];
                            " " (when(&b["created"])) " - " (text(&b["description"]))
                        }
                    }
                }
            }
        }
        "migrate" | "clone" => {
            let targets = match d
                .get_list(&session, &format!("/sites/{id}/migrate-targets"))
                .await
            {
                Ok(t) => t,
                Err(e) => return refused(&session, e),
            };
            let servers = d.get_or_empty(&session, "/servers?limit=1000").await;
            comparison(&task, &site, &targets, &servers)
        }
        "delete" => html! {
            label.choice {
                input type="checkbox" name="force" value="true";
                " Force: remove whatever is left even if a step fails (for a site that is broken)"
            }
        },
        "backup" => html! {
            label for="description" { "Reason" }
            input #description name="description" maxlength="255" placeholder="optional";
        },
        _ => html! {},
    };
    let confirm = match task.as_str() {
        "delete" => format!("Delete {domain}? Its database, files and vhost are removed."),
        "disable" => {
            format!("Disable {domain}? Visitors see the disabled page until it is enabled.")
        }
        "restore" => format!("Restore {domain} from a backup? What changed since is lost."),
        "backup-delete" => "Delete the chosen backups? They cannot be brought back.".to_owned(),
        _ => describe(&task).to_owned(),
    };
    let body = html! {
        h1 { (label(&task)) ": " (domain) }
        form.card.wide #task-form method="post" action=(format!("/ui/sites/{id}/tasks")) {
            (csrf(&session))
            input type="hidden" name="type" value=(task);
            (fields)
            p.confirm { (confirm) }
            button type="submit" #confirm { (label(&task)) }
            " "
            a href=(format!("/ui/sites/{id}")) { "Cancel" }
        }
    };
    Layout::page(&session, &label(&task), body)
}

/// The migrate and clone form: every platform of the application with its package comparison
/// (the reference's "Compare platforms"); a target with an error cannot be chosen.
fn comparison(task: &str, site: &Value, targets: &[Value], servers: &[Value]) -> Markup {
    let current_db = text(&site["db_server"]);
    html! {
        fieldset #targets {
            legend { "Target platform" }
            table.compare {
                thead { tr { th {} th { "Platform" } th { "Same" } th { "Upgrade" } th { "Warning" } th { "Error" } th { "Packages" } } }
                tbody {
                    @for t in targets {
                        @let selectable = t["selectable"].as_bool().unwrap_or(false);
                        tr class=(if selectable { "target" } else { "target unselectable" }) {
                            td {
                                input type="radio" name="platform" value=(text(&t["platform"]["id"]))
                                    disabled[!selectable] required
                                    data-platform=(text(&t["platform"]["name"]));
                            }
                            td {
                                (text(&t["platform"]["name"]))
                                @if t["current"].as_bool().unwrap_or(false) { " (current)" }
                                @if let Some(r) = t["reason"].as_str() {
                                    br; small.error { (r) }
                                } @else if !selectable {
                                    br; small.error { (text(&t["counts"]["error"])) " package(s) would go back to an older version (see compare)" }
                                }
                            }
                            td { (text(&t["counts"]["same"])) }
                            td { (text(&t["counts"]["upgrade"])) }
                            td { (text(&t["counts"]["warning"])) }
                            td { (text(&t["counts"]["error"])) }
                            td {
                                details {
                                    summary { "compare" }
                                    table {
                                        thead { tr { th { "Package" } th { "Site" } th { "Target" } th { "" } } }
                                        tbody {
                                            @for p in t["packages"].as_array().into_iter().flatten() {
                                                tr {
                                                    td { (text(&p["name"])) }
                                                    td { (text(&p["current"]["version"])) " (" (text(&p["current"]["schema_version"])) ")" }
                                                    td { @if p["target"].is_null() { "—" } @else { (text(&p["target"]["version"])) " (" (text(&p["target"]["schema_version"])) ")" } }
                                                    td { (badge(&text(&p["status"]))) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        label for="domain" { @if task == "clone" { "Domain of the copy" } @else { "New domain (empty: keep " (text(&site["domain"])) ")" } }
        input #domain name="domain" required[task == "clone"] autocomplete="off";
        label for="db_server" { "Database server" }
        select #db_server name="db_server" {
            option value="" { "keep " (current_db) }
            @for s in servers.iter().filter(|s| s["kind"] == "db") {
                option value=(text(&s["id"])) { (text(&s["name"])) " (" (text(&s["host"])) ")" }
            }
        }
    }
}

/// A site task from a button or a task form: the form's fields become the API's arguments.
pub async fn create_task(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    axum::extract::RawForm(raw): axum::extract::RawForm,
) -> Response {
    let fields = match session.checked_fields(&raw) {
        Ok(f) => f,
        Err(refusal) => return *refusal,
    };
    let body = match task_body(&fields) {
        Ok(b) => b,
        Err(message) => {
            return super::page::error_page(
                Some(&session),
                StatusCode::UNPROCESSABLE_ENTITY,
                &message,
            )
        }
    };
    d.send_then(
        &session,
        Method::POST,
        &format!("/sites/{id}/tasks"),
        Some(body),
        task_page,
    )
    .await
}

/// The API's task body from a form: `type`, and each argument typed as the API takes it.
/// Fields the task does not take reach the API, which refuses them by name.
fn task_body(fields: &[(String, String)]) -> Result<Value, String> {
    let mut body = Map::new();
    let mut backups = Vec::new();
    for (k, v) in fields {
        let v = v.trim();
        match k.as_str() {
            "type" => {
                body.insert("type".into(), json!(v));
            }
            "backup" => {
                let id: i64 = v
                    .parse()
                    .map_err(|_| "backup: choose one of the site's backups".to_owned())?;
                body.insert("backup".into(), json!(id));
            }
            "backups" => backups.push(
                v.parse::<i64>()
                    .map_err(|_| "backups: choose the site's backups to delete".to_owned())?,
            ),
            "force" => {
                body.insert("force".into(), json!(v == "true"));
            }
            "platform" | "db_server" => {
                if !v.is_empty() {
                    body.insert(k.clone(), reference(v));
                }
            }
            _ => {
                if !v.is_empty() {
                    body.insert(k.clone(), json!(v));
                }
            }
        }
    }
    if !body.contains_key("type") {
        return Err("type: the form names no task".into());
    }
    if body.get("type").is_some_and(|t| t == "backup-delete") {
        if backups.is_empty() {
            return Err("backups: choose at least one backup to delete".into());
        }
        body.insert("backups".into(), json!(backups));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forms_become_typed_task_bodies() {
        assert_eq!(
            task_body(&f(&[("type", "restore"), ("backup", "7")])).ok(),
            Some(json!({"type": "restore", "backup": 7}))
        );
        assert_eq!(
            task_body(&f(&[
                ("type", "migrate"),
                ("platform", "3"),
                ("domain", ""),
                ("db_server", "")
            ]))
            .ok(),
            Some(json!({"type": "migrate", "platform": 3}))
        );
        assert_eq!(
            task_body(&f(&[
                ("type", "backup-delete"),
                ("backups", "1"),
                ("backups", "2")
            ]))
            .ok(),
            Some(json!({"type": "backup-delete", "backups": [1, 2]}))
        );
        assert!(task_body(&f(&[("type", "restore"), ("backup", "x")])).is_err());
        assert!(task_body(&f(&[("backup", "1")])).is_err());
        assert_eq!(label("login-reset"), "Login reset");
    }
}

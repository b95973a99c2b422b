//! Platforms (with their packages and a verify button), servers with their agents, clients,
//! tokens and settings. The API decides who may do what: a client's token sees platforms and
//! servers, and is refused the admin's forms with the API's own words.

use super::api::task_page;
use super::page::{badge, csrf, error_page, refused, text, when, Layout};
use super::{CsrfOnly, Dashboard, Session};
use axum::extract::{Form, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;
use serde_json::{json, Map, Value};

pub async fn platforms(State(d): State<Dashboard>, session: Session) -> Response {
    let platforms = match d.get_list(&session, "/platforms?limit=1000").await {
        Ok(items) => items,
        Err(e) => return refused(&session, e),
    };
    let servers = d.get_or_empty(&session, "/servers?limit=1000").await;
    let body = html! {
        h1 { "Platforms" }
        table #platforms {
            thead { tr { th { "Platform" } th { "Status" } th { "Application" } th { "Server" } th { "Root" } th { "Verified" } } }
            tbody {
                @for p in &platforms {
                    tr {
                        td { a href=(format!("/ui/platforms/{}", text(&p["id"]))) { (text(&p["name"])) } }
                        td { (badge(&text(&p["status"]))) }
                        td { (text(&p["application"])) " (" (text(&p["driver"])) ")" }
                        td { (text(&p["server"])) }
                        td { code { (text(&p["root"])) } }
                        td { (when(&p["verified_at"])) }
                    }
                }
            }
        }
        @if session.is_admin() {
            details.card {
                summary { "Add a platform" }
                p.hint { "The code must already be on the web server, under one of its platform directories. Its first verify starts at once." }
                form method="post" action="/ui/platforms/new" {
                    (csrf(&session))
                    label for="name" { "Name" } input #name name="name" required;
                    label for="server" { "Web server" }
                    select #server name="server" {
                        @for s in servers.iter().filter(|s| s["kind"] == "web") {
                            option value=(text(&s["id"])) { (text(&s["name"])) }
                        }
                    }
                    label for="root" { "Root" } input #root name="root" required placeholder="/srv/platforms/example-2";
                    label for="driver" { "Driver" }
                    select #driver name="driver" { @for dr in domain::Driver::ALL.iter().map(|d| d.as_str()) { option value=(dr) { (dr) } } }
                    button type="submit" { "Add platform" }
                }
            }
        }
    };
    Layout::page(&session, "Platforms", body)
}

#[derive(serde::Deserialize)]
pub struct PlatformForm {
    #[serde(default)]
    csrf: String,
    name: String,
    server: String,
    root: String,
    driver: String,
}

pub async fn create_platform(
    State(d): State<Dashboard>,
    session: Session,
    Form(f): Form<PlatformForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    let server = super::sites::reference(&f.server);
    let body = json!({"name": f.name.trim(), "server": server, "root": f.root.trim(), "driver": f.driver.trim()});
    d.send_then(&session, Method::POST, "/platforms", Some(body), task_page)
        .await
}

pub async fn platform(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let p = match d.get(&session, &format!("/platforms/{id}")).await {
        Ok(p) => p,
        Err(e) => return refused(&session, e),
    };
    let history = d
        .get_or_empty(&session, "/tasks?type=platform-verify&limit=50")
        .await
        .into_iter()
        .filter(|t| t["platform"].as_i64() == Some(id))
        .collect::<Vec<_>>();
    let name = text(&p["name"]);
    let body = html! {
        div.title {
            h1 { (name) " " (badge(&text(&p["status"]))) }
            @if session.is_admin() {
                div.buttons {
                    @let locked = p["status"] == "locked";
                    @for (t, label) in [("verify", "Verify"), ("lock", "Lock"), ("unlock", "Unlock")].into_iter().filter(|(t, _)| match *t { "lock" => !locked, "unlock" => locked, _ => true }) {
                        form.inline method="post" action=(format!("/ui/platforms/{id}/tasks")) {
                            (csrf(&session))
                            input type="hidden" name="type" value=(t);
                            button type="submit" data-task=(t) { (label) }
                        }
                    }
                }
            }
        }
        dl.facts {
            dt { "Application" } dd { (text(&p["application"])) }
            dt { "Driver" } dd { (text(&p["driver"])) }
            dt { "Server" } dd { (text(&p["server"])) }
            dt { "Root" } dd { code { (text(&p["root"])) } }
            dt { "Verified" } dd { (when(&p["verified_at"])) }
        }
        h2 { "Packages" }
        table #packages {
            thead { tr { th { "Package" } th { "Type" } th { "Version" } th { "Schema" } } }
            tbody {
                @for pk in p["packages"].as_array().into_iter().flatten() {
                    tr { td { (text(&pk["name"])) } td { (text(&pk["type"])) } td { (text(&pk["version"])) } td { (text(&pk["schema_version"])) } }
                }
            }
        }
        h2 { "Profiles" }
        ul {
            @for pr in p["profiles"].as_array().into_iter().flatten() {
                li { strong { (text(&pr["name"])) } ": " (pr["languages"].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(", ")) }
            }
        }
        @if !history.is_empty() {
            h2 { "Verifies" }
            (super::tasks::table(&history, false))
        }
        p { a href=(format!("/ui/sites?platform={id}")) { "Sites on " (name) } }
    };
    Layout::page(&session, &name, body)
}

#[derive(serde::Deserialize)]
pub struct TypeForm {
    #[serde(default)]
    csrf: String,
    #[serde(rename = "type")]
    task_type: String,
}

pub async fn platform_task(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<TypeForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    d.send_then(
        &session,
        Method::POST,
        &format!("/platforms/{id}/tasks"),
        Some(json!({"type": f.task_type})),
        task_page,
    )
    .await
}

pub async fn servers(State(d): State<Dashboard>, session: Session) -> Response {
    let servers = match d.get_list(&session, "/servers?limit=1000").await {
        Ok(items) => items,
        Err(e) => return refused(&session, e),
    };
    let body = html! {
        h1 { "Servers" }
        table #servers {
            thead { tr { th { "Server" } th { "Role" } th { "Address" } th { "Agent" } th { "Last seen" } th { "Software" } @if session.is_admin() { th {} } } }
            tbody {
                @for s in &servers {
                    tr {
                        td { (text(&s["name"])) }
                        td { (text(&s["kind"])) }
                        td { (text(&s["host"])) ":" (text(&s["port"])) }
                        td { (text(&s["agent"]["service"])) " " (badge(&text(&s["agent"]["state"]))) }
                        td { (when(&s["agent"]["last_seen"])) }
                        td {
                            @for (k, v) in s["agent"]["software"].as_object().into_iter().flatten() {
                                div { small { (k) ": " (text(v)) } }
                            }
                        }
                        @if session.is_admin() {
                            td {
                                form.inline method="post" action=(format!("/ui/servers/{}/verify", text(&s["id"]))) {
                                    (csrf(&session)) button type="submit" { "Verify" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.hint { "A new server is registered with POST /api/v1/servers (or hostctl server register), which answers its agent's credentials once; see the README's \"Adding a server\"." }
    };
    Layout::page(&session, "Servers", body)
}

pub async fn server_verify(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    d.send_then(
        &session,
        Method::POST,
        &format!("/servers/{id}/tasks"),
        Some(json!({"type": "verify"})),
        task_page,
    )
    .await
}

pub async fn clients(State(d): State<Dashboard>, session: Session) -> Response {
    let clients = match d.get_list(&session, "/clients?limit=1000").await {
        Ok(items) => items,
        Err(e) => return refused(&session, e),
    };
    let body = html! {
        h1 { "Clients" }
        table #clients {
            thead { tr { th { "Client" } th { "Email" } th { "Created" } th {} } }
            tbody {
                @for c in &clients {
                    tr {
                        td { (text(&c["name"])) }
                        td { (text(&c["email"])) }
                        td { (when(&c["created_at"])) }
                        td { a href=(format!("/ui/sites?client={}", text(&c["id"]))) { "sites" } }
                    }
                }
            }
        }
        @if session.is_admin() {
        form.card #client-form method="post" action="/ui/clients" {
            h2 { "Add a client" }
            (csrf(&session))
            label for="name" { "Name" } input #name name="name" required;
            label for="email" { "Email" } input #email type="email" name="email" required;
            button type="submit" { "Add client" }
        }
        }
    };
    Layout::page(&session, "Clients", body)
}

#[derive(serde::Deserialize)]
pub struct ClientForm {
    #[serde(default)]
    csrf: String,
    name: String,
    email: String,
}

pub async fn create_client(
    State(d): State<Dashboard>,
    session: Session,
    Form(f): Form<ClientForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    let body = json!({"name": f.name.trim(), "email": f.email.trim()});
    d.send_then(&session, Method::POST, "/clients", Some(body), |_| {
        "/ui/clients".into()
    })
    .await
}

pub async fn tokens(State(d): State<Dashboard>, session: Session) -> Response {
    let tokens = match d.get_list(&session, "/tokens?limit=1000").await {
        Ok(items) => items,
        Err(e) => return refused(&session, e),
    };
    let clients = d.get_or_empty(&session, "/clients?limit=1000").await;
    let client_name = |id: &Value| {
        clients
            .iter()
            .find(|c| c["id"] == *id)
            .map(|c| text(&c["name"]))
            .unwrap_or_else(|| text(id))
    };
    let body = html! {
        h1 { "Tokens" }
        table #tokens {
            thead { tr { th { "Token" } th { "Client" } th { "May do" } th { "Created" } th { "Revoked" } th {} } }
            tbody {
                @for t in &tokens {
                    tr {
                        td { (text(&t["name"])) }
                        td { @if t["client"].is_null() { "admin" } @else { (client_name(&t["client"])) } }
                        td { @if t["task_types"].is_null() { "everything" } @else { (t["task_types"].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(", ")) } }
                        td { (when(&t["created"])) " by " (text(&t["created_by"])) }
                        td { (when(&t["revoked"])) }
                        td {
                            @if t["revoked"].is_null() {
                                form.inline method="post" action=(format!("/ui/tokens/{}/revoke", text(&t["id"]))) {
                                    (csrf(&session)) button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.card #token-form method="post" action="/ui/tokens" {
            h2 { "Make a token" }
            (csrf(&session))
            label for="name" { "Name" } input #name name="name" required;
            label for="client" { "Client" }
            // No choice is made for the admin: a token that sees everything is chosen on purpose.
            select #client name="client" required {
                option value="" selected { "choose: a client, or an admin token" }
                option value="admin" { "none: an admin token (sees and does everything)" }
                @for c in &clients { option value=(text(&c["id"])) { (text(&c["name"])) } }
            }
            label for="task_types" { "May do (task types, comma-separated; empty: all its client may)" }
            input #task_types name="task_types" placeholder="backup, restore, login-reset";
            button type="submit" { "Make token" }
        }
    };
    Layout::page(&session, "Tokens", body)
}

#[derive(serde::Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    task_types: String,
}

/// Makes a token and shows its secret, once: the API keeps only its hash.
pub async fn create_token(
    State(d): State<Dashboard>,
    session: Session,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(f.name.trim()));
    // Empty: an admin token. Anything else names a client, by id or by name, and the API
    // refuses one that does not exist: a typo never makes an admin token.
    match f.client.trim() {
        "" => {
            return error_page(
                Some(&session),
                StatusCode::UNPROCESSABLE_ENTITY,
                "client: choose the client whose sites the token may see, or an admin token",
            )
        }
        "admin" => {}
        client => {
            body.insert("client".into(), super::sites::reference(client));
        }
    }
    let types: Vec<&str> = f
        .task_types
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if !types.is_empty() {
        body.insert("task_types".into(), json!(types));
    }
    let made = match d
        .call(
            &(&session).into(),
            Method::POST,
            "/tokens",
            Some(Value::Object(body)),
        )
        .await
        .ok()
    {
        Ok(v) => v,
        Err(e) => return refused(&session, e),
    };
    let page = html! {
        h1 { "Token made: " (text(&made["name"])) }
        p { "Copy it now: it is shown only here." }
        p { code #new-token { (text(&made["token"])) } }
        p { a href="/ui/tokens" { "Back to the tokens" } }
    };
    Layout::page(&session, "Token made", page)
}

pub async fn revoke_token(
    State(d): State<Dashboard>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = session.csrf_refusal(&f.csrf) {
        return r;
    }
    d.send_then(
        &session,
        Method::DELETE,
        &format!("/tokens/{id}"),
        None,
        |_| "/ui/tokens".into(),
    )
    .await
}

/// Settings shown as form fields by kind.
enum Field {
    Check(&'static str, &'static str),
    Number(&'static str, &'static str),
    Text(&'static str, &'static str),
    Json(&'static str, &'static str),
}

const FIELDS: &[Field] = &[
    Field::Check(
        "features.migrate",
        "Migrate: sites may move to another platform",
    ),
    Field::Check(
        "features.clone",
        "Clone: sites may be copied (turns migrate on)",
    ),
    Field::Check(
        "require_disable_before_delete",
        "Require site to be disabled before deletion",
    ),
    Field::Check(
        "delete_backups_with_site",
        "Delete a site's backups with the site",
    ),
    Field::Number("login_link_ttl_hours", "Login links expire after (hours)"),
    Field::Number(
        "task_retention_days",
        "Finished tasks and their logs are kept for (days)",
    ),
    Field::Text(
        "backup_interval_floor",
        "Backups at most every (admin's schedules)",
    ),
    Field::Text(
        "client_backup_interval_floor",
        "Backups at most every (clients' schedules)",
    ),
    Field::Text("backup_interval_ceiling", "Backups at least every"),
    Field::Json(
        "backup_schedule",
        r#"Global backup schedule, e.g. {"interval": "daily", "window": [1, 5]}; empty: none"#,
    ),
    Field::Json(
        "backup_retention",
        r#"Backup retention, e.g. {"keep_newest": 3, "rules": [{"older_than": "2d", "keep_one_per": "1d"}]}; empty: keep all"#,
    ),
];

fn setting<'a>(all: &'a Value, key: &str) -> &'a Value {
    match key.split_once('.') {
        Some((a, b)) => &all[a][b],
        None => &all[key],
    }
}

pub async fn settings(State(d): State<Dashboard>, session: Session) -> Response {
    let all = match d.get(&session, "/settings").await {
        Ok(s) => s,
        Err(e) => return refused(&session, e),
    };
    let admin = session.is_admin();
    let body = html! {
        h1 { "Settings" }
        @if !admin { p.hint { "The admin changes these; a client's token reads them." } }
        form.card #settings-form method="post" action="/ui/settings" {
            (csrf(&session))
            fieldset.plain disabled[!admin] {
            @for f in FIELDS {
                @match f {
                    Field::Check(k, label) => {
                        label.choice { input type="checkbox" name=(k) value="true" checked[setting(&all, k).as_bool().unwrap_or(false)]; " " (label) }
                    }
                    Field::Number(k, label) => {
                        label for=(k) { (label) } input id=(k) name=(k) inputmode="decimal" value=(text(setting(&all, k)));
                    }
                    Field::Text(k, label) => {
                        label for=(k) { (label) } input id=(k) name=(k) value=(text(setting(&all, k)));
                    }
                    Field::Json(k, label) => {
                        @let v = setting(&all, k);
                        label for=(k) { (label) }
                        input id=(k) name=(k) value=(if v.is_null() { String::new() } else { v.to_string() });
                    }
                }
            }
            }
            @if admin { button type="submit" { "Save settings" } }
        }
    };
    Layout::page(&session, "Settings", body)
}

/// The PATCH body from the settings form: every field, typed as the API checks it.
fn settings_body(fields: &[(String, String)]) -> Result<Value, String> {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut body = Map::new();
    let mut features = Map::new();
    for f in FIELDS {
        match f {
            Field::Check(k, _) => {
                let on = get(k).is_some_and(|v| v == "true");
                match k.strip_prefix("features.") {
                    Some(name) => {
                        features.insert(name.into(), json!(on));
                    }
                    None => {
                        body.insert((*k).into(), json!(on));
                    }
                }
            }
            Field::Number(k, _) => {
                let v = get(k).unwrap_or_default();
                let n = v
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| v.parse::<f64>().map(Value::from))
                    .map_err(|_| format!("{k}: give a number"))?;
                body.insert((*k).into(), n);
            }
            Field::Text(k, _) => {
                let v = get(k).unwrap_or_default();
                let value = v.parse::<i64>().map(Value::from).unwrap_or(json!(v));
                body.insert((*k).into(), value);
            }
            Field::Json(k, _) => {
                let v = get(k).unwrap_or_default();
                let value = if v.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&v).map_err(|e| format!("{k}: not JSON ({e})"))?
                };
                body.insert((*k).into(), value);
            }
        }
    }
    // Clone is a subsidiary of migrate: with clone on, migrate is on.
    if features.get("clone") == Some(&json!(true)) {
        features.insert("migrate".into(), json!(true));
    }
    body.insert("features".into(), Value::Object(features));
    Ok(Value::Object(body))
}

pub async fn save_settings(
    State(d): State<Dashboard>,
    session: Session,
    axum::extract::RawForm(raw): axum::extract::RawForm,
) -> Response {
    let fields = match session.checked_fields(&raw) {
        Ok(f) => f,
        Err(refusal) => return *refusal,
    };
    let body = match settings_body(&fields) {
        Ok(b) => b,
        Err(m) => return error_page(Some(&session), StatusCode::UNPROCESSABLE_ENTITY, &m),
    };
    d.send_then(&session, Method::PATCH, "/settings", Some(body), |_| {
        "/ui/settings".into()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_form_becomes_a_typed_patch() {
        let f = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let body = settings_body(&[
            f("features.clone", "true"),
            f("require_disable_before_delete", "true"),
            f("login_link_ttl_hours", "1.5"),
            f("task_retention_days", "30"),
            f("backup_interval_floor", "5m"),
            f("client_backup_interval_floor", "3600"),
            f("backup_interval_ceiling", "366d"),
            f("backup_schedule", r#"{"interval": "daily"}"#),
            f("backup_retention", ""),
        ])
        .expect("valid");
        assert_eq!(body["features"], json!({"migrate": true, "clone": true}));
        assert_eq!(body["delete_backups_with_site"], json!(false));
        assert_eq!(body["login_link_ttl_hours"], json!(1.5));
        assert_eq!(body["task_retention_days"], json!(30));
        assert_eq!(body["client_backup_interval_floor"], json!(3600));
        assert_eq!(body["backup_schedule"], json!({"interval": "daily"}));
        assert_eq!(body["backup_retention"], Value::Null);
        assert!(settings_body(&[f("login_link_ttl_hours", "soon")]).is_err());
    }
}

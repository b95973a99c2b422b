use super::Ref;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{page_size, ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use contract::{BackupArgs, BackupDeleteArgs, BackupRef, DeleteArgs, MoveArgs, TaskArgs};
use domain::*;
use serde_json::{json, Value};
use store::{NewSite, NewTask, Site, SiteFilter};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSiteBody {
    domain: String,
    client: Ref,
    platform: Ref,
    profile: String,
    language: String,
    db_server: Ref,
    #[serde(default)]
    aliases: Vec<String>,
}

/// What decides which tasks a site offers, besides its status.
struct SiteState {
    delete_pending: bool,
    has_backups: bool,
    require_disable_before_delete: bool,
    migrate: bool,
    clone: bool,
}

/// The settings every site's offered tasks depend on, read once per request.
struct SiteRules {
    require_disable_before_delete: bool,
    migrate: bool,
    clone: bool,
}

async fn site_rules(s: &AppState) -> ApiResult<SiteRules> {
    let settings = s.store.settings().await?;
    let feature = |name: &str| {
        settings
            .get("features")
            .and_then(|f| f.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    Ok(SiteRules {
        require_disable_before_delete: settings
            .get("require_disable_before_delete")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        migrate: feature("migrate"),
        clone: feature("clone"),
    })
}

fn site_state(rules: &SiteRules, views: &store::SiteViews, site: &Site) -> SiteState {
    SiteState {
        delete_pending: views.delete_pending.contains(&site.id),
        has_backups: views.with_backups.contains(&site.id),
        require_disable_before_delete: rules.require_disable_before_delete,
        migrate: rules.migrate,
        clone: rules.clone,
    }
}

/// The tasks a site offers in its state, as the reference's rules say: an enabled site offers
/// its everyday tasks and disable (delete too, once `require_disable_before_delete` is off); a
/// disabled one only enable and delete, plus backups; login-reset only while enabled; a site
/// that never finished installing only delete (which then removes whatever exists); nothing
/// while a delete is queued or running. Tasks queue behind each other, one at a time per site.
fn available_tasks(site: &Site, st: &SiteState) -> Vec<&'static str> {
    if st.delete_pending {
        return vec![];
    }
    let mut tasks = match site.status {
        SiteStatus::Enabled => {
            let mut t = vec!["verify", "login-reset", "backup", "disable"];
            if !st.require_disable_before_delete {
                t.push("delete");
            }
            if st.has_backups {
                t.extend(["restore", "backup-delete", "verify-backup"]);
            }
            // Features the admin switches in settings; clone implies migrate.
            if st.migrate || st.clone {
                t.push("migrate");
            }
            if st.clone {
                t.push("clone");
            }
            t
        }
        SiteStatus::Disabled => {
            let mut t = vec!["enable", "delete", "backup"];
            if st.has_backups {
                t.extend(["backup-delete", "verify-backup"]);
            }
            t
        }
        SiteStatus::Failed => vec!["delete"],
        // Being installed or cloned: its task finishes (or unwinds) first.
        SiteStatus::Installing => vec![],
        SiteStatus::Deleted => vec![],
    };
    tasks.sort_unstable();
    tasks
}

/// Refuses (409, saying why and what to do) a task the site does not offer now. A forced
/// delete is accepted in every state but while another delete is pending: it is the way out
/// for a site in any condition, and running it again is harmless.
pub(crate) async fn ensure_available(
    s: &AppState,
    site: &Site,
    task_type: TaskType,
    args: &Value,
) -> ApiResult<()> {
    let views = s.store.site_views(std::slice::from_ref(site)).await?;
    let st = site_state(&site_rules(s).await?, &views, site);
    let available = available_tasks(site, &st);
    let forced =
        task_type == TaskType::Delete && args.get("force").and_then(Value::as_bool) == Some(true);
    // A forced delete is the way out for a broken site; it follows the setting
    // require_disable_before_delete all the same for one that is enabled and was not found
    // broken (its last task did not fail).
    let broken = site.status == SiteStatus::Failed || last_task_failed(s, site).await?;
    let forceable = !st.delete_pending
        && site.status != SiteStatus::Installing
        && (site.status != SiteStatus::Enabled || !st.require_disable_before_delete || broken);
    if available.contains(&task_type.as_str()) || (forced && forceable) {
        return Ok(());
    }
    let needs_backups = matches!(
        task_type,
        TaskType::Restore | TaskType::VerifyBackup | TaskType::BackupDelete
    );
    let why = if st.delete_pending {
        "a delete task is queued or running on it".to_owned()
    } else if needs_backups
        && matches!(site.status, SiteStatus::Enabled | SiteStatus::Disabled)
        && !st.has_backups
    {
        "it has no backups yet: run a backup task first".to_owned()
    } else if matches!(task_type, TaskType::Migrate | TaskType::Clone)
        && site.status == SiteStatus::Enabled
    {
        format!(
            "the {task_type} feature is switched off: PATCH /api/v1/settings {{\"features\": {{\"{task_type}\": true}}}}"
        )
    } else if task_type == TaskType::Delete && site.status == SiteStatus::Installing {
        "it is being installed or cloned; wait for that task to end".to_owned()
    } else if task_type == TaskType::Delete && site.status == SiteStatus::Enabled {
        "it is enabled and the setting require_disable_before_delete is on: disable it first \
         (or PATCH /api/v1/settings {\"require_disable_before_delete\": false})"
            .to_owned()
    } else {
        format!("it is {}", site.status)
    };
    Err(ApiError::Conflict(format!(
        "'{task_type}' is not available for site {} because {why}; available now: [{}]",
        site.domain,
        available.join(", ")
    )))
}

pub async fn site_json(s: &AppState, site: &Site) -> ApiResult<Value> {
    let mut page = sites_json(s, std::slice::from_ref(site)).await?;
    Ok(page.pop().unwrap_or(Value::Null))
}

/// Sites as the API shows them, in a fixed number of queries however many there are.
pub async fn sites_json(s: &AppState, sites: &[Site]) -> ApiResult<Vec<Value>> {
    let rules = site_rules(s).await?;
    let mut views = s.store.site_views(sites).await?;
    Ok(sites
        .iter()
        .map(|site| {
            let state = site_state(&rules, &views, site);
            let port = views
                .web_ports
                .get(&site.platform_id)
                .copied()
                .unwrap_or(80);
            let packages = views.packages.remove(&site.id).unwrap_or_default();
            one_site_json(s, site, &state, port, packages)
        })
        .collect())
}

fn one_site_json(
    s: &AppState,
    site: &Site,
    state: &SiteState,
    web_port: i32,
    packages: Vec<store::Package>,
) -> Value {
    let goto = if web_port == 80 {
        format!("http://{}/", site.domain)
    } else {
        format!("http://{}:{}/", site.domain, web_port)
    };
    let link = match (&site.login_link, site.status) {
        (Some(l), SiteStatus::Enabled) => json!({
            "kind": "login",
            "url": contract::login_url(&s.config.public_url, &l.token),
            "requested_by": l.requested_by,
            "requested": l.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
            "expires": l.expires_at.format(&time::format_description::well_known::Rfc3339).ok(),
        }),
        _ => json!({"kind": "go-to", "url": goto}),
    };
    json!({
        "id": site.id,
        "domain": site.domain,
        "aliases": site.aliases,
        "status": site.status,
        "client": site.client,
        "client_id": site.client_id,
        "platform": site.platform,
        "platform_id": site.platform_id,
        "profile": site.profile,
        "language": site.language,
        "db_server": site.db_server,
        "db_name": site.db_name,
        "system_user": site.system_user,
        "link": link,
        "packages": packages,
        "available_tasks": available_tasks(site, state),
        "created": site.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
        "updated": site.updated_at.format(&time::format_description::well_known::Rfc3339).ok(),
    })
}

/// Whether the site's most recent finished task failed (a site a disable could not take down,
/// say): such a site may be force-deleted while enabled.
async fn last_task_failed(s: &AppState, site: &Site) -> ApiResult<bool> {
    let last = s
        .store
        .tasks(&store::TaskFilter {
            site: Some(site.id),
            limit: 5,
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|t| t.finished_at.is_some())
        .max_by_key(|t| t.finished_at);
    Ok(last.is_some_and(|t| t.status == TaskStatus::Error))
}

/// Loads a site the caller may see; another client's site is answered as not found.
pub(crate) async fn visible_site(s: &AppState, caller: &Caller, id: i64) -> ApiResult<Site> {
    let site = s.store.site(SiteId(id)).await?;
    match caller.0.client {
        Some(c) if c != site.client_id => {
            Err(ApiError::NotFound(format!("site {id} does not exist")))
        }
        _ => Ok(site),
    }
}

#[utoipa::path(post, path = "/sites", tag = "sites", request_body = NewSiteBody, responses((status = 202, description = "The site (installing) and its install task", body = Object), crate::openapi::WriteErrors), operation_id = "sites_create")]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewSiteBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_scope(Scope::Install)?;
    // Parse everything first: nothing is written unless all of it is valid.
    let domain = DomainName::parse(&body.domain).map_err(|e| ApiError::field("domain", e))?;
    if body.aliases.len() > crate::policy::MAX_ALIASES {
        return Err(ApiError::Unprocessable(format!(
            "aliases: at most {} aliases per site",
            crate::policy::MAX_ALIASES
        )));
    }
    let mut aliases = Vec::new();
    for a in &body.aliases {
        let alias = DomainName::parse(a).map_err(|e| ApiError::field("aliases", e))?;
        if alias == domain || aliases.contains(&alias) {
            return Err(ApiError::Unprocessable(format!(
                "aliases: {alias} is listed twice"
            )));
        }
        aliases.push(alias);
    }
    let profile = Name::parse(&body.profile).map_err(|e| ApiError::field("profile", e))?;
    let language = Language::parse(&body.language).map_err(|e| ApiError::field("language", e))?;

    // A client's token may name only its own client; whether another exists, it cannot tell.
    let client = match (
        super::client_ref(&s, &body.client, "client").await,
        caller.0.client,
    ) {
        (Ok(c), Some(own)) if c.id == own => c,
        (_, Some(_)) => {
            return Err(ApiError::Unprocessable(
                "client: your token may only create sites for its own client".into(),
            ))
        }
        (found, None) => found?,
    };
    let platform = super::platform_ref(&s, &body.platform, "platform").await?;
    match platform.status {
        PlatformStatus::Enabled => {}
        PlatformStatus::Queued => {
            return Err(ApiError::Conflict(format!(
                "platform {} is not verified yet; wait for its verify task",
                platform.name
            )))
        }
        other => {
            return Err(ApiError::Conflict(format!(
                "platform {} is {other}; new sites need an enabled platform",
                platform.name
            )))
        }
    }
    let profiles = s.store.platform_profiles(platform.id).await?;
    let Some(offered) = profiles.iter().find(|p| p.name == profile.as_str()) else {
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiError::Unprocessable(format!(
            "profile: platform {} has no profile '{profile}'; it offers: {}",
            platform.name,
            names.join(", ")
        )));
    };
    if !offered.languages.iter().any(|l| l == language.as_str()) {
        return Err(ApiError::Unprocessable(format!(
            "language: profile '{profile}' is offered in {}, not '{language}'",
            offered.languages.join(", ")
        )));
    }
    let db_server = super::db_server_ref(&s, &body.db_server, "db_server").await?;

    let new = NewSite {
        domain,
        aliases,
        client: client.id,
        platform: platform.id,
        profile,
        language,
        db_server: db_server.id,
        db_prefix: s.config.db_prefix.clone(),
        requested_by: caller.name(),
        traceparent: bus::current_traceparent(),
    };
    let (site, task) = s.store.create_site(&new).await?;
    s.wake_relay.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "site": site_json(&s, &site).await?, "task": task })),
    ))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SiteQuery {
    domain: Option<String>,
    client: Option<String>,
    status: Option<String>,
    platform: Option<String>,
    /// Part of a domain, as typed in a search box.
    search: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The cursor: the last site id of the previous page.
    after: Option<i64>,
}

/// The longest search text: a domain name's length.
const MAX_SEARCH_CHARS: usize = 253;

#[utoipa::path(get, path = "/sites", tag = "sites", params(SiteQuery), responses((status = 200, description = "Sites with their links and available tasks", body = [Object]), crate::openapi::ReadErrors), operation_id = "sites_list")]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<SiteQuery>,
) -> ApiResult<Page<Value>> {
    let limit = page_size(q.limit)?;
    let empty = || Page {
        items: vec![],
        total: 0,
        next: None,
    };
    if q.search
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::Unprocessable(format!(
            "search: at most {MAX_SEARCH_CHARS} characters (part of a domain name)"
        )));
    }
    if q.search
        .as_ref()
        .is_some_and(|t| t.chars().any(char::is_control))
    {
        return Err(ApiError::Unprocessable(
            "search: no control characters (part of a domain name)".into(),
        ));
    }
    let mut filter = SiteFilter {
        domain: q
            .domain
            .as_deref()
            .map(DomainName::parse)
            .transpose()
            .map_err(|e| ApiError::field("domain", e))?,
        status: q
            .status
            .as_deref()
            .map(SiteStatus::parse)
            .transpose()
            .map_err(|e| ApiError::field("status", e))?,
        search: q.search.clone().filter(|t| !t.is_empty()),
        ..Default::default()
    };
    if let Some(c) = &q.client {
        let found = match c.parse::<i64>() {
            Ok(id) => Some(ClientId(id)),
            Err(_) => s
                .store
                .client_by_name(&Name::parse(c).map_err(|e| ApiError::field("client", e))?)
                .await
                .ok()
                .map(|c| c.id),
        };
        match (found, caller.0.client) {
            (Some(id), _) => filter.client = Some(id),
            // Another client's sites, or a client that does not exist: a client's token cannot
            // tell the two apart.
            (None, Some(_)) => return Ok(empty()),
            (None, None) => {
                return Err(ApiError::NotFound(format!(
                    "client '{}' does not exist",
                    c.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    if let Some(p) = &q.platform {
        filter.platform = Some(match p.parse::<i64>() {
            Ok(id) => PlatformId(id),
            Err(_) => {
                s.store
                    .platform_by_name(&Name::parse(p).map_err(|e| ApiError::field("platform", e))?)
                    .await?
                    .id
            }
        });
    }
    if let Some(own) = caller.0.client {
        if filter.client.is_some_and(|c| c != own) {
            return Ok(empty());
        }
        filter.client = Some(own);
    }
    let (sites, total) = s
        .store
        .sites_page(&filter, q.after.map(SiteId), limit)
        .await?;
    let items = sites_json(&s, &sites).await?;
    Ok(Page::from_overfetch(
        items,
        limit,
        total,
        &uri,
        "after",
        |site| site.get("id").and_then(Value::as_i64).unwrap_or(0),
    ))
}

#[utoipa::path(get, path = "/sites/{id}", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id")), responses((status = 200, description = "The site: status, link, packages, available tasks", body = Object), crate::openapi::ReadErrors), operation_id = "sites_get")]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let site = visible_site(&s, &caller, id).await?;
    Ok(Json(site_json(&s, &site).await?))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct NewSiteTask {
    #[serde(rename = "type")]
    task_type: String,
    /// The task's arguments, checked per type below.
    #[serde(flatten)]
    args: serde_json::Map<String, Value>,
}

/// Checks a task's arguments and returns them as stored with the task.
async fn task_args(
    s: &AppState,
    site: &Site,
    task_type: TaskType,
    args: &serde_json::Map<String, Value>,
) -> ApiResult<TaskArgs> {
    let allowed: &[&str] = match task_type {
        TaskType::Backup => &["description"],
        TaskType::Restore | TaskType::VerifyBackup => &["backup"],
        TaskType::BackupDelete => &["backups"],
        TaskType::Delete => &["force"],
        TaskType::Migrate | TaskType::Clone => &["platform", "domain", "db_server"],
        _ => &[],
    };
    if let Some(k) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::Unprocessable(format!(
            "{k}: '{task_type}' takes no such argument; it takes: [{}]",
            allowed.join(", ")
        )));
    }
    let own_backup = |id: i64| async move {
        match s.store.backup(BackupId(id)).await {
            Ok(b) if b.site == site.id => Ok(b),
            _ => Err(ApiError::Unprocessable(format!(
                "backup {id} is not a backup of site {}; GET /api/v1/sites/{}/backups lists them",
                site.domain, site.id
            ))),
        }
    };
    Ok(match task_type {
        TaskType::Backup => match args.get("description") {
            None | Some(Value::Null) => TaskArgs::Backup(BackupArgs::default()),
            Some(Value::String(d))
                if !d.trim().is_empty()
                    && d.chars().count() <= 255
                    && !d.chars().any(char::is_control) =>
            {
                TaskArgs::Backup(BackupArgs {
                    description: Some(d.trim().to_owned()),
                })
            }
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "description: give a line of text, at most 255 characters".into(),
                ))
            }
        },
        TaskType::Restore | TaskType::VerifyBackup => {
            let id = args.get("backup").and_then(Value::as_i64).ok_or_else(|| {
                ApiError::Unprocessable("backup: give the id of the backup to restore".into())
            })?;
            own_backup(id).await?;
            TaskArgs::OfBackup(BackupRef {
                backup: BackupId(id),
            })
        }
        TaskType::BackupDelete => {
            let ids: Vec<i64> = args
                .get("backups")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .filter(|ids: &Vec<i64>| !ids.is_empty())
                .ok_or_else(|| {
                    ApiError::Unprocessable("backups: give a non-empty list of backup ids".into())
                })?;
            if ids.len() > crate::policy::MAX_BACKUPS_PER_DELETE {
                return Err(ApiError::Unprocessable(format!(
                    "backups: at most {} backups in one backup-delete",
                    crate::policy::MAX_BACKUPS_PER_DELETE
                )));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = ids.iter().find(|id| !seen.insert(**id)) {
                return Err(ApiError::Unprocessable(format!(
                    "backups: {twice} is listed twice"
                )));
            }
            for id in &ids {
                own_backup(*id).await?;
            }
            TaskArgs::BackupDelete(BackupDeleteArgs {
                backups: ids.into_iter().map(BackupId).collect(),
            })
        }
        TaskType::Migrate | TaskType::Clone => {
            TaskArgs::Move(move_args(s, site, task_type, args).await?)
        }
        TaskType::Delete => match args.get("force") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {
                TaskArgs::Delete(DeleteArgs { force: false })
            }
            Some(Value::Bool(true)) => TaskArgs::Delete(DeleteArgs { force: true }),
            Some(_) => return Err(ApiError::Unprocessable("force: give true or false".into())),
        },
        _ => TaskArgs::none(),
    })
}

/// Checks a migrate's or clone's target: the platform (package checks apply: a target with
/// errors is refused with the list), the domain (a new one = rename; free), the db server.
async fn move_args(
    s: &AppState,
    site: &Site,
    task_type: TaskType,
    args: &serde_json::Map<String, Value>,
) -> ApiResult<MoveArgs> {
    let reference = |key: &str| -> ApiResult<Option<Ref>> {
        match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| ApiError::Unprocessable(format!("{key}: give a name or an id"))),
        }
    };
    let platform = reference("platform")?.ok_or_else(|| {
        ApiError::Unprocessable(
            "platform: give the target platform; GET /api/v1/sites/{id}/migrate-targets lists them"
                .into(),
        )
    })?;
    let platform = super::platform_ref(s, &platform, "platform").await?;
    let domain = match args.get("domain") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => {
            Some(DomainName::parse(d).map_err(|e| ApiError::field("domain", e))?)
        }
        Some(_) => return Err(ApiError::Unprocessable("domain: give a domain name".into())),
    };
    let db_server = match reference("db_server")? {
        None => None,
        Some(r) => Some(super::db_server_ref(s, &r, "db_server").await?.id),
    };
    let new_domain = domain.as_ref().filter(|d| **d != site.domain);
    match task_type {
        TaskType::Clone if new_domain.is_none() => {
            return Err(ApiError::Unprocessable(
                "domain: a clone needs a domain of its own".into(),
            ))
        }
        TaskType::Migrate if new_domain.is_none() && platform.id == site.platform_id => {
            return Err(ApiError::Unprocessable(
                "platform: the site is on that platform already; give another platform, or a new domain to rename it".into(),
            ))
        }
        _ => {}
    }
    if let Some(d) = new_domain {
        let taken = s
            .store
            .sites(&SiteFilter {
                domain: Some(d.clone()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .any(|o| o.status != SiteStatus::Deleted);
        if taken {
            return Err(ApiError::Conflict(format!(
                "the domain {d} is already used by another site; choose another domain"
            )));
        }
    }
    let targets = s.store.migrate_targets(site).await?;
    match targets.iter().find(|(p, _)| p.id == platform.id) {
        None => {
            return Err(ApiError::Conflict(format!(
                "platform {} is not a possible target: it is {} or does not offer the profile {}",
                platform.name, platform.status, site.profile
            )))
        }
        Some((_, check)) if !check.selectable => {
            return Err(ApiError::Conflict(match &check.reason {
                Some(reason) => reason.clone(),
                None => format!(
                    "platform {} would downgrade packages of the site: {}",
                    platform.name,
                    check.errors()
                ),
            }))
        }
        Some(_) => {}
    }
    Ok(MoveArgs {
        platform: platform.id,
        domain: new_domain.cloned(),
        db_server,
        clone_site: None,
    })
}

#[utoipa::path(get, path = "/sites/{id}/migrate-targets", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id")), responses((status = 200, description = "Platforms the site could move to, each with its package comparison and whether it can be chosen", body = [Object]), crate::openapi::ReadErrors), operation_id = "sites_migrate_targets")]
pub async fn migrate_targets(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<Value>>> {
    let site = visible_site(&s, &caller, id).await?;
    let targets = s.store.migrate_targets(&site).await?;
    Ok(Json(
        targets
            .into_iter()
            .map(|(p, check)| {
                json!({
                    "platform": {"id": p.id, "name": p.name},
                    "current": p.id == site.platform_id,
                    "selectable": check.selectable,
                    "reason": check.reason,
                    "counts": check.counts,
                    "packages": check.packages,
                })
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/sites/{id}/tasks", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id")), request_body = NewSiteTask, responses((status = 202, description = "The site task accepted", body = Object), crate::openapi::WriteErrors), operation_id = "sites_create_task")]
pub async fn create_task(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<NewSiteTask>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let site = visible_site(&s, &caller, id).await?;
    let task_type = TaskType::parse(&body.task_type).map_err(|e| ApiError::field("type", e))?;
    caller.require_task_type(task_type)?;
    // Whether the site offers the task comes first (409), then its arguments (422).
    ensure_available(&s, &site, task_type, &Value::Object(body.args.clone())).await?;
    let args = task_args(&s, &site, task_type, &body.args).await?;
    if let (TaskType::Clone, TaskArgs::Move(args)) = (task_type, &args) {
        let domain = args.domain.clone().ok_or_else(|| {
            ApiError::Unprocessable("domain: a clone needs a domain of its own".into())
        })?;
        let new = NewSite {
            domain,
            aliases: vec![], // aliases are not copied
            client: site.client_id,
            platform: args.platform,
            profile: site.profile.clone(),
            language: site.language.clone(),
            db_server: args.db_server.unwrap_or(site.db_server_id),
            db_prefix: s.config.db_prefix.clone(),
            requested_by: caller.name(),
            traceparent: bus::current_traceparent(),
        };
        let (copy, task) = s.store.create_clone(&new, site.id, args.clone()).await?;
        s.wake_relay.notify_one();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "task": task, "site": site_json(&s, &copy).await? })),
        ));
    }
    let task = s
        .store
        .create_task(
            &NewTask::for_site(task_type, site.id, args, &caller.name())
                .traced(bus::current_traceparent()),
        )
        .await?;
    s.wake_relay.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "task": task }))))
}

#[utoipa::path(get, path = "/sites/{id}/backups", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id"), ListQuery), responses((status = 200, description = "The site's backups, newest first", body = [Object]), crate::openapi::ReadErrors), operation_id = "sites_backups")]
pub async fn backups(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<store::Backup>> {
    let site = visible_site(&s, &caller, id).await?;
    // Newest first; retention keeps a site's backups few.
    Page::from_list(s.store.backups(site.id).await?, &q, &uri, "before", |b| {
        b.id.0
    })
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// A schedule object, "off" (no automated backups for this site) or "inherit" (follow the
    /// global `backup_schedule` setting).
    schedule: Value,
}

#[utoipa::path(get, path = "/sites/{id}/backup-schedule", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id")), responses((status = 200, description = "The site's own schedule and the global one it may inherit", body = Object), crate::openapi::ReadErrors), operation_id = "sites_backup_schedule")]
pub async fn backup_schedule(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let site = visible_site(&s, &caller, id).await?;
    let own = Some(s.store.site_schedule(site.id).await?);
    let global = s
        .store
        .settings()
        .await?
        .get("backup_schedule")
        .cloned()
        .unwrap_or(Value::Null);
    let (source, schedule) = match own.as_ref().and_then(|o| o.overridden.clone()) {
        Some(Some(v)) => ("site", v),
        Some(None) => ("off", Value::Null),
        None if global.is_null() => ("off", Value::Null),
        None => ("global", global),
    };
    let invalid = own.as_ref().and_then(|o| o.invalid.clone());
    // "off" is either the site's own choice or a global schedule that is not set.
    let inherits = own.as_ref().is_none_or(|o| o.overridden.is_none());
    let next = own.and_then(|o| o.next_run_at).filter(|_| source != "off");
    Ok(Json(json!({
        "source": source,
        "inherits": inherits,
        "schedule": schedule,
        "invalid": invalid,
        "next_run": next.and_then(|n| n.format(&time::format_description::well_known::Rfc3339).ok()),
    })))
}

#[utoipa::path(put, path = "/sites/{id}/backup-schedule", tag = "sites", params(("id" = i64, Path, minimum = 1, description = "the site's id")), request_body = ScheduleBody, responses((status = 200, description = "The site's schedule as set", body = Object), crate::openapi::WriteErrors), operation_id = "sites_set_backup_schedule")]
pub async fn set_backup_schedule(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<Json<Value>> {
    let site = visible_site(&s, &caller, id).await?;
    caller.require_scope(Scope::BackupSchedule)?;
    let setting = match &body.schedule {
        Value::String(x) if x == "inherit" => None,
        Value::String(x) if x == "off" => Some(None),
        v => {
            let schedule = domain::backup_policy::Schedule::parse(v)
                .map_err(|e| ApiError::field("schedule", e))?;
            let settings = s.store.settings().await?;
            crate::policy::schedule_bounds(&settings, caller.0.client.is_some())
                .check(&schedule)
                .map_err(|e| ApiError::field("schedule", e))?;
            Some(Some(v.clone()))
        }
    };
    s.store.set_site_schedule(site.id, setting).await?;
    backup_schedule(State(s), caller, PathId(id)).await
}

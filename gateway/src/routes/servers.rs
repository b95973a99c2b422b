use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{HostPath, Name, ServerId, ServerKind};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    name: String,
    kind: String,
    host: Option<String>,
    port: Option<i32>,
    /// Web servers: where platforms may be registered (default /srv/platforms, /var/www,
    /// /opt/platforms).
    platform_dirs: Option<Vec<String>>,
    /// Db servers: dbprov's public key (its log says it at start), pinned now rather than
    /// learnt from dbprov the first time a password is sealed to it.
    public_key: Option<String>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerChange {
    platform_dirs: Vec<String>,
}

/// Platform directories as given: absolute, normalized, not the system's or the control
/// plane's own, at most 32.
fn platform_dirs(list: &[String]) -> ApiResult<Vec<HostPath>> {
    if list.is_empty() || list.len() > 32 {
        return Err(ApiError::Unprocessable(
            "platform_dirs: give 1 to 32 directories".into(),
        ));
    }
    let own = crate::policy::own_dirs();
    list.iter()
        .map(|d| {
            let path = HostPath::parse(d).map_err(|e| ApiError::field("platform_dirs", e))?;
            match crate::policy::forbidden_path(&path, &own) {
                Some(why) => Err(ApiError::Unprocessable(format!("platform_dirs: {why}"))),
                None => Ok(path),
            }
        })
        .collect()
}

#[utoipa::path(post, path = "/servers", tag = "servers", request_body = NewServer, responses((status = 201, description = "The server registered, with its agent's broker credentials (shown only here) when the control plane makes broker users", body = Object), crate::openapi::WriteErrors), operation_id = "servers_create")]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    caller.require_admin()?;
    let name = Name::parse(&body.name).map_err(|e| ApiError::field("name", e))?;
    let kind = ServerKind::parse(&body.kind).map_err(|e| ApiError::field("kind", e))?;
    let host = body.host.unwrap_or_else(|| "127.0.0.1".into());
    platform::check_db_host(&host).map_err(|e| ApiError::Unprocessable(format!("host: {e}")))?;
    let port = body.port.unwrap_or(match kind {
        ServerKind::Web => 8088,
        ServerKind::Db => 3306,
    });
    if !(1..=65535).contains(&port) {
        return Err(ApiError::Unprocessable(format!(
            "port: {port} is not between 1 and 65535"
        )));
    }
    let dirs = match &body.platform_dirs {
        Some(_) if kind == ServerKind::Db => {
            return Err(ApiError::Unprocessable(
                "platform_dirs: a db server holds no platforms".into(),
            ))
        }
        Some(list) => Some(platform_dirs(list)?),
        None => None,
    };
    let key = match &body.public_key {
        Some(_) if kind == ServerKind::Web => {
            return Err(ApiError::Unprocessable(
                "public_key: only a db server's dbprov has one".into(),
            ))
        }
        Some(k) => Some(
            contract::RecipientKey::parse(k)
                .map_err(|e| ApiError::Unprocessable(format!("public_key: {e}")))?,
        ),
        None => None,
    };
    let mut server = s.store.create_server(&name, kind, &host, port).await?;
    // Everything of the record first, the agent's broker user last: a registration that
    // fails anywhere removes the record (and the user, if it was made), and an operator never
    // holds credentials of a server that is not registered.
    let finished = async {
        if let Some(key) = key {
            s.store
                .record_server_public_key(server.id, key.as_str())
                .await?;
        }
        if let Some(dirs) = dirs {
            server = s.store.set_platform_dirs(server.id, &dirs).await?;
        }
        issue_credentials(&s, &server).await
    }
    .await;
    let credentials = match finished {
        Ok(c) => c,
        Err(e) => {
            if let Err(undo) = s.store.delete_fresh_server(server.id).await {
                tracing::error!(error = %undo, server = %server.id, "could not remove a server whose registration failed");
            }
            return Err(e);
        }
    };
    // A server just registered: its agent was never seen.
    let view = ServerView {
        agent: AgentView::new(&server, None, s.config.heartbeat_interval),
        server,
    };
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            server: view,
            agent_credentials: credentials,
        }),
    ))
}

#[utoipa::path(get, path = "/servers", tag = "servers", params(ListQuery), responses((status = 200, description = "Servers with their agents' state; X-Total-Count and Link say the total and the next page", body = [Object]), crate::openapi::ReadErrors), operation_id = "servers_list")]
pub async fn list(
    State(s): State<AppState>,
    _caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<ServerView>> {
    let views = views(&s, s.store.servers().await?).await?;
    Page::from_list(views, &q, &uri, "after", |v| v.server.id.0)
}

#[utoipa::path(get, path = "/servers/{id}", tag = "servers", params(("id" = i64, Path, minimum = 1, description = "the server's id")), responses((status = 200, description = "The server with its agent's state (connected, unreachable, never-seen), last heartbeat and software", body = Object), crate::openapi::ReadErrors), operation_id = "servers_get")]
pub async fn get(
    State(s): State<AppState>,
    _caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<ServerView>> {
    let server = s.store.server(ServerId(id)).await?;
    let mut one = views(&s, vec![server]).await?;
    one.pop()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("server {id}")))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServerTask {
    #[serde(rename = "type")]
    task_type: String,
}

/// A server's tasks: `verify` asks its agent what it runs (and whether it answers at all).
#[utoipa::path(post, path = "/servers/{id}/tasks", tag = "servers", params(("id" = i64, Path, minimum = 1, description = "the server's id")), request_body = NewServerTask, responses((status = 202, description = "The server task (verify) accepted", body = Object), crate::openapi::WriteErrors), operation_id = "servers_create_task")]
pub async fn create_task(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<NewServerTask>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    caller.require_admin()?;
    let server = s.store.server(ServerId(id)).await?;
    if body.task_type != "verify" {
        return Err(ApiError::Unprocessable(format!(
            "type: '{}' is not a server task; the one there is: verify",
            body.task_type.chars().take(64).collect::<String>()
        )));
    }
    let task = s
        .store
        .create_task(&store::NewTask {
            task_type: domain::TaskType::ServerVerify,
            site: None,
            platform: None,
            parent: None,
            retry_of: None,
            args: contract::TaskArgs::ServerVerify(contract::ServerArgs { server: server.id }),
            requested_by: caller.name(),
            traceparent: bus::current_traceparent(),
        })
        .await?;
    s.wake_relay.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "task": task })),
    ))
}

/// Makes a new broker password for the server's agent (the old one stops working at once)
/// and answers it, once: for an operator who lost it, or after a host was compromised.
#[utoipa::path(post, path = "/servers/{id}/credentials", tag = "servers", params(("id" = i64, Path, minimum = 1, description = "the server's id")), responses((status = 200, description = "New broker credentials for the server's agent (shown only here); the old password's connections are closed", body = Object), crate::openapi::WriteErrors), operation_id = "servers_rotate_credentials")]
pub async fn rotate_credentials(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<AgentCredentials>> {
    caller.require_admin()?;
    let server = s.store.server(ServerId(id)).await?;
    match issue_credentials(&s, &server).await? {
        Some(c) => {
            // A new password leaves open connections open: the old holder is cut off now.
            if let Some(admin) = &s.broker_admin {
                admin
                    .close_connections(&c.broker_user)
                    .await
                    .map_err(|e| {
                        ApiError::Unavailable(
                            format!("the password is new, but the agent's open connections were not closed: {e}; ask again"),
                            10,
                        )
                    })?;
            }
            Ok(Json(c))
        }
        None => Err(ApiError::Conflict(
            "this control plane makes no broker users (set HOSTING_BROKER_ADMIN_URL to RabbitMQ's management API); its agents use the services' own broker user".into(),
        )),
    }
}

/// Servers with what their agents said last.
async fn views(s: &AppState, servers: Vec<store::Server>) -> ApiResult<Vec<ServerView>> {
    let agents = s.store.server_agents().await?;
    Ok(servers
        .into_iter()
        .map(|server| {
            let seen = agents.iter().find(|a| a.server == server.id);
            let agent = AgentView::new(&server, seen, s.config.heartbeat_interval);
            ServerView { server, agent }
        })
        .collect())
}

/// A server as the API shows it: its record and its agent's state.
#[derive(serde::Serialize)]
pub struct ServerView {
    #[serde(flatten)]
    server: store::Server,
    agent: AgentView,
}

/// What the control plane knows of a server's agent: `connected` while it beats (within
/// three intervals), `unreachable` after, `never-seen` before its first beat.
#[derive(serde::Serialize)]
pub struct AgentView {
    service: &'static str,
    state: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    last_seen: Option<time::OffsetDateTime>,
    /// The agent's own version.
    version: Option<String>,
    /// What it runs for sites: `nginx` and `php` on a web server, `mariadb` on a db server.
    software: serde_json::Value,
}

impl AgentView {
    pub(crate) fn new(
        server: &store::Server,
        seen: Option<&store::AgentSeen>,
        interval: std::time::Duration,
    ) -> Self {
        let state = match seen {
            None => "never-seen",
            Some(a) if a.age_secs <= 3.0 * interval.as_secs_f64() => "connected",
            Some(_) => "unreachable",
        };
        Self {
            service: contract::agent_service(server.kind),
            state,
            last_seen: seen.map(|a| a.last_seen),
            version: seen.map(|a| a.version.clone()),
            software: seen
                .map(|a| a.software.clone())
                .unwrap_or_else(|| serde_json::json!({})),
        }
    }
}

impl AgentView {
    pub(crate) fn state(&self) -> &'static str {
        self.state
    }
    pub(crate) fn service(&self) -> &'static str {
        self.service
    }
    pub(crate) fn last_seen(&self) -> Option<time::OffsetDateTime> {
        self.last_seen
    }
}

/// The answer to a registration: the server, and its agent's broker credentials (answered
/// only here and by `POST /servers/{id}/credentials`; the control plane keeps no copy).
#[derive(serde::Serialize)]
pub struct Registered {
    #[serde(flatten)]
    server: ServerView,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_credentials: Option<AgentCredentials>,
}

/// What the agent on the new host needs, as the environment of its service
/// (`/etc/hosting/agent.env` for the systemd unit in `deploy/`).
#[derive(serde::Serialize)]
pub struct AgentCredentials {
    broker_user: String,
    broker_password: String,
    env: std::collections::BTreeMap<&'static str, String>,
}

/// Makes (or resets) the broker user of `server`'s agent with a fresh password, when this
/// control plane manages broker users, after declaring and binding the agent's RPC queue
/// (the agent may not). The user is removed again if it cannot be recorded.
async fn issue_credentials(
    s: &AppState,
    server: &store::Server,
) -> ApiResult<Option<AgentCredentials>> {
    use rand::RngExt;
    let Some(admin) = &s.broker_admin else {
        return Ok(None);
    };
    let topology = s.bus.topology();
    let user = topology.agent_user(server.kind, &server.name);
    let password = hex::encode(rand::rng().random::<[u8; 24]>());
    let base = s
        .config
        .agent_amqp_url
        .clone()
        .unwrap_or_else(|| s.config.common.amqp_url.clone());
    let amqp_url = agent_amqp_url(&base, &user, &password).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "HOSTING_AGENT_AMQP_URL (or HOSTING_AMQP_URL) is not a URL to put credentials in: {e}"
        ))
    })?;
    let unavailable = |what: &str, e: String| {
        ApiError::Unavailable(format!("the agent's {what} was not made: {e}"), 10)
    };
    s.bus
        .declare_rpc_queue(contract::agent_service(server.kind), &server.name)
        .await
        .map_err(|e| unavailable("RPC queue", e.to_string()))?;
    let grant = topology.agent_grant(server.kind, &server.name);
    if let Err(e) = admin.put_agent_user(&user, &password, &grant).await {
        // Made part-way (its password never shown): removed.
        let _ = admin.delete_user(&user).await;
        return Err(unavailable("broker user", e.to_string()));
    }
    if let Err(e) = s.store.set_server_broker_user(server.id, &user).await {
        if let Err(undo) = admin.delete_user(&user).await {
            tracing::error!(error = %undo, %user, "could not remove a broker user whose server was not recorded");
        }
        return Err(e.into());
    }
    let mut env = std::collections::BTreeMap::new();
    env.insert("HOSTING_SERVER", server.name.to_string());
    env.insert("HOSTING_PREFIX", s.config.common.prefix.clone());
    env.insert("HOSTING_AMQP_URL", amqp_url);
    // The control plane calls an agent unreachable after three of its own intervals.
    env.insert(
        "HOSTING_HEARTBEAT_SECS",
        s.config.heartbeat_interval.as_secs_f64().to_string(),
    );
    Ok(Some(AgentCredentials {
        broker_user: user,
        broker_password: password,
        env,
    }))
}

/// Each of the (comma-separated) broker URLs with the agent's user and password in it.
fn agent_amqp_url(base: &str, user: &str, password: &str) -> Result<String, String> {
    base.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let mut url = url::Url::parse(u).map_err(|e| e.to_string())?;
            url.set_username(user)
                .map_err(|_| "it cannot hold a user".to_string())?;
            url.set_password(Some(password))
                .map_err(|_| "it cannot hold a password".to_string())?;
            Ok(url.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

/// Changes a web server's platform directories (platforms registered before stay).
#[utoipa::path(patch, path = "/servers/{id}", tag = "servers", params(("id" = i64, Path, minimum = 1, description = "the server's id")), request_body = ServerChange, responses((status = 200, description = "The server as changed", body = Object), crate::openapi::WriteErrors), operation_id = "servers_change")]
pub async fn change(
    State(s): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ServerChange>,
) -> ApiResult<Json<store::Server>> {
    caller.require_admin()?;
    let server = s.store.server(ServerId(id)).await?;
    if server.kind != ServerKind::Web {
        return Err(ApiError::Unprocessable(
            "platform_dirs: a db server holds no platforms".into(),
        ));
    }
    let dirs = platform_dirs(&body.platform_dirs)?;
    Ok(Json(s.store.set_platform_dirs(server.id, &dirs).await?))
}

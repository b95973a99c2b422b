use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, PathId};
use crate::paging::{ListQuery, Page};
use crate::startup::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use domain::{HostPath, Name, ServerId, ServerKind};

#[derive(serde::Deserialize)]
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

#[derive(serde::Deserialize)]
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

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<store::Server>)> {
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
    if let Some(key) = key {
        s.store
            .record_server_public_key(server.id, key.as_str())
            .await?;
    }
    if let Some(dirs) = dirs {
        server = s.store.set_platform_dirs(server.id, &dirs).await?;
    }
    Ok((StatusCode::CREATED, Json(server)))
}

pub async fn list(
    State(s): State<AppState>,
    _caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Page<store::Server>> {
    Page::from_list(s.store.servers().await?, &q, &uri, "after", |v| v.id.0)
}

/// Changes a web server's platform directories (platforms registered before stay).
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

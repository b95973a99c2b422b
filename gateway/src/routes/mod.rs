mod clients;
mod dead_letters;
mod metrics;
pub(crate) mod platforms;
mod public;
mod servers;
mod settings;
pub(crate) mod sites;
mod tasks;
mod tokens;

use crate::error::{ApiError, ApiResult};
use crate::startup::AppState;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The API's routes, each from its annotated handler: the router and the OpenAPI document
/// are built from the same list, so no route goes undocumented. (One `routes!` per path.)
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(servers::create, servers::list))
        .routes(routes!(servers::get, servers::change))
        .routes(routes!(servers::rotate_credentials))
        .routes(routes!(servers::create_task))
        .routes(routes!(platforms::create, platforms::list))
        .routes(routes!(platforms::get))
        .routes(routes!(platforms::create_task))
        .routes(routes!(clients::create, clients::list))
        .routes(routes!(sites::create, sites::list))
        .routes(routes!(sites::get))
        .routes(routes!(sites::create_task))
        .routes(routes!(sites::backups))
        .routes(routes!(sites::migrate_targets))
        .routes(routes!(sites::backup_schedule, sites::set_backup_schedule))
        .routes(routes!(tasks::list, tasks::create))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::log))
        .routes(routes!(tasks::events))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::retry))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(settings::get, settings::patch))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::drop))
        .routes(routes!(dead_letters::replay))
}

/// Serves `/metrics` at `HOSTING_METRICS_LISTEN` when that is set: a port of its own for the
/// monitoring network, not the API's, which browsers reach for login links.
pub async fn serve_metrics(state: AppState) {
    let Some(addr) = std::env::var("HOSTING_METRICS_LISTEN")
        .ok()
        .filter(|a| !a.trim().is_empty())
    else {
        return;
    };
    let listener = match tokio::net::TcpListener::bind(addr.trim()).await {
        Ok(l) => l,
        Err(e) => {
            return tracing::error!(%addr, error = %e, "cannot listen for metrics scrapes; no metrics are served")
        }
    };
    tracing::info!(%addr, "serving metrics at /metrics");
    let app = Router::new()
        .route("/metrics", get(metrics::scrape))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let api = api
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            state_gate,
        ))
        // The document itself: no token, and served while the state database is away.
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc) }
            }),
        );
    // The dashboard calls the API's handlers in process, through this same router.
    let dashboard = crate::dashboard::router(state.clone(), api.clone().with_state(state.clone()));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/login/{token}", get(public::login))
        .route("/disabled/{domain}", get(public::disabled))
        .nest("/api/v1", api)
        .with_state(state)
        .merge(dashboard)
        .fallback(|uri: axum::http::Uri| async move {
            crate::error::ApiError::NotFound(format!(
                "no such endpoint: {}; the API lives under /api/v1",
                uri.path()
            ))
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::error::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(crate::error::json_refusals))
        .layer(axum::middleware::from_fn(crate::error::catch_panics))
        .layer(axum::middleware::from_fn(trace_request))
}

/// While the state database does not answer, every API request gets a 503 with
/// `Retry-After` at once: it could neither be authenticated nor served.
async fn state_gate(
    axum::extract::State(s): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !s.state_up.load(std::sync::atomic::Ordering::SeqCst) {
        return ApiError::state_unavailable().into_response();
    }
    next.run(request).await
}

/// Ready when the state database answers. The broker being down does not make the gateway
/// unready: it still accepts tasks into its outbox. Both are reported.
async fn readyz(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // What the watcher found at most half a second ago, on its own connection: said at once,
    // and a pool busy with requests does not make the gateway look unready.
    let db = s.state_up.load(std::sync::atomic::Ordering::SeqCst);
    let broker = s.bus.reachable().await;
    let pending = if db {
        s.store.outbox_len().await.unwrap_or(-1)
    } else {
        -1
    };
    let body = Json(serde_json::json!({
        "database": if db { "ok" } else { "unreachable" },
        "broker": if broker { "ok" } else { "unreachable: accepted tasks wait in the outbox" },
        "outbox_pending": pending,
    }));
    if db {
        body.into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// A reference to a record in a request body: its id or its name.
#[derive(serde::Deserialize, Debug, Clone, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Ref {
    Id(i64),
    Name(String),
}

/// As the caller wrote it: `7`, or `'example'` (cut if long).
impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Id(id) => write!(f, "{id}"),
            Ref::Name(n) if n.chars().count() > 64 => {
                write!(f, "'{}...'", n.chars().take(64).collect::<String>())
            }
            Ref::Name(n) => write!(f, "'{n}'"),
        }
    }
}

/// The client a request names; `field` names it in the error.
pub(crate) async fn client_ref(s: &AppState, r: &Ref, field: &str) -> ApiResult<store::Client> {
    match r {
        Ref::Id(id) => s.store.client(domain::ClientId(*id)).await,
        Ref::Name(n) => s.store.client_by_name(&parse_name(n, field)?).await,
    }
    .map_err(|_| {
        ApiError::Unprocessable(format!(
            "{field}: there is no client {r}; GET /api/v1/clients lists them, POST creates one"
        ))
    })
}

/// The platform a request names.
pub(crate) async fn platform_ref(s: &AppState, r: &Ref, field: &str) -> ApiResult<store::Platform> {
    match r {
        Ref::Id(id) => s.store.platform(domain::PlatformId(*id)).await,
        Ref::Name(n) => s.store.platform_by_name(&parse_name(n, field)?).await,
    }
    .map_err(|_| {
        ApiError::Unprocessable(format!(
            "{field}: there is no platform {r}; GET /api/v1/platforms lists them"
        ))
    })
}

/// The db server a request names (a web server of that name or id is not one).
pub(crate) async fn db_server_ref(s: &AppState, r: &Ref, field: &str) -> ApiResult<store::Server> {
    let kind = domain::ServerKind::Db;
    match r {
        Ref::Id(id) => s
            .store
            .server(domain::ServerId(*id))
            .await
            .ok()
            .filter(|d| d.kind == kind),
        Ref::Name(n) => s
            .store
            .server_by_name(&parse_name(n, field)?, kind)
            .await
            .ok(),
    }
    .ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "{field}: there is no db server {r}; GET /api/v1/servers lists them"
        ))
    })
}

fn parse_name(n: &str, field: &str) -> ApiResult<domain::Name> {
    domain::Name::parse(n).map_err(|e| ApiError::field(field, e))
}

/// One span per request: tasks it creates carry its trace context through the outbox.
async fn trace_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), status = tracing::field::Empty);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

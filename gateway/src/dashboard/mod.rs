//! The web dashboard: pages under `/ui` for the admin and for clients' tokens, rendered on
//! the server (maud escapes every value it writes) with one stylesheet and one small script,
//! both served from here (no CDN), under a Content-Security-Policy that allows nothing else.
//!
//! Every page reads and writes through the API's own handlers, called in process with the
//! session's token: a page can show or do nothing that its token could not through the API,
//! because the API's checks (scopes, a client's own sites, a task's availability, argument
//! rules) are the dashboard's. The dashboard adds only HTML, forms and a session cookie.

mod admin;
mod api;
mod page;
mod sites;
mod tasks;

use crate::startup::AppState;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use page::Layout;
use sha2::Digest;

/// The session cookie: the API token the user signed in with, readable by no script
/// (HttpOnly) and sent by the browser to this site's own pages only (SameSite=Strict).
const SESSION_COOKIE: &str = "hosting_session";
/// How long a browser keeps a session: a working day.
const SESSION_SECS: u32 = 12 * 3600;

/// What the dashboard's handlers share: the API (a router over the same handlers and state
/// as `/api/v1`, without its path prefix) and the gateway's state.
#[derive(Clone)]
pub struct Dashboard {
    api: Router,
    app: AppState,
}

/// The dashboard's routes. `api` is the API's router with its state.
pub fn router(app: AppState, api: Router) -> Router {
    let state = Dashboard { api, app };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/sites") }))
        .route("/ui/assets/dashboard.css", get(stylesheet))
        .route("/ui/assets/dashboard.js", get(script))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/sites", get(sites::list).post(sites::create))
        .route("/ui/sites/new", get(sites::new_form))
        .route("/ui/sites/{id}", get(sites::show))
        .route("/ui/sites/{id}/tasks", post(sites::create_task))
        .route("/ui/sites/{id}/tasks/{task_type}", get(sites::task_form))
        .route("/ui/sites/{id}/backup-schedule", post(sites::set_schedule))
        .route("/ui/tasks", get(tasks::list))
        .route("/ui/tasks/{id}", get(tasks::show))
        .route("/ui/tasks/{id}/events", get(tasks::events))
        .route("/ui/tasks/{id}/cancel", post(tasks::cancel))
        .route("/ui/tasks/{id}/retry", post(tasks::retry))
        .route("/ui/platforms", get(admin::platforms))
        .route("/ui/platforms/new", post(admin::create_platform))
        .route("/ui/platforms/{id}", get(admin::platform))
        .route("/ui/platforms/{id}/tasks", post(admin::platform_task))
        .route("/ui/servers", get(admin::servers))
        .route("/ui/servers/{id}/verify", post(admin::server_verify))
        .route(
            "/ui/clients",
            get(admin::clients).post(admin::create_client),
        )
        .route("/ui/tokens", get(admin::tokens).post(admin::create_token))
        .route("/ui/tokens/{id}/revoke", post(admin::revoke_token))
        .route(
            "/ui/settings",
            get(admin::settings).post(admin::save_settings),
        )
        .route("/ui/{*rest}", get(not_found))
        // A browser asks for it on every page.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::from_fn(html_refusals))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin_writes,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every dashboard answer: scripts, styles and connections from this origin only,
/// no framing, no referrer to other sites (login links carry secrets), nothing cached.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Nothing of a page's address leaves the dashboard (login links carry secrets); its own
        // forms still say their origin, which `same_origin_writes` checks.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses a form sent from another site's page. SameSite=Strict keeps the session cookie
/// off such a request, and each form's token is the session's; this also covers the sign-in
/// form, which has no session yet (another site could otherwise sign a browser in with the
/// attacker's token). Browsers say where a request comes from in `Sec-Fetch-Site` and
/// `Origin`; a client that sends neither (curl) is not a browser that could be tricked.
async fn same_origin_writes(
    State(d): State<Dashboard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let h = request.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let fetch_site_ok = header("sec-fetch-site").is_none_or(|v| v == "same-origin" || v == "none");
    // The page's own origin: the address it was asked at, or the public one (behind a proxy
    // that changes the Host header).
    let origin_ok = match header("origin") {
        None => true,
        Some(origin) => {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let public = url::Url::parse(&d.app.config.public_url)
                .map(|u| u.origin().ascii_serialization())
                .ok();
            (authority.is_some() && authority == header("host"))
                || public.as_deref() == Some(origin)
        }
    };
    if fetch_site_ok && origin_ok {
        next.run(request).await
    } else {
        page::error_page(
            None,
            StatusCode::FORBIDDEN,
            "This form was sent from another site's page. Open the dashboard itself and send it from there.",
        )
    }
}

/// Refusals made before a handler runs (a path that is not an id, a form field missing, a
/// body too large, a method the page does not take) as pages, not as the API's JSON.
async fn html_refusals(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html") || t.starts_with("text/event-stream"));
    if status.as_u16() < 400 || is_html {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match (status, allow) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) => {
            format!("{method} is not how this page is used; it takes {allow}.")
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "The form is larger than the dashboard takes.".to_owned()
        }
        (StatusCode::NOT_FOUND, _) => "There is no such page here.".to_owned(),
        _ if text.is_empty() => format!("The request was refused ({status})."),
        _ => format!("The request was refused: {text}"),
    };
    page::error_page(None, status, &message)
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(session: Option<Session>) -> Response {
    page::error_page(
        session.as_ref(),
        StatusCode::NOT_FOUND,
        "There is no such page here.",
    )
}

/// A signed-in browser: its token (from the session cookie) and who that token is. A request
/// without a valid session is sent to the sign-in page.
pub struct Session {
    token: String,
    principal: store::Principal,
    peer: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.principal.is_admin() && self.principal.allowed_task_types.is_none()
    }

    /// What the navigation calls the session's token.
    fn role(&self) -> &'static str {
        match (
            self.principal.is_admin(),
            &self.principal.allowed_task_types,
        ) {
            (true, None) => "admin",
            (true, Some(_)) => "admin (limited)",
            (false, _) => "client",
        }
    }

    /// Whether the token's scopes allow a site task, so the page offers only buttons that
    /// the API would take from this token.
    fn may(&self, task: &str) -> bool {
        let Some(allowed) = &self.principal.allowed_task_types else {
            return true;
        };
        domain::TaskType::parse(task)
            .ok()
            .and_then(domain::Scope::of_task)
            .is_some_and(|scope| allowed.contains(&scope))
    }

    /// The value every form of this session carries, so that a page of another site cannot
    /// post a form here with this browser's cookie (SameSite=Strict is the first guard).
    fn csrf(&self) -> String {
        csrf_for(&self.token)
    }

    /// A form's fields in order, without its `csrf` field, once that is this session's (a
    /// form whose fields repeat, such as a list of backups, is read this way).
    fn checked_fields(&self, raw: &[u8]) -> Result<Vec<(String, String)>, Box<Response>> {
        let mut fields: Vec<(String, String)> = form_urlencoded::parse(raw).into_owned().collect();
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if let Some(refusal) = self.csrf_refusal(sent) {
            return Err(Box::new(refusal));
        }
        fields.retain(|(k, _)| k != "csrf");
        Ok(fields)
    }

    /// The refusal of a form whose `csrf` field is not this session's.
    fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        // Compared in constant time: it is derived from the token.
        let same = store::constant_time_eq(self.csrf().as_bytes(), sent.as_bytes());
        (!same).then(|| {
            page::error_page(
                Some(self),
                StatusCode::FORBIDDEN,
                "This form is out of date or came from another site. Reload the page and send it again.",
            )
        })
    }
}

fn csrf_for(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!(
        "hosting-dashboard-form\0{token}"
    )))
}

/// Whether `t` can be an API token (and so a cookie value as it is): letters, digits, `_`, `-`.
fn token_shaped(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The session tokens in a request's cookies, at most a few: a browser may hold more than one
/// cookie of this name (one set by a neighbouring site for a wider path), so each is tried.
fn session_tokens(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|t| token_shaped(t))
        .take(3)
        .collect()
}

impl FromRequestParts<Dashboard> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Dashboard) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let mut refusal = None;
        for token in session_tokens(parts) {
            match Self::check(parts, state, token).await {
                Ok(session) => return Ok(session),
                Err(r) => refusal = Some(r),
            }
        }
        Err(refusal.unwrap_or_else(to_login))
    }
}

impl Session {
    /// The session of one cookie's token, or where to send the browser instead.
    async fn check(parts: &Parts, state: &Dashboard, token: String) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        // A cookie is a token like a bearer header: failures count against the address, as
        // on the API, so cookies cannot be used to guess tokens faster.
        let guard = &state.app.auth_guard;
        let ip = crate::auth::client_ip(parts);
        let hash = store::hash_token(&token);
        if let Some(wait) = guard.blocked(ip) {
            if !guard.known_good(&hash) {
                let mut r = page::error_page(
                    None,
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too many failed sign-ins from this address; try again in {wait} s."),
                );
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Err(r);
            }
        }
        match state.app.store.principal_for_token(&token).await {
            Ok(Some(principal)) => {
                guard.succeeded(hash);
                Ok(Session {
                    token,
                    principal,
                    peer: parts
                        .extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .cloned(),
                })
            }
            // Revoked, or never valid: signed out.
            Ok(None) => {
                guard.failed(ip);
                Err((clear_cookie(), to_login()).into_response())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a dashboard session");
                Err(page::error_page(
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The control plane cannot reach its database right now. Try again in a minute.",
                ))
            }
        }
    }
}

impl axum::extract::OptionalFromRequestParts<Dashboard> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Dashboard,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Session as FromRequestParts<Dashboard>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

fn clear_cookie() -> [(header::HeaderName, String); 1] {
    [(
        header::SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    )]
}

async fn login_form(session: Option<Session>) -> Response {
    if session.is_some() {
        return Redirect::to("/ui/sites").into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.card method="post" action="/ui/login" {
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="current-password" required;
            p.hint { "An admin token (make up writes one to .stack/admin.token) or a client's token (POST /api/v1/tokens)." }
            button type="submit" { "Sign in" }
        }
    };
    (status, Layout::bare("Sign in", body)).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Signs in with an API token: checked by asking the API with it, so a wrong one counts
/// against the address's failures just as it would on the API.
async fn login(
    State(d): State<Dashboard>,
    extensions: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim().to_owned();
    if !token_shaped(&token) {
        return login_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Give the API token: letters and digits, as the API answered it."),
        );
    }
    let probe = api::Caller {
        token: &token,
        peer: extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .cloned(),
    };
    let answer = d
        .call(&probe, axum::http::Method::GET, "/sites?limit=1", None)
        .await;
    if answer.status == StatusCode::UNAUTHORIZED {
        return login_page(
            answer.status,
            Some("That token is not valid: mistyped, or revoked. Ask the admin for a new one."),
        );
    }
    if !answer.status.is_success() {
        return login_page(answer.status, Some(&answer.message()));
    }
    let secure = if d.app.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    (
        [(
            header::SET_COOKIE,
            format!(
                "{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{secure}"
            ),
        )],
        Redirect::to("/ui/sites"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(session: Session, Form(form): Form<CsrfOnly>) -> Response {
    if let Some(r) = session.csrf_refusal(&form.csrf) {
        return r;
    }
    (clear_cookie(), Redirect::to("/ui/login")).into_response()
}

use crate::error::ApiError;
use crate::startup::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::{Scope, TaskType};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::Principal;

/// The caller, from `Authorization: Bearer <token>`. Tokens are stored as SHA-256 hashes and
/// looked up by the hash of what was sent, so no comparison runs on the secret itself; the
/// hash found is compared again in constant time.
pub struct Caller(pub Principal);

/// Failed authentications per client address: a window and how many it allows. Past it, the
/// address gets 429 without its token being looked at, so guessing is slow; a token that
/// authenticated lately is let through all the same, so its caller is never held up.
pub struct AuthGuard {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Hashes of tokens that authenticated lately.
    good: Mutex<std::collections::HashSet<String>>,
    window: Duration,
    allowed: u32,
}

impl AuthGuard {
    pub fn new(window: Duration, allowed: u32) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            good: Mutex::new(Default::default()),
            window,
            allowed,
        }
    }

    /// Seconds to wait, if this address has failed too often lately.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (since, n) = map.get(&ip)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*n >= self.allowed).then(|| left.as_secs().max(1))
    }

    pub(crate) fn known_good(&self, hash: &str) -> bool {
        self.good.lock().is_ok_and(|g| g.contains(hash))
    }

    pub(crate) fn succeeded(&self, hash: String) {
        if let Ok(mut g) = self.good.lock() {
            if g.len() > 10_000 {
                g.clear();
            }
            g.insert(hash);
        }
    }

    pub(crate) fn failed(&self, ip: IpAddr) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        // Old entries go, so the table cannot grow without bound.
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Principals of tokens that authenticated in the last second, by their token's hash: a
/// client that sends many requests (a batch, a dashboard's page, a bench) costs the state
/// database one lookup a second, not one per request. A revoke through this gateway empties
/// it at once; another gateway's revoke reaches this one within `PRINCIPAL_TTL`.
#[derive(Default)]
pub struct PrincipalCache {
    entries: Mutex<HashMap<String, (Instant, Principal)>>,
}

/// How long a token's principal is used without asking the state database again.
pub const PRINCIPAL_TTL: Duration = Duration::from_secs(1);

impl PrincipalCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        let map = self.entries.lock().ok()?;
        let (at, p) = map.get(hash)?;
        (at.elapsed() < PRINCIPAL_TTL).then(|| p.clone())
    }

    fn put(&self, hash: String, principal: Principal) {
        if let Ok(mut map) = self.entries.lock() {
            // Stale entries go, so the table cannot grow without bound.
            if map.len() > 10_000 {
                map.retain(|_, (at, _)| at.elapsed() < PRINCIPAL_TTL);
            }
            map.insert(hash, (Instant::now(), principal));
        }
    }

    /// Forgets every principal (a token was revoked).
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}

/// The address the request came from (the connection's peer).
pub(crate) fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip(parts);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256);
        let hash = token.map(store::hash_token);
        if let Some(wait) = state.auth_guard.blocked(ip) {
            if !hash
                .as_deref()
                .is_some_and(|h| state.auth_guard.known_good(h))
            {
                return Err(ApiError::TooManyRequests(wait));
            }
        }
        let (Some(token), Some(hash)) = (token, hash) else {
            state.auth_guard.failed(ip);
            return Err(ApiError::Unauthorized);
        };
        if let Some(p) = state.principals.get(&hash) {
            return Ok(Caller(p));
        }
        match state.store.principal_for_token(token).await? {
            Some(p) => {
                state.principals.put(hash.clone(), p.clone());
                state.auth_guard.succeeded(hash);
                Ok(Caller(p))
            }
            None => {
                state.auth_guard.failed(ip);
                Err(ApiError::Unauthorized)
            }
        }
    }
}

impl Caller {
    /// Settings, tokens, servers, platforms and clients: an admin token that no scope list
    /// narrows.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if !self.0.is_admin() {
            Err(ApiError::Forbidden("this needs an admin token".into()))
        } else if self.0.allowed_task_types.is_some() {
            Err(ApiError::Forbidden(
                "this needs an admin token without a task_types limit".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// A token limited to some scopes may do (and cancel or retry) only those.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.0.allowed_task_types {
            Some(allowed) if !allowed.contains(&scope) => {
                let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
                Err(ApiError::Forbidden(format!(
                    "this token may not do '{scope}'; it may do: {}",
                    names.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// A site task needs its scope; a platform task needs an unrestricted admin.
    pub fn require_task_type(&self, task_type: TaskType) -> Result<(), ApiError> {
        match Scope::of_task(task_type) {
            Some(scope) => self.require_scope(scope),
            None => self.require_admin(),
        }
    }

    pub fn name(&self) -> String {
        format!("token:{}", self.0.name)
    }
}

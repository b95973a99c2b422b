//! Pages for browsers, without a token: the one-time login redirect and the "site disabled"
//! page that a disabled site's vhost sends its visitors to.

use crate::startup::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// Opens a one-time login link: a redirect to the site's own one-time URL, once. The token is
/// the secret, so a used, expired or superseded one answers the same as an unknown one.
pub async fn login(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let well_formed =
        !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric());
    let target = if well_formed {
        match s.store.use_login_link(&token).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read login links");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The control plane cannot reach its database right now. Try the link again in a minute.",
                );
            }
        }
    } else {
        None
    };
    match target {
        // Sites' own URLs come from their platform's login_link action.
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => (
            StatusCode::FOUND,
            [
                (header::LOCATION, url),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        Some(_) => page(
            StatusCode::BAD_GATEWAY,
            "Login link unusable",
            "The site's platform gave a login link that is not a web address. Ask your hosting provider.",
        ),
        None => page(
            StatusCode::GONE,
            "Login link expired",
            "This one-time login link was used already, has expired, or was replaced by a newer one. Ask for a new one (the login-reset task).",
        ),
    }
}

/// The page a disabled site's visitors land on.
pub async fn disabled(Path(domain): Path<String>) -> Response {
    match domain::DomainName::parse(&domain) {
        Ok(d) => page(
            StatusCode::OK,
            "Site disabled",
            &format!("The site {d} is disabled. Its owner can ask for it to be enabled again."),
        ),
        Err(_) => page(StatusCode::NOT_FOUND, "Not found", "There is no such site."),
    }
}

/// A small HTML page. Every text here is ours or a parsed domain name (letters, digits, dots,
/// hyphens), so nothing needs escaping beyond what `escape` does for safety's sake.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n\
         <body><h1>{t}</h1><p>{x}</p></body></html>\n",
        t = escape(title),
        x = escape(text)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

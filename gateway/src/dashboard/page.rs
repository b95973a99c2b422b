//! The frame every page shares, and the small pieces pages are made of. Values reach HTML
//! only through maud's `( )`, which escapes them.

use super::Session;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

pub struct Layout;

impl Layout {
    fn document(title: &str, nav: Markup, body: Markup) -> Html<String> {
        Html(
            html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta name="viewport" content="width=device-width, initial-scale=1";
                        title { (title) " · hosting" }
                        link rel="stylesheet" href="/ui/assets/dashboard.css";
                        script src="/ui/assets/dashboard.js" defer {}
                    }
                    body {
                        header { (nav) }
                        main { (body) }
                    }
                }
            }
            .into_string(),
        )
    }

    /// A page without the navigation (the sign-in page).
    pub fn bare(title: &str, body: Markup) -> Html<String> {
        Self::document(title, html! { span.brand { "hosting" } }, body)
    }

    /// A page of a signed-in session.
    pub fn page(session: &Session, title: &str, body: Markup) -> Response {
        let admin = session.is_admin();
        let nav = html! {
            nav {
                a.brand href="/ui/sites" { "hosting" }
                a href="/ui/sites" { "Sites" }
                a href="/ui/tasks" { "Tasks" }
                a href="/ui/platforms" { "Platforms" }
                a href="/ui/servers" { "Servers" }
                @if admin {
                    a href="/ui/clients" { "Clients" }
                    a href="/ui/tokens" { "Tokens" }
                    a href="/ui/settings" { "Settings" }
                }
                span.who { (session.role()) " · " (session.principal.name) }
                form.inline method="post" action="/ui/logout" {
                    (csrf(session))
                    button.link type="submit" { "Sign out" }
                }
            }
        };
        Self::document(title, nav, body).into_response()
    }
}

/// The hidden field every form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

/// A page that says what went wrong: the API's refusal in its own words.
pub fn error_page(session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.canonical_reason().unwrap_or("Error")) }
        p.error role="alert" { (message) }
        p { a href="/ui/sites" { "Back to the sites" } }
    };
    let mut response = match session {
        Some(s) => Layout::page(s, "Error", body),
        None => Layout::bare("Error", body).into_response(),
    };
    *response.status_mut() = status;
    response
}

/// An API refusal as a page.
pub fn refused(session: &Session, (status, message): (StatusCode, String)) -> Response {
    error_page(Some(session), status, &message)
}

/// A JSON value as text: strings as they are, null as nothing.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time as `2026-12-01 22:28:15 UTC`: how the reference lists backups.
pub fn when(v: &Value) -> String {
    let t = text(v);
    match time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339) {
        Ok(at) => {
            let at = at.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )
        }
        Err(_) => t,
    }
}

/// A status as a badge whose colour says what it means.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "success" | "enabled" | "connected" | "verified" => "badge ok",
        "warning" | "disabled" | "installing" | "queued" | "processing" | "locked" => "badge mid",
        "error" | "failed" | "unreachable" | "deleted" => "badge bad",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

/// Bytes for people.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    match b {
        b if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", b / 1024.0 / 1024.0 / 1024.0),
        b if b >= 1024.0 * 1024.0 => format!("{:.1} MiB", b / 1024.0 / 1024.0),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

/// A query string from pairs, leaving out empty values.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, &v);
        }
    }
    q.finish()
}

/// "N in all" and a link to the next page, under a list.
pub fn pager(total: Option<i64>, shown: usize, next: Option<String>) -> Markup {
    html! {
        p.pager {
            (shown) " shown"
            @if let Some(t) = total { " of " (t) }
            @if let Some(n) = next { " · " a rel="next" href=(n) { "Next page →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_times_read() {
        let m = html! { p { (text(&Value::String("<script>alert(1)</script>".into()))) } };
        assert_eq!(
            m.into_string(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
        assert_eq!(
            when(&Value::String("2026-12-01T22:28:15.123Z".into())),
            "2026-12-01 22:28:15 UTC"
        );
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(
            query([("q", "a b&c".into()), ("empty", String::new())]),
            "q=a+b%26c"
        );
    }
}

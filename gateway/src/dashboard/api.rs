//! The dashboard's way to the API: a request to the API's own router, in process, with the
//! session's token, and its answer as JSON.

use super::{Dashboard, Session};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// The largest API answer a page reads (a page of 100 sites is well below it).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Who a request to the API is made for: a session, or a token being signed in with.
pub struct Caller<'a> {
    pub token: &'a str,
    /// The browser's address, so the API's limit on failed tokens counts the browser.
    pub peer: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
}

impl<'a> From<&'a Session> for Caller<'a> {
    fn from(s: &'a Session) -> Self {
        Caller {
            token: &s.token,
            peer: s.peer,
        }
    }
}

/// A page of a list as the API answered it.
pub struct Listed {
    pub items: Vec<Value>,
    pub total: Option<i64>,
    pub next: Option<i64>,
}

/// The page of the task an API answer names: `{"task": {...}}` (a task accepted) or a task.
pub fn task_page(answer: &Value) -> String {
    let task = if answer["task"].is_object() {
        &answer["task"]
    } else {
        answer
    };
    format!("/ui/tasks/{}", super::page::text(&task["id"]))
}

/// An API answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    fn failed(status: StatusCode, message: &str) -> Self {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: serde_json::json!({"error": {"code": "dashboard", "message": message}}),
        }
    }

    /// The API's own words for a refusal.
    pub fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the API answered {}", self.status))
    }

    /// The body of a success, or the refusal as an error page's status and text.
    pub fn ok(self) -> Result<Value, (StatusCode, String)> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err((self.status, self.message()))
        }
    }

    /// `X-Total-Count`, on a list.
    pub fn total(&self) -> Option<i64> {
        self.headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The cursor of the next page, from the `Link` header's `rel="next"` address.
    pub fn next_cursor(&self, name: &str) -> Option<i64> {
        let link = self.headers.get(header::LINK)?.to_str().ok()?;
        let uri = link.split(';').next()?.trim().trim_matches(['<', '>']);
        let query = uri.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

impl Dashboard {
    /// Calls the API as `caller`: `path` is under `/api/v1` (`/sites?limit=1`).
    pub async fn call(
        &self,
        caller: &Caller<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", caller.token));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = match request.body(axum::body::Body::from(body)) {
            Ok(r) => r,
            Err(e) => {
                return Answer::failed(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot make that request: {e}"),
                )
            }
        };
        if let Some(peer) = caller.peer {
            request.extensions_mut().insert(peer);
        }
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                return Answer::failed(
                    StatusCode::BAD_GATEWAY,
                    &format!("the API's answer could not be read: {e}"),
                )
            }
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A GET for a session, as a page needs it.
    pub async fn get(&self, session: &Session, path: &str) -> Result<Value, (StatusCode, String)> {
        self.call(&session.into(), Method::GET, path, None)
            .await
            .ok()
    }

    /// A list, or the API's refusal.
    pub async fn get_list(
        &self,
        session: &Session,
        path: &str,
    ) -> Result<Vec<Value>, (StatusCode, String)> {
        match self.get(session, path).await? {
            Value::Array(items) => Ok(items),
            _ => Ok(vec![]),
        }
    }

    /// One page of a paged list: its items, the total and the cursor of the next page
    /// (`cursor` is the list's parameter, `after` or `before`).
    pub async fn get_page(
        &self,
        session: &Session,
        path: &str,
        cursor: &str,
    ) -> Result<Listed, (StatusCode, String)> {
        let answer = self.call(&session.into(), Method::GET, path, None).await;
        let (total, next) = (answer.total(), answer.next_cursor(cursor));
        let items = match answer.ok()? {
            Value::Array(items) => items,
            _ => vec![],
        };
        Ok(Listed { items, total, next })
    }

    /// Sends a form's request to the API and the browser on to `then` (given the answer), or
    /// shows the API's refusal.
    pub async fn send_then(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
        then: impl FnOnce(&Value) -> String,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        match self.call(&session.into(), method, path, body).await.ok() {
            Ok(v) => axum::response::Redirect::to(&then(&v)).into_response(),
            Err(e) => super::page::refused(session, e),
        }
    }

    /// A GET that a page can do without (a list a client's token may not read): empty then.
    pub async fn get_or_empty(&self, session: &Session, path: &str) -> Vec<Value> {
        self.get_list(session, path).await.unwrap_or_default()
    }

    /// The raw answer, for a stream (a task's events).
    pub async fn stream(&self, session: &Session, path: &str) -> axum::response::Response {
        let mut request = match Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
            .body(axum::body::Body::empty())
        {
            Ok(r) => r,
            Err(_) => return axum::response::IntoResponse::into_response(StatusCode::BAD_REQUEST),
        };
        if let Some(peer) = session.peer {
            request.extensions_mut().insert(peer);
        }
        match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_page_follows_an_accepted_task_or_the_task_itself() {
        // POST .../tasks and retry answer {"task": ...}; cancel answers the task.
        assert_eq!(
            task_page(&serde_json::json!({"task": {"id": 41}})),
            "/ui/tasks/41"
        );
        assert_eq!(
            task_page(&serde_json::json!({"id": 7, "status": "error"})),
            "/ui/tasks/7"
        );
    }

    #[test]
    fn the_next_cursor_comes_from_the_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            "</sites?status=enabled&after=120>; rel=\"next\""
                .parse()
                .expect("a header value"),
        );
        headers.insert("x-total-count", "300".parse().expect("a header value"));
        let answer = Answer {
            status: StatusCode::OK,
            headers,
            body: Value::Null,
        };
        assert_eq!(answer.next_cursor("after"), Some(120));
        assert_eq!(answer.next_cursor("before"), None);
        assert_eq!(answer.total(), Some(300));
    }
}

//! The broker's users, through RabbitMQ's management HTTP API: every registered host gets a
//! user of its own whose permissions let its agent read only its own queues and publish only
//! replies, dead letters and its own heartbeats ("a host holds no key to the fleet").

use base64::Engine;
use contract::AgentGrant;
use http_body_util::BodyExt;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("HOSTING_BROKER_ADMIN_URL: {0}")]
    Config(String),
    #[error("the broker's management API at {0} does not answer: {1}")]
    Unreachable(String, String),
    #[error("the broker's management API refused {0}: HTTP {1}: {2}")]
    Refused(String, u16, String),
}

/// A client of the management API of one broker (any node of a cluster: users are
/// cluster-wide).
#[derive(Clone)]
pub struct BrokerAdmin {
    host: String,
    port: u16,
    authorization: String,
    /// The virtual host the services use, from their AMQP URL.
    vhost: String,
}

impl std::fmt::Debug for BrokerAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BrokerAdmin({}:{}, vhost {:?})",
            self.host, self.port, self.vhost
        )
    }
}

impl BrokerAdmin {
    /// `admin_url` is `http://user:password@host:port` (the management listener, by default
    /// port 15672); `amqp_url` is the services' own, which names the virtual host.
    pub fn new(admin_url: &str, amqp_url: &str) -> Result<Self, AdminError> {
        let url = url::Url::parse(admin_url).map_err(|e| AdminError::Config(e.to_string()))?;
        if url.scheme() != "http" {
            return Err(AdminError::Config(
                "give an http:// URL of the management listener (put TLS in front of it across hosts)".into(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| AdminError::Config("the URL has no host".into()))?
            .to_owned();
        let user = percent_decode(url.username());
        let password = percent_decode(url.password().unwrap_or(""));
        if user.is_empty() {
            return Err(AdminError::Config(
                "the URL names no user (http://user:password@host:15672)".into(),
            ));
        }
        let first = amqp_url.split(',').next().unwrap_or("").trim();
        let vhost = url::Url::parse(first)
            .ok()
            .map(|u| percent_decode(u.path().trim_start_matches('/')))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Self {
            host,
            port: url.port().unwrap_or(15672),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            vhost,
        })
    }

    /// Makes (or updates) `user` with `password` and exactly the permissions of `grant`.
    /// Idempotent: asking again sets the same permissions and the new password.
    pub async fn put_agent_user(
        &self,
        user: &str,
        password: &str,
        grant: &AgentGrant,
    ) -> Result<(), AdminError> {
        let u = encode(user);
        let v = encode(&self.vhost);
        self.send(
            "PUT",
            &format!("/api/users/{u}"),
            serde_json::json!({"password": password, "tags": ""}),
        )
        .await?;
        self.send(
            "PUT",
            &format!("/api/permissions/{v}/{u}"),
            serde_json::json!({
                "configure": grant.configure,
                "write": grant.write,
                "read": grant.read,
            }),
        )
        .await?;
        self.send(
            "PUT",
            &format!("/api/topic-permissions/{v}/{u}"),
            serde_json::json!({
                "exchange": grant.events_exchange,
                "write": grant.events_write,
                "read": "^$",
            }),
        )
        .await?;
        // An agent needs one connection and a few channels; a hostile one gets no more.
        // (Best effort: a broker without per-user limits still gets the permissions above.)
        for (limit, value) in [("max-connections", 4), ("max-channels", 64)] {
            if let Err(e) = self
                .send(
                    "PUT",
                    &format!("/api/user-limits/{u}/{limit}"),
                    serde_json::json!({ "value": value }),
                )
                .await
            {
                tracing::warn!(error = %e, user, limit, "the broker did not take a per-user limit");
            }
        }
        Ok(())
    }

    /// Closes every connection open as `user`: a new password does not end those, and a
    /// host whose credentials are rotated because it was compromised must be cut off now.
    /// (By the broker's connection tracking, which knows a connection as soon as it is
    /// open; the listing of connections lags by the statistics interval.)
    pub async fn close_connections(&self, user: &str) -> Result<(), AdminError> {
        // 204 whether or not any were open; a 404 means a broker without this endpoint,
        // which must not pass for a host cut off.
        self.send(
            "DELETE",
            &format!("/api/connections/username/{}", encode(user)),
            serde_json::Value::Null,
        )
        .await
    }

    /// Removes `user`, if there is one (its connections are closed by the broker).
    pub async fn delete_user(&self, user: &str) -> Result<(), AdminError> {
        match self
            .send(
                "DELETE",
                &format!("/api/users/{}", encode(user)),
                serde_json::Value::Null,
            )
            .await
        {
            Err(AdminError::Refused(_, 404, _)) => Ok(()),
            other => other,
        }
    }

    /// The users whose names start with `prefix` (a test's own, to remove them after).
    pub async fn users_named(&self, prefix: &str) -> Result<Vec<String>, AdminError> {
        self.names("/api/users?columns=name", prefix).await
    }

    /// The queues of the services' virtual host whose names start with `prefix`.
    pub async fn queues_named(&self, prefix: &str) -> Result<Vec<String>, AdminError> {
        self.names(
            &format!("/api/queues/{}?columns=name", encode(&self.vhost)),
            prefix,
        )
        .await
    }

    async fn names(&self, path: &str, prefix: &str) -> Result<Vec<String>, AdminError> {
        let body = self.get(path).await?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
            AdminError::Refused(
                format!("GET {path}"),
                200,
                format!("unreadable answer: {e}"),
            )
        })?;
        Ok(list
            .iter()
            .filter_map(|u| u["name"].as_str())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, AdminError> {
        self.request("GET", path, None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(), AdminError> {
        let body = (!body.is_null()).then(|| body.to_string());
        self.request(method, path, body).await.map(|_| ())
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Vec<u8>, AdminError> {
        let at = format!("{}:{}", self.host, self.port);
        let what = format!("{method} {path}");
        let unreachable = |e: String| AdminError::Unreachable(at.clone(), e);
        let run = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let driver = tokio::spawn(connection);
            let request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, at.as_str())
                .header(hyper::header::AUTHORIZATION, self.authorization.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                    body.unwrap_or_default(),
                )))
                .map_err(|e| AdminError::Config(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            let bytes = http_body_util::Limited::new(response.into_body(), 4 << 20)
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            driver.abort();
            if (200..300).contains(&status) {
                Ok(bytes)
            } else {
                let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                Err(AdminError::Refused(what.clone(), status, text))
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .map_err(|_| AdminError::Unreachable(at.clone(), "no answer within 10 s".into()))?
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

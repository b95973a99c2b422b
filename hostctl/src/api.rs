//! The API as hostctl reaches it: where (flags, then the environment, then the config file),
//! with which token, and one request at a time over HTTP/1.1.

use anyhow::{bail, Context};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::PathBuf;

/// What the config file (`~/.config/hostctl/config.toml`, or `--config`) may say.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

/// Where the API is and the token to use.
pub struct Api {
    host: String,
    port: u16,
    /// The API's path, `/api/v1` under the URL's own path.
    base: String,
    token: String,
}

/// A failed API call: the answer's status and its JSON error's message, or why there was
/// no answer. Exit code 3.
#[derive(Debug)]
pub struct ApiError(pub String);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ApiError {}

/// An answer with what the API says about its list, when it is one.
pub struct Page {
    pub items: Value,
    pub total: Option<i64>,
    /// The next page's path (`/api/v1/...`), when there is one.
    pub next: Option<String>,
}

pub struct Settings {
    pub url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

impl Api {
    /// Flags and environment first (clap has merged those), then the config file.
    pub fn from_settings(s: Settings) -> anyhow::Result<Self> {
        let path = s.config.clone().or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".config/hostctl/config.toml"))
        });
        let file = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("{} is not a valid hostctl config", p.display()))?
            }
            Some(p) if s.config.is_some() => bail!("no config file at {}", p.display()),
            _ => ConfigFile::default(),
        };
        let url = s
            .url
            .or(file.url)
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = match (s.token, s.token_file, file.token, file.token_file) {
            (Some(t), ..) => t,
            (None, Some(f), ..) | (None, None, None, Some(f)) => std::fs::read_to_string(&f)
                .with_context(|| format!("reading the token file {}", f.display()))?
                .trim()
                .to_owned(),
            (None, None, Some(t), _) => t,
            (None, None, None, None) => bail!(
                "no API token: pass --token or --token-file, set HOSTCTL_TOKEN or HOSTCTL_TOKEN_FILE, or write token_file = \"...\" in {}",
                path.map(|p| p.display().to_string()).unwrap_or_else(|| "the config file".into())
            ),
        };
        let (host, port, path) = parse_url(&url)?;
        Ok(Api {
            host,
            port,
            base: format!("{}/api/v1", path.trim_end_matches('/')),
            token,
        })
    }

    /// A JSON request; a 2xx answer's body (JSON, or null when empty), else an [`ApiError`]
    /// with the API's own message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call_page(method, path, body).await?.items)
    }

    /// A request whose answer may be a page of a list: the items with the `X-Total-Count`
    /// and the `Link: <...>; rel="next"` the API sends beside them.
    pub async fn call_page(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Page> {
        let response = self.send(method, path, body, "application/json").await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let total = header("x-total-count").and_then(|t| t.parse().ok());
        let next = header("link").and_then(|l| {
            l.split(',')
                .find(|part| part.contains("rel=\"next\""))
                .and_then(|part| Some(part.split_once('<')?.1.split_once('>')?.0.to_owned()))
        });
        let bytes = http_body_util::Limited::new(response.into_body(), 64 << 20)
            .collect()
            .await
            .map_err(|e| ApiError(format!("{method} {path}: reading the answer: {e}")))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if (200..300).contains(&status) {
            Ok(Page {
                items: value,
                total,
                next,
            })
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            Err(ApiError(format!("{method} {path}: {status}: {message}")).into())
        }
    }

    /// A request whose answer is read as it comes (the server-sent events of a task).
    pub async fn stream(
        &self,
        path: &str,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let response = self.send("GET", path, None, "text/event-stream").await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let bytes = http_body_util::Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ApiError(format!(
                "GET {path}: {status}: {}",
                v["error"]["message"].as_str().unwrap_or("no message")
            ))
            .into());
        }
        Ok(response)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let at = format!("{}:{}", self.host, self.port);
        let unreachable = |e: String| ApiError(format!("cannot reach the API at http://{at}: {e}"));
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        // The connection is driven until the answer has been read (or the process ends).
        tokio::spawn(connection);
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::HOST, at.as_str())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::ACCEPT, accept)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("hostctl/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .context("building the request")?;
        Ok(sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?)
    }
}

/// `http://host[:port][/path]`. hostctl speaks plain HTTP: an API behind TLS is reached
/// through a tunnel or a local proxy for now.
fn parse_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!("{url}: hostctl speaks plain HTTP only; reach a TLS endpoint through a tunnel (ssh -L) or a local proxy");
        }
        bail!("{url}: the API URL must start with http://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("{url}: the port {p:?} is not a number"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        bail!("{url}: no host");
    }
    let path = path.trim_end_matches('/').trim_end_matches("/api/v1");
    Ok((
        host.trim_matches(['[', ']']).to_owned(),
        port,
        path.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_are_read_with_or_without_port_and_api_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080, "".into())
        );
        assert_eq!(
            parse_url("http://cp.example/api/v1/").unwrap(),
            ("cp.example".into(), 80, "".into())
        );
        assert_eq!(
            parse_url("http://cp.example:81/hosting").unwrap(),
            ("cp.example".into(), 81, "/hosting".into())
        );
        assert!(parse_url("https://cp.example").is_err());
        assert!(parse_url("cp.example").is_err());
        assert!(parse_url("http://cp.example:x").is_err());
    }
}

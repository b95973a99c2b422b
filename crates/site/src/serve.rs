//! "A site answers before it is called installed": the last step of every task that changes
//! what a site serves requests it through its own vhost, as a visitor would.

use crate::SiteTask;
use anyhow::Context;
use http_body_util::BodyExt;
use std::time::Duration;

/// What the site answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The first lines of the body.
    pub body_head: String,
}

/// One GET through the web server at `host:port`, with the site's name in `Host`.
pub async fn request(
    host: &str,
    port: u16,
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let run = async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to the web server at {host}:{port}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host_header)
            .header(
                hyper::header::USER_AGENT,
                "hosting-control-plane (site check)",
            )
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        // Enough of the body to show what went wrong, and no more.
        let body = http_body_util::Limited::new(response.into_body(), 16 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        driver.abort();
        let text = String::from_utf8_lossy(&body);
        anyhow::Ok(Answer {
            status,
            body_head: first_lines(&text, 5),
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
}

/// The first `n` non-empty lines, with markup tags dropped, each cut to 200 characters.
pub fn first_lines(text: &str, n: usize) -> String {
    let mut plain = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars().take(16 * 1024) {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    plain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .map(|l| l.chars().take(200).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | ")
}

impl SiteTask {
    /// Requests the site's health path through its own vhost. An answer below 500 passes; a
    /// 5xx or no answer fails with the status, the first lines of the body and the PHP error
    /// log lines the request produced.
    pub async fn check_serves(&self, timeout: Duration) -> anyhow::Result<u16> {
        let log_parts = self.error_log_parts();
        let parts: Vec<&str> = log_parts.iter().map(String::as_str).collect();
        let site_dir = self.site_dir.to_path_buf();
        let before = cell::site_file_len(&site_dir, &parts);
        let path = self.manifest.application.health_path.clone();
        let host_header = if self.web_port == 80 {
            self.site.domain.to_string()
        } else {
            format!("{}:{}", self.site.domain, self.web_port)
        };
        let answer = request(&self.web_host, self.web_port, &host_header, &path, timeout).await;
        let php_errors = || {
            cell::read_site_file(&site_dir, &parts, before, 8 * 1024)
                .ok()
                .flatten()
                .map(|b| first_lines(&String::from_utf8_lossy(&b), 5))
                .filter(|l| !l.is_empty())
                .map(|l| format!("; PHP's error log: {l}"))
                .unwrap_or_default()
        };
        match answer {
            Ok(a) if a.status < 500 => Ok(a.status),
            Ok(a) => anyhow::bail!(
                "the site answered {} for {path}: {}{}",
                a.status,
                if a.body_head.is_empty() {
                    "(no body)"
                } else {
                    &a.body_head
                },
                php_errors()
            ),
            Err(e) => anyhow::bail!("the site did not answer {path}: {e:#}{}", php_errors()),
        }
    }

    /// The PHP error log's path segments below the site directory.
    fn error_log_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self
            .manifest
            .application
            .private_dir
            .split('/')
            .map(str::to_owned)
            .collect();
        parts.push("logs".into());
        parts.push("php-errors.log".into());
        parts
    }
}

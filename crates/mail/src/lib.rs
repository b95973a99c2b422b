//! Mail to clients over SMTP.
//!
//! A hosting control plane sends a handful of short notices (a welcome mail with a login
//! link), so this is a small SMTP client rather than a mail library: it hands each message to
//! a relay (the provider's Postfix, nullmailer, or a mail service's submission port), which
//! queues it and does TLS to the world. It speaks EHLO, optional AUTH PLAIN, MAIL, RCPT and
//! DATA, and every reply is checked, so a relay that refuses says why in the task log.
//!
//! Credentials travel without TLS, so AUTH is only sent to a relay on a loopback address
//! unless `HOSTING_SMTP_ALLOW_PLAINTEXT_AUTH=true` says the network path is trusted.

use anyhow::{bail, Context};
use base64::Engine;
use domain::Email;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender address on every mail.
    pub from: Email,
    /// The name this host gives in EHLO and in Message-IDs.
    pub helo: String,
    pub timeout: Duration,
    pub allow_plaintext_auth: bool,
}

impl SmtpConfig {
    /// `None` when `HOSTING_SMTP_HOST` is not set: mail is then skipped (and the task log
    /// says so).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let Some(host) = config::optional("HOSTING_SMTP_HOST") else {
            return Ok(None);
        };
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            bail!("HOSTING_SMTP_HOST={host:?} is not a host name or address");
        }
        let from = config::string("HOSTING_SMTP_FROM", "hosting@localhost.localdomain");
        let from = Email::parse(&from).map_err(|e| anyhow::anyhow!("HOSTING_SMTP_FROM: {e}"))?;
        let helo = config::string("HOSTING_SMTP_HELO", "localhost.localdomain");
        domain::DomainName::parse(&helo)
            .map_err(|e| anyhow::anyhow!("HOSTING_SMTP_HELO must be a host name: {e}"))?;
        let username = config::optional("HOSTING_SMTP_USERNAME");
        let password = config::optional("HOSTING_SMTP_PASSWORD");
        if username.is_some() != password.is_some() {
            bail!("set both HOSTING_SMTP_USERNAME and HOSTING_SMTP_PASSWORD, or neither");
        }
        Ok(Some(Self {
            host,
            port: config::parse("HOSTING_SMTP_PORT", 25)?,
            username,
            password,
            from,
            helo,
            timeout: config::seconds("HOSTING_SMTP_TIMEOUT_SECS", 30.0)?,
            allow_plaintext_auth: config::parse("HOSTING_SMTP_ALLOW_PLAINTEXT_AUTH", false)?,
        }))
    }
}

/// A plain-text mail to one recipient.
#[derive(Debug, Clone)]
pub struct Message {
    pub to: Email,
    pub subject: String,
    pub body: String,
}

/// Hands the message to the relay. Returns the relay's answer to the end of DATA (it usually
/// carries the relay's queue id, worth a line in the task log).
pub async fn send(cfg: &SmtpConfig, msg: &Message) -> anyhow::Result<String> {
    tokio::time::timeout(cfg.timeout, exchange(cfg, msg))
        .await
        .with_context(|| {
            format!(
                "the mail relay {}:{} did not finish within {:?}",
                cfg.host, cfg.port, cfg.timeout
            )
        })?
}

async fn exchange(cfg: &SmtpConfig, msg: &Message) -> anyhow::Result<String> {
    let stream = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("connecting to the mail relay {}:{}", cfg.host, cfg.port))?;
    let loopback = stream
        .peer_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);

    expect(&mut read, 220, "greeting").await?;
    command(&mut write, &format!("EHLO {}", cfg.helo)).await?;
    let capabilities = expect(&mut read, 250, "EHLO").await?;
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        if !loopback && !cfg.allow_plaintext_auth {
            bail!(
                "refusing to send SMTP credentials without TLS to {}: use a relay on this host, \
                 or set HOSTING_SMTP_ALLOW_PLAINTEXT_AUTH=true if the network path is trusted",
                cfg.host
            );
        }
        if !capabilities.iter().any(|l| {
            l.to_ascii_uppercase().starts_with("AUTH") && l.to_ascii_uppercase().contains("PLAIN")
        }) {
            bail!("the mail relay does not offer AUTH PLAIN; its capabilities: {capabilities:?}");
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        command(&mut write, &format!("AUTH PLAIN {token}")).await?;
        expect(
            &mut read,
            235,
            "AUTH (check HOSTING_SMTP_USERNAME and _PASSWORD)",
        )
        .await?;
    }
    command(&mut write, &format!("MAIL FROM:<{}>", cfg.from)).await?;
    expect(&mut read, 250, "MAIL FROM").await?;
    command(&mut write, &format!("RCPT TO:<{}>", msg.to)).await?;
    expect_any(&mut read, &[250, 251], "RCPT TO").await?;
    command(&mut write, "DATA").await?;
    expect(&mut read, 354, "DATA").await?;
    write.write_all(render(cfg, msg)?.as_bytes()).await?;
    write.write_all(b".\r\n").await?;
    let accepted = expect(&mut read, 250, "the end of the message").await?;
    // The message is queued; a relay that hangs up before QUIT is answered changes nothing.
    let _ = command(&mut write, "QUIT").await;
    Ok(accepted.join(" "))
}

/// The message as it goes after DATA: headers, a blank line, the body with CRLF line ends
/// and leading dots doubled.
fn render(cfg: &SmtpConfig, msg: &Message) -> anyhow::Result<String> {
    if msg.subject.chars().any(char::is_control) {
        bail!("a mail subject must be one line");
    }
    let now = time::OffsetDateTime::now_utc();
    let date = now.format(&time::format_description::well_known::Rfc2822)?;
    let mut out = String::new();
    out.push_str(&format!("From: {}\r\n", cfg.from));
    out.push_str(&format!("To: {}\r\n", msg.to));
    out.push_str(&format!("Subject: {}\r\n", encode_header(&msg.subject)));
    out.push_str(&format!("Date: {date}\r\n"));
    out.push_str(&format!(
        "Message-ID: <{}.{}@{}>\r\n",
        now.unix_timestamp_nanos(),
        std::process::id(),
        cfg.helo
    ));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    for line in msg.body.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    Ok(out)
}

/// ASCII subjects go as they are; others as an RFC 2047 encoded word.
fn encode_header(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

async fn command(write: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) -> anyhow::Result<()> {
    write.write_all(line.as_bytes()).await?;
    write.write_all(b"\r\n").await?;
    Ok(())
}

async fn expect(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    code: u16,
    after: &str,
) -> anyhow::Result<Vec<String>> {
    expect_any(read, &[code], after).await
}

/// Reads one reply (several `NNN-` lines ending with an `NNN ` line) and checks its code.
async fn expect_any(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    codes: &[u16],
    after: &str,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            bail!("the mail relay closed the connection after {after}");
        }
        let line = line.trim_end().to_owned();
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("the mail relay answered {line:?} after {after}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        let text = line.get(4..).unwrap_or("").to_owned();
        lines.push(text);
        if last {
            if !codes.contains(&code) {
                bail!("the mail relay refused {after}: {line}");
            }
            return Ok(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_starting_with_a_dot_is_doubled_and_lines_end_in_crlf() {
        let cfg = SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            username: None,
            password: None,
            from: Email::parse("hosting@example.com").unwrap(),
            helo: "example.com".into(),
            timeout: Duration::from_secs(1),
            allow_plaintext_auth: false,
        };
        let msg = Message {
            to: Email::parse("a@example.org").unwrap(),
            subject: "Bienvenue à bord".into(),
            body: "hello\n.hidden\nbye".into(),
        };
        let text = render(&cfg, &msg).unwrap();
        assert!(text.contains("\r\n..hidden\r\n"), "{text}");
        assert!(text.contains("Subject: =?utf-8?b?"), "{text}");
        assert!(!text.replace("\r\n", "").contains('\n'));
        let bad = Message {
            subject: "x\r\nBcc: victim@example.org".into(),
            ..msg
        };
        assert!(render(&cfg, &bad).is_err());
    }
}

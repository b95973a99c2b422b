use crate::nginx::Nginx;
use anyhow::{bail, Context};
use bus::{Incoming, RpcHandler};
use contract::{RpcReply, Vhost, VhostMode, WebconfReply, WebconfRequest};
use domain::DomainName;
use std::path::PathBuf;

pub struct VhostService {
    nginx: Nginx,
}

impl VhostService {
    pub fn new(nginx: Nginx) -> Self {
        Self { nginx }
    }

    fn path(&self, domain: &DomainName) -> PathBuf {
        self.nginx.settings.vhost_dir.join(format!("{domain}.conf"))
    }

    /// Writes the vhost if it differs, tests the whole configuration and reloads. A vhost
    /// that nginx refuses is rolled back to the previous file, so a bad change never stays.
    async fn write(&self, vhost: &Vhost) -> anyhow::Result<bool> {
        let text = render(vhost, &self.nginx.settings)?;
        let _guard = self.nginx.lock.lock().await;
        let path = self.path(&vhost.domain);
        let previous = tokio::fs::read_to_string(&path).await.ok();
        if previous.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_atomically(&path, &text).await?;
        if let Err(e) = self.nginx.test().await {
            match &previous {
                Some(old) => write_atomically(&path, old).await?,
                None => tokio::fs::remove_file(&path).await?,
            }
            return Err(e);
        }
        self.nginx.reload().await?;
        Ok(true)
    }

    async fn remove(&self, domain: &DomainName) -> anyhow::Result<bool> {
        let _guard = self.nginx.lock.lock().await;
        let path = self.path(domain);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        self.nginx.test().await?;
        self.nginx.reload().await?;
        Ok(true)
    }
}

async fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("conf.tmp");
    tokio::fs::write(&tmp, text)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The site's nginx server block. Every interpolated value is a checked type: domains,
/// normalized paths of a narrow alphabet, and a front controller checked here.
pub fn render(v: &Vhost, s: &crate::nginx::Settings) -> anyhow::Result<String> {
    let fc = &v.front_controller;
    if fc.is_empty()
        || fc.starts_with('/')
        || fc.split('/').any(|p| p.is_empty() || p == "..")
        || !fc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    {
        bail!("front controller {fc:?} must be a relative path of plain segments");
    }
    let names = std::iter::once(&v.domain)
        .chain(&v.aliases)
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if let VhostMode::Disabled { redirect } = &v.mode {
        config::check_public_url(redirect)
            .map_err(|e| anyhow::anyhow!("redirect {redirect:?} for a disabled site: {e}"))?;
        return Ok(format!(
            "# Managed by webconf for {domain}: the site is DISABLED; an enable task restores it.
server {{
    listen {listen};
    server_name {names};
    root {root};

    # Certificates keep renewing while the site is disabled.
    location ^~ /.well-known/acme-challenge/ {{
        try_files $uri =404;
    }}

    location / {{
        return 302 {redirect};
    }}
}}
",
            domain = v.domain,
            listen = s.listen,
            root = v.document_root,
        ));
    }
    Ok(format!(
        "# Managed by webconf for {domain}; a verify task rewrites it.
server {{
    listen {listen};
    server_name {names};
    root {root};
    index {fc};

    # Hidden files (.git, .env, .htaccess) are never served.
    location ~ /\\. {{ deny all; return 404; }}

    # The site's public files, from its own directory. PHP never runs there.
    location /files/ {{
        alias {site_dir}/files/;
        location ~ \\.php$ {{ deny all; return 404; }}
    }}

    location / {{
        try_files $uri $uri/ /{fc}$is_args$args;
    }}

    location ~ \\.php$ {{
        try_files $uri =404;
        include {params};
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HOSTING_SITE_DIR {site_dir};
        fastcgi_param HOSTING_SITE_DOMAIN {domain};
        fastcgi_pass unix:{socket};
    }}
}}
",
        domain = v.domain,
        listen = s.listen,
        root = v.document_root,
        site_dir = v.site_dir,
        params = s.fastcgi_params,
        socket = s.php_socket,
    ))
}

impl RpcHandler for VhostService {
    async fn answer(&self, message: &Incoming) -> Option<Vec<u8>> {
        let request: WebconfRequest = match serde_json::from_slice(&message.data) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "unreadable webconf request");
                return None;
            }
        };
        let result = match &request {
            WebconfRequest::WriteVhost(v) => {
                tracing::info!(domain = %v.domain, "write vhost");
                self.write(v).await
            }
            WebconfRequest::RemoveVhost { domain } => {
                tracing::info!(%domain, "remove vhost");
                self.remove(domain).await
            }
        };
        let reply = match result {
            Ok(changed) => RpcReply::Ok {
                body: WebconfReply { changed },
            },
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "webconf request failed");
                RpcReply::Error {
                    message: format!("{e:#}"),
                }
            }
        };
        serde_json::to_vec(&reply).ok()
    }
}

use crate::apply::{Applier, FileChange, Reader};
use crate::nginx::Nginx;
use crate::users::Users;
use anyhow::{bail, Context};
use bus::Serve;
use contract::{Vhost, VhostMode, WebconfReply, WebconfRequest, WebconfRpc};
use domain::{DomainName, SiteId, SystemUser};
use std::path::PathBuf;

pub struct VhostService {
    nginx: Nginx,
    users: Users,
    applier: Applier,
    sites: crate::sites::Sites,
}

impl VhostService {
    pub fn new(nginx: Nginx, sites: crate::sites::Sites) -> Self {
        // `HOSTING_WEBCONF_CRASH_AT=vhost-written` (a test knob): abort, as SIGKILL would,
        // once a vhost is written and before nginx tests and loads it.
        let crash_after_write =
            std::env::var("HOSTING_WEBCONF_CRASH_AT").is_ok_and(|v| v == "vhost-written");
        Self {
            applier: Applier::start(nginx.clone(), crash_after_write),
            nginx,
            users: Users::new(),
            sites,
        }
    }

    fn path(&self, domain: &DomainName) -> PathBuf {
        self.nginx
            .settings
            .vhost_dir
            .join(contract::vhost_file(domain))
    }

    /// Writes the vhost (and the site's pool) if they differ, checks them, and reloads what
    /// changed, together with whatever other changes arrive meanwhile (see `apply`). A change
    /// that nginx or php-fpm refuses is rolled back to the previous files, so a bad change
    /// never stays.
    async fn write(&self, vhost: &Vhost) -> anyhow::Result<bool> {
        let fpm = &self.nginx.fpm;
        let socket = vhost.pool.as_ref().map(|p| fpm.socket(&p.user));
        let text = render(vhost, &self.nginx.settings, socket.as_deref())?;
        let mut files = Vec::new();
        if let Some(p) = &vhost.pool {
            files.push(FileChange {
                path: fpm.pool_path(&p.user),
                text: Some(fpm.render_pool(p)?),
                reader: Reader::Fpm,
            });
        }
        files.push(FileChange {
            path: self.path(&vhost.domain),
            text: Some(text),
            reader: Reader::Nginx,
        });
        self.applier.apply(files).await
    }

    async fn remove(&self, domain: &DomainName) -> anyhow::Result<bool> {
        self.applier
            .apply(vec![FileChange {
                path: self.path(domain),
                text: None,
                reader: Reader::Nginx,
            }])
            .await
    }

    /// The site's pool goes first (php-fpm reloaded, so no worker runs as the user any more),
    /// then the user.
    async fn remove_site_user(&self, user: &SystemUser, site: SiteId) -> anyhow::Result<bool> {
        let pool_removed = self
            .applier
            .apply(vec![FileChange {
                path: self.nginx.fpm.pool_path(user),
                text: None,
                reader: Reader::Fpm,
            }])
            .await?;
        let user_removed = self.users.remove(user, site).await?;
        Ok(pool_removed || user_removed)
    }
}

/// Script handlers a request may never reach in a place the site can write.
const SCRIPTS: &str = "php[0-9]?|phtml|phar|pht|phps|cgi|pl|py|sh";

/// The site's nginx server block. Every interpolated value is a checked type: domains,
/// normalized paths of a narrow alphabet, and a front controller checked here.
pub fn render(
    v: &Vhost,
    s: &crate::nginx::Settings,
    socket: Option<&str>,
) -> anyhow::Result<String> {
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
    let socket = socket.context("a vhost that serves PHP needs the site's own pool")?;
    // Where the platform keeps site directories inside its web root (`web_root = "."`, as
    // Drupal does), they are reachable by URL: nothing in them may run, and of a site
    // directory only its public files are served (never its settings or private directory),
    // whichever site's it is.
    let sites_in_web_root = match (v.site_dir.as_path().parent(), v.document_root.as_path()) {
        (Some(sites), root) if sites.starts_with(root) && sites != root => {
            let rel = sites
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Every byte that is not a letter, digit, / _ or - is escaped for PCRE (a path
            // may hold . and +).
            let re: String = rel
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-') {
                        c.to_string()
                    } else {
                        format!("\\{c}")
                    }
                })
                .collect();
            format!(
                "
    # Site directories ({rel}/<domain>/) lie inside the web root: nothing under them runs,
    # and of each only its public files are served.
    location ^~ /{rel}/ {{
        disable_symlinks if_not_owner;
        location ~* \\.({SCRIPTS})$ {{ return 403; }}
        location ~ /\\. {{ return 404; }}
        location ~ ^/{re}/[^/]*\\.[^/]*/(?!files/) {{ return 404; }}
    }}
"
            )
        }
        _ => String::new(),
    };
    Ok(format!(
        "# Managed by webconf for {domain}; a verify task rewrites it.
server {{
    listen {listen};
    server_name {names};
    root {root};
    index {fc};

    # Hidden files (.git, .env, .htaccess) are never served.
    location ~ /\\. {{ deny all; return 404; }}

    # The site's public files, from its own directory. Nothing runs there, and a symlink the
    # site made leads nowhere it does not own.
    location ^~ /files/ {{
        alias {site_dir}/files/;
        disable_symlinks if_not_owner;
        location ~* \\.({SCRIPTS})$ {{ return 403; }}
        location ~ /\\. {{ return 404; }}
    }}
{sites_in_web_root}
    location / {{
        try_files $uri $uri/ /{fc}$is_args$args;
    }}

    location ~ \\.php$ {{
        try_files $uri =404;
        include {params};
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HOSTING_SITE_DIR {site_dir};
        fastcgi_param HOSTING_SITE_DOMAIN {domain};
        # Through a variable: an address written out makes nginx keep an upstream per site,
        # looked up one by one at every configuration load (seconds at 10,000 sites).
        set $hosting_php_socket {socket};
        fastcgi_pass unix:$hosting_php_socket;
    }}
}}
",
        domain = v.domain,
        listen = s.listen,
        root = v.document_root,
        site_dir = v.site_dir,
        params = s.fastcgi_params,
    ))
}

impl Serve<WebconfRpc> for VhostService {
    async fn handle(&self, request: WebconfRequest) -> Result<WebconfReply, String> {
        let result = match &request {
            WebconfRequest::WriteVhost(v) => {
                tracing::info!(domain = %v.domain, "write vhost");
                self.write(v).await.map(WebconfReply::changed)
            }
            WebconfRequest::RemoveVhost { domain } => {
                tracing::info!(%domain, "remove vhost");
                self.remove(domain).await.map(WebconfReply::changed)
            }
            WebconfRequest::EnsureSiteUser { user, site } => self
                .users
                .ensure(user, *site)
                .await
                .map(|(changed, ids)| WebconfReply {
                    ids: Some(ids),
                    ..WebconfReply::changed(changed)
                }),
            WebconfRequest::RemoveSiteUser { user, site } => {
                tracing::info!(%user, "remove site user and pool");
                self.remove_site_user(user, *site)
                    .await
                    .map(WebconfReply::changed)
            }
            WebconfRequest::InspectPath { path } => {
                let kind = match tokio::fs::symlink_metadata(path.as_path()).await {
                    Ok(m) if m.file_type().is_symlink() => contract::PathKind::Symlink,
                    Ok(m) if m.is_dir() => contract::PathKind::Directory,
                    Ok(m) if m.is_file() => contract::PathKind::File,
                    Ok(_) => contract::PathKind::Other,
                    Err(_) => contract::PathKind::Missing,
                };
                Ok(WebconfReply {
                    path: Some(kind),
                    ..WebconfReply::changed(false)
                })
            }
            WebconfRequest::Software => Ok(WebconfReply {
                software: Some(crate::nginx::software(self.nginx.settings.clone()).await),
                ..WebconfReply::changed(false)
            }),
            WebconfRequest::PublicKey => Ok(WebconfReply {
                public_key: Some(self.sites.public_key()),
                ..WebconfReply::changed(false)
            }),
            WebconfRequest::PrepareSiteDir { dir, create } => self
                .sites
                .prepare(dir, *create)
                .await
                .map(WebconfReply::changed),
            WebconfRequest::WriteSettings {
                site,
                user,
                path,
                text,
            } => self
                .sites
                .write_settings(*site, user, path, text)
                .await
                .map(WebconfReply::changed),
            WebconfRequest::RemoveSiteDir {
                site,
                path,
                unmarked_ok,
                deployed_by,
            } => self
                .sites
                .remove(*site, path, *unmarked_ok, *deployed_by)
                .await
                .map(dir_reply),
            WebconfRequest::MoveSiteDir {
                site,
                from,
                to,
                unmarked_ok,
                deployed_by,
            } => self
                .sites
                .rename(*site, from, to, *unmarked_ok, *deployed_by)
                .await
                .map(dir_reply),
            WebconfRequest::ReadMark { path, mark } => Ok(WebconfReply {
                mark: self.sites.read_mark(path, *mark).await,
                ..WebconfReply::changed(false)
            }),
            WebconfRequest::WriteMark {
                path,
                mark,
                content,
            } => self
                .sites
                .write_mark(path, *mark, content.as_deref())
                .await
                .map(WebconfReply::changed),
            WebconfRequest::RunAction(run) => {
                self.sites.run_action(run).await.map(|out| WebconfReply {
                    action: Some(out),
                    ..WebconfReply::changed(false)
                })
            }
            WebconfRequest::ScanPlatform { root, driver } => {
                self.sites.scan(root, *driver).await.map(|m| WebconfReply {
                    manifest: Some(Box::new(m)),
                    ..WebconfReply::changed(false)
                })
            }
            WebconfRequest::SendSiteFiles(send) => {
                self.sites.send_files(send).await.map(|sent| WebconfReply {
                    sent: Some(sent),
                    ..WebconfReply::changed(false)
                })
            }
            WebconfRequest::ReceiveSiteFiles(receive) => self
                .sites
                .receive_files(receive)
                .await
                .map(|got| WebconfReply {
                    sent: Some(got),
                    ..WebconfReply::changed(true)
                }),
            WebconfRequest::PhpInfo => {
                let _guard = self.nginx.lock.lock().await;
                self.nginx.fpm.info().await.map(|php| WebconfReply {
                    changed: !php.reloaded.is_empty(),
                    php: Some(php),
                    ..WebconfReply::changed(false)
                })
            }
        };
        result.map_err(|e| format!("{e:#}"))
    }
}

fn dir_reply(outcome: contract::DirOutcome) -> WebconfReply {
    WebconfReply {
        dir: Some(outcome),
        ..WebconfReply::changed(outcome == contract::DirOutcome::Done)
    }
}

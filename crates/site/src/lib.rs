//! What the services acting on a site share: everything a site task needs, gathered from
//! the state database; its settings file; its vhost; its platform actions with their output
//! in the task log; the RPCs to dbprov and webconf.

use anyhow::{anyhow, Context};
use contract::Vhost;
use domain::{DbPassword, HostPath, ServerKind};
use platform::{DbAccess, Manifest, SiteContext};
use std::time::Duration;
use store::{Platform, Site};

/// Marks a site directory as made by us for one site (`site <id>`): an undo, a force delete
/// or a migrate's cleanup only removes a directory that carries its own site's mark.
pub const SITE_MARK: &str = ".hosting-site";

/// Marks a directory deployed from a backup by one task (`task <id>`): that task's undo
/// removes only a directory it deployed.
pub const DEPLOY_MARK: &str = ".hosting-deployed";

pub struct SiteTask {
    pub site: Site,
    pub platform: Platform,
    pub manifest: Manifest,
    pub web_server: domain::Name,
    pub db_host: String,
    pub db_port: u16,
    pub url: String,
    pub admin_email: domain::Email,
    pub site_dir: HostPath,
}

/// Where a site lives: what a migrate changes. A migrate works on the site as it will be
/// (its target placement) before the record says so.
#[derive(Debug, Clone)]
pub struct Placement {
    pub platform: domain::PlatformId,
    pub domain: domain::DomainName,
    pub db_server: domain::ServerId,
    pub db_name: domain::DbIdent,
    pub db_user: domain::DbIdent,
}

impl SiteTask {
    pub async fn load(store: &store::Store, site: domain::SiteId) -> anyhow::Result<Self> {
        let site = store.site(site).await?;
        Self::resolve(store, site).await
    }

    /// The site as if its record said `placement`.
    pub async fn load_as(
        store: &store::Store,
        site: domain::SiteId,
        placement: &Placement,
    ) -> anyhow::Result<Self> {
        let mut site = store.site(site).await?;
        let platform = store.platform(placement.platform).await?;
        let db = store.server(placement.db_server).await?;
        site.platform_id = platform.id;
        site.platform = platform.name;
        site.domain = placement.domain.clone();
        site.db_server_id = db.id;
        site.db_server = db.name;
        site.db_name = placement.db_name.clone();
        site.db_user = placement.db_user.clone();
        Self::resolve(store, site).await
    }

    pub fn placement(&self) -> Placement {
        Placement {
            platform: self.site.platform_id,
            domain: self.site.domain.clone(),
            db_server: self.site.db_server_id,
            db_name: self.site.db_name.clone(),
            db_user: self.site.db_user.clone(),
        }
    }

    async fn resolve(store: &store::Store, site: Site) -> anyhow::Result<Self> {
        let platform = store.platform(site.platform_id).await?;
        let manifest_json = platform
            .manifest
            .clone()
            .ok_or_else(|| anyhow!("platform {} has not been verified yet", platform.name))?;
        let manifest: Manifest =
            serde_json::from_value(manifest_json).context("the platform's recorded manifest")?;
        let web = store.server(platform.server_id).await?;
        let db = store.server(site.db_server_id).await?;
        if web.kind != ServerKind::Web || db.kind != ServerKind::Db {
            anyhow::bail!(
                "server roles do not match: platform on a {} server, database on a {} server",
                web.kind,
                db.kind
            );
        }
        let client = store.client(site.client_id).await?;
        let url = if web.port == 80 {
            format!("http://{}", site.domain)
        } else {
            format!("http://{}:{}", site.domain, web.port)
        };
        let site_dir = manifest.site_dir(&platform.root, &site.domain)?;
        Ok(Self {
            web_server: web.name,
            db_host: db.host,
            db_port: u16::try_from(db.port).context("db server port")?,
            url,
            admin_email: client.email,
            site_dir,
            site,
            platform,
            manifest,
        })
    }

    pub fn context(&self, password: DbPassword) -> SiteContext {
        SiteContext {
            domain: self.site.domain.clone(),
            aliases: self.site.aliases.clone(),
            url: self.url.clone(),
            site_dir: self.site_dir.clone(),
            profile: self.site.profile.clone(),
            language: self.site.language.clone(),
            admin_email: self.admin_email.clone(),
            db: DbAccess {
                host: self.db_host.clone(),
                port: self.db_port,
                name: self.site.db_name.clone(),
                user: self.site.db_user.clone(),
                password,
            },
            previous: None,
        }
    }

    pub async fn password(&self, store: &store::Store) -> anyhow::Result<DbPassword> {
        store
            .site_secrets(self.site.id)
            .await?
            .db_password
            .ok_or_else(|| {
                anyhow!("the site has no database password recorded (was it ever installed?)")
            })
    }

    pub fn vhost(&self) -> anyhow::Result<Vhost> {
        Ok(Vhost {
            domain: self.site.domain.clone(),
            aliases: self.site.aliases.clone(),
            document_root: self.manifest.web_root(&self.platform.root)?,
            site_dir: self.site_dir.clone(),
            front_controller: self.manifest.application.front_controller.clone(),
            mode: contract::VhostMode::Serve,
        })
    }

    /// The vhost of a disabled site: visitors go to the control plane's "site disabled" page.
    pub fn disabled_vhost(&self, public_url: &str) -> anyhow::Result<Vhost> {
        Ok(Vhost {
            mode: contract::VhostMode::Disabled {
                redirect: contract::disabled_url(public_url, &self.site.domain),
            },
            ..self.vhost()?
        })
    }

    /// The vhost the site's status calls for.
    pub fn vhost_for_status(&self, public_url: &str) -> anyhow::Result<Vhost> {
        match self.site.status {
            domain::SiteStatus::Disabled => self.disabled_vhost(public_url),
            _ => self.vhost(),
        }
    }

    pub fn settings_path(&self) -> std::path::PathBuf {
        self.site_dir.as_path().join(&self.manifest.settings.file)
    }
}

/// The web server's workers read settings (group) but cannot change them; the site's
/// `files/` directory is theirs to write uploads into.
pub async fn write_settings(path: &std::path::Path, content: &str) -> anyhow::Result<bool> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(content) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    // PHP's OPcache notices a changed file by its modification time, in whole seconds: the new
    // file must be strictly newer than the one PHP may have cached, even when both were
    // written within the same second.
    let previous = tokio::fs::metadata(path)
        .await
        .and_then(|m| m.modified())
        .ok();
    tokio::fs::write(&tmp, content)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    set_web_permissions(&tmp, 0o640).await?;
    let now = std::time::SystemTime::now();
    let stamp = match previous {
        Some(p) if p + Duration::from_secs(1) > now => p + Duration::from_secs(1),
        _ => now,
    };
    let file = std::fs::OpenOptions::new().write(true).open(&tmp)?;
    file.set_modified(stamp)?;
    drop(file);
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))?;
    Ok(true)
}

pub async fn set_web_permissions(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await?;
    if let Some(gid) = web_group() {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .context("path with a NUL byte")?;
        // SAFETY: a valid C string; -1 leaves the owner unchanged.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            anyhow::bail!(
                "cannot give {} to the web group: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

pub async fn give_to_web_user(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(gid) = web_group() {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .context("path with a NUL byte")?;
        // SAFETY: a valid C string. www-data's uid equals its gid on Debian.
        if unsafe { libc::chown(c.as_ptr(), gid, gid) } != 0 {
            anyhow::bail!(
                "cannot give {} to the web user: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The gid of `www-data` when we run as root (we can and must hand files to it). Read once:
/// a restore hands thousands of files over.
fn web_group() -> Option<u32> {
    static GID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *GID.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let group = std::fs::read_to_string("/etc/group").ok()?;
        group
            .lines()
            .find(|l| l.starts_with("www-data:"))?
            .split(':')
            .nth(2)?
            .parse()
            .ok()
    })
}

/// The web user's uid and gid (equal on Debian), when we run as root and so must give it
/// what it writes to, such as a site's `files/`.
pub fn web_owner() -> Option<(u32, u32)> {
    web_group().map(|gid| (gid, gid))
}

/// Runs a platform action for a site, its output going to the task log as it comes.
pub async fn run_action(
    st: &SiteTask,
    action: platform::Action,
    ctx: &SiteContext,
    timeout: Duration,
    log: &worker::TaskLog,
) -> anyhow::Result<serde_json::Value> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, String)>();
    let log = log.clone();
    let forward = tokio::spawn(async move {
        while let Some((level, line)) = rx.recv().await {
            log.line(level, line).await;
        }
    });
    let result = st
        .manifest
        .run_action(
            &st.platform.root,
            action,
            ctx,
            timeout,
            move |level, line| {
                let _ = tx.send((level, line));
            },
        )
        .await;
    let _ = forward.await;
    Ok(result?)
}

/// Runs an action the platform may not declare (all but install are optional): `None`, and a
/// line in the task log, when it does not.
pub async fn run_declared_action(
    st: &SiteTask,
    action: platform::Action,
    ctx: &SiteContext,
    timeout: Duration,
    log: &worker::TaskLog,
) -> anyhow::Result<Option<serde_json::Value>> {
    if !st.manifest.actions.contains_key(action.key()) {
        log.info(format!(
            "platform {} has no {} action; skipped",
            st.platform.name,
            action.key()
        ))
        .await;
        return Ok(None);
    }
    run_action(st, action, ctx, timeout, log).await.map(Some)
}

/// Calls the backupper on the site's web server (where its files are): a backup or a deploy,
/// which can take minutes, hence a timeout of its own.
pub async fn backupper<T: serde::de::DeserializeOwned>(
    rpc: &bus::RpcClient,
    web_server: &domain::Name,
    request: contract::BackupRequest,
    timeout: Duration,
) -> anyhow::Result<T> {
    Ok(rpc
        .call(
            "backupper",
            web_server,
            contract::BACKUP_MESSAGE_TYPE,
            &request,
            timeout,
        )
        .await?)
}

/// Calls dbprov on the site's db server.
pub async fn dbprov(
    rpc: &bus::RpcClient,
    server: &domain::Name,
    request: contract::DbprovRequest,
    timeout: Duration,
) -> anyhow::Result<contract::DbprovReply> {
    Ok(rpc
        .call(
            "dbprov",
            server,
            contract::DBPROV_MESSAGE_TYPE,
            &request,
            timeout,
        )
        .await?)
}

/// Calls webconf on the site's web server.
pub async fn webconf(
    rpc: &bus::RpcClient,
    server: &domain::Name,
    request: contract::WebconfRequest,
    timeout: Duration,
) -> anyhow::Result<contract::WebconfReply> {
    Ok(rpc
        .call(
            "webconf",
            server,
            contract::WEBCONF_MESSAGE_TYPE,
            &request,
            timeout,
        )
        .await?)
}

/// Asks the site for its enabled packages (the platform's `packages` action, if declared) and
/// records them in the registry. The number recorded, or `None` without such an action.
pub async fn record_packages(
    store: &store::Store,
    st: &SiteTask,
    ctx: &SiteContext,
    timeout: Duration,
    log: &worker::TaskLog,
) -> anyhow::Result<Option<usize>> {
    let Some(result) =
        run_declared_action(st, platform::Action::Packages, ctx, timeout, log).await?
    else {
        return Ok(None);
    };
    let list = packages_from(result)?;
    store.replace_site_packages(st.site.id, &list).await?;
    log.info(format!("{} packages enabled on the site", list.len()))
        .await;
    Ok(Some(list.len()))
}

/// The package list a `packages` action printed.
pub fn packages_from(result: serde_json::Value) -> anyhow::Result<Vec<store::Package>> {
    let list = result
        .get("packages")
        .cloned()
        .unwrap_or(serde_json::Value::Array(vec![]));
    let infos: Vec<platform::PackageInfo> = serde_json::from_value(list)
        .map_err(|e| anyhow::anyhow!("the packages action must print {{\"packages\": [{{name, type, version, schema_version}}]}}: {e}"))?;
    Ok(infos
        .into_iter()
        .map(|p| store::Package {
            name: p.name,
            package_type: p.package_type.as_str().into(),
            version: p.version,
            schema_version: p.schema_version,
        })
        .collect())
}

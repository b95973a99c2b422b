//! What the services acting on a site share: everything a site task needs, gathered from
//! the state database; its cell on the web server (unix user, directory layout, settings
//! file, pool); its vhost; its platform actions, run as the site's user with their output in
//! the task log; the check that it serves; the RPCs to dbprov and webconf.

mod serve;

pub use cell::*;
pub use serve::{first_lines, request, Answer};

use anyhow::{anyhow, Context};
use contract::Vhost;
use domain::{AppSecret, DbPassword, HostPath, ServerKind};
use platform::{DbAccess, Manifest, SiteContext};
use std::time::Duration;
use store::{Platform, Site};

pub struct SiteTask {
    pub site: Site,
    pub platform: Platform,
    pub manifest: Manifest,
    pub web_server: domain::Name,
    /// Where the web server serves sites (what the site check connects to).
    pub web_host: String,
    pub web_port: u16,
    pub db_host: String,
    pub db_port: u16,
    pub url: String,
    pub admin_email: domain::Email,
    pub site_dir: HostPath,
    pub private_dir: HostPath,
    app_secret: AppSecret,
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
        let private_dir = manifest.private_dir(&site_dir)?;
        // Made on first use and kept for the site's life (a clone's is copied from its
        // original before its record is first loaded).
        let app_secret = match store.site_secrets(site.id).await?.app_secret {
            Some(s) => s,
            None => {
                store
                    .ensure_app_secret(site.id, &AppSecret::generate())
                    .await?
            }
        };
        Ok(Self {
            web_server: web.name,
            web_host: web.host,
            web_port: u16::try_from(web.port).context("web server port")?,
            db_host: db.host,
            db_port: u16::try_from(db.port).context("db server port")?,
            url,
            admin_email: client.email,
            site_dir,
            private_dir,
            app_secret,
            site,
            platform,
            manifest,
        })
    }

    /// What the platform's driver and actions are given. Actions run as the site's own user,
    /// looked up now: an install makes the user in its first step.
    pub fn context(&self, password: DbPassword) -> SiteContext {
        let run_as = if running_as_root() {
            user_ids(self.site.system_user.as_str())
                .ok()
                .flatten()
                .map(|(uid, gid)| platform::RunAs { uid, gid })
        } else {
            None
        };
        SiteContext {
            domain: self.site.domain.clone(),
            aliases: self.site.aliases.clone(),
            url: self.url.clone(),
            site_dir: self.site_dir.clone(),
            private_dir: self.private_dir.clone(),
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
            app_secret: self.app_secret.clone(),
            previous: None,
            run_as,
        }
    }

    /// Who the site's files belong to (`None` when the services are not root).
    pub fn owner(&self) -> anyhow::Result<Option<Owner>> {
        owner_of(&self.site.system_user)
    }

    /// The site's directory as its web server's agent is asked to make or lay it out.
    pub fn dir(&self) -> contract::SiteDir {
        contract::SiteDir {
            site: self.site.id,
            user: self.site.system_user.clone(),
            path: self.site_dir.clone(),
            private: self.manifest.application.private_dir.clone(),
        }
    }

    /// The site directory's layout (files, private directory) with its owners and modes, put
    /// right by the web server's agent; with `create`, the directory is made (and marked as
    /// this site's) if it is missing. `true` when it was made.
    pub async fn lay_out(
        &self,
        rpc: &bus::RpcClient,
        create: bool,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let request = contract::WebconfRequest::PrepareSiteDir {
            dir: self.dir(),
            create,
        };
        Ok(webconf(rpc, &self.web_server, request, timeout)
            .await?
            .changed)
    }

    /// Renders the settings file for `password` and has the web server's agent write it if
    /// it changed, sealed to the agent's key on the way.
    pub async fn write_settings(
        &self,
        rpc: &bus::RpcClient,
        store: &store::Store,
        password: DbPassword,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let settings = self.manifest.render_settings(&self.context(password))?;
        let key = self.web_key(rpc, store, timeout).await?;
        let request = contract::WebconfRequest::WriteSettings {
            site: self.site.id,
            user: self.site.system_user.clone(),
            path: HostPath::parse(&self.settings_path().to_string_lossy())
                .map_err(|e| anyhow!("the settings path: {e}"))?,
            text: key.seal(settings.as_bytes())?,
        };
        Ok(webconf(rpc, &self.web_server, request, timeout)
            .await?
            .changed)
    }

    /// The key of the site's web server's agent, which its secrets are sealed to.
    pub async fn web_key(
        &self,
        rpc: &bus::RpcClient,
        store: &store::Store,
        timeout: Duration,
    ) -> anyhow::Result<contract::RecipientKey> {
        agent_key(
            rpc,
            store,
            self.platform.server_id,
            &self.web_server,
            ServerKind::Web,
            timeout,
        )
        .await
    }

    /// The site's PHP pool, written with its vhost.
    pub fn pool(&self) -> contract::PhpPool {
        contract::PhpPool {
            user: self.site.system_user.clone(),
            platform_root: self.platform.root.clone(),
            site_dir: self.site_dir.clone(),
            private_dir: self.private_dir.clone(),
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
            pool: Some(self.pool()),
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

/// Runs a platform action for a site on its web server, by its agent (as the site's user);
/// the lines it printed go to the task log. The context travels sealed to the agent's key.
pub async fn run_action(
    rpc: &bus::RpcClient,
    store: &store::Store,
    st: &SiteTask,
    action: platform::Action,
    ctx: &SiteContext,
    timeout: Duration,
    log: &worker::TaskLog,
) -> anyhow::Result<serde_json::Value> {
    let key = st.web_key(rpc, store, RPC_TIMEOUT).await?;
    let context = serde_json::to_vec(ctx).context("the site's context")?;
    let request = contract::WebconfRequest::RunAction(Box::new(contract::ActionRequest {
        site: st.site.id,
        user: st.site.system_user.clone(),
        platform_root: st.platform.root.clone(),
        manifest: Box::new(st.manifest.clone()),
        action,
        context: key.seal(&context)?,
        timeout_secs: timeout.as_secs().max(1),
    }));
    // The agent stops the action at `timeout`; the answer may take a little longer.
    let reply = webconf(rpc, &st.web_server, request, timeout + RPC_TIMEOUT).await?;
    let output = reply.action.with_context(|| {
        format!(
            "webconf on {} did not answer the action's output",
            st.web_server
        )
    })?;
    for line in output.lines {
        log.line(line.level.as_str(), line.text).await;
    }
    if output.lines_dropped > 0 {
        log.warn(format!(
            "{} more lines of output were not kept",
            output.lines_dropped
        ))
        .await;
    }
    output.result.map_err(|e| anyhow!(e))
}

/// How long an agent's quick answers (a key, a directory) may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an action the platform may not declare (all but install are optional): `None`, and a
/// line in the task log, when it does not.
pub async fn run_declared_action(
    rpc: &bus::RpcClient,
    store: &store::Store,
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
    run_action(rpc, store, st, action, ctx, timeout, log)
        .await
        .map(Some)
}

/// Asks the backup store (the control plane's backupper, which fetches the site's files from
/// its web server's agent) for a backup made for `task`, which can take minutes, hence a
/// timeout of its own.
pub async fn make_backup(
    rpc: &bus::RpcClient,
    request: contract::BackupRequest,
    timeout: Duration,
) -> anyhow::Result<contract::BackupReply> {
    let store = domain::Name::parse(contract::BACKUP_STORE).map_err(|e| anyhow!("{e}"))?;
    match rpc
        .ask::<contract::BackupperRpc>(&store, &request, timeout)
        .await?
    {
        contract::BackupperReply::Backup(made) => Ok(made),
        other => anyhow::bail!("the backupper answered a backup request with {other:?}"),
    }
}

/// Asks the backup store to deploy a backup onto `web_server`.
pub async fn deploy(
    rpc: &bus::RpcClient,
    web_server: &domain::Name,
    mut request: contract::DeployRequest,
    timeout: Duration,
) -> anyhow::Result<contract::DeployReply> {
    let store = domain::Name::parse(contract::BACKUP_STORE).map_err(|e| anyhow!("{e}"))?;
    request.web_server = Some(web_server.clone());
    match rpc
        .ask::<contract::BackupperRpc>(&store, &contract::BackupRequest::Deploy(request), timeout)
        .await?
    {
        contract::BackupperReply::Deploy(done) => Ok(done),
        other => anyhow::bail!("the backupper answered a deploy request with {other:?}"),
    }
}

/// Calls dbprov on the site's db server.
pub async fn dbprov(
    rpc: &bus::RpcClient,
    server: &domain::Name,
    request: contract::DbprovRequest,
    timeout: Duration,
) -> anyhow::Result<contract::DbprovReply> {
    Ok(rpc
        .ask::<contract::DbprovRpc>(server, &request, timeout)
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
        .ask::<contract::WebconfRpc>(server, &request, timeout)
        .await?)
}

/// Creates a database and its user on a db server (see `DbprovRequest::CreateDatabase`),
/// the password sealed to that server's key: learnt from its dbprov the first time and
/// recorded, then taken from the record, so a dbprov that answers with another key later is
/// not believed (its requests fail to open, with a message that says why).
pub async fn create_database(
    rpc: &bus::RpcClient,
    store: &store::Store,
    server: domain::ServerId,
    database: &domain::DbIdent,
    user: &domain::DbIdent,
    password: &DbPassword,
    timeout: Duration,
) -> anyhow::Result<contract::DbprovReply> {
    let db = store.server(server).await?;
    let key = agent_key(rpc, store, server, &db.name, ServerKind::Db, timeout).await?;
    let sealed = key.seal(password.expose().as_bytes())?;
    dbprov(
        rpc,
        &db.name,
        contract::DbprovRequest::CreateDatabase {
            database: database.clone(),
            user: user.clone(),
            password: sealed,
        },
        timeout,
    )
    .await
}

/// The public key of a server's agent (dbprov on a db server, webconf on a web server), which
/// secrets for that server are sealed to: learnt from the agent the first time and recorded,
/// then taken from the record, so an agent that answers with another key later is not
/// believed (its requests fail to open, with a message that says why).
pub async fn agent_key(
    rpc: &bus::RpcClient,
    store: &store::Store,
    server: domain::ServerId,
    name: &domain::Name,
    kind: ServerKind,
    timeout: Duration,
) -> anyhow::Result<contract::RecipientKey> {
    let key = match store.server_public_key(server).await? {
        Some(k) => k,
        None => {
            let (agent, key) = match kind {
                ServerKind::Db => (
                    "dbprov",
                    dbprov(rpc, name, contract::DbprovRequest::PublicKey, timeout)
                        .await?
                        .public_key,
                ),
                ServerKind::Web => (
                    "webconf",
                    webconf(rpc, name, contract::WebconfRequest::PublicKey, timeout)
                        .await?
                        .public_key,
                ),
            };
            let key =
                key.with_context(|| format!("{agent} on {name} did not say its public key"))?;
            store.record_server_public_key(server, key.as_str()).await?
        }
    };
    contract::RecipientKey::parse(&key)
        .with_context(|| format!("the public key recorded for the {kind} server {name}"))
}

/// How a restore or migrate puts the database it prepared in the place of the site's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbPlacement {
    /// The prepared database's tables move into the site's database, which keeps its name,
    /// user and password (an application may take its identity from the name).
    MoveTables,
    /// The site is pointed at the prepared database: needed when either holds views,
    /// triggers, routines, events or foreign keys, which RENAME TABLE cannot carry.
    Repoint,
}

impl DbPlacement {
    pub fn as_str(self) -> &'static str {
        match self {
            DbPlacement::MoveTables => "move-tables",
            DbPlacement::Repoint => "repoint",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "move-tables" => Ok(DbPlacement::MoveTables),
            "repoint" => Ok(DbPlacement::Repoint),
            other => anyhow::bail!("unknown database placement {other:?}"),
        }
    }

    /// Which of the two the databases allow, asked of their db server.
    pub async fn for_databases(
        rpc: &bus::RpcClient,
        server: &domain::Name,
        databases: &[domain::DbIdent],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let reply = dbprov(
            rpc,
            server,
            contract::DbprovRequest::TablesOnly {
                databases: databases.to_vec(),
            },
            timeout,
        )
        .await?;
        Ok(if reply.tables_only == Some(true) {
            DbPlacement::MoveTables
        } else {
            DbPlacement::Repoint
        })
    }
}

/// Moves every table of `from` into `to` on a db server; `true` if any moved.
pub async fn move_tables(
    rpc: &bus::RpcClient,
    server: &domain::Name,
    from: &domain::DbIdent,
    to: &domain::DbIdent,
    timeout: Duration,
) -> anyhow::Result<bool> {
    Ok(dbprov(
        rpc,
        server,
        contract::DbprovRequest::MoveTables {
            from: from.clone(),
            to: to.clone(),
        },
        timeout,
    )
    .await?
    .changed)
}

/// Makes the site's unix user on its web server (webconf does, as the host's agent) and
/// answers its uid and gid.
pub async fn ensure_site_user(
    rpc: &bus::RpcClient,
    st: &SiteTask,
    timeout: Duration,
) -> anyhow::Result<(u32, u32)> {
    let reply = webconf(
        rpc,
        &st.web_server,
        contract::WebconfRequest::EnsureSiteUser {
            user: st.site.system_user.clone(),
            site: st.site.id,
        },
        timeout,
    )
    .await?;
    reply
        .ids
        .with_context(|| format!("webconf on {} did not answer the user's ids", st.web_server))
}

/// Removes the site's pool and unix user from its web server; `true` if there was one.
pub async fn remove_site_user(
    rpc: &bus::RpcClient,
    st: &SiteTask,
    timeout: Duration,
) -> anyhow::Result<bool> {
    Ok(webconf(
        rpc,
        &st.web_server,
        contract::WebconfRequest::RemoveSiteUser {
            user: st.site.system_user.clone(),
            site: st.site.id,
        },
        timeout,
    )
    .await?
    .changed)
}

/// Asks the site for its enabled packages (the platform's `packages` action, if declared) and
/// records them in the registry. The number recorded, or `None` without such an action.
pub async fn record_packages(
    rpc: &bus::RpcClient,
    store: &store::Store,
    st: &SiteTask,
    ctx: &SiteContext,
    timeout: Duration,
    log: &worker::TaskLog,
) -> anyhow::Result<Option<usize>> {
    let Some(result) = run_declared_action(
        rpc,
        store,
        st,
        platform::Action::Packages,
        ctx,
        timeout,
        log,
    )
    .await?
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

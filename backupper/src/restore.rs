//! Restore, the reference's steps as a saga: maintenance on → a safety backup → a new
//! database and user → prove the archive's checksum, unpack it into a fresh directory (every
//! entry the site's user's) and import the dump with a client that obeys no client commands →
//! swap the directory → the site's tables aside and the restored ones in, so its database
//! keeps its name, user and password (or, where RENAME TABLE cannot carry a database's
//! views, triggers or routines, the site pointed at the restored database) → verify
//! (settings, vhost, reload) → maintenance off → a request to the site → only then drop the
//! old tables and remove the old directory. A failure at any step puts back the old
//! directory, database, settings and vhost, and takes the site out of maintenance.

use crate::backup::{make_backup, BEFORE_RESTORE};
use crate::mysql::{self, Credentials};
use crate::Backupper;
use anyhow::{bail, Context};
use contract::steps::RestoreStep;
use contract::{DbprovRequest, WebconfRequest};
use domain::{DbIdent, DbPassword, SiteStatus};
use platform::Action;
use saga::{Outcome as SagaOutcome, Saga};
use site::SiteTask;
use std::path::PathBuf;
use std::process::Stdio;
use store::{Backup, Task};
use worker::{Outcome, TaskLog};

struct RestoreSaga<'a> {
    b: &'a Backupper,
    task: &'a Task,
    log: &'a TaskLog,
    backup: Backup,
    site: domain::SiteId,
    site_dir: PathBuf,
    fresh_dir: PathBuf,
    previous_dir: PathBuf,
    /// The database the dump is imported into.
    new_db: DbIdent,
    /// Where the site's own tables wait (`move-tables`) until the restore has succeeded.
    aside_db: DbIdent,
    /// The web server whose agent does the file side, when the site's files are not on this
    /// host's disk.
    agent: Option<domain::Name>,
}

pub async fn run(b: &Backupper, task: &Task, log: &TaskLog) -> Outcome {
    let Some(site_id) = task.site else {
        return Outcome::Error("a restore task without a site".into());
    };
    let Ok(contract::TaskArgs::OfBackup(contract::BackupRef { backup: backup_id })) =
        task.parsed_args()
    else {
        return Outcome::Error("a restore task needs {\"backup\": <id>}".into());
    };
    let prepared = async {
        let st = SiteTask::load(&b.store, site_id).await?;
        if !matches!(st.site.status, SiteStatus::Enabled | SiteStatus::Disabled) {
            bail!(
                "the site is {}; only enabled or disabled sites can be restored",
                st.site.status
            );
        }
        let backup = b.store.backup(backup_id).await?;
        if backup.site != site_id {
            bail!("backup {backup_id} belongs to another site");
        }
        let new_db = st.site.db_name.for_task('r', task.id.0)?;
        let aside_db = st.site.db_name.for_task('p', task.id.0)?;
        let site_dir = st.site_dir.to_path_buf();
        let fresh_dir = site::beside(&site_dir, "restore", task.id);
        let previous_dir = site::beside(&site_dir, "previous", task.id);
        anyhow::Ok(RestoreSaga {
            b,
            task,
            log,
            backup,
            site: site_id,
            site_dir,
            fresh_dir,
            previous_dir,
            new_db,
            aside_db,
            agent: (st.web_server != b.settings.server).then(|| st.web_server.clone()),
        })
    };
    let saga = match prepared.await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("{e:#}; nothing was changed")),
    };
    log.info(format!(
        "restoring backup {} ({}, {})",
        saga.backup.id, saga.backup.description, saga.backup.created_at
    ))
    .await;
    match saga::run(&b.store, task.id, &saga, &b.faults).await {
        Ok(SagaOutcome::Completed) => {
            Outcome::Success(Some(serde_json::json!({"backup": backup_id.0})))
        }
        Ok(SagaOutcome::Unwound { error }) => {
            Outcome::Error(format!("{error}; the site was put back as it was"))
        }
        Ok(SagaOutcome::UnwindFailed { error, undo_error }) => {
            Outcome::Error(format!("{error}; then {undo_error}"))
        }
        Err(e) => Outcome::Error(format!("the restore could not record its progress: {e:#}")),
    }
}

impl RestoreSaga<'_> {
    async fn current(&self) -> anyhow::Result<SiteTask> {
        SiteTask::load(&self.b.store, self.site).await
    }

    async fn maintenance(&self, action: Action) -> anyhow::Result<()> {
        let st = self.current().await?;
        let ctx = st.context(st.password(&self.b.store).await?);
        let timeout = self.b.settings.action_timeout;
        site::run_declared_action(
            &self.b.rpc,
            &self.b.store,
            &st,
            action,
            &ctx,
            timeout,
            self.log,
        )
        .await?;
        Ok(())
    }

    async fn secret(&self, name: &str, candidate: &str) -> anyhow::Result<String> {
        Ok(self
            .b
            .store
            .ensure_task_secret(self.task.id, name, candidate)
            .await?)
    }

    /// The database the site had before this restore, recorded before anything changed.
    async fn previous_db(&self) -> anyhow::Result<(DbIdent, DbIdent, DbPassword)> {
        let st = self.current().await?;
        let pw = st.password(&self.b.store).await?;
        let name = DbIdent::parse(
            &self
                .secret("previous-db-name", st.site.db_name.as_str())
                .await?,
        )?;
        let user = DbIdent::parse(
            &self
                .secret("previous-db-user", st.site.db_user.as_str())
                .await?,
        )?;
        let password = DbPassword::parse(&self.secret("previous-db-password", pw.expose()).await?)?;
        Ok((name, user, password))
    }

    /// How the restored database takes the site's place, decided once (in the swap step,
    /// from both databases as they are then) and kept in the task's secrets.
    async fn placement(&self) -> anyhow::Result<site::DbPlacement> {
        let (live, _, _) = self.previous_db().await?;
        let st = self.current().await?;
        let stored = match self
            .b
            .store
            .task_secret(self.task.id, "db-placement")
            .await?
        {
            Some(s) => s,
            None => {
                let found = site::DbPlacement::for_databases(
                    &self.b.rpc,
                    &st.site.db_server,
                    &[live, self.new_db.clone()],
                    self.b.settings.rpc_timeout,
                )
                .await?;
                self.secret("db-placement", found.as_str()).await?
            }
        };
        site::DbPlacement::parse(&stored)
    }

    async fn move_tables(&self, from: &DbIdent, to: &DbIdent) -> anyhow::Result<bool> {
        let st = self.current().await?;
        site::move_tables(
            &self.b.rpc,
            &st.site.db_server,
            from,
            to,
            self.b.settings.rpc_timeout,
        )
        .await
    }

    async fn drop_database(&self, name: &DbIdent, user: &DbIdent) -> anyhow::Result<()> {
        let st = self.current().await?;
        site::dbprov(
            &self.b.rpc,
            &st.site.db_server,
            DbprovRequest::drop_database(name.clone(), user.clone()),
            self.b.settings.rpc_timeout,
        )
        .await?;
        Ok(())
    }

    async fn new_password(&self) -> anyhow::Result<DbPassword> {
        Ok(DbPassword::parse(
            &self
                .secret("restore-db-password", DbPassword::generate().expose())
                .await?,
        )?)
    }

    async fn write_config(&self) -> anyhow::Result<()> {
        let st = self.current().await?;
        let (rpc, store, timeout) = (&self.b.rpc, &self.b.store, self.b.settings.rpc_timeout);
        st.lay_out(rpc, false, timeout).await?;
        st.write_settings(rpc, store, st.password(store).await?, timeout)
            .await?;
        let reply = site::webconf(
            &self.b.rpc,
            &st.web_server,
            WebconfRequest::WriteVhost(Box::new(st.vhost()?)),
            self.b.settings.rpc_timeout,
        )
        .await?;
        self.log
            .info(format!(
                "settings written; vhost {}",
                if reply.changed {
                    "rewritten, nginx reloaded"
                } else {
                    "unchanged"
                }
            ))
            .await;
        Ok(())
    }

    /// Asks the agent of the site's web server.
    async fn agent(
        &self,
        agent: &domain::Name,
        request: WebconfRequest,
    ) -> anyhow::Result<contract::WebconfReply> {
        site::webconf(&self.b.rpc, agent, request, self.b.settings.rpc_timeout).await
    }

    fn host_path(path: &std::path::Path) -> anyhow::Result<domain::HostPath> {
        domain::HostPath::parse(&path.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Whether a directory of the site's is there, wherever its files are.
    async fn dir_exists(&self, path: &std::path::Path) -> anyhow::Result<bool> {
        let Some(agent) = &self.agent else {
            return Ok(tokio::fs::try_exists(path).await?);
        };
        let reply = self
            .agent(
                agent,
                WebconfRequest::InspectPath {
                    path: Self::host_path(path)?,
                },
            )
            .await?;
        Ok(reply.path.is_some_and(|k| k != contract::PathKind::Missing))
    }

    /// Renames one of the site's directories to a sibling, wherever its files are.
    async fn rename_dir(&self, from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
        let Some(agent) = &self.agent else {
            return Ok(tokio::fs::rename(from, to).await?);
        };
        let request = WebconfRequest::MoveSiteDir {
            site: self.site,
            from: Self::host_path(from)?,
            to: Self::host_path(to)?,
            unmarked_ok: true,
            deployed_by: None,
        };
        match self.agent(agent, request).await?.dir {
            Some(contract::DirOutcome::Done) => Ok(()),
            other => bail!(
                "{} could not be renamed to {} on {agent}: {other:?}",
                from.display(),
                to.display()
            ),
        }
    }

    /// Removes one of the site's directories, wherever its files are; `false` when it was
    /// not there.
    async fn remove_dir(&self, path: &std::path::Path) -> anyhow::Result<bool> {
        let Some(agent) = &self.agent else {
            return match tokio::fs::remove_dir_all(path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let request = WebconfRequest::RemoveSiteDir {
            site: self.site,
            path: Self::host_path(path)?,
            unmarked_ok: true,
            deployed_by: None,
        };
        match self.agent(agent, request).await?.dir {
            Some(contract::DirOutcome::Done) => Ok(true),
            Some(contract::DirOutcome::Missing) => Ok(false),
            other => bail!("{} was left on {agent}: {other:?}", path.display()),
        }
    }

    async fn unpack(&self) -> anyhow::Result<()> {
        self.remove_dir(&self.fresh_dir).await?; // from an interrupted run
        let st = self.current().await?;
        let creds = Credentials {
            host: st.db_host.clone(),
            port: st.db_port,
            user: self.new_db.clone(),
            password: self.new_password().await?,
        };
        let Some(agent) = &self.agent else {
            let extracted = unpack_and_import(
                self.b,
                &self.backup,
                &self.fresh_dir,
                &self.new_db,
                &creds,
                Unpacked::ForSite(st.owner()?),
            )
            .await?;
            self.log
                .info(format!(
                    "unpacked {} files and imported the database into {}",
                    extracted.files.count, self.new_db
                ))
                .await;
            return Ok(());
        };
        // The site's files are on another host: the dump is imported from here, and the
        // site's agent unpacks the files there.
        import_dump(self.b, &self.backup, self.task.id, &self.new_db, &creds).await?;
        self.log
            .info(format!("imported the database into {}", self.new_db))
            .await;
        let web = self.b.store.server(st.platform.server_id).await?;
        let files = unpack_on(
            self.b,
            &web,
            &self.backup,
            self.task.id,
            self.site,
            &st.site.system_user,
            &self.fresh_dir,
        )
        .await?;
        self.log
            .info(format!("{agent}'s agent unpacked {files} files"))
            .await;
        Ok(())
    }
}

impl Saga for RestoreSaga<'_> {
    fn name(&self) -> &'static str {
        "restore"
    }

    type Step = RestoreStep;

    fn steps(&self) -> &'static [RestoreStep] {
        RestoreStep::ALL
    }

    async fn action(&self, step: RestoreStep) -> anyhow::Result<()> {
        match step {
            RestoreStep::MaintenanceOn => self.maintenance(Action::MaintenanceOn).await?,
            RestoreStep::SafetyBackup => {
                let st = self.current().await?;
                let backup =
                    make_backup(self.b, &st, self.task.id, BEFORE_RESTORE, self.log).await?;
                self.log
                    .info(format!("safety backup {} made", backup.id))
                    .await;
            }
            RestoreStep::Database => {
                self.previous_db().await?; // recorded before anything changes
                let st = self.current().await?;
                site::create_database(
                    &self.b.rpc,
                    &self.b.store,
                    st.site.db_server_id,
                    &self.new_db,
                    &self.new_db,
                    &self.new_password().await?,
                    self.b.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!("new database and user {}", self.new_db))
                    .await;
            }
            RestoreStep::Unpack => self.unpack().await?,
            RestoreStep::Swap => {
                if self.dir_exists(&self.fresh_dir).await? {
                    if self.dir_exists(&self.site_dir).await?
                        && !self.dir_exists(&self.previous_dir).await?
                    {
                        self.rename_dir(&self.site_dir, &self.previous_dir)
                            .await
                            .context("moving the current site directory aside")?;
                    }
                    self.rename_dir(&self.fresh_dir, &self.site_dir)
                        .await
                        .context("moving the restored directory in")?;
                }
                self.previous_db().await?;
                match self.placement().await? {
                    site::DbPlacement::MoveTables => {}
                    site::DbPlacement::Repoint => {
                        self.b
                            .store
                            .set_site_database(
                                self.site,
                                &self.new_db,
                                &self.new_db,
                                &self.new_password().await?,
                            )
                            .await?;
                        self.log
                            .info(format!(
                                "the site's database has views, triggers, routines or foreign keys: it now uses {}",
                                self.new_db
                            ))
                            .await;
                    }
                }
                self.log.info("the restored directory is the site's").await;
            }
            RestoreStep::TablesAside => {
                if self.placement().await? == site::DbPlacement::MoveTables {
                    let (live, _, _) = self.previous_db().await?;
                    self.move_tables(&live, &self.aside_db).await?;
                    self.log
                        .info(format!("the site's tables wait in {}", self.aside_db))
                        .await;
                }
            }
            RestoreStep::TablesIn => {
                if self.placement().await? == site::DbPlacement::MoveTables {
                    let (live, _, _) = self.previous_db().await?;
                    self.move_tables(&self.new_db, &live).await?;
                    self.log
                        .info(format!(
                            "the restored tables are in {live}, which keeps its name, user and password"
                        ))
                        .await;
                }
            }
            RestoreStep::Verify => self.write_config().await?,
            RestoreStep::MaintenanceOff => self.maintenance(Action::MaintenanceOff).await?,
            RestoreStep::ServeCheck => {
                let st = self.current().await?;
                let status = st.check_serves(self.b.settings.rpc_timeout).await?;
                self.log
                    .info(format!("the restored site answers {status}"))
                    .await;
            }
            RestoreStep::Cleanup => {
                let (name, user, _) = self.previous_db().await?;
                // What held the previous data: the database set aside, and the import's
                // database, now empty, with its user; or, repointed, the previous database.
                let leftovers = match self.placement().await? {
                    site::DbPlacement::MoveTables => vec![
                        (self.aside_db.clone(), self.aside_db.clone()),
                        (self.new_db.clone(), self.new_db.clone()),
                    ],
                    site::DbPlacement::Repoint => vec![(name, user)],
                };
                for (db, user) in leftovers {
                    match self.drop_database(&db, &user).await {
                        Ok(()) => {
                            self.log
                                .info(format!("previous database {db} dropped"))
                                .await
                        }
                        Err(e) => {
                            self.log
                                .warn(format!("could not drop the previous database {db}: {e:#}"))
                                .await
                        }
                    }
                }
                match self.remove_dir(&self.previous_dir).await {
                    Ok(true) => self.log.info("previous site directory removed").await,
                    Ok(false) => {}
                    Err(e) => {
                        self.log
                            .warn(format!(
                                "could not remove {}: {e:#}",
                                self.previous_dir.display()
                            ))
                            .await
                    }
                }
            }
        }
        Ok(())
    }

    async fn undo(&self, step: RestoreStep) -> anyhow::Result<()> {
        match step {
            RestoreStep::MaintenanceOn => self.maintenance(Action::MaintenanceOff).await?,
            RestoreStep::Database => {
                let st = self.current().await?;
                let request =
                    DbprovRequest::drop_database(self.new_db.clone(), self.new_db.clone());
                site::dbprov(
                    &self.b.rpc,
                    &st.site.db_server,
                    request,
                    self.b.settings.rpc_timeout,
                )
                .await?;
            }
            RestoreStep::Unpack => {
                self.remove_dir(&self.fresh_dir).await?;
            }
            RestoreStep::TablesIn => {
                if self.placement().await? == site::DbPlacement::MoveTables {
                    let (live, _, _) = self.previous_db().await?;
                    self.move_tables(&live, &self.new_db).await?;
                }
            }
            RestoreStep::TablesAside => {
                if self.placement().await? != site::DbPlacement::MoveTables {
                    return Ok(());
                }
                let (live, _, _) = self.previous_db().await?;
                self.move_tables(&self.aside_db, &live).await?;
                // Only if the move back left nothing there: what is still in it is kept.
                let st = self.current().await?;
                site::dbprov(
                    &self.b.rpc,
                    &st.site.db_server,
                    DbprovRequest::drop_empty_database(
                        self.aside_db.clone(),
                        self.aside_db.clone(),
                    ),
                    self.b.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!("the site's own tables are back in {live}"))
                    .await;
            }
            RestoreStep::Swap => {
                if self.dir_exists(&self.previous_dir).await? {
                    if self.dir_exists(&self.site_dir).await? {
                        self.rename_dir(&self.site_dir, &self.fresh_dir).await?;
                    }
                    self.rename_dir(&self.previous_dir, &self.site_dir).await?;
                }
                let (name, user, password) = self.previous_db().await?;
                self.b
                    .store
                    .set_site_database(self.site, &name, &user, &password)
                    .await?;
                self.write_config().await?;
            }
            // Nothing to undo (see `RestoreStep`).
            RestoreStep::SafetyBackup
            | RestoreStep::Verify
            | RestoreStep::MaintenanceOff
            | RestoreStep::ServeCheck
            | RestoreStep::Cleanup => {}
        }
        Ok(())
    }
}

/// Whom an unpacked site directory is for.
#[derive(Clone, Copy, PartialEq)]
pub enum Unpacked {
    /// A site that will serve: every entry is its user's, whatever the archive says, and its
    /// public files the web server's group's (`None` when the services are not root).
    ForSite(Option<site::Owner>),
    /// A scratch copy only we read (verify-backup).
    Scratch,
}

/// Checks and unpacks a backup's site files into `dest` (which must not exist) and imports its
/// dump into `database`, both at once (see `archive::extract`).
pub async fn unpack_and_import(
    b: &Backupper,
    backup: &Backup,
    dest: &std::path::Path,
    database: &DbIdent,
    creds: &Credentials,
    unpacked: Unpacked,
) -> anyhow::Result<archive::Extracted> {
    // --sandbox: the client refuses its own commands (`\!` runs a shell, `system`, `source`
    // reads files) for the whole import; --local-infile=0: nor does it send a file of this
    // host to the server (LOAD DATA LOCAL INFILE). A dump is data, whatever its bytes say.
    let mut child = mysql::spawn(
        &b.settings.client_bin,
        &["--sandbox", "--local-infile=0", database.as_str()],
        creds,
        Stdio::piped(),
        Stdio::null(),
    )?;
    let archive_path = b.settings.backup_dir.join(&backup.key);
    let limits = limits_for(b, backup);
    let (checksum, dest_dir) = (backup.checksum.clone(), dest.to_path_buf());
    // Handed over as each entry is made, not by a second walk over thousands of files.
    let handover = match unpacked {
        Unpacked::ForSite(owner) => owner.map(|o| archive::Handover {
            uid: o.uid,
            gid: o.gid,
            web_subtree: site::FILES_DIR.into(),
            web_gid: o.web_gid,
        }),
        Unpacked::Scratch => None,
    };
    let extracted = tokio::task::spawn_blocking(move || {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin for the import"))?;
        // Up to 64 MiB of dump waits here, so unpacking files goes on while the import works.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
        let feeder = std::thread::spawn(move || -> std::io::Result<()> {
            for chunk in rx {
                std::io::Write::write_all(&mut stdin, &chunk)?;
            }
            Ok(())
        });
        let mut sink = crate::definer::DefinerFilter::new(ChannelWriter(tx));
        let result = archive::extract(
            &archive_path,
            &checksum,
            &dest_dir,
            limits,
            handover.as_ref(),
            &mut sink,
        )
        .map_err(anyhow::Error::from);
        // The end of the dump's last line, if it had no newline.
        let result = result.and_then(|x| sink.into_inner().map(|_| x).map_err(Into::into));
        let fed = feeder
            .join()
            .map_err(|_| anyhow::anyhow!("the import feeder panicked"))?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let status = child.wait()?;
        // An import that stopped reading (it refused a statement or a client command) is
        // the cause, not the broken pipe the archive's reader then met.
        if !status.success() && fed.is_err() {
            bail!("importing the dump failed ({status}): {}", err.trim());
        }
        let extracted = result?;
        fed.map_err(|e| anyhow::anyhow!("feeding the import failed: {e}"))?;
        if !status.success() {
            bail!("importing the dump failed ({status}): {}", err.trim());
        }
        anyhow::Ok(extracted)
    })
    .await??;
    Ok(extracted)
}

/// Imports a backup's dump into `database` for a site whose files are on another host: through
/// a scratch copy of its files here, which proves the archive whole and is removed at once.
pub async fn import_dump(
    b: &Backupper,
    backup: &Backup,
    task: domain::TaskId,
    database: &DbIdent,
    creds: &Credentials,
) -> anyhow::Result<()> {
    let scratch = b.settings.backup_dir.join(format!(".import-t{task}"));
    if tokio::fs::try_exists(&scratch).await? {
        tokio::fs::remove_dir_all(&scratch).await?; // from an interrupted run
    }
    let imported = unpack_and_import(b, backup, &scratch, database, creds, Unpacked::Scratch).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    imported.map(|_| ())
}

/// A backup's site files unpacked into `dest` on another web server by its agent, from the
/// archive it fetches from the store's door with a token for this one download (`dest` is
/// named by the task: what an interrupted run left there is replaced). The number of files.
pub async fn unpack_on(
    b: &Backupper,
    web: &store::Server,
    backup: &Backup,
    task: domain::TaskId,
    site: domain::SiteId,
    user: &domain::SystemUser,
    dest: &std::path::Path,
) -> anyhow::Result<u64> {
    let agent = &web.name;
    let (Some(url), Some(uploads)) = (&b.settings.upload_url, &b.uploads) else {
        bail!(
            "the site's files are on {agent}, and this backup store gives no archives: set HOSTING_UPLOAD_LISTEN and HOSTING_UPLOAD_URL (an address {agent} can reach)"
        );
    };
    let offered = uploads.offer(
        task,
        web.host.parse().ok(),
        b.settings.upload_ttl,
        b.settings.backup_dir.join(&backup.key),
    );
    let key = site::agent_key(
        &b.rpc,
        &b.store,
        web.id,
        agent,
        domain::ServerKind::Web,
        b.settings.rpc_timeout,
    )
    .await?;
    let limits = limits_for(b, backup);
    let request = WebconfRequest::ReceiveSiteFiles(Box::new(contract::ReceiveSiteFiles {
        task,
        site,
        user: user.clone(),
        dest: domain::HostPath::parse(&dest.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("{}: {e}", dest.display()))?,
        replace: true,
        sha256: backup.checksum.clone(),
        max_entries: limits.max_entries,
        max_bytes: limits.max_bytes,
        url: format!(
            "{}{}",
            url.trim_end_matches('/'),
            crate::uploads::ARCHIVES_PATH
        ),
        token: key.seal(offered.token.as_bytes())?,
    }));
    let reply = site::webconf(&b.rpc, agent, request, b.settings.backup_timeout).await?;
    let got = reply
        .sent
        .with_context(|| format!("webconf on {agent} did not say what it unpacked"))?;
    Ok(got.files)
}

/// What the record says the archive holds bounds what is unpacked (size first).
fn limits_for(b: &Backupper, backup: &Backup) -> archive::Limits {
    let recorded = |k: &str| backup.manifest.pointer(k).and_then(|v| v.as_u64());
    match (
        recorded("/files/count"),
        recorded("/files/bytes"),
        recorded("/dump_bytes"),
    ) {
        (Some(files), Some(bytes), Some(dump)) => b.settings.limits.narrowed_to(files, bytes, dump),
        _ => b.settings.limits,
    }
}

/// Hands written bytes to the import's feeder thread.
struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the import stopped reading")
        })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! Migrate (upgrade, move, rename) and clone, the reference's "migration process" and
//! "cloning process", as sagas whose progress is stored, so a migrator killed midway resumes
//! or unwinds when the task is taken up again.
//!
//! Migrate: maintenance on → backup → a new database → deploy the backup onto the target (new
//! site directory, import) → the target platform's database updates → fix paths → clear
//! caches → on the same db server, the site's tables aside and the migrated ones into its own
//! database, which keeps its name, user and password (unless RENAME TABLE cannot carry it:
//! views, triggers, routines, foreign keys; then the site is pointed at the new database;
//! on another db server the new database has the site's name from the start) → switch
//! (settings, vhost and pool with the new root and credentials, the record; a rename removes
//! the old domain's vhost) → maintenance off → a request to the site → only then remove the
//! old copy. A failure undoes the completed steps in reverse: the site serves
//! from its original platform with its original data, out of maintenance.
//!
//! Clone: the new site's own unix user → backup → a new database → deploy as the new site →
//! updates, fix paths, caches → switch (the new site's settings, vhost and pool; it is
//! enabled) → a request to it. The original is not touched.

use crate::Migrator;
use anyhow::{bail, Context};
use contract::steps::MoveStep;
use contract::{
    BackupReply, BackupRequest, DbprovRequest, DeployReply, DeployRequest, WebconfRequest,
    DEPLOY_PASSWORD_SECRET,
};
use domain::{DbIdent, DbPassword, DomainName, PlatformId, ServerId, SiteId, SiteStatus};
use platform::{Action, PreviousSite};
use saga::{Outcome as SagaOutcome, Saga};
use serde::{Deserialize, Serialize};
use site::{Placement, SiteTask};
use store::Task;
use worker::{Outcome, TaskLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Migrate,
    Clone,
}

pub const BEFORE_MIGRATE: &str = "Generated before being migrated";
pub const BEFORE_CLONE: &str = "Generated before being cloned";

/// Where the site was when the task began, kept in the task's secrets (it holds the old
/// database password), so a resumed task knows it even after the record was switched.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Origin {
    platform: PlatformId,
    domain: DomainName,
    db_server: ServerId,
    db_name: DbIdent,
    db_user: DbIdent,
    password: DbPassword,
}

impl Origin {
    fn placement(&self) -> Placement {
        Placement {
            platform: self.platform,
            domain: self.domain.clone(),
            db_server: self.db_server,
            db_name: self.db_name.clone(),
            db_user: self.db_user.clone(),
        }
    }
}

struct MoveSaga<'a> {
    m: &'a Migrator,
    task: &'a Task,
    log: &'a TaskLog,
    mode: Mode,
    /// The site migrated, or the original of a clone.
    site: SiteId,
    origin: Origin,
    /// The site as it will be: the same site on its target (migrate), or the new site.
    target_site: SiteId,
    target: Placement,
    target_password: DbPassword,
    /// Packages enabled on the site that the target lacks: the task ends as a warning that
    /// names them (the reference's warning case).
    missing: Vec<String>,
}

/// A migrate's or clone's arguments.
fn move_args(task: &Task) -> anyhow::Result<contract::MoveArgs> {
    match task.parsed_args()? {
        contract::TaskArgs::Move(a) => Ok(a),
        other => anyhow::bail!("a {} task with arguments {other:?}", task.task_type),
    }
}

pub async fn run(m: &Migrator, task: &Task, log: &TaskLog, mode: Mode) -> Outcome {
    let saga = match prepare(m, task, log, mode).await {
        Ok(s) => s,
        Err(e) => {
            if mode == Mode::Clone {
                discard_clone_record(m, task).await;
            }
            return Outcome::Error(format!("{e:#}; nothing was changed"));
        }
    };
    match saga::run(&m.store, task.id, &saga, &m.faults).await {
        Ok(SagaOutcome::Completed) => {
            // The deploy's mark lets its undo remove what it made; with nothing left to undo
            // it goes (a migrate's cleanup does the same).
            if let Ok(dest) = saga.destination().await {
                let _ = saga.clear_deploy_mark(&dest).await;
            }
            if !saga.missing.is_empty() {
                let why = format!(
                    "done, but the target platform lacks {} that the site had enabled: {}",
                    if saga.missing.len() == 1 {
                        "a package"
                    } else {
                        "packages"
                    },
                    saga.missing.join(", ")
                );
                log.warn(why.clone()).await;
                return Outcome::Warning(why);
            }
            Outcome::Success(Some(serde_json::json!({
                "site": saga.target_site,
                "platform": saga.target.platform,
                "domain": saga.target.domain,
            })))
        }
        Ok(SagaOutcome::Unwound { error }) => match mode {
            Mode::Migrate => Outcome::Error(format!(
                "{error}; the site was put back on its original platform and serves as before"
            )),
            Mode::Clone => {
                discard_clone_record(m, task).await;
                Outcome::Error(format!(
                    "{error}; everything the clone had made was removed, the original is untouched"
                ))
            }
        },
        Ok(SagaOutcome::UnwindFailed { error, undo_error }) => {
            Outcome::Error(format!("{error}; then {undo_error}"))
        }
        Err(e) => Outcome::Error(format!("the task could not record its progress: {e:#}")),
    }
}

/// A clone that did not happen leaves no site: its record (which reserved the domain) is
/// marked deleted, so the domain is free again and the history stays.
async fn discard_clone_record(m: &Migrator, task: &Task) {
    if let Ok(contract::MoveArgs {
        clone_site: Some(id),
        ..
    }) = move_args(task)
    {
        if let Ok(s) = m.store.site(id).await {
            if s.status == SiteStatus::Installing {
                let _ = m.store.set_site_status(id, SiteStatus::Deleted).await;
            }
        }
    }
}

async fn prepare<'a>(
    m: &'a Migrator,
    task: &'a Task,
    log: &'a TaskLog,
    mode: Mode,
) -> anyhow::Result<MoveSaga<'a>> {
    let site_id = task
        .site
        .context("a migrate or clone task without a site")?;
    let site = m.store.site(site_id).await?;
    let st = SiteTask::load(&m.store, site_id).await?;
    let current = Origin {
        platform: site.platform_id,
        domain: site.domain.clone(),
        db_server: site.db_server_id,
        db_name: site.db_name.clone(),
        db_user: site.db_user.clone(),
        password: st.password(&m.store).await?,
    };
    let stored = m
        .store
        .ensure_task_secret(task.id, "origin", &serde_json::to_string(&current)?)
        .await?;
    let origin: Origin = serde_json::from_str(&stored).context("the task's recorded origin")?;
    // Taken up again after a crash: the saga's stored progress decides what happens next,
    // not the site's state, which the task itself changed.
    let resumed = !m.store.saga_events(task.id).await?.is_empty();
    if !resumed && site.status != SiteStatus::Enabled {
        bail!(
            "only an enabled site can be moved; this one is {}",
            site.status
        );
    }
    let args = move_args(task)?;
    let platform = args.platform;
    let db_server = args.db_server.unwrap_or(origin.db_server);
    let (target_site, target, target_password) = match mode {
        Mode::Migrate => {
            let domain = args.domain.clone().unwrap_or_else(|| origin.domain.clone());
            // On the same db server the migrated database is prepared beside the site's as
            // `<base>_m<task>` (names do not grow with every migrate); on another one it has the
            // site's own name from the start.
            let db_name = if db_server == origin.db_server {
                origin.db_name.for_task('m', task.id.0)?
            } else {
                origin.db_name.clone()
            };
            let target = Placement {
                platform,
                domain,
                db_server,
                db_user: db_name.clone(),
                db_name,
            };
            let password = DbPassword::parse(
                &m.store
                    .ensure_task_secret(
                        task.id,
                        DEPLOY_PASSWORD_SECRET,
                        DbPassword::generate().expose(),
                    )
                    .await?,
            )?;
            (site_id, target, password)
        }
        Mode::Clone => {
            let new = args
                .clone_site
                .context("the clone task names no site for the clone")?;
            let record = m.store.site(new).await?;
            if !resumed && record.status != SiteStatus::Installing {
                bail!(
                    "the clone's site {} is {}, not being made",
                    record.domain,
                    record.status
                );
            }
            // A clone is a cell of its own: it gets an application secret of its own (made
            // when its record is first read), so that whoever holds the copy cannot forge the
            // original's cookies or reset links.
            let password = m
                .store
                .ensure_db_password(new, &DbPassword::generate())
                .await?;
            let password = DbPassword::parse(
                &m.store
                    .ensure_task_secret(task.id, DEPLOY_PASSWORD_SECRET, password.expose())
                    .await?,
            )?;
            let target = Placement {
                platform: record.platform_id,
                domain: record.domain.clone(),
                db_server: record.db_server_id,
                db_name: record.db_name.clone(),
                db_user: record.db_user.clone(),
            };
            (new, target, password)
        }
    };
    let saga = MoveSaga {
        m,
        task,
        log,
        mode,
        site: site_id,
        origin,
        target_site,
        target,
        target_password,
        missing: Vec::new(),
    };
    let mut saga = saga;
    let (source, dest) = (saga.source().await?, saga.staged().await?);
    if source.site_dir == dest.site_dir {
        bail!(
            "the target is the site's own directory {}: move it to another platform or domain",
            source.site_dir
        );
    }
    if !resumed {
        // The registry may have changed since the request: check the packages again.
        let targets = m.store.migrate_targets(&site).await?;
        match targets.iter().find(|(p, _)| p.id == dest.platform.id) {
            Some((_, check)) if !check.selectable => match &check.reason {
                Some(reason) => bail!("{reason}"),
                None => bail!(
                    "platform {} would downgrade the site: {}",
                    dest.platform.name,
                    check.errors()
                ),
            },
            Some((_, check)) => {
                saga.missing = check
                    .packages
                    .iter()
                    .filter(|p| p.status == domain::package_check::PackageStatus::Warning)
                    .map(|p| p.name.clone())
                    .collect();
            }
            None => bail!(
                "platform {} is not enabled or does not offer the profile {}",
                dest.platform.name,
                site.profile
            ),
        }
        log.info(format!(
            "{} {} from {} ({}) to {} ({}) on {}",
            if mode == Mode::Migrate {
                "migrating"
            } else {
                "cloning"
            },
            source.site.domain,
            source.platform.name,
            source.site_dir,
            dest.platform.name,
            dest.site_dir,
            dest.site.domain,
        ))
        .await;
    }
    Ok(saga)
}

impl MoveSaga<'_> {
    /// The site where it was.
    async fn source(&self) -> anyhow::Result<SiteTask> {
        SiteTask::load_as(&self.m.store, self.site, &self.origin.placement()).await
    }

    /// The site where it is prepared: the target platform, with the database the backup was
    /// imported into (what the database updates, fix paths and cache clearing run on).
    async fn staged(&self) -> anyhow::Result<SiteTask> {
        SiteTask::load_as(&self.m.store, self.target_site, &self.target).await
    }

    /// The site where it ends up (from the switch on).
    async fn destination(&self) -> anyhow::Result<SiteTask> {
        let (placement, _) = self.final_placement().await?;
        SiteTask::load_as(&self.m.store, self.target_site, &placement).await
    }

    /// How the prepared database takes the site's place: decided once, in the tables-aside
    /// step, from both databases as they are after the updates, and kept in the task's
    /// secrets. Only a migrate on the same db server moves tables; a clone is a new site, and
    /// on another db server the new database has the site's name already.
    async fn db_placement(&self) -> anyhow::Result<site::DbPlacement> {
        if !self.may_move_tables() {
            return Ok(site::DbPlacement::Repoint);
        }
        // Until it is decided the site's database is the prepared one, as with `repoint`.
        match self
            .m
            .store
            .task_secret(self.task.id, "db-placement")
            .await?
        {
            Some(s) => site::DbPlacement::parse(&s),
            None => Ok(site::DbPlacement::Repoint),
        }
    }

    fn may_move_tables(&self) -> bool {
        self.mode == Mode::Migrate && self.target.db_server == self.origin.db_server
    }

    /// Decides the placement (once: a re-run keeps the first decision).
    async fn decide_db_placement(&self) -> anyhow::Result<site::DbPlacement> {
        if !self.may_move_tables() {
            return Ok(site::DbPlacement::Repoint);
        }
        if self
            .m
            .store
            .task_secret(self.task.id, "db-placement")
            .await?
            .is_none()
        {
            let source = self.source().await?;
            let found = site::DbPlacement::for_databases(
                &self.m.rpc,
                &source.site.db_server,
                &[self.origin.db_name.clone(), self.target.db_name.clone()],
                self.m.settings.rpc_timeout,
            )
            .await?;
            self.m
                .store
                .ensure_task_secret(self.task.id, "db-placement", found.as_str())
                .await?;
        }
        self.db_placement().await
    }

    /// The placement the record ends with, and its database password: with `move-tables`
    /// the site's own database, user and password on the target platform and domain.
    async fn final_placement(&self) -> anyhow::Result<(Placement, DbPassword)> {
        Ok(match self.db_placement().await? {
            site::DbPlacement::MoveTables => (
                Placement {
                    db_name: self.origin.db_name.clone(),
                    db_user: self.origin.db_user.clone(),
                    ..self.target.clone()
                },
                self.origin.password.clone(),
            ),
            site::DbPlacement::Repoint => (self.target.clone(), self.target_password.clone()),
        })
    }

    /// Where the site's own tables wait (`move-tables`) until the migrate has succeeded.
    fn aside_db(&self) -> anyhow::Result<DbIdent> {
        Ok(self.origin.db_name.for_task('p', self.task.id.0)?)
    }

    async fn move_tables(&self, from: &DbIdent, to: &DbIdent) -> anyhow::Result<bool> {
        let source = self.source().await?;
        site::move_tables(
            &self.m.rpc,
            &source.site.db_server,
            from,
            to,
            self.m.settings.rpc_timeout,
        )
        .await
    }

    async fn drop_database(
        &self,
        server: &domain::Name,
        name: &DbIdent,
        user: &DbIdent,
    ) -> anyhow::Result<()> {
        site::dbprov(
            &self.m.rpc,
            server,
            DbprovRequest::drop_database(name.clone(), user.clone()),
            self.m.settings.rpc_timeout,
        )
        .await?;
        Ok(())
    }

    fn renamed(&self) -> bool {
        self.target.domain != self.origin.domain
    }

    async fn action_on(
        &self,
        st: &SiteTask,
        password: &DbPassword,
        action: Action,
        previous: Option<PreviousSite>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let mut ctx = st.context(password.clone());
        ctx.previous = previous;
        let timeout = self.m.settings.action_timeout;
        site::run_declared_action(
            &self.m.rpc,
            &self.m.store,
            st,
            action,
            &ctx,
            timeout,
            self.log,
        )
        .await
    }

    /// The site directory's layout and its settings for `password`, by the web server's agent.
    async fn lay_out(&self, st: &SiteTask, password: DbPassword) -> anyhow::Result<()> {
        let (rpc, timeout) = (&self.m.rpc, self.m.settings.rpc_timeout);
        st.lay_out(rpc, false, timeout).await?;
        st.write_settings(rpc, &self.m.store, password, timeout)
            .await?;
        Ok(())
    }

    async fn backup(&self) -> anyhow::Result<BackupReply> {
        let description = match self.mode {
            Mode::Migrate => BEFORE_MIGRATE,
            Mode::Clone => BEFORE_CLONE,
        };
        site::make_backup(
            &self.m.rpc,
            BackupRequest::MakeBackup {
                site: self.site,
                task: self.task.id,
                description: description.to_owned(),
            },
            self.m.settings.backup_timeout,
        )
        .await
    }

    async fn backupper_deploy(&self, dest: &SiteTask, backup: i64) -> anyhow::Result<DeployReply> {
        site::deploy(
            &self.m.rpc,
            &dest.web_server,
            DeployRequest {
                task: self.task.id,
                backup,
                dest: dest.site_dir.clone(),
                db_server: dest.site.db_server.clone(),
                database: self.target.db_name.clone(),
                user: self.target.db_user.clone(),
                owner: Some(dest.site.system_user.clone()),
                web_server: None, // set by `site::deploy`
                owner_site: Some(dest.site.id),
            },
            self.m.settings.backup_timeout,
        )
        .await
    }

    async fn webconf(&self, st: &SiteTask, request: WebconfRequest) -> anyhow::Result<bool> {
        Ok(site::webconf(
            &self.m.rpc,
            &st.web_server,
            request,
            self.m.settings.rpc_timeout,
        )
        .await?
        .changed)
    }

    /// The deploy's mark lets its undo remove what it made; with nothing left to undo it goes.
    async fn clear_deploy_mark(&self, dest: &SiteTask) -> anyhow::Result<()> {
        self.webconf(
            dest,
            WebconfRequest::WriteMark {
                path: dest.site_dir.clone(),
                mark: contract::MarkKind::Deploy,
                content: None,
            },
        )
        .await?;
        Ok(())
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let (source, dest) = (self.source().await?, self.destination().await?);
        self.refresh_packages(&dest).await;
        let _ = self.clear_deploy_mark(&dest).await;
        // By the agent of the web server the site came from: only a directory that carries
        // this site's own mark goes.
        let removed = site::webconf(
            &self.m.rpc,
            &source.web_server,
            WebconfRequest::RemoveSiteDir {
                site: self.site,
                path: source.site_dir.clone(),
                unmarked_ok: false,
                deployed_by: None,
            },
            self.m.settings.rpc_timeout,
        )
        .await;
        match removed.map(|r| r.dir) {
            Ok(Some(contract::DirOutcome::Done)) => {
                self.log
                    .info(format!(
                        "old copy {} removed from {}",
                        source.site_dir, source.web_server
                    ))
                    .await
            }
            Ok(Some(contract::DirOutcome::NotOurs)) => {
                self.log
                    .warn(format!(
                        "{} carries another site's mark, or none; left alone",
                        source.site_dir
                    ))
                    .await
            }
            Ok(_) => {}
            Err(e) => {
                self.log
                    .warn(format!(
                        "could not remove the old copy {}: {e:#}",
                        source.site_dir
                    ))
                    .await
            }
        }
        // What held the old data: the tables set aside and the emptied import database (with
        // its user), or, repointed, the old database.
        let leftovers = match self.db_placement().await? {
            site::DbPlacement::MoveTables => vec![
                (self.aside_db()?, self.aside_db()?),
                (self.target.db_name.clone(), self.target.db_user.clone()),
            ],
            site::DbPlacement::Repoint => {
                vec![(self.origin.db_name.clone(), self.origin.db_user.clone())]
            }
        };
        for (db, user) in leftovers {
            match self.drop_database(&source.site.db_server, &db, &user).await {
                Ok(()) => {
                    self.log
                        .info(format!("old database {db} and its user dropped"))
                        .await
                }
                Err(e) => {
                    self.log
                        .warn(format!("could not drop the old database {db}: {e:#}"))
                        .await
                }
            }
        }
        Ok(())
    }

    async fn refresh_packages(&self, dest: &SiteTask) {
        let password = match self.final_placement().await {
            Ok((_, p)) => p,
            Err(e) => {
                return self
                    .log
                    .warn(format!("could not record the site's packages: {e:#}"))
                    .await
            }
        };
        let ctx = dest.context(password);
        let timeout = self.m.settings.action_timeout;
        let (rpc, store) = (&self.m.rpc, &self.m.store);
        if let Err(e) = site::record_packages(rpc, store, dest, &ctx, timeout, self.log).await {
            self.log
                .warn(format!("could not record the site's packages: {e:#}"))
                .await
        }
    }
}

impl Saga for MoveSaga<'_> {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::Migrate => "migrate",
            Mode::Clone => "clone",
        }
    }

    type Step = MoveStep;

    fn steps(&self) -> &'static [MoveStep] {
        match self.mode {
            Mode::Migrate => MoveStep::MIGRATE,
            Mode::Clone => MoveStep::CLONE,
        }
    }

    async fn action(&self, step: MoveStep) -> anyhow::Result<()> {
        match step {
            MoveStep::CloneUser => {
                let dest = self.destination().await?;
                let (uid, _) =
                    site::ensure_site_user(&self.m.rpc, &dest, self.m.settings.rpc_timeout).await?;
                self.log
                    .info(format!(
                        "system user {} (uid {uid}) for {} on {}",
                        dest.site.system_user, dest.site.domain, dest.web_server
                    ))
                    .await;
            }
            MoveStep::ServeCheck => {
                let dest = self.destination().await?;
                let status = dest.check_serves(self.m.settings.rpc_timeout).await?;
                self.log
                    .info(format!(
                        "{} answers {status} from {}",
                        dest.site.domain, dest.platform.name
                    ))
                    .await;
            }
            MoveStep::MaintenanceOn => {
                let source = self.source().await?;
                self.action_on(&source, &self.origin.password, Action::MaintenanceOn, None)
                    .await?;
            }
            MoveStep::Backup => {
                let b = self.backup().await?;
                self.log
                    .info(format!("backup {} made ({} bytes)", b.backup, b.size))
                    .await;
            }
            MoveStep::Database => {
                let dest = self.staged().await?;
                site::create_database(
                    &self.m.rpc,
                    &self.m.store,
                    dest.site.db_server_id,
                    &self.target.db_name,
                    &self.target.db_user,
                    &self.target_password,
                    self.m.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!(
                        "database {} and user {} ready on {}",
                        self.target.db_name, self.target.db_user, dest.site.db_server
                    ))
                    .await;
            }
            MoveStep::Deploy => {
                // The backup step's archive: asking again answers with the same backup.
                let backup = self.backup().await?;
                let dest = self.staged().await?;
                // A site made before sites had users of their own gets one now.
                site::ensure_site_user(&self.m.rpc, &dest, self.m.settings.rpc_timeout).await?;
                let _: DeployReply = self.backupper_deploy(&dest, backup.backup).await?;
                if self.mode == Mode::Clone {
                    // The copy is a site of its own now.
                    self.webconf(
                        &dest,
                        WebconfRequest::WriteMark {
                            path: dest.site_dir.clone(),
                            mark: contract::MarkKind::Site,
                            content: Some(site::site_mark(self.target_site)),
                        },
                    )
                    .await?;
                }
                // Settings for the copy's own database before any action runs on it.
                self.lay_out(&dest, self.target_password.clone()).await?;
            }
            MoveStep::UpdateDb => {
                let dest = self.staged().await?;
                if let Some(r) = self
                    .action_on(&dest, &self.target_password, Action::UpdateDb, None)
                    .await?
                {
                    self.log.info(format!("database updates: {r}")).await;
                }
            }
            MoveStep::FixPaths => {
                let (source, dest) = (self.source().await?, self.staged().await?);
                let previous = PreviousSite {
                    domain: source.site.domain.clone(),
                    url: source.url.clone(),
                    site_dir: source.site_dir.clone(),
                };
                self.action_on(
                    &dest,
                    &self.target_password,
                    Action::FixPaths,
                    Some(previous),
                )
                .await?;
            }
            MoveStep::ClearCache => {
                let dest = self.staged().await?;
                self.action_on(&dest, &self.target_password, Action::ClearCache, None)
                    .await?;
            }
            MoveStep::TablesAside => {
                if self.decide_db_placement().await? == site::DbPlacement::MoveTables {
                    let aside = self.aside_db()?;
                    self.move_tables(&self.origin.db_name, &aside).await?;
                    self.log
                        .info(format!("the site's tables wait in {aside}"))
                        .await;
                } else if self.may_move_tables() {
                    self.log
                        .info(format!(
                            "the database has views, triggers, routines or foreign keys: the site will use {}",
                            self.target.db_name
                        ))
                        .await;
                }
            }
            MoveStep::TablesIn => {
                if self.db_placement().await? == site::DbPlacement::MoveTables {
                    self.move_tables(&self.target.db_name, &self.origin.db_name)
                        .await?;
                    self.log
                        .info(format!(
                            "the migrated tables are in {}, which keeps its name, user and password",
                            self.origin.db_name
                        ))
                        .await;
                }
            }
            MoveStep::Switch => {
                let dest = self.destination().await?;
                let (placement, password) = self.final_placement().await?;
                self.lay_out(&dest, password.clone()).await?;
                self.webconf(&dest, WebconfRequest::WriteVhost(Box::new(dest.vhost()?)))
                    .await?;
                match self.mode {
                    Mode::Migrate => {
                        self.m
                            .store
                            .set_site_location(
                                self.site,
                                placement.platform,
                                &placement.domain,
                                placement.db_server,
                                &placement.db_name,
                                &placement.db_user,
                                &password,
                            )
                            .await?;
                        let source = self.source().await?;
                        let moved_host = source.web_server != dest.web_server;
                        if self.renamed() || moved_host {
                            // The old address, or the old web server, serves it no more.
                            self.webconf(
                                &source,
                                WebconfRequest::RemoveVhost {
                                    domain: self.origin.domain.clone(),
                                },
                            )
                            .await?;
                        }
                        if self.renamed() {
                            // Open login links lead to the old address.
                            self.m.store.supersede_login_links(self.site).await?;
                            self.log
                                .info(format!("{} no longer serves the site", self.origin.domain))
                                .await;
                        }
                        if moved_host {
                            self.log
                                .info(format!(
                                    "{} no longer serves the site; {} does",
                                    source.web_server, dest.web_server
                                ))
                                .await;
                        }
                    }
                    Mode::Clone => {
                        self.m
                            .store
                            .set_site_status(self.target_site, SiteStatus::Enabled)
                            .await?;
                        self.refresh_packages(&dest).await;
                    }
                }
                self.log
                    .info(format!(
                        "{} serves from {} ({})",
                        dest.site.domain, dest.platform.name, dest.site_dir
                    ))
                    .await;
            }
            MoveStep::MaintenanceOff => {
                let dest = self.destination().await?;
                let (_, password) = self.final_placement().await?;
                self.action_on(&dest, &password, Action::MaintenanceOff, None)
                    .await?;
            }
            // Never fails: the site serves from the target already, so what cannot be
            // removed is logged, and an unwind from here would be worse than leftovers.
            MoveStep::Cleanup => {
                if let Err(e) = self.cleanup().await {
                    self.log
                        .warn(format!("the old copy was not fully removed: {e:#}"))
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn undo(&self, step: MoveStep) -> anyhow::Result<()> {
        match step {
            MoveStep::CloneUser => {
                let dest = self.destination().await?;
                site::remove_site_user(&self.m.rpc, &dest, self.m.settings.rpc_timeout).await?;
                self.log
                    .info(format!("system user {} removed", dest.site.system_user))
                    .await;
            }
            MoveStep::MaintenanceOn => {
                let source = self.source().await?;
                self.action_on(&source, &self.origin.password, Action::MaintenanceOff, None)
                    .await?;
            }
            MoveStep::TablesIn => {
                if self.db_placement().await? == site::DbPlacement::MoveTables {
                    self.move_tables(&self.origin.db_name, &self.target.db_name)
                        .await?;
                }
            }
            MoveStep::TablesAside => {
                if self.db_placement().await? != site::DbPlacement::MoveTables {
                    return Ok(());
                }
                let aside = self.aside_db()?;
                self.move_tables(&aside, &self.origin.db_name).await?;
                let source = self.source().await?;
                // Only if the move back left nothing there: what is still in it is kept.
                site::dbprov(
                    &self.m.rpc,
                    &source.site.db_server,
                    DbprovRequest::drop_empty_database(aside.clone(), aside.clone()),
                    self.m.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!(
                        "the site's own tables are back in {}",
                        self.origin.db_name
                    ))
                    .await;
            }
            MoveStep::Database => {
                let dest = self.staged().await?;
                site::dbprov(
                    &self.m.rpc,
                    &dest.site.db_server,
                    DbprovRequest::drop_database(
                        self.target.db_name.clone(),
                        self.target.db_user.clone(),
                    ),
                    self.m.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!("database {} dropped", self.target.db_name))
                    .await;
            }
            MoveStep::Deploy => {
                let dest = self.staged().await?;
                let staging = site::beside(dest.site_dir.as_path(), "deploy", self.task.id);
                let staging = domain::HostPath::parse(&staging.to_string_lossy())
                    .map_err(|e| anyhow::anyhow!("the staging directory: {e}"))?;
                // By the agent of the web server it was deployed onto: only what this task
                // deployed (its deploy mark) goes.
                // The staging directory is named by this task (it holds the site's files,
                // not yet the deploy's mark); the deployed one goes only with that mark.
                let removals = [
                    (staging, true, None),
                    (dest.site_dir.clone(), false, Some(self.task.id)),
                ];
                for (path, unmarked_ok, deployed_by) in removals {
                    let request = WebconfRequest::RemoveSiteDir {
                        site: self.site,
                        path: path.clone(),
                        unmarked_ok,
                        deployed_by,
                    };
                    let reply = site::webconf(
                        &self.m.rpc,
                        &dest.web_server,
                        request,
                        self.m.settings.rpc_timeout,
                    )
                    .await?;
                    if reply.dir == Some(contract::DirOutcome::Done) {
                        self.log.info(format!("deployed copy {path} removed")).await;
                    }
                }
            }
            MoveStep::Switch => {
                let (source, dest) = (self.source().await?, self.destination().await?);
                match self.mode {
                    Mode::Migrate => {
                        self.m
                            .store
                            .set_site_location(
                                self.site,
                                self.origin.platform,
                                &self.origin.domain,
                                self.origin.db_server,
                                &self.origin.db_name,
                                &self.origin.db_user,
                                &self.origin.password,
                            )
                            .await?;
                        if self.renamed() || source.web_server != dest.web_server {
                            self.webconf(
                                &dest,
                                WebconfRequest::RemoveVhost {
                                    domain: self.target.domain.clone(),
                                },
                            )
                            .await?;
                        }
                        // The original vhost, root and credentials again (for the same
                        // domain on the same web server this replaces the target's vhost).
                        source
                            .write_settings(
                                &self.m.rpc,
                                &self.m.store,
                                self.origin.password.clone(),
                                self.m.settings.rpc_timeout,
                            )
                            .await?;
                        self.webconf(
                            &source,
                            WebconfRequest::WriteVhost(Box::new(source.vhost()?)),
                        )
                        .await?;
                        self.log
                            .info(format!(
                                "{} serves from {} again",
                                source.site.domain, source.platform.name
                            ))
                            .await;
                    }
                    Mode::Clone => {
                        self.webconf(
                            &dest,
                            WebconfRequest::RemoveVhost {
                                domain: self.target.domain.clone(),
                            },
                        )
                        .await?;
                        self.m
                            .store
                            .set_site_status(self.target_site, SiteStatus::Installing)
                            .await?;
                    }
                }
            }
            // Nothing to undo (see `MoveStep`).
            MoveStep::Backup
            | MoveStep::UpdateDb
            | MoveStep::FixPaths
            | MoveStep::ClearCache
            | MoveStep::MaintenanceOff
            | MoveStep::ServeCheck
            | MoveStep::Cleanup => {}
        }
        Ok(())
    }
}

//! Delete, the reference's "deletion process", as a saga; and force delete, which replaces
//! the reference's twelve manual steps for a half-installed or broken site.
//!
//! The reference drops the database first. Here the steps that can be put back come first
//! (the vhost, then the site directory, moved aside rather than removed), and the database
//! is dropped last: if anything fails before that point, the unwind puts the vhost and the
//! directory back and the site serves as before. Only after the database is gone is the
//! moved-aside directory removed and the site recorded as deleted.
//!
//! Force mode (`{"force": true}`, and always for a site that never finished installing)
//! removes whatever still exists, in any combination, and does not stop at what is missing:
//! a backup that cannot be made, a directory or vhost that is gone, a database already
//! dropped. Running it again is harmless.

use crate::Installer;
use anyhow::bail;
use contract::steps::{DeleteStep, SagaStep};
use contract::{DbprovRequest, DirOutcome, WebconfRequest};
use domain::{SiteStatus, TaskType};
use saga::{Outcome as SagaOutcome, Saga};
use site::{SiteTask, SITE_MARK};
use store::{NewTask, Task};
use worker::{Outcome, TaskLog};

pub const BEFORE_DELETE: &str = "Pre-delete backup";

struct DeleteSaga<'a> {
    inst: &'a Installer,
    st: SiteTask,
    task: &'a Task,
    log: &'a TaskLog,
    force: bool,
    /// Another live site uses this (deleted) site's domain: its vhost and directory are that
    /// site's now and are left alone.
    domain_reused: bool,
    /// Where the site directory waits while the database is dropped.
    aside: domain::HostPath,
}

pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    let Some(site_id) = task.site else {
        return Outcome::Error("a delete task without a site".into());
    };
    let st = match SiteTask::load(&inst.store, site_id).await {
        Ok(st) => st,
        Err(e) => return Outcome::Error(format!("{e:#}")),
    };
    let asked_force = match task.parsed_args() {
        Ok(contract::TaskArgs::Delete(a)) => a.force,
        Ok(_) => false,
        // Unreadable arguments could have asked for force: nothing is done rather than less.
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let force = asked_force
        || matches!(
            st.site.status,
            SiteStatus::Installing | SiteStatus::Failed | SiteStatus::Deleted
        );
    if force && !asked_force {
        log.info(format!(
            "the site is {}: removing whatever of it still exists (force)",
            st.site.status
        ))
        .await;
    }
    if !force && !matches!(st.site.status, SiteStatus::Enabled | SiteStatus::Disabled) {
        return Outcome::Error(format!("a {} site cannot be deleted", st.site.status));
    }
    let domain_reused = match inst
        .store
        .sites(&store::SiteFilter {
            domain: Some(st.site.domain.clone()),
            ..Default::default()
        })
        .await
    {
        Ok(sites) => sites
            .iter()
            .any(|s| s.id != st.site.id && s.status != SiteStatus::Deleted),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let aside = match domain::HostPath::parse(
        &site::beside(st.site_dir.as_path(), "deleting", task.id).to_string_lossy(),
    ) {
        Ok(p) => p,
        Err(e) => return Outcome::Error(format!("the site directory's aside path: {e}")),
    };
    let saga = DeleteSaga {
        inst,
        st,
        task,
        log,
        force,
        domain_reused,
        aside,
    };
    match saga::run(&inst.store, task.id, &saga, &inst.faults).await {
        Ok(SagaOutcome::Completed) => {
            let domain = &saga.st.site.domain;
            Outcome::Success(Some(serde_json::json!({
                "deleted": domain,
                "force": force,
            })))
        }
        Ok(SagaOutcome::Unwound { error }) => {
            if saga.past_no_return().await {
                Outcome::Error(format!(
                    "{error}; the database drop had begun, so the site cannot be put back: \
                     run delete again with {{\"force\": true}} to finish"
                ))
            } else {
                Outcome::Error(format!(
                    "{error}; the site was put back as it was and still serves"
                ))
            }
        }
        Ok(SagaOutcome::UnwindFailed { error, undo_error }) => Outcome::Error(format!(
            "{error}; then {undo_error}: run delete with {{\"force\": true}} to remove what is left"
        )),
        Err(e) => Outcome::Error(format!("the delete could not record its progress: {e:#}")),
    }
}

impl DeleteSaga<'_> {
    /// Whether the database drop was begun. Its reply may have been lost after the drop, so
    /// from then on nothing is put back: a vhost and directory without their database would
    /// be a broken site, and a force delete finishes the job instead.
    async fn past_no_return(&self) -> bool {
        self.inst
            .store
            .saga_events(self.task.id)
            .await
            .map(|events| {
                events
                    .iter()
                    .any(|(step, event, _)| step == "database" && event == "started")
            })
            // Unknown: assume the worst, which leaves the site for a force delete rather
            // than half put back.
            .unwrap_or(true)
    }

    async fn webconf(&self, request: WebconfRequest) -> anyhow::Result<contract::WebconfReply> {
        site::webconf(
            &self.inst.rpc,
            &self.st.web_server,
            request,
            self.inst.settings.rpc_timeout,
        )
        .await
    }

    async fn warn_or_fail(&self, e: anyhow::Error, what: &str) -> anyhow::Result<()> {
        if self.force {
            self.log
                .warn(format!("{what}: {e:#} (force: going on)"))
                .await;
            Ok(())
        } else {
            Err(e.context(what.to_owned()))
        }
    }
}

impl Saga for DeleteSaga<'_> {
    fn name(&self) -> &'static str {
        "delete"
    }

    type Step = DeleteStep;

    fn steps(&self) -> &'static [DeleteStep] {
        DeleteStep::ALL
    }

    async fn action(&self, step: DeleteStep) -> anyhow::Result<()> {
        let site = &self.st.site;
        match step {
            DeleteStep::Backup => {
                if site.status == SiteStatus::Deleted {
                    self.log
                        .info("the site was deleted before; no backup to make")
                        .await;
                    return Ok(());
                }
                match crate::lifecycle::backup_first(
                    self.inst,
                    &self.st,
                    self.task,
                    BEFORE_DELETE,
                    self.log,
                )
                .await
                {
                    Ok(b) => {
                        self.log
                            .info(format!("backup {} made ({} bytes)", b.backup, b.size))
                            .await
                    }
                    Err(e) => self.warn_or_fail(e, "the pre-delete backup").await?,
                }
            }
            DeleteStep::Vhost => {
                if self.domain_reused {
                    self.log
                        .info(format!(
                            "{} belongs to another site now: its vhost is left alone",
                            site.domain
                        ))
                        .await;
                    return Ok(());
                }
                let reply = site::webconf(
                    &self.inst.rpc,
                    &self.st.web_server,
                    WebconfRequest::RemoveVhost {
                        domain: site.domain.clone(),
                    },
                    self.inst.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(if reply.changed {
                        "vhost removed, nginx reloaded"
                    } else {
                        "no vhost was there"
                    })
                    .await;
            }
            DeleteStep::SiteDirectory => {
                if self.domain_reused {
                    return Ok(());
                }
                // By the web server's agent: a directory that carries this site's mark (or,
                // in force mode, none) is renamed beside itself; one already moved aside by
                // an interrupted run stays there.
                let reply = self
                    .webconf(WebconfRequest::MoveSiteDir {
                        site: site.id,
                        from: self.st.site_dir.clone(),
                        to: self.aside.clone(),
                        unmarked_ok: self.force,
                        deployed_by: None,
                    })
                    .await?;
                let dir = &self.st.site_dir;
                match reply.dir {
                    Some(DirOutcome::Done) => {
                        self.log
                            .info(format!(
                                "site directory moved aside until the database is dropped: {}",
                                self.aside
                            ))
                            .await
                    }
                    Some(DirOutcome::TargetExists) => {}
                    Some(DirOutcome::Missing) if self.force => {
                        self.log.info(format!("no site directory at {dir}")).await
                    }
                    Some(DirOutcome::Missing) => bail!(
                        "the site directory {dir} is missing; delete with {{\"force\": true}} \
                         removes what is left"
                    ),
                    Some(DirOutcome::NotOurs) | None => {
                        let e = anyhow::anyhow!(
                            "{dir} carries another site's mark ({SITE_MARK}) or none; it is left \
                             alone, remove it by hand if it is this site's"
                        );
                        return self.warn_or_fail(e, "the site directory").await;
                    }
                }
            }
            DeleteStep::Database => {
                site::dbprov(
                    &self.inst.rpc,
                    &site.db_server,
                    DbprovRequest::drop_database(site.db_name.clone(), site.db_user.clone()),
                    self.inst.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!(
                        "database {} dropped and user {} removed on {}",
                        site.db_name, site.db_user, site.db_server
                    ))
                    .await;
            }
            DeleteStep::SystemUser => {
                // The directory goes first: the user goes only once nothing of it owns files
                // here any more.
                let removed = self
                    .webconf(WebconfRequest::RemoveSiteDir {
                        site: site.id,
                        path: self.aside.clone(),
                        unmarked_ok: self.force,
                        deployed_by: None,
                    })
                    .await;
                match removed.map(|r| r.dir) {
                    Ok(Some(DirOutcome::Done)) => self.log.info("site directory removed").await,
                    Ok(Some(DirOutcome::Missing)) => {}
                    Ok(_) => {
                        let e = anyhow::anyhow!(
                            "{} no longer carries this site's mark; it is left alone",
                            self.aside
                        );
                        self.warn_or_fail(e, "the site directory").await?
                    }
                    Err(e) => self.warn_or_fail(e, "the site directory").await?,
                }
                // The user is the site's by its id, not its domain: it goes even when another
                // site took the domain over.
                match site::remove_site_user(
                    &self.inst.rpc,
                    &self.st,
                    self.inst.settings.rpc_timeout,
                )
                .await
                {
                    Ok(true) => {
                        self.log
                            .info(format!(
                                "PHP pool and system user {} removed",
                                site.system_user
                            ))
                            .await
                    }
                    Ok(false) => {
                        self.log
                            .info(format!("no system user {} was there", site.system_user))
                            .await
                    }
                    Err(e) => self.warn_or_fail(e, "removing the system user").await?,
                }
            }
            DeleteStep::Finish => {
                self.inst
                    .store
                    .set_site_status(site.id, SiteStatus::Deleted)
                    .await?;
                self.inst.store.supersede_login_links(site.id).await?;
                if self
                    .inst
                    .setting_bool("delete_backups_with_site", false)
                    .await
                {
                    let backups: Vec<domain::BackupId> = self
                        .inst
                        .store
                        .backups(site.id)
                        .await?
                        .iter()
                        .map(|b| b.id)
                        .collect();
                    if !backups.is_empty() {
                        let mut purge = NewTask::for_site(
                            TaskType::BackupDelete,
                            site.id,
                            contract::TaskArgs::BackupDelete(contract::BackupDeleteArgs {
                                backups: backups.clone(),
                            }),
                            &self.task.requested_by,
                        );
                        purge.parent = Some(self.task.id);
                        let t = self.inst.store.create_task(&purge).await?;
                        self.log
                            .info(format!(
                                "the setting delete_backups_with_site is on: task {} removes the site's {} backups",
                                t.id,
                                backups.len()
                            ))
                            .await;
                    }
                } else {
                    self.log
                        .info("the site's backups are kept (setting delete_backups_with_site)")
                        .await;
                }
                self.log
                    .info(format!(
                        "{} is deleted; its record and task history stay, its domain is free",
                        site.domain
                    ))
                    .await;
            }
        }
        Ok(())
    }

    async fn undo(&self, step: DeleteStep) -> anyhow::Result<()> {
        if matches!(step, DeleteStep::Vhost | DeleteStep::SiteDirectory)
            && self.past_no_return().await
        {
            self.log
                .warn(format!(
                    "not undoing '{}': the database drop had begun; a force delete finishes",
                    step.name()
                ))
                .await;
            return Ok(());
        }
        match step {
            DeleteStep::Vhost => {
                // Only a site that was serving gets its vhost back; a half-installed one
                // is not brought to life by an unwind.
                if self.domain_reused
                    || !matches!(
                        self.st.site.status,
                        SiteStatus::Enabled | SiteStatus::Disabled
                    )
                {
                    return Ok(());
                }
                let vhost = self.st.vhost_for_status(&self.inst.settings.public_url)?;
                site::webconf(
                    &self.inst.rpc,
                    &self.st.web_server,
                    WebconfRequest::WriteVhost(Box::new(vhost)),
                    self.inst.settings.rpc_timeout,
                )
                .await?;
                self.log.info("vhost written back, nginx reloaded").await;
            }
            DeleteStep::SiteDirectory => {
                // Back only where nothing took its place meanwhile.
                let reply = self
                    .webconf(WebconfRequest::MoveSiteDir {
                        site: self.st.site.id,
                        from: self.aside.clone(),
                        to: self.st.site_dir.clone(),
                        unmarked_ok: true,
                        deployed_by: None,
                    })
                    .await?;
                if reply.dir == Some(DirOutcome::Done) {
                    self.log.info("site directory moved back").await;
                }
            }
            // Nothing to undo (see `DeleteStep`).
            DeleteStep::Backup
            | DeleteStep::Database
            | DeleteStep::SystemUser
            | DeleteStep::Finish => {}
        }
        Ok(())
    }
}

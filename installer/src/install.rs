//! Install, as in the reference's "Installing the site": the site's own unix user, a database
//! and user, the site directory with its settings, the platform's install action (as the
//! site's user), the vhost and the site's PHP pool, a request to the site through them, and
//! the site enabled with its one-time login link. A saga: a failure undoes what was made.

use crate::Installer;
use contract::steps::InstallStep;
use contract::{DbprovReply, DbprovRequest, WebconfReply, WebconfRequest};
use domain::{DbPassword, SiteStatus};
use platform::Action;
use saga::{Outcome as SagaOutcome, Saga};
use site::SiteTask;
use store::Task;
use worker::{Outcome, TaskLog};

struct InstallSaga<'a> {
    inst: &'a Installer,
    st: SiteTask,
    log: &'a TaskLog,
    task: &'a Task,
}

pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    let Some(site_id) = task.site else {
        return Outcome::Error("an install task without a site".into());
    };
    let st = match SiteTask::load(&inst.store, site_id).await {
        Ok(st) => st,
        Err(e) => {
            let _ = inst
                .store
                .set_site_status(site_id, SiteStatus::Failed)
                .await;
            return Outcome::Error(format!("{e:#}"));
        }
    };
    if st.site.status != SiteStatus::Installing {
        return Outcome::Error(format!(
            "the site is {}, not installing; nothing was changed",
            st.site.status
        ));
    }
    let saga = InstallSaga {
        inst,
        st,
        log,
        task,
    };
    match saga::run(&inst.store, task.id, &saga, &inst.faults).await {
        Ok(SagaOutcome::Completed) => {
            let link = inst
                .store
                .site(site_id)
                .await
                .ok()
                .and_then(|s| s.login_link)
                .map(|l| contract::login_url(&inst.settings.public_url, &l.token));
            // The link itself lives in the site's record, not in the task's result.
            let result = serde_json::json!({ "site": site_id });
            match crate::welcome::send(inst, &saga.st, link.as_deref(), log).await {
                Ok(()) => Outcome::Success(Some(result)),
                Err(why) => Outcome::Warning(why),
            }
        }
        Ok(SagaOutcome::Unwound { error }) => {
            let _ = inst
                .store
                .set_site_status(site_id, SiteStatus::Failed)
                .await;
            Outcome::Error(format!(
                "{error}; everything the install had made was removed"
            ))
        }
        Ok(SagaOutcome::UnwindFailed { error, undo_error }) => {
            let _ = inst
                .store
                .set_site_status(site_id, SiteStatus::Failed)
                .await;
            Outcome::Error(format!(
                "{error}; then {undo_error}: a force delete removes what is left"
            ))
        }
        Err(e) => Outcome::Error(format!("the install could not record its progress: {e:#}")),
    }
}

impl InstallSaga<'_> {
    async fn password(&self) -> anyhow::Result<DbPassword> {
        Ok(self
            .inst
            .store
            .ensure_db_password(self.st.site.id, &DbPassword::generate())
            .await?)
    }

    async fn dbprov(&self, request: DbprovRequest) -> anyhow::Result<DbprovReply> {
        site::dbprov(
            &self.inst.rpc,
            &self.st.site.db_server,
            request,
            self.inst.settings.rpc_timeout,
        )
        .await
    }

    async fn webconf(&self, request: WebconfRequest) -> anyhow::Result<WebconfReply> {
        site::webconf(
            &self.inst.rpc,
            &self.st.web_server,
            request,
            self.inst.settings.rpc_timeout,
        )
        .await
    }

    /// Made (and marked as this site's) by the web server's agent, laid out, and given its
    /// settings. A directory that exists without this site's mark is refused.
    async fn make_site_directory(&self) -> anyhow::Result<()> {
        let timeout = self.inst.settings.rpc_timeout;
        self.st.lay_out(&self.inst.rpc, true, timeout).await?;
        self.st
            .write_settings(
                &self.inst.rpc,
                &self.inst.store,
                self.password().await?,
                timeout,
            )
            .await?;
        Ok(())
    }

    /// Only a directory that carries this site's mark is removed.
    async fn remove_site_directory(&self) -> anyhow::Result<()> {
        let reply = self
            .webconf(WebconfRequest::RemoveSiteDir {
                site: self.st.site.id,
                path: self.st.site_dir.clone(),
                unmarked_ok: false,
                deployed_by: None,
            })
            .await?;
        if reply.dir == Some(contract::DirOutcome::NotOurs) {
            self.log
                .warn(format!(
                    "{} was not made for this site and is left alone",
                    self.st.site_dir
                ))
                .await;
        }
        Ok(())
    }

    async fn run_action(&self, action: Action) -> anyhow::Result<serde_json::Value> {
        let password = self.st.password(&self.inst.store).await?;
        let ctx = self.st.context(password);
        site::run_action(
            &self.inst.rpc,
            &self.inst.store,
            &self.st,
            action,
            &ctx,
            self.inst.settings.action_timeout,
            self.log,
        )
        .await
    }
}

impl Saga for InstallSaga<'_> {
    fn name(&self) -> &'static str {
        "install"
    }

    type Step = InstallStep;

    fn steps(&self) -> &'static [InstallStep] {
        InstallStep::ALL
    }

    async fn action(&self, step: InstallStep) -> anyhow::Result<()> {
        let site = &self.st.site;
        match step {
            InstallStep::SystemUser => {
                let (uid, _) = site::ensure_site_user(
                    &self.inst.rpc,
                    &self.st,
                    self.inst.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!(
                        "system user {} (uid {uid}) on {}",
                        site.system_user, self.st.web_server
                    ))
                    .await;
            }
            InstallStep::Database => {
                let password = self.password().await?;
                site::create_database(
                    &self.inst.rpc,
                    &self.inst.store,
                    site.db_server_id,
                    &site.db_name,
                    &site.db_user,
                    &password,
                    self.inst.settings.rpc_timeout,
                )
                .await?;
                self.log
                    .info(format!(
                        "database {} and user {} ready on {}",
                        site.db_name, site.db_user, site.db_server
                    ))
                    .await;
            }
            InstallStep::SiteDirectory => {
                self.make_site_directory().await?;
                self.log
                    .info(format!(
                        "site directory {} with its settings",
                        self.st.site_dir
                    ))
                    .await;
            }
            InstallStep::Install => {
                self.log
                    .info(format!(
                        "installing with profile {} in {} for {}",
                        site.profile, site.language, self.st.admin_email
                    ))
                    .await;
                let result = self.run_action(Action::Install).await?;
                if let Some(url) = result.get("login_url").and_then(|u| u.as_str()) {
                    crate::lifecycle::record_login_link(
                        self.inst,
                        &self.st,
                        url,
                        &self.task.requested_by,
                    )
                    .await?;
                    self.log
                        .info("the install action gave a one-time login link")
                        .await;
                }
            }
            InstallStep::Vhost => {
                let reply = self
                    .webconf(WebconfRequest::WriteVhost(Box::new(self.st.vhost()?)))
                    .await?;
                self.log
                    .info(format!(
                        "vhost for {} {} on {}",
                        site.domain,
                        if reply.changed {
                            "written, nginx reloaded"
                        } else {
                            "unchanged"
                        },
                        self.st.web_server
                    ))
                    .await;
            }
            InstallStep::ServeCheck => {
                let status = self.st.check_serves(self.inst.settings.rpc_timeout).await?;
                self.log
                    .info(format!(
                        "{} answers {status} for {}",
                        site.domain, self.st.manifest.application.health_path
                    ))
                    .await;
            }
            InstallStep::Enable => {
                let ctx = self.st.context(self.st.password(&self.inst.store).await?);
                let timeout = self.inst.settings.action_timeout;
                let packages = site::record_packages(
                    &self.inst.rpc,
                    &self.inst.store,
                    &self.st,
                    &ctx,
                    timeout,
                    self.log,
                );
                if let Err(e) = packages.await {
                    self.log
                        .warn(format!("could not record the site's packages: {e:#}"))
                        .await
                }
                self.inst
                    .store
                    .set_site_status(site.id, SiteStatus::Enabled)
                    .await?;
                self.log
                    .info(format!("{} is enabled at {}", site.domain, self.st.url))
                    .await;
            }
        }
        Ok(())
    }

    async fn undo(&self, step: InstallStep) -> anyhow::Result<()> {
        let site = &self.st.site;
        match step {
            InstallStep::SystemUser => {
                site::remove_site_user(&self.inst.rpc, &self.st, self.inst.settings.rpc_timeout)
                    .await?;
                self.log
                    .info(format!("system user {} removed", site.system_user))
                    .await;
            }
            InstallStep::Database => {
                self.dbprov(DbprovRequest::drop_database(
                    site.db_name.clone(),
                    site.db_user.clone(),
                ))
                .await?;
                self.log
                    .info(format!(
                        "database {} and user {} dropped",
                        site.db_name, site.db_user
                    ))
                    .await;
            }
            InstallStep::SiteDirectory => {
                self.remove_site_directory().await?;
                self.log
                    .info(format!("site directory {} removed", self.st.site_dir))
                    .await;
            }
            InstallStep::Vhost => {
                self.webconf(WebconfRequest::RemoveVhost {
                    domain: site.domain.clone(),
                })
                .await?;
                self.log
                    .info(format!("vhost for {} removed", site.domain))
                    .await;
            }
            // Nothing of their own to undo (see `InstallStep`).
            InstallStep::Install | InstallStep::ServeCheck | InstallStep::Enable => {}
        }
        Ok(())
    }
}

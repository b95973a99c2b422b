//! The site tasks around its life after install, as in the reference: "Resetting site
//! password" (login-reset) and "Disabling and Enabling sites".

use crate::Installer;
use anyhow::{bail, Context};
use contract::{BackupReply, BackupRequest, WebconfRequest};
use domain::SiteStatus;
use platform::Action;
use site::SiteTask;
use store::Task;
use worker::{Outcome, TaskLog};

pub const BEFORE_DISABLE: &str = "Pre-disable backup";

fn outcome(result: anyhow::Result<serde_json::Value>) -> Outcome {
    match result {
        Ok(v) => Outcome::Success(Some(v)),
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

async fn load(inst: &Installer, task: &Task) -> anyhow::Result<SiteTask> {
    let site = task
        .site
        .with_context(|| format!("a {} task without a site", task.task_type))?;
    SiteTask::load(&inst.store, site).await
}

/// The backup the safety rules ask for before a site is changed, made by the backupper
/// (where the backup store is) and logged in this task.
pub async fn backup_first(
    inst: &Installer,
    st: &SiteTask,
    task: &Task,
    description: &str,
    log: &TaskLog,
) -> anyhow::Result<BackupReply> {
    log.info(format!("backing the site up first: \"{description}\""))
        .await;
    site::make_backup(
        &inst.rpc,
        BackupRequest::MakeBackup {
            site: st.site.id,
            task: task.id,
            description: description.to_owned(),
        },
        inst.settings.backup_timeout,
    )
    .await
    .context("the backup before the change failed, so nothing was changed")
}

/// A fresh one-time login link for the site's admin account. The link the API and the mail
/// show is the gateway's: it redirects to the site's own one-time URL once.
pub async fn login_reset(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    outcome(
        async {
            let st = load(inst, task).await?;
            if st.site.status != SiteStatus::Enabled {
                bail!(
                    "a login link is only made for an enabled site; this one is {}",
                    st.site.status
                );
            }
            if !st.manifest.actions.contains_key(Action::LoginLink.key()) {
                bail!(
                    "platform {} declares no login_link action in its manifest",
                    st.platform.name
                );
            }
            // The link lives in the site's record (GET /sites/{id} shows it to whoever may see
            // the site), not in the task's result or log, which outlive it.
            new_login_link(inst, &st, &task.requested_by, log).await?;
            log.info(format!(
                "one-time login link for the admin account made for {}; it opens once and expires in {}",
                task.requested_by,
                humanize(inst.login_link_ttl().await)
            ))
            .await;
            Ok(serde_json::json!({ "link": format!("GET /api/v1/sites/{} shows it", st.site.id) }))
        }
        .await,
    )
}

/// Runs the platform's login_link action and records its URL. Returns the gateway's link.
pub async fn new_login_link(
    inst: &Installer,
    st: &SiteTask,
    requested_by: &str,
    log: &TaskLog,
) -> anyhow::Result<String> {
    let password = st.password(&inst.store).await?;
    let result = site::run_action(
        &inst.rpc,
        &inst.store,
        st,
        Action::LoginLink,
        &st.context(password),
        inst.settings.action_timeout,
        log,
    )
    .await?;
    let url = result
        .get("login_url")
        .and_then(|u| u.as_str())
        .context("the login_link action printed no {\"login_url\": ...}")?;
    record_login_link(inst, st, url, requested_by).await
}

pub async fn record_login_link(
    inst: &Installer,
    st: &SiteTask,
    url: &str,
    requested_by: &str,
) -> anyhow::Result<String> {
    let token = inst
        .store
        .add_login_link(
            st.site.id,
            url,
            requested_by,
            time::Duration::try_from(inst.login_link_ttl().await)?,
        )
        .await?;
    Ok(contract::login_url(&inst.settings.public_url, &token))
}

fn humanize(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// Disable: a backup first, then the vhost sends every visitor to the "site disabled" page;
/// the site's files and database stay as they are.
pub async fn disable(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    outcome(
        async {
            let st = load(inst, task).await?;
            if st.site.status != SiteStatus::Enabled {
                bail!(
                    "only an enabled site can be disabled; this one is {}",
                    st.site.status
                );
            }
            let backup = backup_first(inst, &st, task, BEFORE_DISABLE, log).await?;
            log.info(format!(
                "backup {} made ({} bytes)",
                backup.backup, backup.size
            ))
            .await;
            let vhost = st.disabled_vhost(&inst.settings.public_url)?;
            site::webconf(
                &inst.rpc,
                &st.web_server,
                WebconfRequest::WriteVhost(Box::new(vhost)),
                inst.settings.rpc_timeout,
            )
            .await?;
            log.info(format!(
                "vhost now sends visitors to {}",
                contract::disabled_url(&inst.settings.public_url, &st.site.domain)
            ))
            .await;
            if let Err(e) = async {
                inst.store
                    .set_site_status(st.site.id, SiteStatus::Disabled)
                    .await?;
                inst.store.supersede_login_links(st.site.id).await?;
                anyhow::Ok(())
            }
            .await
            {
                // The record still says enabled: serve the site again rather than leave it
                // disabled behind the record's back.
                let _ = site::webconf(
                    &inst.rpc,
                    &st.web_server,
                    WebconfRequest::WriteVhost(Box::new(st.vhost()?)),
                    inst.settings.rpc_timeout,
                )
                .await;
                return Err(e.context("recording the site as disabled; its vhost was put back"));
            }
            log.info(format!("{} is disabled", st.site.domain)).await;
            Ok(serde_json::json!({ "backup": backup.backup }))
        }
        .await,
    )
}

/// Enable: settings and the normal vhost again, then the site is `enabled`, and a request to
/// it through its vhost (a site that does not answer makes the enable a warning: it is
/// enabled, and the warning says what it answered).
pub async fn enable(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    let result = async {
        let st = load(inst, task).await?;
        if st.site.status != SiteStatus::Disabled {
            bail!(
                "only a disabled site can be enabled; this one is {}",
                st.site.status
            );
        }
        let timeout = inst.settings.rpc_timeout;
        st.lay_out(&inst.rpc, false, timeout).await?;
        let password = st.password(&inst.store).await?;
        if st
            .write_settings(&inst.rpc, &inst.store, password, timeout)
            .await?
        {
            log.info("settings file rewritten").await;
        }
        site::webconf(
            &inst.rpc,
            &st.web_server,
            WebconfRequest::WriteVhost(Box::new(st.vhost()?)),
            inst.settings.rpc_timeout,
        )
        .await?;
        log.info("vhost serves the site again, nginx reloaded")
            .await;
        inst.store
            .set_site_status(st.site.id, SiteStatus::Enabled)
            .await?;
        log.info(format!("{} is enabled at {}", st.site.domain, st.url))
            .await;
        anyhow::Ok(st.check_serves(inst.settings.rpc_timeout).await)
    }
    .await;
    match result {
        Ok(Ok(status)) => {
            log.info(format!("the site answers {status}")).await;
            Outcome::Success(Some(serde_json::json!({})))
        }
        Ok(Err(e)) => {
            let why = format!("{e:#}");
            log.warn(why.clone()).await;
            Outcome::Warning(why)
        }
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

//! Site verify: the site's cell checked and put right (its unix user, its directory's layout
//! and owners), settings and vhost rendered again (written only when they differ), nginx and
//! php-fpm reloaded only then, the site's package list refreshed, and a request to the site
//! through its vhost. Running it twice changes nothing the second time. A site that does not
//! answer makes the verify a warning: it changes nothing, it reports.

use crate::Installer;
use contract::WebconfRequest;
use domain::SiteStatus;
use site::SiteTask;
use store::Task;
use worker::{Outcome, TaskLog};

pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    match verify(inst, task, log).await {
        Ok((v, None)) => Outcome::Success(Some(v)),
        Ok((_, Some(warning))) => Outcome::Warning(warning),
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

async fn verify(
    inst: &Installer,
    task: &Task,
    log: &TaskLog,
) -> anyhow::Result<(serde_json::Value, Option<String>)> {
    let site_id = task
        .site
        .ok_or_else(|| anyhow::anyhow!("a verify task without a site"))?;
    let st = SiteTask::load(&inst.store, site_id).await?;
    if st.site.status != SiteStatus::Enabled {
        anyhow::bail!(
            "only enabled sites can be verified; this one is {}",
            st.site.status
        );
    }
    let timeout = inst.settings.rpc_timeout;
    site::ensure_site_user(&inst.rpc, &st, timeout).await?;
    st.lay_out(&inst.rpc, false, timeout).await?;
    let password = st.password(&inst.store).await?;
    let settings_changed = st
        .write_settings(&inst.rpc, &inst.store, password.clone(), timeout)
        .await?;
    log.info(if settings_changed {
        "settings file rewritten"
    } else {
        "settings file unchanged"
    })
    .await;

    let reply = site::webconf(
        &inst.rpc,
        &st.web_server,
        WebconfRequest::WriteVhost(Box::new(st.vhost()?)),
        timeout,
    )
    .await?;
    log.info(if reply.changed {
        "vhost and pool rewritten, nginx and php-fpm reloaded"
    } else {
        "vhost and pool unchanged"
    })
    .await;

    let packages = site::record_packages(
        &inst.rpc,
        &inst.store,
        &st,
        &st.context(password),
        inst.settings.action_timeout,
        log,
    )
    .await?;
    let warning = match st.check_serves(timeout).await {
        Ok(status) => {
            log.info(format!("{} answers {status}", st.site.domain))
                .await;
            None
        }
        Err(e) => {
            let why = format!("{e:#}");
            log.warn(why.clone()).await;
            Some(why)
        }
    };
    Ok((
        serde_json::json!({ "settings_changed": settings_changed, "vhost_changed": reply.changed, "packages": packages }),
        warning,
    ))
}

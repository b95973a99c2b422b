//! Site verify: settings and vhost rendered again (written only when they differ), nginx
//! reloaded only then, and the site's package list refreshed. Running it twice changes
//! nothing the second time.

use crate::Installer;
use contract::{WebconfReply, WebconfRequest};
use domain::SiteStatus;
use site::{write_settings, SiteTask};
use store::Task;
use worker::{Outcome, TaskLog};

pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    match verify(inst, task, log).await {
        Ok(v) => Outcome::Success(Some(v)),
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

async fn verify(inst: &Installer, task: &Task, log: &TaskLog) -> anyhow::Result<serde_json::Value> {
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
    let password = st.password(&inst.store).await?;
    let settings = st.manifest.render_settings(&st.context(password.clone()))?;
    let settings_changed = write_settings(&st.settings_path(), &settings).await?;
    log.info(if settings_changed {
        "settings file rewritten"
    } else {
        "settings file unchanged"
    })
    .await;

    let reply: WebconfReply = inst
        .rpc
        .call(
            "webconf",
            &st.web_server,
            contract::WEBCONF_MESSAGE_TYPE,
            &WebconfRequest::WriteVhost(st.vhost()?),
            inst.settings.rpc_timeout,
        )
        .await?;
    log.info(if reply.changed {
        "vhost rewritten and nginx reloaded"
    } else {
        "vhost unchanged"
    })
    .await;

    let packages = site::record_packages(
        &inst.store,
        &st,
        &st.context(password),
        inst.settings.action_timeout,
        log,
    )
    .await?;
    Ok(
        serde_json::json!({ "settings_changed": settings_changed, "vhost_changed": reply.changed, "packages": packages }),
    )
}

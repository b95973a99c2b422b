use crate::Installer;
use anyhow::Context;
use domain::PlatformStatus;
use platform::Manifest;
use store::{Package, Profile, Task};
use worker::{Outcome, TaskLog};

/// Reads the platform's codebase into the registry: packages, profiles and languages.
pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    let Some(id) = task.platform else {
        return Outcome::Error("a platform task without a platform".into());
    };
    let p = match inst.store.platform(id).await {
        Ok(p) => p,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    log.info(format!("reading {} with the {} driver", p.root, p.driver))
        .await;
    // Read where the code is: by the agent of the platform's web server.
    let result = site::webconf(
        &inst.rpc,
        &p.server,
        contract::WebconfRequest::ScanPlatform {
            root: p.root.clone(),
            driver: p.driver,
        },
        inst.settings.action_timeout,
    )
    .await
    .and_then(|reply| {
        reply
            .manifest
            .map(|m| *m)
            .with_context(|| format!("webconf on {} answered no manifest", p.server))
    });
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let e = format!("{e:#}");
            log.error(e.clone()).await;
            // A platform that was never verified is unusable; one that was keeps its last
            // good registry and status.
            if p.status == PlatformStatus::Queued {
                let _ = inst
                    .store
                    .set_platform_status(id, PlatformStatus::Failed)
                    .await;
            }
            return Outcome::Error(e);
        }
    };
    if let Err(e) = check_php(inst, &p, &manifest, log).await {
        let why = format!("{e:#}");
        log.error(why.clone()).await;
        if p.status == PlatformStatus::Queued {
            let _ = inst
                .store
                .set_platform_status(id, PlatformStatus::Failed)
                .await;
        }
        return Outcome::Error(why);
    }
    let packages: Vec<Package> = manifest
        .packages
        .iter()
        .map(|k| Package {
            name: k.name.clone(),
            package_type: k.package_type.as_str().into(),
            version: k.version.clone(),
            schema_version: k.schema_version,
        })
        .collect();
    let profiles: Vec<Profile> = manifest
        .profiles
        .iter()
        .map(|pr| Profile {
            name: pr.name.to_string(),
            languages: pr.languages.iter().map(|l| l.to_string()).collect(),
        })
        .collect();
    let json = match serde_json::to_value(&manifest) {
        Ok(j) => j,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    if let Err(e) = inst
        .store
        .record_platform_verified(id, &json, &packages, &profiles)
        .await
    {
        return Outcome::Error(e.to_string());
    }
    log.info(format!(
        "{} packages and {} profiles recorded",
        packages.len(),
        profiles.len()
    ))
    .await;
    Outcome::Success(Some(
        serde_json::json!({"packages": packages.len(), "profiles": profiles.len()}),
    ))
}

/// The PHP the web server's site pools run against what the platform needs: its version and
/// extensions. webconf reloads a php-fpm that started before an extension was installed, so
/// the answer is what sites get.
async fn check_php(
    inst: &Installer,
    p: &store::Platform,
    manifest: &Manifest,
    log: &TaskLog,
) -> anyhow::Result<()> {
    let reply = site::webconf(
        &inst.rpc,
        &p.server,
        contract::WebconfRequest::PhpInfo,
        inst.settings.rpc_timeout,
    )
    .await?;
    let Some(php) = reply.php else {
        anyhow::bail!("webconf on {} did not say which PHP it runs", p.server);
    };
    if !php.reloaded.is_empty() {
        log.info(format!(
            "php-fpm on {} was reloaded: it had started before {} was installed",
            p.server,
            php.reloaded.join(", ")
        ))
        .await;
    }
    let unmet = manifest.php.unmet(&php.version, &php.extensions);
    if !unmet.is_empty() {
        anyhow::bail!(
            "platform {} needs {}; the web server {} has PHP {} without it",
            p.name,
            unmet.join(" and "),
            p.server,
            php.version
        );
    }
    log.info(format!(
        "PHP {} on {} has what the platform needs",
        php.version, p.server
    ))
    .await;
    Ok(())
}

/// Lock (no new sites, not a migrate target), unlock, or delete (once no live site is on it)
/// a platform. Its code on disk is the operator's: delete only retires the record.
pub async fn set_status(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    use domain::{PlatformStatus, SiteStatus, TaskType};
    let Some(id) = task.platform else {
        return Outcome::Error("a platform task without a platform".into());
    };
    let result = async {
        let platform = inst.store.platform(id).await?;
        let status = match task.task_type {
            TaskType::PlatformLock => PlatformStatus::Locked,
            TaskType::PlatformUnlock => PlatformStatus::Enabled,
            _ => {
                let live: Vec<_> = inst
                    .store
                    .sites(&store::SiteFilter {
                        platform: Some(id),
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .filter(|s| s.status != SiteStatus::Deleted)
                    .map(|s| s.domain.to_string())
                    .collect();
                if !live.is_empty() {
                    anyhow::bail!(
                        "platform {} still has sites: {}; migrate or delete them first",
                        platform.name,
                        live.join(", ")
                    );
                }
                PlatformStatus::Deleted
            }
        };
        if task.task_type == TaskType::PlatformUnlock && platform.status != PlatformStatus::Locked {
            anyhow::bail!(
                "platform {} is {}, not locked",
                platform.name,
                platform.status
            );
        }
        inst.store.set_platform_status(id, status).await?;
        log.info(format!("platform {} is {status}", platform.name))
            .await;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => Outcome::Success(None),
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

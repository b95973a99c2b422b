//! Deploy: a backup unpacked into a new site directory and its dump imported into a new
//! database, for the migrator (the reference's `provision-deploy`, used by migrate and clone).
//! The directory appears at its place only when complete: it is unpacked beside it and
//! renamed in.

use crate::mysql::Credentials;
use crate::restore::{unpack_and_import, Unpacked};
use crate::Backupper;
use anyhow::{bail, Context};
use contract::DeployRequest;
use domain::{DbPassword, ServerKind};
use site::DEPLOY_MARK;
use worker::TaskLog;

pub async fn deploy(b: &Backupper, r: &DeployRequest, log: &TaskLog) -> anyhow::Result<u64> {
    if let Some(web) = r.web_server.as_ref().filter(|w| **w != b.settings.server) {
        // The file side of a deploy is not done by agents yet.
        bail!(
            "deploying onto web server {web} is not possible yet: deploys write a site's files on the backup store's own host ({}) only",
            b.settings.server
        );
    }
    let dest = r.dest.as_path();
    let mark = format!("task {}\n", r.task);
    if tokio::fs::try_exists(dest).await? {
        return match site::read_mark(dest, DEPLOY_MARK).await {
            Some(m) if m == mark => {
                log.info(format!("{} was deployed by this task already", r.dest))
                    .await;
                Ok(0)
            }
            _ => bail!(
                "{} already exists; a deploy never writes over a directory it did not make",
                r.dest
            ),
        };
    }
    let backup = b.store.backup(domain::BackupId(r.backup)).await?;
    let server = b.store.server_by_name(&r.db_server, ServerKind::Db).await?;
    let password = b
        .store
        .task_secret(r.task, contract::DEPLOY_PASSWORD_SECRET)
        .await?
        .context("the task keeps no password for the database to deploy into")?;
    let creds = Credentials {
        host: server.host.clone(),
        port: u16::try_from(server.port).context("db server port")?,
        user: r.user.clone(),
        password: DbPassword::parse(&password)?,
    };
    let staging = site::beside(dest, "deploy", r.task);
    if tokio::fs::try_exists(&staging).await? {
        tokio::fs::remove_dir_all(&staging).await?; // from an interrupted run
    }
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let owner = match &r.owner {
        Some(user) => site::owner_of(user)?,
        None => None,
    };
    let extracted = unpack_and_import(
        b,
        &backup,
        &staging,
        &r.database,
        &creds,
        Unpacked::ForSite(owner),
    )
    .await?;
    site::write_mark(&staging, DEPLOY_MARK, &mark).await?;
    tokio::fs::rename(&staging, dest)
        .await
        .with_context(|| format!("moving the deployed directory to {}", r.dest))?;
    log.info(format!(
        "backup {} deployed: {} files into {}, its database imported into {} on {}",
        backup.id, extracted.files.count, r.dest, r.database, r.db_server
    ))
    .await;
    Ok(extracted.files.count)
}

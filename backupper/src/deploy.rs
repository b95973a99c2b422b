//! Deploy: a backup unpacked into a new site directory and its dump imported into a new
//! database, for the migrator (the reference's `provision-deploy`, used by migrate and clone).
//! The directory appears at its place only when complete: it is unpacked beside it and
//! renamed in.

use crate::mysql::Credentials;
use crate::restore::{unpack_and_import, Unpacked};
use crate::Backupper;
use anyhow::{bail, Context};
use contract::{DeployRequest, WebconfRequest};
use domain::{DbPassword, ServerKind};
use site::DEPLOY_MARK;
use worker::TaskLog;

pub async fn deploy(b: &Backupper, r: &DeployRequest, log: &TaskLog) -> anyhow::Result<u64> {
    if let Some(web) = r.web_server.as_ref().filter(|w| **w != b.settings.server) {
        return deploy_on(b, web, r, log).await;
    }
    let dest = r.dest.as_path();
    let mark = site::deploy_mark(r.task);
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
    let creds = deploy_credentials(b, r).await?;
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

/// A deploy onto another web server: the dump imported from here, the files unpacked there by
/// its agent, beside the destination, marked as this task's and renamed in.
async fn deploy_on(
    b: &Backupper,
    web: &domain::Name,
    r: &DeployRequest,
    log: &TaskLog,
) -> anyhow::Result<u64> {
    let agent = |request| site::webconf(&b.rpc, web, request, b.settings.rpc_timeout);
    let mark = site::deploy_mark(r.task);
    let there = agent(WebconfRequest::InspectPath {
        path: r.dest.clone(),
    })
    .await?;
    if there.path.is_some_and(|k| k != contract::PathKind::Missing) {
        let found = agent(WebconfRequest::ReadMark {
            path: r.dest.clone(),
            mark: contract::MarkKind::Deploy,
        })
        .await?;
        if found.mark.as_deref() == Some(mark.as_str()) {
            log.info(format!("{} was deployed by this task already", r.dest))
                .await;
            return Ok(0);
        }
        bail!(
            "{} already exists on {web}; a deploy never writes over a directory it did not make",
            r.dest
        );
    }
    let (Some(owner), Some(owner_site)) = (&r.owner, r.owner_site) else {
        bail!("a deploy onto another web server needs the unix user its files belong to, and its site");
    };
    let backup = b.store.backup(domain::BackupId(r.backup)).await?;
    let creds = deploy_credentials(b, r).await?;
    crate::restore::import_dump(b, &backup, r.task, &r.database, &creds).await?;
    let server = b.store.server_by_name(web, ServerKind::Web).await?;
    let staging = site::beside(r.dest.as_path(), "deploy", r.task);
    let files =
        crate::restore::unpack_on(b, &server, &backup, r.task, owner_site, owner, &staging).await?;
    let staging = domain::HostPath::parse(&staging.to_string_lossy())
        .map_err(|e| anyhow::anyhow!("the staging directory: {e}"))?;
    agent(WebconfRequest::WriteMark {
        path: staging.clone(),
        mark: contract::MarkKind::Deploy,
        content: Some(mark),
    })
    .await?;
    let moved = agent(WebconfRequest::MoveSiteDir {
        site: backup.site,
        from: staging,
        to: r.dest.clone(),
        unmarked_ok: false,
        deployed_by: Some(r.task),
    })
    .await?;
    if moved.dir != Some(contract::DirOutcome::Done) {
        bail!(
            "the deployed directory could not be moved to {} on {web}: {:?}",
            r.dest,
            moved.dir
        );
    }
    log.info(format!(
        "backup {} deployed onto {web}: {files} files into {}, its database imported into {} on {}",
        backup.id, r.dest, r.database, r.db_server
    ))
    .await;
    Ok(files)
}

/// The database a deploy imports into, with the password its task keeps.
async fn deploy_credentials(b: &Backupper, r: &DeployRequest) -> anyhow::Result<Credentials> {
    let server = b.store.server_by_name(&r.db_server, ServerKind::Db).await?;
    let password = b
        .store
        .task_secret(r.task, contract::DEPLOY_PASSWORD_SECRET)
        .await?
        .context("the task keeps no password for the database to deploy into")?;
    Ok(Credentials {
        host: server.host.clone(),
        port: u16::try_from(server.port).context("db server port")?,
        user: r.user.clone(),
        password: DbPassword::parse(&password)?,
    })
}

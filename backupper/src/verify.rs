//! verify-backup (beyond Aegir): prove a backup restorable. Its archive is checked and
//! unpacked into a scratch directory, its dump imported into a scratch database; the file
//! count and every table's row count must match its manifest. The backup's `verified` time
//! records the proof. The scratch copies are removed whatever happens.

use crate::mysql::Credentials;
use crate::restore::{unpack_and_import, Unpacked};
use crate::Backupper;
use anyhow::bail;
use contract::DbprovRequest;
use domain::DbPassword;
use site::SiteTask;
use std::collections::BTreeMap;
use store::Task;
use worker::{Outcome, TaskLog};

pub async fn run(b: &Backupper, task: &Task, log: &TaskLog) -> Outcome {
    let (Some(site), Ok(contract::TaskArgs::OfBackup(contract::BackupRef { backup: id }))) =
        (task.site, task.parsed_args())
    else {
        return Outcome::Error("a verify-backup task needs a site and {\"backup\": <id>}".into());
    };
    let st = match SiteTask::load(&b.store, site).await {
        Ok(st) => st,
        Err(e) => return Outcome::Error(format!("{e:#}")),
    };
    let backup = match b.store.backup(id).await {
        Ok(x) if x.site == site => x,
        Ok(_) => return Outcome::Error(format!("backup {id} belongs to another site")),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let scratch_db = match st.site.db_name.for_task('v', task.id.0) {
        Ok(d) => d,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let scratch_dir = b.settings.backup_dir.join(format!(".verify-t{}", task.id));
    let password = match b
        .store
        .ensure_task_secret(
            task.id,
            "verify-db-password",
            DbPassword::generate().expose(),
        )
        .await
    {
        Ok(p) => DbPassword::parse(&p),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let Ok(password) = password else {
        return Outcome::Error("the stored scratch password does not parse".into());
    };
    let creds = Credentials {
        host: st.db_host.clone(),
        port: st.db_port,
        user: scratch_db.clone(),
        password: password.clone(),
    };

    let proof = async {
        if tokio::fs::try_exists(&scratch_dir).await? {
            tokio::fs::remove_dir_all(&scratch_dir).await?; // from an interrupted run
        }
        site::create_database(
            &b.rpc,
            &b.store,
            st.site.db_server_id,
            &scratch_db,
            &scratch_db,
            &password,
            b.settings.rpc_timeout,
        )
        .await?;
        let extracted = unpack_and_import(
            b,
            &backup,
            &scratch_dir,
            &scratch_db,
            &creds,
            Unpacked::Scratch,
        )
        .await?;
        let restored =
            crate::rows::count(&creds.host, creds.port, &scratch_db, &password, &scratch_db)
                .await?;
        anyhow::Ok((extracted, restored))
    }
    .await;

    let drop = DbprovRequest::drop_database(scratch_db.clone(), scratch_db.clone());
    if let Err(e) = site::dbprov(&b.rpc, &st.site.db_server, drop, b.settings.rpc_timeout).await {
        log.warn(format!(
            "could not drop the scratch database {scratch_db}: {e:#}"
        ))
        .await;
    }
    if let Err(e) = tokio::fs::remove_dir_all(&scratch_dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            log.warn(format!("could not remove {}: {e}", scratch_dir.display()))
                .await;
        }
    }

    let (extracted, restored) = match proof {
        Ok(p) => p,
        Err(e) => return Outcome::Error(format!("backup {id} could not be restored: {e:#}")),
    };
    let expected: BTreeMap<String, i64> =
        serde_json::from_value(backup.manifest.get("rows").cloned().unwrap_or_default())
            .unwrap_or_default();
    let result = (|| {
        if expected.is_empty() {
            bail!("the backup's manifest has no row counts to compare (it predates them)");
        }
        let differences: Vec<String> = expected
            .keys()
            .chain(restored.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|t| expected.get(*t) != restored.get(*t))
            .map(|t| {
                format!(
                    "{t}: {:?} in the manifest, {:?} restored",
                    expected.get(t),
                    restored.get(t)
                )
            })
            .collect();
        if !differences.is_empty() {
            bail!(
                "row counts differ (was the site written to during the backup?): {}",
                differences.join("; ")
            );
        }
        Ok(())
    })();
    let total: i64 = restored.values().sum();
    match result {
        Ok(()) => {
            if let Err(e) = b.store.mark_backup_verified(backup.id).await {
                return Outcome::Error(e.to_string());
            }
            log.info(format!("backup {id} restored into scratch copies: {} files, {} tables, {total} rows, all as recorded", extracted.files.count, restored.len())).await;
            Outcome::Success(Some(
                serde_json::json!({"backup": id, "files": extracted.files.count, "tables": restored.len(), "rows": total}),
            ))
        }
        Err(e) => {
            log.warn(e.to_string()).await;
            Outcome::Warning(e.to_string())
        }
    }
}

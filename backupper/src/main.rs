//! backupper: backup, restore and backup-delete tasks; scheduled backups and retention.

mod backup;
mod definer;
mod deploy;
mod mysql;
mod restore;
mod rows;
mod scheduler;
mod uploads;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use worker::{Outcome, TaskHandler, TaskLog};

pub struct Settings {
    pub backup_dir: PathBuf,
    pub dump_bin: String,
    pub client_bin: String,
    pub zstd_level: i32,
    pub zstd_workers: u32,
    pub dump_chunk_bytes: usize,
    pub limits: archive::Limits,
    pub rpc_timeout: Duration,
    pub action_timeout: Duration,
    /// How long the backup of one site may take when its files come from another host.
    pub backup_timeout: Duration,
    /// The web server whose disk this backupper shares (its sites' files are read here);
    /// the files of sites on any other come from that server's agent.
    pub server: domain::Name,
    /// Where agents send site files (`HOSTING_UPLOAD_URL`), when uploads are taken.
    pub upload_url: Option<String>,
    /// How long an upload's token opens the door.
    pub upload_ttl: Duration,
}

pub struct Backupper {
    /// The door for site files from other hosts' agents, when `HOSTING_UPLOAD_LISTEN` is set.
    pub uploads: Option<uploads::Uploads>,
    pub store: store::Store,
    pub bus: bus::Bus,
    pub rpc: bus::RpcClient,
    pub settings: Settings,
    pub faults: saga::Faults,
}

/// One backupper serves both its task queue and the backup RPCs of the other services.
#[derive(Clone)]
struct Shared(Arc<Backupper>);

impl TaskHandler for Shared {
    async fn run(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        TaskHandler::run(&*self.0, task, log).await
    }
}

/// `make-backup` for the installer (pre-disable, pre-delete) and the migrator: the backup is
/// made here, where the backup store is, and logged in the caller's task.
impl bus::Serve<contract::BackupperRpc> for Shared {
    /// A request that failed only because the state database was away or its pool busy is
    /// handled again (both requests are idempotent) for up to two minutes, rather than
    /// answered with an error that would fail the caller's task.
    async fn handle(
        &self,
        request: contract::BackupRequest,
    ) -> Result<contract::BackupperReply, String> {
        let began = std::time::Instant::now();
        loop {
            let attempt = std::time::Instant::now();
            match self.handle_once(request.clone()).await {
                Err(e)
                    if store::outage_since(attempt)
                        && began.elapsed() < Duration::from_secs(120) =>
                {
                    tracing::warn!(error = %e, "the state database was away during a request; handling it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }
}

impl Shared {
    async fn handle_once(
        &self,
        request: contract::BackupRequest,
    ) -> Result<contract::BackupperReply, String> {
        let b = &self.0;
        let result = match request {
            contract::BackupRequest::MakeBackup {
                site,
                task,
                description,
            } => {
                let log = TaskLog::new(b.store.clone(), b.bus.clone(), task);
                async {
                    let st = site::SiteTask::load(&b.store, site).await?;
                    backup::make_backup(b, &st, task, &description, &log).await
                }
                .await
                .map(|made| {
                    contract::BackupperReply::Backup(contract::BackupReply {
                        backup: made.id.0,
                        size: made.size,
                        checksum: made.checksum,
                    })
                })
            }
            contract::BackupRequest::Deploy(request) => {
                let log = TaskLog::new(b.store.clone(), b.bus.clone(), request.task);
                deploy::deploy(b, &request, &log)
                    .await
                    .map(|files| contract::BackupperReply::Deploy(contract::DeployReply { files }))
            }
        };
        result.map_err(|e| format!("{e:#}"))
    }
}

impl TaskHandler for Backupper {
    async fn run(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        use domain::TaskType::*;
        match task.task_type {
            Backup => self.backup(task, log).await,
            Restore => restore::run(self, task, log).await,
            BackupDelete => self.delete(task, log).await,
            VerifyBackup => verify::run(self, task, log).await,
            PurgeTasks => scheduler::purge_tasks(&self.store, log).await,
            other => Outcome::Error(format!("the backupper cannot run '{other}' tasks yet")),
        }
    }
}

impl Backupper {
    async fn backup(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        let Some(site) = task.site else {
            return Outcome::Error("a backup task without a site".into());
        };
        let description = match task.parsed_args() {
            Ok(contract::TaskArgs::Backup(contract::BackupArgs {
                description: Some(d),
            })) => d,
            Ok(_) => backup::ON_REQUEST.to_owned(),
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let result = async {
            let st = site::SiteTask::load(&self.store, site).await?;
            backup::make_backup(self, &st, task.id, &description, log).await
        }
        .await;
        match result {
            Ok(b) => Outcome::Success(Some(
                serde_json::json!({"backup": b.id, "size": b.size, "checksum": b.checksum}),
            )),
            Err(e) => Outcome::Error(format!("{e:#}")),
        }
    }

    /// Removes archives and their records. Deleting one that is gone already is fine.
    async fn delete(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        let ids = match task.parsed_args() {
            Ok(contract::TaskArgs::BackupDelete(a)) => a.backups,
            Ok(_) => Vec::new(),
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let mut removed = 0;
        for id in ids {
            let backup = match self.store.backup(id).await {
                Ok(b) => b,
                Err(store::StoreError::NotFound(_)) => continue,
                Err(e) => return Outcome::Error(e.to_string()),
            };
            if Some(backup.site) != task.site {
                return Outcome::Error(format!("backup {id} belongs to another site"));
            }
            match tokio::fs::remove_file(self.settings.backup_dir.join(&backup.key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Outcome::Error(format!("cannot remove {}: {e}", backup.key)),
            }
            if let Err(e) = self.store.delete_backup_record(backup.id).await {
                return Outcome::Error(e.to_string());
            }
            log.info(format!("backup {id} ({}) deleted", backup.key))
                .await;
            removed += 1;
        }
        Outcome::Success(Some(serde_json::json!({"deleted": removed})))
    }
}

/// Archives a backupper left when it was killed: half-written ones
/// (`<...>-t<task>.tar.partial`) and whole ones it had not recorded yet. Removed once their
/// task is no longer open (an open one's next attempt removes them itself before it writes).
async fn remove_unrecorded_archives(store: &store::Store, dir: &std::path::Path) {
    let Ok(domains) = std::fs::read_dir(dir) else {
        return;
    };
    for domain in domains.filter_map(|e| e.ok()) {
        let Ok(files) = std::fs::read_dir(domain.path()) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            let name = f.file_name().to_string_lossy().into_owned();
            let (stem, whole) = match (
                name.strip_suffix(".tar.partial"),
                name.strip_suffix(".tar.zst"),
            ) {
                (Some(stem), _) => (stem, false),
                (None, Some(stem)) => (stem, true),
                _ => continue,
            };
            let Some(task) = stem
                .rsplit_once("-t")
                .and_then(|(_, t)| t.parse::<i64>().ok())
            else {
                continue;
            };
            let open = matches!(
                store.task(domain::TaskId(task)).await.map(|t| t.status),
                Ok(domain::TaskStatus::Queued | domain::TaskStatus::Processing)
            );
            let key = format!("{}/{name}", domain.file_name().to_string_lossy());
            let leftover =
                !open && (!whole || matches!(store.backup_key_recorded(&key).await, Ok(false)));
            if leftover {
                tracing::info!(file = %f.path().display(), "removing an archive no backup records");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("backupper");
    // Scraped by Prometheus at HOSTING_METRICS_LISTEN, when that is set.
    tokio::spawn(telemetry::metrics::serve_from_env());
    let common = config::Common::from_env()?;
    let settings = Settings {
        backup_dir: PathBuf::from(config::string("HOSTING_BACKUP_DIR", "/var/backups/hosting")),
        dump_bin: config::string("HOSTING_MARIADB_DUMP_BIN", "mariadb-dump"),
        client_bin: config::string("HOSTING_MARIADB_BIN", "mariadb"),
        zstd_level: config::parse("HOSTING_BACKUP_ZSTD_LEVEL", 3)?,
        zstd_workers: config::parse("HOSTING_BACKUP_ZSTD_WORKERS", 2)?,
        dump_chunk_bytes: config::parse("HOSTING_BACKUP_DUMP_CHUNK_BYTES", 4usize << 20)?,
        limits: archive::Limits {
            max_entries: config::parse("HOSTING_RESTORE_MAX_ENTRIES", 1_000_000)?,
            max_bytes: config::parse("HOSTING_RESTORE_MAX_BYTES", 50u64 << 30)?,
        },
        rpc_timeout: config::seconds("HOSTING_RPC_TIMEOUT_SECS", 60.0)?,
        action_timeout: config::seconds("HOSTING_ACTION_TIMEOUT_SECS", 600.0)?,
        backup_timeout: config::seconds("HOSTING_BACKUP_TIMEOUT_SECS", 3600.0)?,
        server: domain::Name::parse(&config::string("HOSTING_SERVER", "local"))
            .map_err(|e| anyhow::anyhow!("HOSTING_SERVER: {e}"))?,
        upload_url: config::optional("HOSTING_UPLOAD_URL"),
        upload_ttl: config::seconds("HOSTING_UPLOAD_TOKEN_SECS", 300.0)?,
    };
    let upload_listen: Option<std::net::SocketAddr> = config::optional("HOSTING_UPLOAD_LISTEN")
        .map(|l| l.parse())
        .transpose()
        .map_err(|e| anyhow::anyhow!("HOSTING_UPLOAD_LISTEN: {e}"))?;
    let uploads = upload_listen.map(|_| uploads::Uploads::default());
    std::fs::create_dir_all(&settings.backup_dir)?;
    let lease = config::seconds("HOSTING_LEASE_SECS", 30.0)?;
    let prefetch = config::parse("HOSTING_PREFETCH", 2u16)?;
    let store = store::Store::connect_waiting(
        &common.database_url,
        8,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await?;
    let bus = bus::Bus::new(
        &common.amqp_url,
        contract::Topology::new(&common.prefix),
        "backupper",
    );
    // Backup requests come to the backup store's route, wherever the site lives.
    let route = domain::Name::parse(contract::BACKUP_STORE)
        .map_err(|e| anyhow::anyhow!("the backup store's route: {e}"))?;
    let door = {
        let uploads = uploads.clone();
        async move {
            match (upload_listen, uploads) {
                (Some(listen), Some(uploads)) => {
                    if let Err(e) = uploads::serve(listen, uploads).await {
                        tracing::error!(error = %e, "the door for site files stopped");
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    };
    let backupper = Shared(Arc::new(Backupper {
        uploads,
        store: store.clone(),
        bus: bus.clone(),
        rpc: bus::RpcClient::new(bus.clone()),
        settings,
        faults: saga::Faults::from_env(),
    }));
    remove_unrecorded_archives(&store, &backupper.0.settings.backup_dir).await;
    let tick = config::seconds("HOSTING_SCHEDULER_TICK_SECS", 60.0)?;
    // Backups and deploys other services ask for (a batch migrate asks for several at once).
    let rpc_prefetch = config::parse("HOSTING_BACKUP_RPC_PREFETCH", 4u16)?;
    let config = worker::WorkerConfig {
        service: "backupper",
        prefetch,
        lease,
    };
    tokio::select! {
        _ = worker::Worker::run(store.clone(), bus.clone(), backupper.clone(), config) => {},
        _ = bus.serve::<contract::BackupperRpc, _>(&route, rpc_prefetch, backupper) => {},
        _ = door => {},
        _ = scheduler::run(store, tick) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    Ok(())
}

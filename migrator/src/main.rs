//! migrator: migrate (incl. rename), clone and batch migrate, as sagas across the other
//! services: the backupper backs up and deploys, dbprov makes databases, webconf vhosts; the
//! platform's actions (update database, fix paths, clear caches, maintenance) run here.

mod batch;
mod migrate;

use std::time::Duration;
use worker::{Outcome, TaskHandler, TaskLog};

pub struct Settings {
    pub action_timeout: Duration,
    pub rpc_timeout: Duration,
    /// How long a backup or a deploy asked of the backupper may take.
    pub backup_timeout: Duration,
    /// How often a batch looks at its child tasks.
    pub batch_poll: Duration,
}

pub struct Migrator {
    pub store: store::Store,
    pub rpc: bus::RpcClient,
    pub settings: Settings,
    pub faults: saga::Faults,
}

impl TaskHandler for Migrator {
    async fn run(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        use domain::TaskType::*;
        match task.task_type {
            Migrate => migrate::run(self, task, log, migrate::Mode::Migrate).await,
            Clone => migrate::run(self, task, log, migrate::Mode::Clone).await,
            MigrateSites => batch::run(self, task, log).await,
            other => Outcome::Error(format!("the migrator does not run '{other}' tasks")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("migrator");
    // Scraped by Prometheus at HOSTING_METRICS_LISTEN, when that is set.
    tokio::spawn(telemetry::metrics::serve_from_env());
    let common = config::Common::from_env()?;
    let lease = config::seconds("HOSTING_LEASE_SECS", 30.0)?;
    // A batch holds one slot while its children run in the others.
    let prefetch = config::parse("HOSTING_PREFETCH", 8u16)?;
    let settings = Settings {
        action_timeout: config::seconds("HOSTING_ACTION_TIMEOUT_SECS", 600.0)?,
        rpc_timeout: config::seconds("HOSTING_RPC_TIMEOUT_SECS", 60.0)?,
        backup_timeout: config::seconds("HOSTING_BACKUP_TIMEOUT_SECS", 3600.0)?,
        batch_poll: config::seconds("HOSTING_BATCH_POLL_SECS", 0.5)?,
    };
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
        "migrator",
    );
    let migrator = Migrator {
        store: store.clone(),
        rpc: bus::RpcClient::new(bus.clone()),
        settings,
        faults: saga::Faults::from_env(),
    };
    let config = worker::WorkerConfig {
        service: "migrator",
        prefetch,
        lease,
    };
    tokio::select! {
        _ = worker::Worker::run(store, bus.clone(), migrator, config) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    Ok(())
}

//! installer: site tasks on a web server (install, verify; later login-reset, disable,
//! enable, delete) and platform verify.

mod install;
mod platform_verify;
mod verify;

use std::time::Duration;
use worker::{Outcome, TaskHandler, TaskLog};

pub struct Settings {
    pub action_timeout: Duration,
    pub rpc_timeout: Duration,
    pub login_link_ttl: Duration,
}

pub struct Installer {
    pub store: store::Store,
    pub rpc: bus::RpcClient,
    pub settings: Settings,
    pub faults: saga::Faults,
}

impl TaskHandler for Installer {
    async fn run(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        use domain::TaskType::*;
        match task.task_type {
            PlatformVerify => platform_verify::run(self, task, log).await,
            Install => install::run(self, task, log).await,
            Verify => verify::run(self, task, log).await,
            other => Outcome::Error(format!("the installer cannot run '{other}' tasks yet")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("installer");
    let common = config::Common::from_env()?;
    let settings = Settings {
        action_timeout: config::seconds("HOSTING_ACTION_TIMEOUT_SECS", 600.0)?,
        rpc_timeout: config::seconds("HOSTING_RPC_TIMEOUT_SECS", 60.0)?,
        login_link_ttl: config::seconds("HOSTING_LOGIN_LINK_TTL_SECS", 86400.0)?,
    };
    let lease = config::seconds("HOSTING_LEASE_SECS", 30.0)?;
    let prefetch = config::parse("HOSTING_PREFETCH", 4u16)?;
    let store = store::Store::connect(&common.database_url, 8, Duration::from_secs(60)).await?;
    let bus = bus::Bus::new(
        &common.amqp_url,
        contract::Topology::new(&common.prefix),
        "installer",
    );
    let installer = Installer {
        store: store.clone(),
        rpc: bus::RpcClient::new(bus.clone()),
        settings,
        faults: saga::Faults::from_env(),
    };
    let config = worker::WorkerConfig {
        service: "installer",
        prefetch,
        lease,
    };
    tokio::select! {
        _ = worker::Worker::run(store, bus.clone(), installer, config) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    Ok(())
}

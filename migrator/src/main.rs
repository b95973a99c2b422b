//! migrator: migrate (incl. rename), clone and batch migrate.
//!
//! This version connects, declares its task queue and consumes it, so the topology is
//! complete; its task types are not accepted by the gateway yet, and a message that arrives
//! anyway ends its task with an error that says so.

use std::time::Duration;
use worker::{Outcome, TaskHandler, TaskLog};

struct NotYet;

impl TaskHandler for NotYet {
    async fn run(&self, task: &store::Task, log: &TaskLog) -> Outcome {
        let message = format!(
            "the migrator cannot run '{}' tasks in this version",
            task.task_type
        );
        log.error(message.clone()).await;
        Outcome::Error(message)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("migrator");
    let common = config::Common::from_env()?;
    let lease = config::seconds("HOSTING_LEASE_SECS", 30.0)?;
    let store = store::Store::connect(&common.database_url, 4, Duration::from_secs(60)).await?;
    let bus = bus::Bus::new(
        &common.amqp_url,
        contract::Topology::new(&common.prefix),
        "migrator",
    );
    let config = worker::WorkerConfig {
        service: "migrator",
        prefetch: 4,
        lease,
    };
    tokio::select! {
        _ = worker::Worker::run(store, bus.clone(), NotYet, config) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    Ok(())
}

//! installer: site tasks on a web server (install, verify, login-reset, disable, enable,
//! delete) and platform verify.

mod delete;
mod install;
mod lifecycle;
mod platform_verify;
mod server_verify;
mod verify;
mod welcome;

use std::time::Duration;
use worker::{Outcome, TaskHandler, TaskLog};

pub struct Settings {
    pub action_timeout: Duration,
    pub rpc_timeout: Duration,
    /// How long a backup asked of the backupper may take (the pre-disable and pre-delete
    /// backups of a large site take minutes).
    pub backup_timeout: Duration,
    /// Unless the setting `login_link_ttl_hours` says otherwise.
    pub login_link_ttl: Duration,
    /// The gateway's address for links in the API and in mail.
    pub public_url: String,
    /// The relay for welcome mail; none: mail is skipped.
    pub smtp: Option<mail::SmtpConfig>,
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
            PlatformLock | PlatformUnlock | PlatformDelete => {
                platform_verify::set_status(self, task, log).await
            }
            Install => install::run(self, task, log).await,
            Verify => verify::run(self, task, log).await,
            LoginReset => lifecycle::login_reset(self, task, log).await,
            Disable => lifecycle::disable(self, task, log).await,
            Enable => lifecycle::enable(self, task, log).await,
            Delete => delete::run(self, task, log).await,
            ServerVerify => server_verify::run(self, task, log).await,
            // The bench's task: what the control plane costs when the work costs nothing.
            Noop => Outcome::Success(None),
            other => Outcome::Error(format!("the installer cannot run '{other}' tasks yet")),
        }
    }
}

impl Installer {
    /// A boolean from the settings the admin changes through the API.
    pub async fn setting_bool(&self, key: &str, default: bool) -> bool {
        match self.store.settings().await {
            Ok(map) => map.get(key).and_then(|v| v.as_bool()).unwrap_or(default),
            Err(e) => {
                tracing::warn!(error = %e, key, "cannot read settings; using the default");
                default
            }
        }
    }

    /// How long a one-time login link stays valid: the setting `login_link_ttl_hours`, or
    /// `HOSTING_LOGIN_LINK_TTL_SECS`.
    pub async fn login_link_ttl(&self) -> Duration {
        let hours = match self.store.settings().await {
            Ok(map) => map.get("login_link_ttl_hours").and_then(|v| v.as_f64()),
            Err(_) => None,
        };
        hours
            .filter(|h| *h > 0.0 && *h <= 720.0)
            .and_then(|h| Duration::try_from_secs_f64(h * 3600.0).ok())
            .unwrap_or(self.settings.login_link_ttl)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("installer");
    // Scraped by Prometheus at HOSTING_METRICS_LISTEN, when that is set.
    tokio::spawn(telemetry::metrics::serve_from_env());
    let common = config::Common::from_env()?;
    let settings = Settings {
        action_timeout: config::seconds("HOSTING_ACTION_TIMEOUT_SECS", 600.0)?,
        rpc_timeout: config::seconds("HOSTING_RPC_TIMEOUT_SECS", 60.0)?,
        backup_timeout: config::seconds("HOSTING_BACKUP_TIMEOUT_SECS", 3600.0)?,
        login_link_ttl: config::seconds("HOSTING_LOGIN_LINK_TTL_SECS", 86400.0)?,
        public_url: config::public_url()?,
        smtp: mail::SmtpConfig::from_env()?,
    };
    let lease = config::seconds("HOSTING_LEASE_SECS", 30.0)?;
    let prefetch = config::parse("HOSTING_PREFETCH", 4u16)?;
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

//! dbprov: databases, users and grants on one db server, over RPC (`dbprov.<server>`).

mod provision;

use anyhow::Context;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::ConnectOptions;
use std::str::FromStr;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("dbprov");
    // Scraped by Prometheus at HOSTING_METRICS_LISTEN, when that is set.
    tokio::spawn(telemetry::metrics::serve_from_env());
    let common = config::Common::from_env()?;
    let server = domain::Name::parse(&config::string("HOSTING_SERVER", "local"))
        .context("HOSTING_SERVER")?;
    let admin_url = config::string(
        "HOSTING_MYSQL_ADMIN_URL",
        "mysql://root@localhost/?socket=/run/mysqld/mysqld.sock",
    );
    let user_host = provision::UserHost::parse(&config::string("HOSTING_DB_USER_HOST", "%"))?;
    // Database passwords arrive sealed to this key; the control plane learns its public half.
    let key_file = config::string(
        "HOSTING_DBPROV_KEY_FILE",
        &format!("/var/lib/hosting/dbprov-{server}.key"),
    );
    let key = seal::KeyPair::load_or_create(std::path::Path::new(&key_file))?;
    tracing::info!(public_key = %key.public().as_str(), "passwords for this db server are sealed to this key (POST /api/v1/servers takes it as public_key)");
    // Statements are never logged: CREATE USER carries the new user's password.
    let options = MySqlConnectOptions::from_str(&admin_url)
        .context("HOSTING_MYSQL_ADMIN_URL is not a mysql:// URL")?
        .disable_statement_logging();
    let pool = loop {
        match MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
        {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, "MariaDB not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let bus = bus::Bus::new(
        &common.amqp_url,
        contract::Topology::new(&common.prefix),
        "dbprov",
    );
    bus.act_as_agent();
    bus.agent_ready().await;
    tracing::info!(%server, "dbprov ready");
    let software = || provision::software(pool.clone());
    let provisioner = provision::Provisioner::new(pool.clone(), user_host, key);
    tokio::select! {
        _ = bus.serve::<contract::DbprovRpc, _>(&server, 4, provisioner) => {},
        _ = bus.beat(domain::ServerKind::Db, server.clone(), "dbprov", software) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    Ok(())
}

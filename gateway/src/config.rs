use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub common: config::Common,
    pub listen: SocketAddr,
    /// Site database and user names are `<db_prefix><site id>`.
    pub db_prefix: String,
    pub sweep_interval: Duration,
    pub redispatch_after: Duration,
    pub max_attempts: i32,
    pub run_migrations: bool,
    /// Where browsers reach the gateway: login links and the "site disabled" page.
    pub public_url: String,
    /// Failed authentications one address may make in a minute before it gets 429.
    pub auth_failures_per_minute: u32,
    /// Accept the bench's `noop` tasks (never in production: they do nothing).
    pub bench_tasks: bool,
    /// RabbitMQ's management API (`http://user:password@host:15672`): when given, every
    /// server registered gets a broker user of its own for its agent.
    pub broker_admin_url: Option<String>,
    /// The broker address agents on other hosts connect to (`amqp://host:5672/vhost`, no
    /// user; several separated by commas for a cluster): the credentials a registration
    /// answers are put into each. By default the gateway's own `HOSTING_AMQP_URL`.
    pub agent_amqp_url: Option<String>,
    /// An agent is `unreachable` when it has not beaten for three of these.
    pub heartbeat_interval: Duration,
}

impl GatewayConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let db_prefix = config::string("HOSTING_DB_PREFIX", "site_");
        domain::DbIdent::parse(&format!("{db_prefix}1")).map_err(|e| {
            anyhow::anyhow!("HOSTING_DB_PREFIX={db_prefix:?} makes invalid database names: {e}")
        })?;
        Ok(Self {
            common: config::Common::from_env()?,
            listen: config::parse("HOSTING_LISTEN", "127.0.0.1:8080".parse()?)?,
            db_prefix,
            sweep_interval: config::seconds("HOSTING_SWEEP_INTERVAL_SECS", 5.0)?,
            redispatch_after: config::seconds("HOSTING_REDISPATCH_AFTER_SECS", 60.0)?,
            max_attempts: config::parse("HOSTING_MAX_ATTEMPTS", 5)?,
            run_migrations: config::parse("HOSTING_MIGRATE", true)?,
            public_url: config::public_url()?,
            auth_failures_per_minute: config::parse("HOSTING_AUTH_FAILURES_PER_MINUTE", 30)?,
            bench_tasks: config::parse("HOSTING_BENCH_TASKS", false)?,
            broker_admin_url: config::optional("HOSTING_BROKER_ADMIN_URL"),
            agent_amqp_url: config::optional("HOSTING_AGENT_AMQP_URL"),
            heartbeat_interval: bus::agent::heartbeat_interval(),
        })
    }
}

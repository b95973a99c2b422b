//! gateway: the HTTP API, the outbox relay that hands accepted tasks to the broker, the
//! sweeper that recovers tasks from dead workers, and `bootstrap` for a first install.

use gateway::{bootstrap, config::GatewayConfig, startup::Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("gateway");
    let config = GatewayConfig::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => Application::build(config).await?.run_until_stopped().await,
        Some("bootstrap") => bootstrap::run(config, &args[1..]).await,
        Some(other) => {
            anyhow::bail!("unknown command '{other}'; use 'serve' (the default) or 'bootstrap'")
        }
    }
}

//! webconf: the web server configuration of one web server, over RPC (`webconf.<server>`):
//! site vhosts for nginx, a configuration test before every reload, and a reload that returns
//! only once nginx serves the new configuration.

mod apply;
mod fpm;
mod nginx;
mod sites;
mod users;
mod vhost;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("webconf");
    // Scraped by Prometheus at HOSTING_METRICS_LISTEN, when that is set.
    tokio::spawn(telemetry::metrics::serve_from_env());
    let common = config::Common::from_env()?;
    let server = domain::Name::parse(&config::string("HOSTING_SERVER", "local"))
        .context("HOSTING_SERVER")?;
    // A site's settings and its actions' context arrive sealed to this key; the control
    // plane learns its public half (`public-key`) the first time it needs it.
    let key_file = config::string(
        "HOSTING_WEBCONF_KEY_FILE",
        &format!(
            "{}/agent.key",
            config::string("HOSTING_WEBCONF_DIR", "/var/lib/hosting/webconf")
        ),
    );
    let key = seal::KeyPair::load_or_create(std::path::Path::new(&key_file))
        .with_context(|| format!("the agent's key in {key_file}"))?;
    let settings = nginx::Settings::from_env()?;
    let web = nginx::Nginx::new(settings);

    let bus = bus::Bus::new(
        &common.amqp_url,
        contract::Topology::new(&common.prefix),
        "webconf",
    );
    bus.act_as_agent();
    bus.agent_ready().await;
    // The queue first: requests sent while nginx and php-fpm start wait in it. On a host of
    // its own it is the control plane's to declare (at registration, and at every start).
    while let Err(e) = bus.find_rpc_queue("webconf", &server).await {
        tracing::warn!(error = %e, "no RPC queue for this server yet (is it registered?); retrying in 2 s");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    web.prepare().await.context("preparing the web server")?;
    tracing::info!(%server, "webconf ready");
    // Requests handled at once: vhost changes among them are applied together, so many
    // in flight make few reloads.
    let prefetch = config::parse("HOSTING_RPC_PREFETCH", 128u16)?;
    let software = || nginx::software(web.settings.clone());
    tokio::select! {
        _ = bus.serve::<contract::WebconfRpc, _>(&server, prefetch, vhost::VhostService::new(web.clone(), sites::Sites::new(key))) => {},
        _ = bus.beat(domain::ServerKind::Web, server.clone(), "webconf", software) => {},
        _ = telemetry::shutdown_signal() => tracing::info!("stopping"),
    }
    bus.close().await;
    web.stop_if_owned().await;
    Ok(())
}

//! `gateway bootstrap`: what a first install needs, idempotently. Migrates the state
//! database; records the `local` web and db servers; registers the example platform (its
//! verify task waits in the outbox for the running gateway's relay); makes sure an admin
//! token exists, stored hashed, and writes it to the token file (mode 0600).
//!
//! Options: --token-file PATH (required), --platform-root PATH, --platform-name NAME,
//! --web-port N (8088), --db-host HOST (127.0.0.1), --db-port N (3306).

use crate::config::GatewayConfig;
use anyhow::{bail, Context};
use domain::{Driver, HostPath, Name, ServerKind};
use rand::RngExt;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

pub async fn run(config: GatewayConfig, args: &[String]) -> anyhow::Result<()> {
    let mut opts = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument {flag:?}")
        };
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        opts.insert(name.to_owned(), value.clone());
    }
    let token_file = opts
        .get("token-file")
        .context("--token-file PATH is required")?;
    let store =
        store::Store::connect(&config.common.database_url, 2, Duration::from_secs(60)).await?;
    store.migrate().await?;

    let local = Name::parse("local")?;
    let web_port: i32 = opts
        .get("web-port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(8088);
    let db_host = opts
        .get("db-host")
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());
    let db_port: i32 = opts
        .get("db-port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(3306);
    let web = match store.server_by_name(&local, ServerKind::Web).await {
        Ok(s) => s,
        Err(_) => {
            store
                .create_server(&local, ServerKind::Web, "127.0.0.1", web_port)
                .await?
        }
    };
    if store.server_by_name(&local, ServerKind::Db).await.is_err() {
        store
            .create_server(&local, ServerKind::Db, &db_host, db_port)
            .await?;
    }
    println!("servers: local (web, port {}), local (db)", web.port);

    if let Some(root) = opts.get("platform-root") {
        let root = HostPath::parse(root).map_err(|e| anyhow::anyhow!("--platform-root: {e}"))?;
        // Platforms may live beside the example one, and in /srv/platforms.
        if let Some(parent) = root.as_path().parent().and_then(|p| p.to_str()) {
            let parent = HostPath::parse(parent)?;
            if !web.platform_dirs.contains(&parent) {
                let mut dirs = vec![parent];
                dirs.extend(web.platform_dirs.iter().cloned());
                let srv = HostPath::parse("/srv/platforms")?;
                if !dirs.contains(&srv) {
                    dirs.push(srv);
                }
                store.set_platform_dirs(web.id, &dirs).await?;
            }
        }
        let name = Name::parse(
            opts.get("platform-name")
                .map(String::as_str)
                .unwrap_or("example"),
        )?;
        match store.platform_by_name(&name).await {
            Ok(p) => println!(
                "platform: {} ({}) already registered, {}",
                p.name, p.root, p.status
            ),
            Err(_) => {
                let (p, task) = store
                    .create_platform(&name, web.id, &root, Driver::Hooks, "bootstrap", None)
                    .await?;
                println!(
                    "platform: {} registered at {}; verify task {} queued",
                    p.name, p.root, task.id
                );
            }
        }
    }

    let existing = std::fs::read_to_string(token_file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let token = match existing {
        Some(t) => t,
        None => {
            let mut rng = rand::rng();
            let bytes: [u8; 24] = rng.random();
            let t = format!("hst_{}", hex::encode(bytes));
            if let Some(dir) = std::path::Path::new(token_file).parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(token_file, format!("{t}\n"))?;
            std::fs::set_permissions(token_file, std::fs::Permissions::from_mode(0o600))?;
            t
        }
    };
    store.ensure_token("admin", &token, None).await?;
    println!("admin token: written to {token_file}");
    Ok(())
}

//! A server's `verify`: its agent answers, and says what it runs for sites.

use crate::Installer;
use domain::ServerKind;
use std::collections::BTreeMap;
use store::Task;
use worker::{Outcome, TaskLog};

/// Asks the server's agent for its software and, on a web server, for the PHP its pools run.
/// Success when every piece answers with a version; a warning when one could not be read
/// (php-fpm missing, say); an error when the agent does not answer.
pub async fn run(inst: &Installer, task: &Task, log: &TaskLog) -> Outcome {
    let id = match task.parsed_args() {
        Ok(contract::TaskArgs::ServerVerify(a)) => a.server,
        Ok(_) => return Outcome::Error("a server task whose arguments name no server".into()),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let server = match inst.store.server(id).await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let agent = contract::agent_service(server.kind);
    // An agent that answers at all answers at once: no reason to wait a long task's timeout.
    let ask_within = inst
        .settings
        .rpc_timeout
        .min(std::time::Duration::from_secs(15));
    log.info(format!(
        "asking {agent} on {} server {} what it runs",
        server.kind, server.name
    ))
    .await;
    let asked: anyhow::Result<BTreeMap<String, String>> = match server.kind {
        ServerKind::Web => site::webconf(
            &inst.rpc,
            &server.name,
            contract::WebconfRequest::Software,
            ask_within,
        )
        .await
        .map(|r| r.software.unwrap_or_default()),
        ServerKind::Db => site::dbprov(
            &inst.rpc,
            &server.name,
            contract::DbprovRequest::Software,
            ask_within,
        )
        .await
        .map(|r| r.software.unwrap_or_default()),
    };
    let mut software = match asked {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Error(format!(
                "{agent} on {} server {} did not answer: {e:#}",
                server.kind, server.name
            ))
        }
    };
    if server.kind == ServerKind::Web {
        let php = site::webconf(
            &inst.rpc,
            &server.name,
            contract::WebconfRequest::PhpInfo,
            ask_within,
        )
        .await;
        match php.map(|r| r.php) {
            Ok(Some(php)) => {
                software.insert("php_pools".into(), php.version.clone());
                log.info(format!(
                    "site pools run PHP {} with {}",
                    php.version,
                    php.extensions.join(", ")
                ))
                .await;
            }
            Ok(None) => {
                software.insert("php_pools".into(), "unknown (no answer)".into());
            }
            Err(e) => {
                software.insert("php_pools".into(), format!("unknown ({e:#})"));
            }
        }
    }
    let mut unknown = Vec::new();
    for (name, version) in &software {
        if version.starts_with("unknown") || version.starts_with("not installed") {
            log.warn(format!("{name}: {version}")).await;
            unknown.push(name.clone());
        } else {
            log.info(format!("{name}: {version}")).await;
        }
    }
    let result = serde_json::json!({ "server": id.0, "agent": agent, "software": software });
    if unknown.is_empty() {
        Outcome::Success(Some(result))
    } else {
        Outcome::Warning(format!(
            "{agent} answered, but these could not be read: {}",
            unknown.join(", ")
        ))
    }
}

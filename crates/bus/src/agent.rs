//! What every host's agent does on the broker besides serving its RPCs: wait for the control
//! plane's exchanges, and say every few seconds that it is there and what it runs.

use crate::Bus;
use contract::Heartbeat;
use domain::{Name, ServerKind};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// How often an agent beats (`HOSTING_HEARTBEAT_SECS`, default 10 s). The control plane calls
/// an agent unreachable after three beats missed.
pub fn heartbeat_interval() -> Duration {
    let secs = std::env::var("HOSTING_HEARTBEAT_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 3600.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

impl Bus {
    /// Waits until the broker answers and the control plane's exchanges are there (an agent
    /// may start before the control plane does).
    pub async fn agent_ready(&self) {
        loop {
            self.wait_until_reachable().await;
            match self.declare_agent_topology().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the control plane's exchanges are not there yet (or this agent's broker user may not see them); retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// Beats forever. `software` is asked at the first beat and then every 30 beats (a
    /// package upgrade shows within minutes, without spawning processes every few seconds).
    pub async fn beat<F, Fut>(&self, kind: ServerKind, server: Name, service: &str, software: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = BTreeMap<String, String>>,
    {
        let every = heartbeat_interval();
        let mut known = BTreeMap::new();
        let mut n: u64 = 0;
        loop {
            if n.is_multiple_of(30) {
                known = software().await;
            }
            n = n.wrapping_add(1);
            let beat = Heartbeat {
                kind,
                server: server.clone(),
                service: service.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                software: known.clone(),
            };
            if let Err(e) = self.publish_heartbeat(&beat).await {
                tracing::debug!(error = %e, "heartbeat not published");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The first line a program prints of its version (`nginx -v` writes to stderr), or why not.
pub async fn program_version(program: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            let line = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(200)
                .collect::<String>();
            if out.status.success() && !line.is_empty() {
                line
            } else {
                format!("unknown ({program} exited with {})", out.status)
            }
        }
        Ok(Err(e)) => format!("unknown (cannot run {program}: {e})"),
        Err(_) => format!("unknown ({program} did not answer within 10 s)"),
    }
}

impl Bus {
    /// Hands every agent heartbeat to `on_beat`, with the user the broker says sent it and
    /// the routing key it came with (which the sender's topic permission allows), forever: on
    /// a queue of this process's own, made again after a lost connection.
    pub async fn watch_heartbeats<F, Fut>(&self, on_beat: F)
    where
        F: Fn(Heartbeat, Option<String>, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        use futures_util::StreamExt;
        loop {
            match self.heartbeat_consumer().await {
                Ok(mut consumer) => {
                    while let Some(Ok(delivery)) = consumer.next().await {
                        let sender = delivery
                            .properties
                            .user_id()
                            .as_ref()
                            .map(|u| u.as_str().to_owned());
                        let key = delivery.routing_key.as_str().to_owned();
                        // A heartbeat is small; anything else is not one.
                        if delivery.data.len() > 8192 {
                            tracing::warn!(?sender, "an oversized heartbeat ignored");
                            continue;
                        }
                        match serde_json::from_slice::<Heartbeat>(&delivery.data) {
                            Ok(beat) => on_beat(beat, sender, key).await,
                            Err(e) => {
                                tracing::warn!(error = %e, ?sender, "unreadable heartbeat ignored")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen to agent heartbeats yet"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn heartbeat_consumer(&self) -> Result<lapin::Consumer, crate::BusError> {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let ch = self.channel().await?;
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                {
                    let mut args = crate::bounded_queue_args(1_000, 8 << 20);
                    // Stale beats say nothing: whatever the sender set, a minute at most.
                    args.insert(
                        "x-message-ttl".into(),
                        lapin::types::AMQPValue::LongLongInt(60_000),
                    );
                    args
                },
            )
            .await?;
        ch.queue_bind(
            queue.name().clone(),
            self.topology().events_exchange().as_str().into(),
            "agent.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(ch
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?)
    }
}

//! Getting accepted tasks to the workers, and back from the dead.
//!
//! - The relay publishes outbox rows (written in the same transaction as their tasks) and
//!   deletes each once the broker confirmed it. While the broker is down the rows wait, and a
//!   gateway that died after its commit finds them at its next start: an accepted task is
//!   never lost. It wakes on PostgreSQL NOTIFY, and polls once a second besides.
//! - The sweeper re-queues tasks whose worker's lease lapsed and re-dispatches queued tasks
//!   whose message went missing.
//! - Dead letters (messages a consumer could not process) mark their task as failed.

use bus::{Bus, Disposition, Handler, Incoming};
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::sync::Notify;

pub async fn relay(store: Store, bus: Bus, wake: Arc<Notify>) {
    let exchange = bus.topology().tasks_exchange();
    let mut backoff = Duration::from_millis(200);
    loop {
        let batch = match store.claim_outbox(100, Duration::from_secs(30)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "outbox not readable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            continue;
        }
        // The whole batch goes out at once and its confirms are awaited together; the rows
        // the broker confirmed are then removed in one statement.
        let bodies: Vec<String> = batch.iter().map(|m| m.payload.to_string()).collect();
        let outgoing: Vec<bus::OutgoingMessage> = batch
            .iter()
            .zip(&bodies)
            .map(|(m, body)| bus::OutgoingMessage {
                routing_key: &m.routing_key,
                message_type: &m.message_type,
                body: body.as_bytes(),
                traceparent: m.traceparent.as_deref(),
            })
            .collect();
        let results = bus.publish_batch(&exchange, &outgoing).await;
        let mut published = Vec::new();
        let mut failed = false;
        for (message, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => published.push(message),
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "cannot publish accepted tasks yet; they wait in the outbox");
                    }
                    failed = true;
                    if let Err(e) = store.outbox_failed(message, &e.to_string()).await {
                        tracing::warn!(error = %e, "cannot release an outbox row; it is retried when its claim lapses");
                    }
                }
            }
        }
        if let Err(e) = store.outbox_published(&published).await {
            tracing::warn!(error = %e, "cannot record the outbox rows' fate; they may be published twice (harmless)");
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

/// Wakes the relay on every NOTIFY from any process that wrote to the outbox.
pub async fn listen_for_outbox(store: Store, wake: Arc<Notify>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(store.pool()).await {
            Ok(mut listener) => {
                if listener.listen(store::OUTBOX_CHANNEL).await.is_ok() {
                    while listener.recv().await.is_ok() {
                        wake.notify_one();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot LISTEN for outbox rows; polling only"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn sweeper(
    store: Store,
    wake: Arc<Notify>,
    interval: Duration,
    redispatch_after: Duration,
    max_attempts: i32,
) {
    loop {
        tokio::time::sleep(interval).await;
        match store.sweep(redispatch_after, max_attempts).await {
            Ok(r) if r != store::SweepReport::default() => {
                tracing::warn!(?r, "recovered tasks");
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}

pub struct DeadLetters {
    pub store: Store,
    /// The topology's prefix: which queues are task queues.
    pub prefix: String,
}

/// The task a message names: its `task` field, from JSON or, when the message does not
/// parse (cut short, garbled), from the first `"task": <number>` in it.
fn named_task(body: &[u8]) -> Option<domain::TaskId> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return v.get("task").and_then(|t| t.as_i64()).map(domain::TaskId);
    }
    let text = String::from_utf8_lossy(body);
    let after = text.split_once("\"task\"")?.1.trim_start();
    let digits: String = after
        .strip_prefix(':')?
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .take(20)
        .collect();
    digits.parse().ok().map(domain::TaskId)
}

/// Kept for an operator (`GET /api/v1/dead-letters`), with the reason its consumer gave. The
/// task a message names fails with it when it was that task's own message and cannot be
/// processed (its consumer says so, or the broker dead-lettered it on its own); a message that
/// only claims to be about a task (another type, another queue) leaves the task alone.
impl Handler for DeadLetters {
    async fn handle(&self, message: Incoming) -> Disposition {
        let h = &message.headers;
        // Our consumers say why; the broker says only how (RabbitMQ's `x-first-death-reason`).
        let reason = h.get("x-hosting-reason").cloned().unwrap_or_else(|| {
            match h.get("x-first-death-reason").map(String::as_str) {
                Some("delivery_limit") => format!(
                    "it was delivered {} times without being settled (its consumer died each time): the broker's delivery limit",
                    bus::DELIVERY_LIMIT
                ),
                Some("expired") => "it expired in its queue before a consumer took it".into(),
                Some("maxlen") => "its queue was full".into(),
                // An agent's consumer, which may not publish dead letters itself (see
                // `Bus::act_as_agent`): its log says why.
                _ => format!(
                    "its consumer rejected it (the log of the service reading {} says why)",
                    h.get("x-first-death-queue").map_or("its queue", String::as_str)
                ),
            }
        });
        // A task fails with its own message only: one our consumer says so of, or one the
        // broker dead-lettered from a task queue (its delivery limit). A request rejected or
        // expired in an agent's RPC queue names a task it was made for, which goes on.
        let fail_task = match h.get("x-hosting-fail-task") {
            Some(v) => v == "true",
            None => h
                .get("x-first-death-queue")
                .is_some_and(|q| q.starts_with(&format!("{}.tasks.", self.prefix))),
        };
        // The task it names, read loosely: a garbled message may still say which.
        let task = named_task(&message.data);
        let recorded = self
            .store
            .record_dead_letter(&store::NewDeadLetter {
                queue: h
                    .get("x-hosting-queue")
                    .or_else(|| h.get("x-first-death-queue"))
                    .map(String::as_str),
                exchange: h
                    .get("x-hosting-exchange")
                    .or_else(|| h.get("x-first-death-exchange"))
                    .map(String::as_str),
                routing_key: h.get("x-hosting-routing-key").map(String::as_str),
                message_type: message.message_type.as_deref(),
                reason: &reason,
                task,
                body: &message.data,
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot keep a dead letter yet; it comes back");
            return Disposition::Retry;
        }
        tracing::error!(?task, %reason, "a message was dead-lettered");
        // Only a task still waiting for its message: one that runs has its message already.
        let waiting = match task {
            Some(t) => self
                .store
                .task(t)
                .await
                .is_ok_and(|t| t.status == domain::TaskStatus::Queued),
            None => false,
        };
        if let (Some(task), true, true) = (task, fail_task, waiting) {
            let why = format!("its message could not be processed ({reason}); it is kept as a dead letter, and the task can be retried");
            let _ = self.store.append_log(task, "error", &why).await;
            // The letter is kept already: taken again it would be kept twice. A task left
            // queued is dispatched again by the sweeper, and its message fails again.
            if let Err(e) = self.store.fail_task(task, &why).await {
                tracing::warn!(%task, error = %e, "cannot fail the task a dead letter names");
            }
        }
        Disposition::Ack
    }
}

#[cfg(test)]
mod tests {
    use super::named_task;
    use domain::TaskId;

    #[test]
    fn a_garbled_message_still_names_its_task() {
        assert_eq!(
            named_task(br#"{"task": 12, "type": "verify"}"#),
            Some(TaskId(12))
        );
        assert_eq!(
            named_task(br#"{"task": 12, "type": "disa"#),
            Some(TaskId(12))
        );
        assert_eq!(named_task(br#"{"type": "x", "task":7"#), Some(TaskId(7)));
        assert_eq!(named_task(br#"{"task": "12"}"#), None);
        assert_eq!(named_task(b"\xff\xfe garbage"), None);
        assert_eq!(named_task(br#"{"task": 99999999999999999999999"#), None);
    }
}

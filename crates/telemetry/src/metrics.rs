//! Metrics in Prometheus's (OpenMetrics) text format.
//!
//! Every process keeps its own counters and histograms here, recorded where the thing happens
//! (a task accepted in the store, a task finished in the worker loop, an RPC in the bus, an
//! undo in the saga runner, an archive in the backupper). The gateway serves them at
//! `/metrics` on its API port beside the gauges it reads from the state database at scrape
//! time; every other service serves its own at `HOSTING_METRICS_LISTEN` when that is set.
//! Prometheus scrapes them all and sums across processes.
//!
//! Names follow Prometheus's conventions: a `hosting_` prefix, base units in the name
//! (`_seconds`, `_bytes`), counters exposed with `_total`. Labels are bounded sets (task
//! types, statuses, services, message types, servers): never a site, a domain or an id.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

pub use prometheus_client::metrics::gauge::Gauge;

/// A metric's labels: a few fixed names, each with a value from a bounded set.
pub type Labels = Vec<(&'static str, String)>;

/// The content type of what [`encode_registry`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// 5 ms to about 12 minutes, each bucket 2.5 times the last: dispatch waits, RPCs and
/// tasks from a noop to a large backup all land in a bucket that says something.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

struct Metrics {
    tasks_accepted: Family<Labels, Counter>,
    tasks_finished: Family<Labels, Counter>,
    task_duration: Family<Labels, Histogram, fn() -> Histogram>,
    task_queue_wait: Family<Labels, Histogram, fn() -> Histogram>,
    saga_undos: Family<Labels, Counter>,
    rpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    messages_dead_lettered: Family<Labels, Counter>,
    backup_written_bytes: Counter,
    backup_duration: Family<Labels, Histogram, fn() -> Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    tasks_accepted: Family::default(),
    tasks_finished: Family::default(),
    task_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
    task_queue_wait: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
    saga_undos: Family::default(),
    rpc_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
    messages_dead_lettered: Family::default(),
    backup_written_bytes: Counter::default(),
    backup_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
});

/// A task was written to the state database, queued (by the API, a schedule, a parent task).
pub fn task_accepted(task_type: &str) {
    METRICS
        .tasks_accepted
        .get_or_create(&vec![("type", task_type.to_owned())])
        .inc();
}

/// A worker started a task that had waited `waited` since it was accepted.
pub fn task_started(task_type: &str, waited: Duration) {
    METRICS
        .task_queue_wait
        .get_or_create(&vec![("type", task_type.to_owned())])
        .observe(waited.as_secs_f64());
}

/// A task ended and its outcome was stored: `ran` is how long its handler took.
pub fn task_finished(task_type: &str, status: &str, ran: Duration) {
    METRICS
        .tasks_finished
        .get_or_create(&vec![
            ("type", task_type.to_owned()),
            ("status", status.to_owned()),
        ])
        .inc();
    METRICS
        .task_duration
        .get_or_create(&vec![("type", task_type.to_owned())])
        .observe(ran.as_secs_f64());
}

/// Makes the task counters' series exist at 0 for these task types and statuses, so that
/// Prometheus sees the first increase after a start (`rate()` cannot see a series appear).
pub fn preset_task_series(task_types: &[&str], statuses: &[&str]) {
    for t in task_types {
        let _ = METRICS
            .tasks_accepted
            .get_or_create(&vec![("type", (*t).to_owned())]);
        for s in statuses {
            let _ = METRICS.tasks_finished.get_or_create(&vec![
                ("type", (*t).to_owned()),
                ("status", (*s).to_owned()),
            ]);
        }
    }
}

/// A saga step was undone (the task failed after it and put things back).
pub fn saga_undo(task_type: &str, step: &str) {
    METRICS
        .saga_undos
        .get_or_create(&vec![
            ("type", task_type.to_owned()),
            ("step", step.to_owned()),
        ])
        .inc();
}

/// An RPC to an agent ended: `outcome` is `ok`, `error` (the agent answered a failure) or
/// `unanswered` (a timeout or the broker away).
pub fn rpc_finished(service: &str, message_type: &str, outcome: &str, took: Duration) {
    METRICS
        .rpc_duration
        .get_or_create(&vec![
            ("service", service.to_owned()),
            ("rpc", message_type.to_owned()),
            ("outcome", outcome.to_owned()),
        ])
        .observe(took.as_secs_f64());
}

/// This process dead-lettered a message it took from `queue` (a poison message).
pub fn message_dead_lettered(queue_kind: &str) {
    METRICS
        .messages_dead_lettered
        .get_or_create(&vec![("queue", queue_kind.to_owned())])
        .inc();
}

/// A backup archive was written and verified: its size and how long it took.
pub fn backup_written(bytes: u64, took: Duration) {
    METRICS.backup_written_bytes.inc_by(bytes);
    METRICS
        .backup_duration
        .get_or_create(&vec![])
        .observe(took.as_secs_f64());
}

/// A registry holding this process's metrics. The caller may register gauges of its own
/// (the gateway's, read at scrape time) before encoding it.
pub fn registry() -> Registry {
    let m = &*METRICS;
    let mut r = Registry::with_prefix("hosting");
    r.register(
        "tasks_accepted",
        "Tasks written to the state database and queued, by type",
        m.tasks_accepted.clone(),
    );
    r.register(
        "tasks_finished",
        "Tasks that ended with their outcome stored, by type and status",
        m.tasks_finished.clone(),
    );
    r.register(
        "task_duration_seconds",
        "How long a task's handler ran, by type",
        m.task_duration.clone(),
    );
    r.register(
        "task_queue_wait_seconds",
        "How long a task was queued before a worker started it, by type",
        m.task_queue_wait.clone(),
    );
    r.register(
        "saga_undos",
        "Saga steps undone after a later step failed, by task type and step",
        m.saga_undos.clone(),
    );
    r.register(
        "rpc_duration_seconds",
        "RPCs to agents, by service, message type and outcome",
        m.rpc_duration.clone(),
    );
    r.register(
        "messages_dead_lettered",
        "Messages this process refused and dead-lettered, by queue",
        m.messages_dead_lettered.clone(),
    );
    r.register(
        "backup_written_bytes",
        "Bytes of backup archives written and verified",
        m.backup_written_bytes.clone(),
    );
    r.register(
        "backup_duration_seconds",
        "How long making a backup archive took",
        m.backup_duration.clone(),
    );
    r
}

/// The registry in the text format Prometheus scrapes.
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = encode(&mut out, registry);
    out
}

/// Serves this process's metrics at `http://$HOSTING_METRICS_LISTEN/metrics` when that is
/// set (the services other than the gateway, which serves them on its API port).
pub async fn serve_from_env() {
    let Ok(addr) = std::env::var("HOSTING_METRICS_LISTEN") else {
        return std::future::pending().await;
    };
    if addr.trim().is_empty() {
        return std::future::pending().await;
    }
    let listener = match tokio::net::TcpListener::bind(addr.trim()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for metrics scrapes; no metrics are served");
            return std::future::pending().await;
        }
    };
    tracing::info!(%addr, "serving metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                encode_registry(&registry()),
            )
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_are_written_with_their_conventional_names() {
        task_accepted("verify");
        task_started("verify", Duration::from_millis(4));
        task_finished("verify", "success", Duration::from_millis(30));
        rpc_finished("webconf", "webconf.v1", "ok", Duration::from_millis(2));
        backup_written(1234, Duration::from_secs(1));
        let text = encode_registry(&registry());
        for line in [
            "hosting_tasks_accepted_total{type=\"verify\"} 1",
            "hosting_tasks_finished_total{type=\"verify\",status=\"success\"} 1",
            "hosting_task_duration_seconds_count{type=\"verify\"} 1",
            "hosting_task_queue_wait_seconds_count{type=\"verify\"} 1",
            "hosting_backup_written_bytes_total 1234",
            "# TYPE hosting_rpc_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! `GET /metrics`: this process's counters and histograms (see `telemetry::metrics`), with
//! the gauges only the state database knows, read at scrape time: the outbox's backlog and
//! its oldest row's age, the dead letters kept, the tasks queued and running, and each
//! server's agent.
//!
//! Served on a port of its own (`HOSTING_METRICS_LISTEN`), not the API's, and without a
//! token, as Prometheus scrapes: it shows counts by task type and status and the names of
//! servers, never a site, a client or a secret; the port belongs on the monitoring network.

use super::servers::AgentView;
use crate::startup::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;
use telemetry::metrics::Labels;

type FloatGauge = Gauge<f64, AtomicU64>;

pub async fn scrape(State(s): State<AppState>) -> axum::response::Response {
    // Every task type's accepted counter exists from the first scrape, at 0.
    let types: Vec<&str> = domain::TaskType::ALL.iter().map(|t| t.as_str()).collect();
    telemetry::metrics::preset_task_series(&types, &[]);
    let mut registry = telemetry::metrics::registry();
    let state_up = s.state_up.load(std::sync::atomic::Ordering::SeqCst);
    let up = Gauge::<i64>::default();
    up.set(i64::from(state_up));
    registry.register(
        "state_database_up",
        "Whether the gateway reaches the state database (1) or not (0)",
        up,
    );
    if state_up {
        if let Err(e) = from_state_database(&s, &mut registry).await {
            // The process's own metrics are still worth a scrape.
            tracing::warn!(error = %e, "metrics: cannot read the state database's gauges");
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            telemetry::metrics::CONTENT_TYPE,
        )],
        telemetry::metrics::encode_registry(&registry),
    )
        .into_response()
}

async fn from_state_database(
    s: &AppState,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<(), store::StoreError> {
    let (backlog, oldest) = s.store.outbox_backlog().await?;
    let rows = Gauge::<i64>::default();
    rows.set(backlog);
    registry.register(
        "outbox_messages",
        "Accepted tasks' messages not yet handed to the broker",
        rows,
    );
    let age = FloatGauge::default();
    age.set(oldest);
    registry.register(
        "outbox_oldest_age_seconds",
        "How long the oldest message in the outbox has waited (0 when it is empty)",
        age,
    );

    let kept = Gauge::<i64>::default();
    kept.set(s.store.dead_letter_count().await?);
    registry.register(
        "dead_letters",
        "Dead letters kept for an operator, not yet replayed",
        kept,
    );

    let open = Family::<Labels, Gauge>::default();
    // Every type's series at 0 first: an empty queue is a 0, not a missing series.
    for t in domain::TaskType::ALL {
        for status in [domain::TaskStatus::Queued, domain::TaskStatus::Processing] {
            let _ = open.get_or_create(&vec![
                ("type", t.as_str().to_owned()),
                ("status", status.as_str().to_owned()),
            ]);
        }
    }
    for (task_type, status, n) in s.store.open_task_counts().await? {
        open.get_or_create(&vec![
            ("type", task_type.as_str().to_owned()),
            ("status", status.as_str().to_owned()),
        ])
        .set(n);
    }
    registry.register(
        "tasks_open",
        "Tasks queued or running now, by type and status",
        open,
    );

    let agent_up = Family::<Labels, Gauge>::default();
    let last_seen = Family::<Labels, FloatGauge>::default();
    let agents = s.store.server_agents().await?;
    for server in s.store.servers().await? {
        let seen = agents.iter().find(|a| a.server == server.id);
        let view = AgentView::new(&server, seen, s.config.heartbeat_interval);
        let labels = vec![
            ("server", server.name.as_str().to_owned()),
            ("kind", server.kind.as_str().to_owned()),
            ("service", view.service().to_owned()),
        ];
        agent_up
            .get_or_create(&labels)
            .set(i64::from(view.state() == "connected"));
        if let Some(at) = view.last_seen() {
            last_seen
                .get_or_create(&labels)
                .set(at.unix_timestamp_nanos() as f64 / 1e9);
        }
    }
    registry.register(
        "agent_up",
        "Whether a server's agent beats (1) or has gone silent or was never seen (0)",
        agent_up,
    );
    registry.register(
        "agent_last_seen_timestamp_seconds",
        "When a server's agent last beat (Unix time)",
        last_seen,
    );
    Ok(())
}

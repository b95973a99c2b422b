//! Scheduled backups and retention. Each tick reads the global schedule and retention from
//! the settings, and for each site its own schedule if it has one: a site whose next run is
//! due (and inside its window) gets an ordinary backup task described "Automated backup";
//! a site with backups the retention rules let go gets a backup-delete task. Several
//! backuppers may run this at once: the state database decides who queues a run.

use domain::backup_policy::{Retention, Schedule};
use std::time::Duration;
use store::Store;
use time::OffsetDateTime;

pub async fn run(store: Store, tick: Duration) {
    loop {
        if let Err(e) = tick_once(&store, OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %format!("{e:#}"), "scheduler tick failed");
        }
        tokio::time::sleep(tick).await;
    }
}

fn setting<T>(
    settings: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    parse: fn(&serde_json::Value) -> Result<T, domain::ParseError>,
) -> Option<T> {
    match settings.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => parse(v)
            .map_err(|e| tracing::warn!(key, error = %e, "ignoring an invalid setting"))
            .ok(),
    }
}

pub async fn tick_once(store: &Store, now: OffsetDateTime) -> anyhow::Result<()> {
    let settings = store.settings().await?;
    let global = setting(&settings, "backup_schedule", Schedule::parse);
    let retention = setting(&settings, "backup_retention", Retention::parse);
    for s in store.site_schedules().await? {
        let schedule = match &s.overridden {
            None => global.clone(),
            Some(None) => None,
            Some(Some(v)) => Schedule::parse(v).ok(),
        };
        if let Some(schedule) = schedule {
            match s.next_run_at {
                None => {
                    store
                        .set_next_backup_at(s.site, schedule.first_run(now, s.site.0))
                        .await?
                }
                Some(due) if now >= due && schedule.in_window(now) => {
                    if store
                        .queue_scheduled_backup(s.site, due, schedule.next_after(now))
                        .await?
                    {
                        tracing::info!(site = %s.site, "automated backup queued");
                    }
                }
                Some(due) if now >= due => {
                    store
                        .set_next_backup_at(s.site, schedule.into_window(now))
                        .await?
                }
                Some(_) => {}
            }
        }
        if let Some(retention) = &retention {
            let backups: Vec<(i64, OffsetDateTime)> = store
                .backups(s.site)
                .await?
                .iter()
                .map(|b| (b.id.0, b.created_at))
                .collect();
            let purge = retention.purge(&backups, now);
            if !purge.is_empty() && store.queue_purge(s.site, &purge).await? {
                tracing::info!(site = %s.site, backups = ?purge, "retention purge queued");
            }
        }
    }
    Ok(())
}

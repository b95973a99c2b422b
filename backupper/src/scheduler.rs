//! Scheduled backups and retention. Each tick reads the global schedule and retention from
//! the settings, and for each site its own schedule if it has one: a site whose next run is
//! due (and inside its window) gets an ordinary backup task described "Automated backup";
//! a site with backups the retention rules let go gets a backup-delete task. Several
//! backuppers may run this at once: the state database decides who queues a run.

use domain::backup_policy::{Retention, Schedule};
use futures_util::FutureExt;
use std::time::Duration;
use store::Store;
use time::OffsetDateTime;

pub async fn run(store: Store, tick: Duration) {
    loop {
        let ticked = std::panic::AssertUnwindSafe(tick_once(&store, OffsetDateTime::now_utc()))
            .catch_unwind()
            .await;
        match ticked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "scheduler tick failed"),
            Err(panic) => tracing::error!(
                panic = %bus::panic_message(&panic),
                "the scheduler's tick failed; it runs again at the next tick"
            ),
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

/// How often the retention of finished tasks is applied.
const TASK_PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Tasks removed per statement: a purge of a year's backlog does not hold one long
/// transaction, and the lease is renewed between batches.
const PURGE_BATCH: i64 = 1000;

/// The retention of finished tasks, in days, and the time before which they go.
fn task_cutoff(
    settings: &serde_json::Map<String, serde_json::Value>,
    now: OffsetDateTime,
) -> (u64, OffsetDateTime) {
    use domain::task_retention::{DEFAULT_DAYS, MAX_DAYS, SETTING};
    let days = settings
        .get(SETTING)
        .and_then(serde_json::Value::as_u64)
        .filter(|d| (1..=MAX_DAYS).contains(d))
        .unwrap_or(DEFAULT_DAYS);
    // At most ten years back: always representable.
    let back = time::Duration::days(i64::try_from(days).unwrap_or(3650));
    (days, now.checked_sub(back).unwrap_or(now))
}

/// The `purge-tasks` task: removes finished tasks (with their logs) older than the setting
/// `task_retention_days`.
pub async fn purge_tasks(store: &Store, log: &worker::TaskLog) -> worker::Outcome {
    let (days, cutoff) = match store.settings().await {
        Ok(map) => task_cutoff(&map, OffsetDateTime::now_utc()),
        Err(e) => return worker::Outcome::Error(format!("cannot read the settings: {e}")),
    };
    log.info(format!(
        "removing tasks that finished more than {days} days ago, with their logs"
    ))
    .await;
    let mut removed = 0u64;
    loop {
        match store.purge_finished_tasks(cutoff, PURGE_BATCH).await {
            Ok(0) => break,
            Ok(n) => removed += n,
            Err(e) => return worker::Outcome::Error(format!("purging tasks: {e}")),
        }
    }
    log.info(format!("{removed} finished tasks removed")).await;
    worker::Outcome::Success(Some(
        serde_json::json!({ "removed": removed, "days": days }),
    ))
}

pub async fn tick_once(store: &Store, now: OffsetDateTime) -> anyhow::Result<()> {
    let settings = store.settings().await?;
    let (_, cutoff) = task_cutoff(&settings, now);
    if store.queue_task_purge(cutoff, TASK_PURGE_EVERY).await? {
        tracing::info!("task retention purge queued");
    }
    let global = setting(&settings, "backup_schedule", Schedule::parse);
    let retention = setting(&settings, "backup_retention", Retention::parse);
    for s in store.site_schedules().await? {
        // One site's schedule cannot stop the others, even by a bug: a panic ends this site's
        // turn, marks its schedule invalid with the reason, and the tick goes on.
        let turn = std::panic::AssertUnwindSafe(one_site(
            store,
            &s,
            global.as_ref(),
            retention.as_ref(),
            now,
        ))
        .catch_unwind()
        .await;
        let failed = match turn {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(site = %s.site, error = %format!("{e:#}"), "scheduling a site failed");
                None
            }
            Err(panic) => Some(format!(
                "the scheduler failed on this schedule ({}); set the schedule again",
                bus::panic_message(&panic)
            )),
        };
        if let Some(reason) = failed {
            tracing::error!(site = %s.site, %reason, "a site's schedule is skipped");
            let _ = store.mark_schedule_invalid(&s, &reason).await;
        }
    }
    Ok(())
}

async fn one_site(
    store: &Store,
    s: &store::SiteSchedule,
    global: Option<&Schedule>,
    retention: Option<&Retention>,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let schedule = match &s.overridden {
        None => global.cloned(),
        Some(None) => None,
        Some(Some(v)) => match Schedule::parse(v) {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                let reason = format!("the stored schedule cannot be read: {e}; set it again");
                if store.mark_schedule_invalid(s, &reason).await? {
                    tracing::warn!(site = %s.site, %reason, "a site's schedule is skipped");
                }
                None
            }
        },
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
    if let Some(retention) = retention {
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
    Ok(())
}

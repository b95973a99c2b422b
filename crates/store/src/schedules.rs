//! Scheduled backups and retention: what the backupper's scheduler reads and writes.

use crate::tasks::create_task_tx;
use crate::{NewTask, Result, Store};
use domain::{SiteId, TaskType};
use sqlx::Row;
use time::OffsetDateTime;

pub const AUTOMATED_BACKUP: &str = "Automated backup";

#[derive(Debug, Clone)]
pub struct SiteSchedule {
    pub site: SiteId,
    /// `None`: the site follows the global schedule.
    pub overridden: Option<Option<serde_json::Value>>,
    pub next_run_at: Option<OffsetDateTime>,
    /// Why the stored schedule cannot be used, if it cannot.
    pub invalid: Option<String>,
}

fn site_schedule(r: &sqlx::postgres::PgRow) -> Result<SiteSchedule> {
    let overridden: Option<bool> = r.try_get("overridden")?;
    Ok(SiteSchedule {
        site: SiteId(r.try_get("id")?),
        overridden: if overridden == Some(true) {
            Some(r.try_get("schedule")?)
        } else {
            None
        },
        next_run_at: r.try_get("next_run_at")?,
        invalid: r.try_get("invalid")?,
    })
}

impl Store {
    /// Sites that can be backed up, with their schedule override and next run.
    pub async fn site_schedules(&self) -> Result<Vec<SiteSchedule>> {
        let rows = sqlx::query(
            "SELECT s.id, b.overridden, b.schedule, b.next_run_at, b.invalid FROM sites s
             LEFT JOIN backup_schedules b ON b.site_id = s.id
             WHERE s.status IN ('enabled', 'disabled') ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(site_schedule).collect()
    }

    /// One site's schedule override and next run.
    pub async fn site_schedule(&self, site: SiteId) -> Result<SiteSchedule> {
        let row = sqlx::query(
            "SELECT s.id, b.overridden, b.schedule, b.next_run_at, b.invalid FROM sites s
             LEFT JOIN backup_schedules b ON b.site_id = s.id WHERE s.id = $1",
        )
        .bind(site.0)
        .fetch_one(&self.pool)
        .await?;
        site_schedule(&row)
    }

    /// Marks a site's stored schedule as unusable, with the reason (once), if it is still the
    /// schedule `read` saw: one set since (which clears the mark) is not marked for the old
    /// one's fault.
    pub async fn mark_schedule_invalid(&self, read: &SiteSchedule, reason: &str) -> Result<bool> {
        let (overridden, schedule) = match &read.overridden {
            None => (false, None),
            Some(v) => (true, v.clone()),
        };
        let changed = sqlx::query(
            "UPDATE backup_schedules SET invalid = $2 WHERE site_id = $1 AND invalid IS DISTINCT FROM $2
                 AND overridden = $3 AND (NOT $3 OR schedule IS NOT DISTINCT FROM $4)",
        )
        .bind(read.site.0)
        .bind(reason)
        .bind(overridden)
        .bind(schedule)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    pub async fn set_next_backup_at(&self, site: SiteId, at: OffsetDateTime) -> Result<()> {
        sqlx::query(
            "INSERT INTO backup_schedules (site_id, next_run_at) VALUES ($1, $2)
             ON CONFLICT (site_id) DO UPDATE SET next_run_at = EXCLUDED.next_run_at",
        )
        .bind(site.0)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets (Some) or clears (None: follow the global schedule) a site's own schedule; its
    /// next run is computed again.
    pub async fn set_site_schedule(
        &self,
        site: SiteId,
        schedule: Option<Option<serde_json::Value>>,
    ) -> Result<()> {
        let (overridden, value) = match schedule {
            None => (false, None),
            Some(v) => (true, v),
        };
        sqlx::query(
            "INSERT INTO backup_schedules (site_id, overridden, schedule, next_run_at) VALUES ($1, $2, $3, NULL)
             ON CONFLICT (site_id) DO UPDATE SET overridden = EXCLUDED.overridden, schedule = EXCLUDED.schedule,
                 next_run_at = NULL, invalid = NULL",
        )
        .bind(site.0)
        .bind(overridden)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queues an automated backup if the site's next run is still `due` (another scheduler
    /// may have taken it) and moves the next run to `next`. Returns whether it queued one.
    pub async fn queue_scheduled_backup(
        &self,
        site: SiteId,
        due: OffsetDateTime,
        next: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let current: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT next_run_at FROM backup_schedules WHERE site_id = $1 FOR UPDATE",
        )
        .bind(site.0)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if current != Some(due) {
            return Ok(false);
        }
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE site_id = $1 AND type = 'backup' AND status IN ('queued', 'processing'))",
        )
        .bind(site.0)
        .fetch_one(&mut *tx)
        .await?;
        if !busy {
            let task = NewTask::for_site(
                TaskType::Backup,
                site,
                contract::TaskArgs::Backup(contract::BackupArgs {
                    description: Some(AUTOMATED_BACKUP.into()),
                }),
                "scheduler",
            );
            create_task_tx(&mut tx, &task).await?;
        }
        sqlx::query("UPDATE backup_schedules SET next_run_at = $2 WHERE site_id = $1")
            .bind(site.0)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(!busy)
    }

    /// Queues a backup-delete task for retention unless one is already waiting or running.
    pub async fn queue_purge(&self, site: SiteId, backups: &[i64]) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT id FROM sites WHERE id = $1 FOR UPDATE")
            .bind(site.0)
            .execute(&mut *tx)
            .await?;
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE site_id = $1 AND type = 'backup-delete' AND status IN ('queued', 'processing'))",
        )
        .bind(site.0)
        .fetch_one(&mut *tx)
        .await?;
        if !busy {
            let task = NewTask::for_site(
                TaskType::BackupDelete,
                site,
                contract::TaskArgs::BackupDelete(contract::BackupDeleteArgs {
                    backups: backups.iter().copied().map(domain::BackupId).collect(),
                }),
                "retention",
            );
            create_task_tx(&mut tx, &task).await?;
        }
        tx.commit().await?;
        Ok(!busy)
    }

    /// Queues a `purge-tasks` task when tasks finished before `cutoff` exist, unless one is
    /// open or was made within `every`: the daily retention run. Several backuppers may ask at
    /// once; a transaction-scoped advisory lock lets one of them queue it.
    pub async fn queue_task_purge(
        &self,
        cutoff: OffsetDateTime,
        every: std::time::Duration,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The lock's key: any constant no other code uses ('purge' in ASCII).
        sqlx::query("SELECT pg_advisory_xact_lock(7370756267)")
            .execute(&mut *tx)
            .await?;
        // Recent, or nothing to purge.
        let recent: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE type = 'purge-tasks'
               AND (status IN ('queued', 'processing') OR created_at > now() - make_interval(secs => $1)))
             OR NOT EXISTS (SELECT 1 FROM tasks WHERE status IN ('success', 'warning', 'error')
               AND finished_at < $2)",
        )
        .bind(every.as_secs_f64())
        .bind(cutoff)
        .fetch_one(&mut *tx)
        .await?;
        if !recent {
            let task = NewTask {
                task_type: TaskType::PurgeTasks,
                site: None,
                platform: None,
                parent: None,
                retry_of: None,
                args: contract::TaskArgs::none(),
                requested_by: "retention".into(),
                traceparent: None,
            };
            create_task_tx(&mut tx, &task).await?;
        }
        tx.commit().await?;
        Ok(!recent)
    }
}

//! Backup records, and what restores need: per-task values and the site's database swap.

use crate::{Result, Store, StoreError};
use domain::{BackupId, DbIdent, DbPassword, SiteId, TaskId};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub id: BackupId,
    pub site: SiteId,
    pub task: Option<TaskId>,
    /// The archive's path inside the backup store.
    pub key: String,
    pub size: i64,
    pub checksum: String,
    pub description: String,
    #[serde(rename = "created", with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(rename = "verified", with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub manifest: serde_json::Value,
}

fn backup(row: &PgRow) -> Result<Backup> {
    Ok(Backup {
        id: BackupId(row.try_get("id")?),
        site: SiteId(row.try_get("site_id")?),
        task: row.try_get::<Option<i64>, _>("task_id")?.map(TaskId),
        key: row.try_get("key")?,
        size: row.try_get("size")?,
        checksum: row.try_get("checksum")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        verified_at: row.try_get("verified_at")?,
        manifest: row.try_get("manifest")?,
    })
}

const COLUMNS: &str =
    "id, site_id, task_id, key, size, checksum, description, created_at, verified_at, manifest";

pub struct NewBackup<'a> {
    pub site: SiteId,
    pub task: TaskId,
    pub key: &'a str,
    pub size: i64,
    pub checksum: &'a str,
    pub description: &'a str,
    pub manifest: &'a serde_json::Value,
    /// The lease epoch of the claim the backup is made under, if any: a worker that lost
    /// its lease records nothing.
    pub epoch: Option<i64>,
}

/// What recording a backup came to.
pub enum Recorded {
    /// This one is the task's backup.
    New(Backup),
    /// The task had recorded one with this description already (a second run): that one.
    Existing(Backup),
}

impl Store {
    /// Records a backup, once per task and description, and only under the claim it was made
    /// under ([`StoreError::LeaseLost`] otherwise).
    pub async fn record_backup(&self, b: &NewBackup<'_>) -> Result<Recorded> {
        let mut tx = self.pool.begin().await?;
        if let Some(epoch) = b.epoch {
            if !crate::tasks::holds_lease(&mut tx, b.task, epoch).await? {
                return Err(StoreError::LeaseLost(b.task));
            }
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO backups (site_id, task_id, key, size, checksum, description, manifest)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (task_id, description) WHERE task_id IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        )))
        .bind(b.site.0)
        .bind(b.task.0)
        .bind(b.key)
        .bind(b.size)
        .bind(b.checksum)
        .bind(b.description)
        .bind(b.manifest)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(Recorded::New(backup(&row)?)),
            None => self
                .backup_of_task(b.task, b.description)
                .await?
                .map(Recorded::Existing)
                .ok_or_else(|| StoreError::Conflict("the task's backup went meanwhile".into())),
        }
    }

    /// A site's backups, newest first.
    pub async fn backups(&self, site: SiteId) -> Result<Vec<Backup>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM backups WHERE site_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(site.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(backup).collect()
    }

    pub async fn backup(&self, id: BackupId) -> Result<Backup> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM backups WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("backup {id}")))?;
        backup(&row)
    }

    /// The backup a task made with this description, if it made one (a re-run reuses it).
    pub async fn backup_of_task(&self, task: TaskId, description: &str) -> Result<Option<Backup>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM backups WHERE task_id = $1 AND description = $2 ORDER BY id LIMIT 1"
        )))
        .bind(task.0)
        .bind(description)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(backup).transpose()
    }

    /// Whether an archive key is some backup's.
    pub async fn backup_key_recorded(&self, key: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT id FROM backups WHERE key = $1 LIMIT 1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    pub async fn mark_backup_verified(&self, id: BackupId) -> Result<()> {
        sqlx::query("UPDATE backups SET verified_at = now() WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_backup_record(&self, id: BackupId) -> Result<()> {
        sqlx::query("DELETE FROM backups WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores `candidate` under `name` for the task unless a value is there already; returns
    /// the stored value.
    pub async fn ensure_task_secret(
        &self,
        task: TaskId,
        name: &str,
        candidate: &str,
    ) -> Result<String> {
        sqlx::query("INSERT INTO task_secrets (task_id, name, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(task.0)
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM task_secrets WHERE task_id = $1 AND name = $2")
                .bind(task.0)
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A secret a task stored, if it did.
    pub async fn task_secret(&self, task: TaskId, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM task_secrets WHERE task_id = $1 AND name = $2")
                .bind(task.0)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Points the site at another database (a restore's swap, or its undo).
    pub async fn set_site_database(
        &self,
        site: SiteId,
        name: &DbIdent,
        user: &DbIdent,
        password: &DbPassword,
    ) -> Result<()> {
        sqlx::query("UPDATE sites SET db_name = $2, db_user = $3, db_password = $4, updated_at = now() WHERE id = $1")
            .bind(site.0)
            .bind(name.as_str())
            .bind(user.as_str())
            .bind(password.expose())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

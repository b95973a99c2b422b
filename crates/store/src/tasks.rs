//! Tasks, their log, per-target serialization (leases), the transactional outbox and saga
//! progress.
//!
//! How a task moves: the API writes the task and an outbox row in one transaction → a relay
//! publishes the row and deletes it → a worker claims the task (a lease on the task and a lock
//! on its site or platform) and heartbeats while it runs → the worker stores the outcome,
//! releases the lock and queues the next waiting task of the same target, then acks.
//! A sweeper re-queues tasks whose lease lapsed (the worker died) and re-dispatches queued
//! tasks whose message went missing.

use crate::{Result, Store, StoreError};
use contract::TaskMessage;
use domain::*;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

/// The NOTIFY channel relays LISTEN on for new outbox rows.
pub const OUTBOX_CHANNEL: &str = "hosting_outbox";

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: TaskId,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub site: Option<SiteId>,
    pub platform: Option<PlatformId>,
    pub parent: Option<TaskId>,
    pub args: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub requested_by: String,
    pub attempts: i32,
    #[serde(rename = "created", with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(rename = "started", with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(rename = "finished", with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The failed task this one retries.
    pub retry_of: Option<TaskId>,
    /// Who cancelled it before it started (it is then `error`).
    pub cancelled_by: Option<String>,
    /// The lease epoch of the current (or last) claim: the worker's writes carry it.
    #[serde(skip)]
    pub lease_epoch: i64,
}

impl Task {
    /// Its arguments as its type has them (see [`contract::TaskArgs`]).
    pub fn parsed_args(&self) -> Result<contract::TaskArgs> {
        contract::TaskArgs::of(self.task_type, &self.args).map_err(|e| {
            StoreError::Corrupt(format!(
                "the arguments of task {} do not fit a {} task: {e}",
                self.id, self.task_type
            ))
        })
    }

    /// What the task holds while it runs: its site, else its platform.
    pub fn target(&self) -> String {
        match (self.site, self.platform) {
            (Some(s), _) => format!("site:{s}"),
            (None, Some(p)) => format!("platform:{p}"),
            (None, None) => format!("task:{}", self.id),
        }
    }
}

/// `Task::target` in SQL, over a row of `tasks` named `t` (a claim reads and locks its task
/// in the statement that takes the target's lock, which `finish_task` releases by
/// `Task::target`: were the two to differ, no target would ever be released again, which every
/// end-to-end test would see).
const TARGET_SQL: &str = "CASE WHEN t.site_id IS NOT NULL THEN 'site:' || t.site_id
    WHEN t.platform_id IS NOT NULL THEN 'platform:' || t.platform_id ELSE 'task:' || t.id END";

const TASK_COLUMNS: &str =
    "id, type, status, site_id, platform_id, parent_id, args, result, error, requested_by,
    attempts, created_at, started_at, finished_at, retry_of, cancelled_by, lease_epoch";

fn task(row: &PgRow) -> Result<Task> {
    Ok(Task {
        id: TaskId(row.try_get("id")?),
        task_type: TaskType::parse(row.try_get("type")?)?,
        status: TaskStatus::parse(row.try_get("status")?)?,
        site: row.try_get::<Option<i64>, _>("site_id")?.map(SiteId),
        platform: row
            .try_get::<Option<i64>, _>("platform_id")?
            .map(PlatformId),
        parent: row.try_get::<Option<i64>, _>("parent_id")?.map(TaskId),
        args: row.try_get("args")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        requested_by: row.try_get("requested_by")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        retry_of: row.try_get::<Option<i64>, _>("retry_of")?.map(TaskId),
        cancelled_by: row.try_get("cancelled_by")?,
        lease_epoch: row.try_get("lease_epoch")?,
    })
}

/// Whether the worker's claim (task and epoch) is still the task's current one, in `tx`, with
/// the task's row locked for the rest of the transaction: what `tx` writes then is the
/// claim holder's, or nothing is.
pub(crate) async fn holds_lease(
    tx: &mut sqlx::PgConnection,
    task: TaskId,
    epoch: i64,
) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT id FROM tasks WHERE id = $1 AND lease_epoch = $2 AND status = 'processing' FOR SHARE",
    )
    .bind(task.0)
    .bind(epoch)
    .fetch_optional(&mut *tx)
    .await?
    .is_some())
}

pub struct NewTask {
    pub task_type: TaskType,
    pub site: Option<SiteId>,
    pub platform: Option<PlatformId>,
    pub parent: Option<TaskId>,
    pub retry_of: Option<TaskId>,
    pub args: contract::TaskArgs,
    pub requested_by: String,
    /// W3C trace context of the request that made the task, so its dispatch joins that trace.
    pub traceparent: Option<String>,
}

impl NewTask {
    pub fn for_site(
        task_type: TaskType,
        site: SiteId,
        args: contract::TaskArgs,
        requested_by: &str,
    ) -> Self {
        Self {
            task_type,
            site: Some(site),
            platform: None,
            parent: None,
            retry_of: None,
            args,
            requested_by: requested_by.into(),
            traceparent: None,
        }
    }

    pub fn for_platform(task_type: TaskType, platform: PlatformId, requested_by: &str) -> Self {
        Self {
            task_type,
            site: None,
            platform: Some(platform),
            parent: None,
            retry_of: None,
            args: contract::TaskArgs::none(),
            requested_by: requested_by.into(),
            traceparent: None,
        }
    }

    pub fn traced(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The same task again, for a failed one.
    pub fn retry(failed: &Task, requested_by: &str) -> Result<Self> {
        Ok(Self {
            task_type: failed.task_type,
            site: failed.site,
            platform: failed.platform,
            parent: failed.parent,
            retry_of: Some(failed.id),
            args: failed.parsed_args()?,
            requested_by: requested_by.into(),
            traceparent: None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct TaskFilter {
    pub site: Option<SiteId>,
    pub sites_of_client: Option<ClientId>,
    pub status: Option<TaskStatus>,
    pub task_type: Option<TaskType>,
    /// Children of a task (a batch's).
    pub parent: Option<TaskId>,
    pub limit: i64,
}

/// A message no consumer could take, as it came.
pub struct NewDeadLetter<'a> {
    pub queue: Option<&'a str>,
    pub exchange: Option<&'a str>,
    pub routing_key: Option<&'a str>,
    pub message_type: Option<&'a str>,
    pub reason: &'a str,
    pub task: Option<TaskId>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    #[serde(rename = "received", with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub queue: Option<String>,
    #[serde(skip)]
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub message_type: Option<String>,
    pub reason: String,
    pub task: Option<TaskId>,
    #[serde(skip)]
    pub body: Vec<u8>,
    #[serde(rename = "replayed", with = "time::serde::rfc3339::option")]
    pub replayed_at: Option<OffsetDateTime>,
}

fn dead_letter(r: &PgRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.try_get("id")?,
        received_at: r.try_get("received_at")?,
        queue: r.try_get("queue")?,
        exchange: r.try_get("exchange")?,
        routing_key: r.try_get("routing_key")?,
        message_type: r.try_get("message_type")?,
        reason: r.try_get("reason")?,
        task: r.try_get::<Option<i64>, _>("task_id")?.map(TaskId),
        body: r.try_get("body")?,
        replayed_at: r.try_get("replayed_at")?,
    })
}

/// The result of trying to claim a task for a worker.
#[derive(Debug)]
pub enum Claim {
    /// The task is ours until the lease lapses; heartbeat to keep it.
    Claimed(Box<Task>),
    /// Another task holds the site or platform; this one stays queued and is dispatched
    /// again when the holder finishes.
    TargetBusy,
    /// A live worker holds this very task (a duplicate delivery).
    HeldElsewhere,
    /// Already finished (a stale or duplicated message).
    Finished(TaskStatus),
    /// The task is of another type than its message says: nothing was changed.
    OtherType(TaskType),
}

/// Writes a task and the outbox row that dispatches it in one statement, on the caller's
/// connection (in its transaction, or alone: one round trip, one commit, the hot path of
/// every API request that starts a task). The outbox payload is the task's message with its
/// id filled in by the insert (the message's other fields are serialized here).
pub(crate) async fn create_task_tx(conn: &mut sqlx::PgConnection, new: &NewTask) -> Result<Task> {
    let template = TaskMessage {
        task: TaskId(0),
        task_type: new.task_type,
    };
    let template =
        serde_json::to_value(&template).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH t AS (
                 INSERT INTO tasks (type, site_id, platform_id, parent_id, retry_of, status, args, requested_by)
                 VALUES ($1, $2, $3, $4, $7, 'queued', $5, $6) RETURNING {TASK_COLUMNS}),
             queued AS (
                 INSERT INTO outbox (exchange_kind, routing_key, message_type, payload, traceparent)
                 SELECT 'tasks', $8, $9, $10::jsonb || jsonb_build_object('task', t.id), $11 FROM t)
             SELECT t.*, pg_notify($12, '') FROM t"
        )))
        .bind(new.task_type.as_str())
        .bind(new.site.map(|s| s.0))
        .bind(new.platform.map(|p| p.0))
        .bind(new.parent.map(|p| p.0))
        .bind(new.args.to_value())
        .bind(&new.requested_by)
        .bind(new.retry_of.map(|t| t.0))
        .bind(new.task_type.owner().as_str())
        .bind(contract::TASK_MESSAGE_TYPE)
        .bind(template)
        .bind(new.traceparent.as_deref())
        .bind(OUTBOX_CHANNEL)
        .fetch_one(&mut *conn)
        .await?;
    let task = task(&row)?;
    // Counted when written, before the caller's commit: a transaction that rolls back after
    // this (rare: a conflict found later in it) counts a task that was not queued.
    telemetry::metrics::task_accepted(task.task_type.as_str());
    Ok(task)
}

async fn enqueue_dispatch(
    tx: &mut sqlx::PgConnection,
    id: TaskId,
    task_type: TaskType,
    traceparent: Option<&str>,
) -> Result<()> {
    let message = TaskMessage {
        task: id,
        task_type,
    };
    let payload = serde_json::to_value(&message).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // The row and the relay's wake-up in one round trip (the NOTIFY is sent at commit).
    sqlx::query(
        "WITH queued AS (
             INSERT INTO outbox (exchange_kind, routing_key, message_type, payload, traceparent)
             VALUES ('tasks', $1, $2, $3, $4) RETURNING id)
         SELECT pg_notify($5, '') FROM queued",
    )
    .bind(task_type.owner().as_str())
    .bind(contract::TASK_MESSAGE_TYPE)
    .bind(payload)
    .bind(traceparent)
    .bind(OUTBOX_CHANNEL)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// `Store::finish_task`'s statement (made once: it names every task type's owner).
static FINISH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH done AS (
                 UPDATE tasks SET status = $3, error = $4, result = $5, finished_at = now(),
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 AND status = 'processing' AND lease_epoch = $6
                 RETURNING id, site_id, platform_id),
             released AS (
                 DELETE FROM target_locks WHERE target = $7 AND task_id IN (SELECT id FROM done)),
             nx AS (
                 (SELECT n.id, n.type FROM tasks n, done d
                  WHERE d.site_id IS NOT NULL AND n.site_id = d.site_id
                      AND n.status = 'queued' AND n.id <> d.id
                  ORDER BY n.id LIMIT 1)
                 UNION ALL
                 (SELECT n.id, n.type FROM tasks n, done d
                  WHERE d.site_id IS NULL AND d.platform_id IS NOT NULL AND n.platform_id = d.platform_id
                      AND n.site_id IS NULL AND n.status = 'queued' AND n.id <> d.id
                  ORDER BY n.id LIMIT 1)),
             queued AS ({DISPATCH_NX_SQL} RETURNING id)
             SELECT (SELECT count(*) FROM done) AS finished,
                 CASE WHEN EXISTS (SELECT 1 FROM queued) THEN pg_notify($9, '') END AS woken",
        DISPATCH_NX_SQL = dispatch_sql("nx", "$8"),
    )
});

/// Whether an earlier task of the target of the task `t` (a row of `tasks`) is open, as SQL:
/// one branch per kind of target, each on its own index (`tasks_open_site`,
/// `tasks_open_platform`), and none for a task of no site or platform.
const EARLIER_OPEN_SQL: &str = "CASE
    WHEN t.site_id IS NOT NULL THEN EXISTS (SELECT 1 FROM tasks e WHERE e.site_id = t.site_id
        AND e.status IN ('queued', 'processing') AND e.id < t.id)
    WHEN t.platform_id IS NOT NULL THEN EXISTS (SELECT 1 FROM tasks e
        WHERE e.platform_id = t.platform_id AND e.site_id IS NULL
        AND e.status IN ('queued', 'processing') AND e.id < t.id)
    ELSE false END";

/// The outbox rows that dispatch the tasks `(id, type)` of the relation `from`, as SQL: the
/// task message built in the statement (`TaskMessage`'s wire format, `{"task": id, "type":
/// type}`, which `task_message_wire_format_is_stable` in `contract` holds still), routed to the
/// service that owns its type. `message_type`
/// is the SQL parameter holding `contract::TASK_MESSAGE_TYPE`.
fn dispatch_sql(from: &str, message_type: &str) -> String {
    let owners: String = TaskType::ALL
        .iter()
        .map(|t| format!(" WHEN '{}' THEN '{}'", t.as_str(), t.owner().as_str()))
        .collect();
    format!(
        "INSERT INTO outbox (exchange_kind, routing_key, message_type, payload)
         SELECT 'tasks', CASE {from}.type{owners} END, {message_type},
             jsonb_build_object('task', {from}.id, 'type', {from}.type) FROM {from}"
    )
}

/// An outbox row a relay is publishing.
#[derive(Debug)]
pub struct OutboxMessage {
    pub id: i64,
    pub routing_key: String,
    pub message_type: String,
    pub payload: serde_json::Value,
    pub traceparent: Option<String>,
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub requeued_after_lapsed_lease: u64,
    pub failed_after_too_many_attempts: u64,
    pub redispatched: u64,
}

impl Store {
    /// A task and its outbox row, on their own (see `create_task_tx`).
    pub async fn create_task(&self, new: &NewTask) -> Result<Task> {
        let mut conn = self.pool.acquire().await?;
        create_task_tx(&mut conn, new).await
    }

    pub async fn task(&self, id: TaskId) -> Result<Task> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        task(&row)
    }

    pub async fn tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t
             WHERE ($1::bigint IS NULL OR site_id = $1)
               AND ($2::bigint IS NULL OR site_id IN (SELECT id FROM sites WHERE client_id = $2))
               AND ($3::text IS NULL OR status = $3)
               AND ($4::text IS NULL OR type = $4)
               AND ($6::bigint IS NULL OR parent_id = $6)
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(f.site.map(|s| s.0))
        .bind(f.sites_of_client.map(|c| c.0))
        .bind(f.status.map(|s| s.as_str()))
        .bind(f.task_type.map(|t| t.as_str()))
        .bind(if f.limit > 0 { f.limit } else { 100 })
        .bind(f.parent.map(|p| p.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task).collect()
    }

    /// One page of tasks, newest first, before the `before` cursor, with one row more than
    /// the filter's limit when more follow, and how many match in all. As with sites, only
    /// the filters given become conditions, so each uses its index.
    pub async fn tasks_page(
        &self,
        f: &TaskFilter,
        before: Option<TaskId>,
    ) -> Result<(Vec<Task>, i64)> {
        fn conditions(q: &mut sqlx::QueryBuilder<sqlx::Postgres>, f: &TaskFilter) {
            q.push(" WHERE true");
            if let Some(site) = f.site {
                q.push(" AND site_id = ").push_bind(site.0);
            }
            if let Some(c) = f.sites_of_client {
                q.push(" AND site_id IN (SELECT id FROM sites WHERE client_id = ")
                    .push_bind(c.0)
                    .push(")");
            }
            if let Some(st) = f.status {
                q.push(" AND status = ").push_bind(st.as_str());
            }
            if let Some(t) = f.task_type {
                q.push(" AND type = ").push_bind(t.as_str());
            }
            if let Some(p) = f.parent {
                q.push(" AND parent_id = ").push_bind(p.0);
            }
        }
        let mut page = sqlx::QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks"));
        conditions(&mut page, f);
        if let Some(b) = before {
            page.push(" AND id < ").push_bind(b.0);
        }
        page.push(" ORDER BY id DESC LIMIT ")
            .push_bind(f.limit.max(1).saturating_add(1));
        let rows = page.build().fetch_all(&self.pool).await?;
        let mut count = sqlx::QueryBuilder::new("SELECT count(*) FROM tasks");
        conditions(&mut count, f);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok((rows.iter().map(task).collect::<Result<_>>()?, total))
    }

    /// Removes finished tasks (and, with them, their logs, events and secrets) that ended
    /// before `cutoff`, oldest first, at most `batch` of them: the retention a provider sets.
    /// Backups made by a purged task keep their record; the task reference is cleared.
    pub async fn purge_finished_tasks(&self, cutoff: OffsetDateTime, batch: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM tasks WHERE id IN (
                 SELECT id FROM tasks
                 WHERE status IN ('success', 'warning', 'error') AND finished_at < $1
                 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Cancels a task that has not started: it ends as `error`, saying who cancelled it, and
    /// a worker that receives its message later finds it finished. `None` when it is no longer
    /// queued (it started or ended meanwhile). An install cancelled before it ran leaves a
    /// site with nothing made: that site is `failed`, so it can be deleted or retried; a
    /// cancelled clone's new site is `deleted`.
    pub async fn cancel_task(&self, id: TaskId, by: &str) -> Result<Option<Task>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET status = 'error', finished_at = now(), cancelled_by = $2,
                 error = 'cancelled by ' || $2 || ' before it started'
             WHERE id = $1 AND status = 'queued' RETURNING {TASK_COLUMNS}"
        )))
        .bind(id.0)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let t = task(&row)?;
        if let (TaskType::Install, Some(site)) = (t.task_type, t.site) {
            sqlx::query(
                "UPDATE sites SET status = 'failed', updated_at = now()
                 WHERE id = $1 AND status = 'installing'",
            )
            .bind(site.0)
            .execute(&mut *tx)
            .await?;
        }
        // A clone that never ran made nothing: its new site's record frees the domain.
        if let (
            TaskType::Clone,
            Ok(contract::TaskArgs::Move(contract::MoveArgs {
                clone_site: Some(SiteId(copy)),
                ..
            })),
        ) = (t.task_type, t.parsed_args())
        {
            sqlx::query(
                "UPDATE sites SET status = 'deleted', deleted_at = now(), updated_at = now()
                 WHERE id = $1 AND status = 'installing'",
            )
            .bind(copy)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO task_log (task_id, level, message) VALUES ($1, 'error', $2)")
            .bind(id.0)
            .bind(format!("cancelled by {by} before it started"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(t))
    }

    /// Queues a retry of a failed task. A retried install puts its site back to `installing`
    /// in the same transaction.
    pub async fn retry_task(&self, failed: &Task, by: &str) -> Result<Task> {
        let mut tx = self.pool.begin().await?;
        if let (TaskType::Install, Some(site)) = (failed.task_type, failed.site) {
            sqlx::query(
                "UPDATE sites SET status = 'installing', updated_at = now()
                 WHERE id = $1 AND status = 'failed'",
            )
            .bind(site.0)
            .execute(&mut *tx)
            .await?;
        }
        let t = create_task_tx(&mut tx, &NewTask::retry(failed, by)?).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Open (queued or processing) tasks of a site.
    pub async fn open_tasks_of_site(&self, site: SiteId) -> Result<Vec<Task>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE site_id = $1 AND status IN ('queued', 'processing') ORDER BY id"
        )))
        .bind(site.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task).collect()
    }

    pub async fn append_log(&self, id: TaskId, level: &str, message: &str) -> Result<()> {
        sqlx::query("INSERT INTO task_log (task_id, level, message) VALUES ($1, $2, $3)")
            .bind(id.0)
            .bind(level)
            .bind(message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn task_log(&self, id: TaskId, after: i64) -> Result<Vec<LogLine>> {
        let rows = sqlx::query("SELECT id, at, level, message FROM task_log WHERE task_id = $1 AND id > $2 ORDER BY id")
            .bind(id.0)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LogLine {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    level: r.try_get("level")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// Takes the task for `worker` for `lease`, if it is of the type its message says, is
    /// runnable, and its target is free. Four round trips: the task read under its row lock
    /// (with whether an earlier task of its target is open), the target's lock and the claim
    /// in one statement, and the transaction's ends.
    pub async fn claim_task(
        &self,
        id: TaskId,
        expected: TaskType,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Claim> {
        // One statement (one round trip, one commit): the task read and locked, and claimed
        // only if it is of the expected type, not finished, not running under a live lease,
        // and no earlier task of its target is queued or running (per-site order across
        // services: it is dispatched again when the earlier one ends; a platform's target is
        // its platform tasks, not its sites'). The claim takes the target's lock if it is free,
        // ours already (a redelivery of this task), or held by a worker whose lease lapsed;
        // and only then the task. A task that runs under a live lease is not claimed again,
        // not even by the worker that holds it: a second delivery is a duplicate, never a
        // second run.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH cur AS (
                 SELECT t.type, t.status, t.lease_until < now() AS lapsed, {TARGET_SQL} AS target,
                     {EARLIER_OPEN_SQL} AS earlier
                 FROM tasks t WHERE t.id = $1 FOR UPDATE OF t),
             claimable AS (
                 SELECT target FROM cur WHERE type = $4 AND status IN ('queued', 'processing')
                     AND (status = 'queued' OR lapsed IS TRUE) AND NOT earlier),
             locked AS (
                 INSERT INTO target_locks (target, task_id, lease_until)
                 SELECT target, $1, now() + make_interval(secs => $3) FROM claimable
                 ON CONFLICT (target) DO UPDATE SET task_id = EXCLUDED.task_id, lease_until = EXCLUDED.lease_until
                   WHERE target_locks.task_id = EXCLUDED.task_id OR target_locks.lease_until < now()
                 RETURNING task_id),
             claimed AS (
                 UPDATE tasks SET status = 'processing', started_at = COALESCE(started_at, now()),
                     attempts = attempts + 1, lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                     lease_epoch = lease_epoch + 1
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM locked) RETURNING {TASK_COLUMNS})
             SELECT cur.type AS cur_type, cur.status AS cur_status, cur.lapsed, cur.earlier, claimed.*
             FROM cur LEFT JOIN claimed ON true"
        )))
        .bind(id.0)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(expected.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        if row.try_get::<Option<i64>, _>("id")?.is_some() {
            return Ok(Claim::Claimed(Box::new(task(&row)?)));
        }
        let actual = TaskType::parse(row.try_get("cur_type")?)?;
        if actual != expected {
            return Ok(Claim::OtherType(actual));
        }
        let status = TaskStatus::parse(row.try_get("cur_status")?)?;
        if status.is_terminal() {
            return Ok(Claim::Finished(status));
        }
        if status == TaskStatus::Processing
            && row.try_get::<Option<bool>, _>("lapsed")? != Some(true)
        {
            return Ok(Claim::HeldElsewhere);
        }
        // An earlier task of its target, or its target's lock held by a live task.
        Ok(Claim::TargetBusy)
    }

    /// Extends the lease of a task the worker still holds. `false`: the lease was lost.
    pub async fn heartbeat(
        &self,
        t: &Task,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE tasks SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lease_owner = $2 AND status = 'processing' AND lease_epoch = $4",
        )
        .bind(t.id.0)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(t.lease_epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE target_locks SET lease_until = now() + make_interval(secs => $3) WHERE target = $1 AND task_id = $2")
            .bind(t.target())
            .bind(t.id.0)
            .bind(lease.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Stores a task's outcome, releases its target and dispatches the next task waiting on
    /// the same target, in one transaction.
    pub async fn finish_task(
        &self,
        t: &Task,
        worker: &str,
        status: TaskStatus,
        error: Option<&str>,
        result: Option<&serde_json::Value>,
    ) -> Result<bool> {
        // One statement (one round trip, one commit): the outcome, the target's lock
        // released, and the target's next queued task dispatched (its outbox row, and the
        // relay's wake-up).
        let row = sqlx::query(sqlx::AssertSqlSafe(FINISH_SQL.as_str()))
            .bind(t.id.0)
            .bind(worker)
            .bind(status.as_str())
            .bind(error)
            .bind(result)
            .bind(t.lease_epoch)
            .bind(t.target())
            .bind(contract::TASK_MESSAGE_TYPE)
            .bind(OUTBOX_CHANNEL)
            .fetch_one(&self.pool)
            .await?;
        let finished: i64 = row.try_get("finished")?;
        // 0: the lease lapsed and someone else took the task over; their outcome stands.
        Ok(finished == 1)
    }

    /// Gives a claimed task back to the queue (an outage of the state database or the broker
    /// interrupted it; its next attempt resumes it): only under the claim it was taken with.
    pub async fn requeue_interrupted(&self, t: &Task, worker: &str, why: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2 AND status = 'processing' AND lease_epoch = $3",
        )
        .bind(t.id.0)
        .bind(worker)
        .bind(t.lease_epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO task_log (task_id, level, message) VALUES ($1, 'warning', $2)")
            .bind(t.id.0)
            .bind(why)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM target_locks WHERE target = $1 AND task_id = $2")
            .bind(t.target())
            .bind(t.id.0)
            .execute(&mut *tx)
            .await?;
        enqueue_dispatch(&mut tx, t.id, t.task_type, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a task error without a worker (a dead-lettered message, a cancel).
    pub async fn fail_task(&self, id: TaskId, error: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET status = 'error', error = $2, finished_at = now(), lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND status IN ('queued', 'processing') RETURNING {TASK_COLUMNS}"
        )))
        .bind(id.0)
        .bind(error)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let t = task(&row)?;
            release_and_dispatch_next(&mut tx, &t.target(), t.id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` outbox rows for `hold`, so that relays running in several
    /// gateways do not publish the same row at once. No transaction stays open while the
    /// caller talks to the broker.
    pub async fn claim_outbox(
        &self,
        limit: i64,
        hold: std::time::Duration,
    ) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1
             WHERE id IN (
                 SELECT id FROM outbox WHERE claimed_until IS NULL OR claimed_until < now()
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, routing_key, message_type, payload, traceparent",
        )
        .bind(limit)
        .bind(hold.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<OutboxMessage> = rows
            .iter()
            .map(|r| {
                Ok(OutboxMessage {
                    id: r.try_get("id")?,
                    routing_key: r.try_get("routing_key")?,
                    message_type: r.try_get("message_type")?,
                    payload: r.try_get("payload")?,
                    traceparent: r.try_get("traceparent")?,
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// The broker confirmed the messages: drop their rows. Their tasks' rows are not touched:
    /// a worker claims a task the moment its message arrives, and would wait for this
    /// statement's commit on the task's row lock (a third commit on the dispatch path). The
    /// sweeper finds a lost message by its task being queued with no outbox row left.
    pub async fn outbox_published(&self, messages: &[&OutboxMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Publishing failed: make the row available again right away (the relay backs off).
    pub async fn outbox_failed(&self, m: &OutboxMessage, error: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET claimed_until = NULL, last_error = $2 WHERE id = $1")
            .bind(m.id)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The outbox rows not yet published, and how old the oldest is (seconds, by the
    /// database's clock).
    pub async fn outbox_backlog(&self) -> Result<(i64, f64)> {
        let row = sqlx::query(
            "SELECT count(*) AS n,
                    coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) AS age
               FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("age")?))
    }

    /// How many tasks are queued and how many are running, by type.
    pub async fn open_task_counts(&self) -> Result<Vec<(TaskType, TaskStatus, i64)>> {
        let rows = sqlx::query(
            "SELECT type, status, count(*) AS n FROM tasks
              WHERE status IN ('queued', 'processing') GROUP BY type, status ORDER BY type, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let t: String = r.try_get("type")?;
                let s: String = r.try_get("status")?;
                Ok((
                    TaskType::parse(&t)?,
                    TaskStatus::parse(&s)?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    pub async fn outbox_len(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Recovers tasks from dead workers and lost messages.
    pub async fn sweep(
        &self,
        redispatch_after: std::time::Duration,
        max_attempts: i32,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut tx = self.pool.begin().await?;
        let lapsed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'processing' AND lease_until < now()
             FOR UPDATE SKIP LOCKED"
        )))
        .fetch_all(&mut *tx)
        .await?;
        for row in &lapsed {
            let t = task(row)?;
            if t.attempts >= max_attempts {
                let msg = format!(
                    "the worker running this task stopped responding {} times; giving up",
                    t.attempts
                );
                sqlx::query(
                    "UPDATE tasks SET status = 'error', error = $2, finished_at = now(), lease_owner = NULL, lease_until = NULL WHERE id = $1",
                )
                .bind(t.id.0)
                .bind(&msg)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO task_log (task_id, level, message) VALUES ($1, 'error', $2)",
                )
                .bind(t.id.0)
                .bind(&msg)
                .execute(&mut *tx)
                .await?;
                release_and_dispatch_next(&mut tx, &t.target(), t.id).await?;
                report.failed_after_too_many_attempts += 1;
            } else {
                // Back to queued: the next worker resumes it (sagas pick up their progress).
                sqlx::query("UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_until = NULL WHERE id = $1")
                    .bind(t.id.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO task_log (task_id, level, message) VALUES ($1, 'warning', $2)")
                    .bind(t.id.0)
                    .bind("the worker stopped responding (lease lapsed); the task is queued again and will resume")
                    .execute(&mut *tx)
                    .await?;
                enqueue_dispatch(&mut tx, t.id, t.task_type, None).await?;
                report.requeued_after_lapsed_lease += 1;
            }
        }
        let stale = sqlx::query(
            "SELECT t.id, t.type FROM tasks t
             WHERE t.status = 'queued'
               AND (t.dispatched_at IS NULL OR t.dispatched_at < now() - make_interval(secs => $1))
               AND t.created_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE (o.payload->>'task')::bigint = t.id)
             -- Least recently dispatched first: many tasks waiting for a host that is down
             -- do not hold back the others' redispatch.
             ORDER BY t.dispatched_at NULLS FIRST, t.id LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .bind(redispatch_after.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        for row in &stale {
            let id = TaskId(row.try_get("id")?);
            let task_type = TaskType::parse(row.try_get("type")?)?;
            enqueue_dispatch(&mut tx, id, task_type, None).await?;
            sqlx::query("UPDATE tasks SET dispatched_at = now() WHERE id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            report.redispatched += 1;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The distinct lease owners of running tasks whose names start with `prefix`.
    pub async fn lease_owners_like(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT lease_owner FROM tasks
             WHERE status = 'processing' AND starts_with(lease_owner, $1)",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Queues again the running tasks of a worker known to be dead (as the sweeper does once
    /// their lease lapses), if they have attempts left (the sweeper fails the others once
    /// their lease lapses); how many.
    pub async fn requeue_tasks_of(&self, owner: &str, max_attempts: i32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_until = NULL
             WHERE status = 'processing' AND lease_owner = $1 AND attempts < $2 RETURNING id, type",
        )
        .bind(owner)
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let id = TaskId(row.try_get("id")?);
            sqlx::query(
                "INSERT INTO task_log (task_id, level, message) VALUES ($1, 'warning', $2)",
            )
            .bind(id.0)
            .bind("the process running this task died; the task is queued again and will resume")
            .execute(&mut *tx)
            .await?;
            enqueue_dispatch(&mut tx, id, TaskType::parse(row.try_get("type")?)?, None).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    // --- dead letters ---

    pub async fn record_dead_letter(&self, d: &NewDeadLetter<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO dead_letters (queue, exchange, routing_key, message_type, reason, task_id, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(d.queue)
        .bind(d.exchange)
        .bind(d.routing_key)
        .bind(d.message_type)
        .bind(d.reason)
        .bind(d.task.map(|t| t.0))
        .bind(d.body)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Dead letters, newest first, `limit` of them before the id `before`.
    pub async fn dead_letters(&self, before: Option<i64>, limit: i64) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, received_at, queue, exchange, routing_key, message_type, reason, task_id, body, replayed_at
             FROM dead_letters WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter).collect()
    }

    pub async fn dead_letters_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn dead_letter(&self, id: i64) -> Result<DeadLetter> {
        let row = sqlx::query(
            "SELECT id, received_at, queue, exchange, routing_key, message_type, reason, task_id, body, replayed_at
             FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("dead letter {id}")))?;
        dead_letter(&row)
    }

    pub async fn drop_dead_letter(&self, id: i64) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn mark_dead_letter_replayed(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn dead_letter_count(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    // --- saga progress ---

    /// Records a saga event; recording the same event twice is harmless. With a lease epoch,
    /// only while that claim is still the task's: a worker that lost its lease is refused
    /// ([`StoreError::LeaseLost`]) and goes no further.
    pub async fn record_saga_event(
        &self,
        id: TaskId,
        step: &str,
        event: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        self.record_saga_event_fenced(id, None, step, event, detail)
            .await
    }

    pub async fn record_saga_event_fenced(
        &self,
        id: TaskId,
        epoch: Option<i64>,
        step: &str,
        event: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(epoch) = epoch {
            if !holds_lease(&mut tx, id, epoch).await? {
                return Err(StoreError::LeaseLost(id));
            }
        }
        sqlx::query(
            "INSERT INTO saga_events (task_id, step, event, detail) VALUES ($1, $2, $3, $4)
             ON CONFLICT (task_id, step, event) DO NOTHING",
        )
        .bind(id.0)
        .bind(step)
        .bind(event)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether the claim (task, epoch) is still the task's current one.
    pub async fn holds_lease(&self, id: TaskId, epoch: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let held = holds_lease(&mut tx, id, epoch).await?;
        tx.commit().await?;
        Ok(held)
    }

    /// The recorded (step, event) pairs of a task's saga.
    pub async fn saga_events(&self, id: TaskId) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT step, event, detail FROM saga_events WHERE task_id = $1 ORDER BY at",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("step")?,
                    r.try_get("event")?,
                    r.try_get("detail")?,
                ))
            })
            .collect()
    }
}

async fn release_and_dispatch_next(
    tx: &mut sqlx::PgConnection,
    target: &str,
    holder: TaskId,
) -> Result<()> {
    sqlx::query("DELETE FROM target_locks WHERE target = $1 AND task_id = $2")
        .bind(target)
        .bind(holder.0)
        .execute(&mut *tx)
        .await?;
    let (column, id) = match target.split_once(':') {
        Some(("site", id)) => ("site_id", id),
        Some(("platform", id)) => ("platform_id", id),
        _ => return Ok(()),
    };
    let id: i64 = id
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("lock target '{target}'")))?;
    let q = if column == "site_id" {
        "SELECT id, type FROM tasks WHERE site_id = $1 AND status = 'queued' ORDER BY id LIMIT 1"
    } else {
        "SELECT id, type FROM tasks WHERE platform_id = $1 AND site_id IS NULL AND status = 'queued' ORDER BY id LIMIT 1"
    };
    if let Some(row) = sqlx::query(q).bind(id).fetch_optional(&mut *tx).await? {
        enqueue_dispatch(
            tx,
            TaskId(row.try_get("id")?),
            TaskType::parse(row.try_get("type")?)?,
            None,
        )
        .await?;
    }
    Ok(())
}

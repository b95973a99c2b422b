//! The only code that writes SQL against the state database.
//!
//! Rows are parsed into domain types on the way out, so a value that would not pass the API's
//! checks cannot reach a service through the database either. Secrets (the site database
//! password) live in their own type, [`SiteSecrets`], that no API type embeds.

mod auth;
mod backups;
mod catalog;
mod schedules;
mod tasks;

pub use auth::*;
pub use backups::*;
pub use catalog::*;
pub use schedules::*;
pub use tasks::*;

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the state database holds a value that does not parse: {0}")]
    Corrupt(String),
    /// A value PostgreSQL cannot hold as text (a NUL byte, an invalid encoding): the input
    /// is refused, nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("state database error: {0}")]
    Database(sqlx::Error),
    #[error("state database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The worker's claim on the task is no longer the current one: another worker took the
    /// task over after this one's lease lapsed. Nothing was written.
    #[error("the lease on task {0} was lost: another worker runs it now, and this one stops")]
    LeaseLost(domain::TaskId),
}

impl StoreError {
    /// Whether the state database could not be reached (down, restarting, refusing
    /// connections, the pool found no connection in time): nothing was read or written, and
    /// the same request may succeed a few seconds later.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions (08) and operator intervention (57: shutting down,
            // cannot connect now).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // A pool that found no connection in time counts too: PostgreSQL refusing new
        // connections (down, restarting, at max_connections) shows as exactly that. A pool
        // that is merely busy looks the same; a task failed then is given back and run again,
        // which is safe, only slower.
        // 22021 (a NUL byte in text) and 22P05 (a character the encoding cannot hold) come
        // from what a caller sent: its fault, not the database's.
        if let Some(code) = e.as_database_error().and_then(|d| d.code()) {
            if code == "22021" || code == "22P05" {
                return StoreError::Invalid(
                    "a value holds a character that cannot be stored (a NUL byte or an invalid one)".into(),
                );
            }
        }
        let e = StoreError::Database(e);
        if e.is_unavailable() {
            OUTAGES.noticed();
        }
        e
    }
}

/// When this process last found the state database unreachable: work that failed around then may have
/// failed only because of it (see [`outage_since`]).
pub(crate) static OUTAGES: domain::outage::OutageClock = domain::outage::OutageClock::new();

/// Whether this process found the state database unreachable at or after `t`.
pub fn outage_since(t: std::time::Instant) -> bool {
    OUTAGES.since(t)
}

impl From<domain::ParseError> for StoreError {
    fn from(e: domain::ParseError) -> Self {
        StoreError::Corrupt(e.0)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the state database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects, retrying for up to `patience` while PostgreSQL starts.
    pub async fn connect(url: &str, max_connections: u32, patience: Duration) -> Result<Self> {
        // Short: a request that cannot get a connection fails soon and says why (the gateway
        // answers 503), rather than hanging while PostgreSQL is away.
        Self::connect_waiting(url, max_connections, patience, Duration::from_secs(3)).await
    }

    /// As [`Store::connect`], with the wait for a free connection (`acquire`) chosen by the
    /// caller. (A longer wait for the task services, 15 s, made the faults test see no task
    /// flow within 10 s of the broker's return; they keep 3 s, with pools large enough.)
    pub async fn connect_waiting(
        url: &str,
        max_connections: u32,
        patience: Duration,
        acquire: Duration,
    ) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let attempt = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire)
                .connect(url)
                .await;
            match attempt {
                Ok(pool) => return Ok(Self { pool }),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "state database not reachable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A health check on a connection of its own: a pool taken up by slow requests is not
    /// the database being away.
    pub fn prober(&self) -> Prober {
        Prober {
            options: self.pool.connect_options(),
            connection: tokio::sync::Mutex::new(None),
        }
    }
}

pub struct Prober {
    options: std::sync::Arc<sqlx::postgres::PgConnectOptions>,
    connection: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

impl Prober {
    /// Whether the database answers `SELECT 1` now (connecting first if need be). The caller
    /// bounds the time; a check cut short leaves no half-used connection behind, because the
    /// connection is out of its slot while in use.
    pub async fn answers(&self) -> bool {
        use sqlx::Connection;
        let mut slot = self.connection.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => match sqlx::PgConnection::connect_with(&self.options).await {
                Ok(c) => c,
                Err(_) => return false,
            },
        };
        match sqlx::query("SELECT 1").execute(&mut conn).await {
            Ok(_) => {
                *slot = Some(conn);
                true
            }
            Err(_) => false,
        }
    }
}

/// Maps a unique-constraint violation to a conflict with a message for the user.
pub(crate) fn conflict_on_unique(
    e: sqlx::Error,
    message: impl FnOnce(&str) -> String,
) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.code().as_deref() == Some("23505") {
            return StoreError::Conflict(message(db.constraint().unwrap_or("")));
        }
    }
    StoreError::Database(e)
}

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
    #[error("state database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The worker's claim on the task is no longer the current one: another worker took the
    /// task over after this one's lease lapsed. Nothing was written.
    #[error("the lease on task {0} was lost: another worker runs it now, and this one stops")]
    LeaseLost(domain::TaskId),
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
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let attempt = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
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

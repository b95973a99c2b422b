//! Domain types, parsed at the edge.
//!
//! Every name that ends up in a config file, a path, a command or SQL is one of these types:
//! a value of the type is proof that the string was checked. They deserialize through their
//! parser (`#[serde(try_from = "String")]`), so an invalid value cannot even be read from JSON,
//! and values read back from the database are parsed again.

pub mod backup_policy;
mod ids;
mod names;
pub mod outage;
pub mod package_check;
mod secret;
mod status;

/// How long finished tasks and their logs are kept: the setting's key and bounds, read by the
/// gateway (which checks it) and the backupper (whose daily `purge-tasks` task applies it).
pub mod task_retention {
    pub const SETTING: &str = "task_retention_days";
    pub const DEFAULT_DAYS: u64 = 90;
    pub const MAX_DAYS: u64 = 3650;
}

#[cfg(test)]
mod props;

pub use ids::*;
pub use names::*;
pub use secret::*;
pub use status::*;

/// Why a value was refused. The message says what to fix; it is shown to API users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

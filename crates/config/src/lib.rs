//! Configuration from the environment.
//!
//! Every setting is an environment variable named `HOSTING_<NAME>`, with a default that suits a
//! single-host install (`make up`). Secrets (database URLs with passwords, tokens) come from the
//! environment only, never from files in the repository. A bad value stops the service at
//! start with a message that names the variable.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

pub fn string(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn parse<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v.parse().map_err(|e: T::Err| ConfigError {
            name: name.into(),
            value: v,
            reason: e.to_string(),
        }),
    }
}

/// A duration in seconds (fractions allowed).
pub fn seconds(name: &str, default: f64) -> Result<Duration, ConfigError> {
    let secs: f64 = parse(name, default)?;
    Duration::try_from_secs_f64(secs).map_err(|e| ConfigError {
        name: name.into(),
        value: secs.to_string(),
        reason: e.to_string(),
    })
}

/// What every service shares: where the state database and the broker are, and the prefix
/// that namespaces this installation's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Common {
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
}

impl Common {
    pub fn from_env() -> Result<Self, ConfigError> {
        let prefix = string("HOSTING_PREFIX", "hosting");
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError {
                name: "HOSTING_PREFIX".into(),
                value: prefix,
                reason: "use letters, digits, '_' or '-'".into(),
            });
        }
        Ok(Self {
            database_url: string(
                "HOSTING_DATABASE_URL",
                "postgres://hosting:hosting@127.0.0.1:5432/hosting",
            ),
            amqp_url: string("HOSTING_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix,
        })
    }
}

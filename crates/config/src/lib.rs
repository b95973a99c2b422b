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

/// The gateway's address as browsers and mail readers reach it: login links and the "site
/// disabled" page are under it. `HOSTING_PUBLIC_URL`, by default the gateway's listen address.
/// It is written into nginx configuration, so only a plain http(s) URL is accepted.
pub fn public_url() -> Result<String, ConfigError> {
    let default = format!("http://{}", string("HOSTING_LISTEN", "127.0.0.1:8080"));
    let url = string("HOSTING_PUBLIC_URL", &default);
    let url = url.trim_end_matches('/').to_owned();
    check_public_url(&url).map_err(|reason| ConfigError {
        name: "HOSTING_PUBLIC_URL".into(),
        value: url.clone(),
        reason,
    })?;
    Ok(url)
}

/// An absolute http(s) URL of unreserved characters, safe to put in a config file or a mail.
pub fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("it must start with http:// or https://")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("it has no host".into());
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]".contains(&b))
    {
        return Err("use only letters, digits and - . _ ~ : / [ ]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_urls_are_plain() {
        assert!(super::check_public_url("https://panel.example.com:8443/hosting").is_ok());
        assert!(super::check_public_url("http://[::1]:8080").is_ok());
        assert!(super::check_public_url("ftp://x").is_err());
        assert!(super::check_public_url("http://x/a;return 200").is_err());
        assert!(super::check_public_url("http://").is_err());
    }
}

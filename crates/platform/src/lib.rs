//! Platform drivers: how a codebase is scanned into the package registry, how a site
//! directory is laid out and its settings file rendered, and how a site's actions (install,
//! update database, caches, maintenance, one-time login, package report) are run.
//!
//! The `hooks` driver is the general one: the platform root holds `hosting.toml`, a manifest
//! that declares the packages, profiles and one command per action (see `docs/manifest.md`).
//! The other drivers scan a known codebase and produce the same manifest, so everything after
//! platform verify works the same for every driver.

pub mod drupal;
mod hooks;
pub mod wordpress;

pub use hooks::*;

use domain::{AppSecret, DbIdent, DbPassword, DomainName, Email, HostPath, Language, Name};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot read the manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("the platform declares no '{0}' action in its manifest")]
    NoSuchAction(&'static str),
    #[error("the {action} action failed: {reason}")]
    ActionFailed {
        action: &'static str,
        reason: String,
    },
}

/// A directory's entries in name order (scans report packages in a stable order); none for a
/// directory that cannot be read.
pub(crate) fn sorted_entries(dir: &std::path::Path) -> Vec<std::fs::DirEntry> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    entries
}

/// One package as a platform offers it or a site has it enabled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub package_type: PackageType,
    pub version: String,
    #[serde(default)]
    pub schema_version: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PackageType {
    Core,
    Module,
    Theme,
    Profile,
    Library,
    Plugin,
    Other,
}

impl PackageType {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageType::Core => "core",
            PackageType::Module => "module",
            PackageType::Theme => "theme",
            PackageType::Profile => "profile",
            PackageType::Library => "library",
            PackageType::Plugin => "plugin",
            PackageType::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProfileInfo {
    pub name: Name,
    pub languages: Vec<Language>,
}

/// How the site's database is reached, as rendered into its settings and given to actions.
/// It travels only sealed (see `contract::ActionRequest`): it holds the password.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct DbAccess {
    pub host: String,
    pub port: u16,
    pub name: DbIdent,
    pub user: DbIdent,
    pub password: DbPassword,
}

/// Everything a driver needs to know about one site. It travels only sealed to the web
/// server's agent, which runs the site's actions.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteContext {
    pub domain: DomainName,
    pub aliases: Vec<DomainName>,
    /// The URL the site answers on (scheme, host, port).
    pub url: String,
    pub site_dir: HostPath,
    /// Inside the site directory, never served: temporary files, sessions, private files.
    pub private_dir: HostPath,
    pub profile: Name,
    pub language: Language,
    pub admin_email: Email,
    pub db: DbAccess,
    /// What the site's keys and salts derive from: fixed for the site's life, so a restore,
    /// migrate or rename logs nobody out.
    pub app_secret: AppSecret,
    /// Where the site was before a rename or clone: what `fix_paths` rewrites from.
    pub previous: Option<PreviousSite>,
    /// The site's own unix user, which its actions run as. `None` only when the services
    /// themselves do not run as root (a developer's machine), and then actions run as they do.
    /// Looked up on the host that runs the action, never sent.
    #[serde(skip)]
    pub run_as: Option<RunAs>,
}

/// A site's unix user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// A key for one purpose derived from the site's application secret: stable for the site's
/// life, different per purpose, and as secret as the settings file it is written into.
pub fn derived_key(site: &SiteContext, purpose: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"hosting-site-key:");
    h.update(purpose.as_bytes());
    h.update(b":");
    h.update(site.app_secret.expose().as_bytes());
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PreviousSite {
    pub domain: DomainName,
    pub url: String,
    pub site_dir: HostPath,
}

/// A site action. Each maps to a command in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Install,
    UpdateDb,
    ClearCache,
    MaintenanceOn,
    MaintenanceOff,
    LoginLink,
    Packages,
    FixPaths,
}

impl Action {
    pub fn key(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::UpdateDb => "update_db",
            Action::ClearCache => "clear_cache",
            Action::MaintenanceOn => "maintenance_on",
            Action::MaintenanceOff => "maintenance_off",
            Action::LoginLink => "login_link",
            Action::Packages => "packages",
            Action::FixPaths => "fix_paths",
        }
    }
}

/// A database host as written into settings and given to the MariaDB tools: a host name of
/// RFC 1123 labels, or an IP address. Nothing that could be read as a command-line option
/// (`-h`, `--skip-ssl`) or break out of a quoted string.
pub fn check_db_host(host: &str) -> Result<(), String> {
    let bad = || format!("'{host}' is not a host name or IP address");
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    let labels_ok = host.trim_end_matches('.').split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if labels_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn db_hosts_are_names_or_addresses_never_options() {
        for ok in ["127.0.0.1", "::1", "db1", "db-2.example.org", "localhost"] {
            assert!(super::check_db_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "-h",
            "--skip-ssl",
            "",
            "a b",
            "x;y",
            "a..b",
            "-db",
            "db'",
            "[::1]",
        ] {
            assert!(super::check_db_host(bad).is_err(), "{bad}");
        }
    }
}

//! The limits a provider sets through settings, and the ones this API keeps on its own.

use domain::backup_policy::{parse_duration, ScheduleBounds};
use serde_json::{Map, Value};

/// At most this many aliases per site.
pub const MAX_ALIASES: usize = 100;
/// At most this many backups in one backup-delete.
pub const MAX_BACKUPS_PER_DELETE: usize = 1000;
/// One-time login links live at most this long.
pub const MAX_LOGIN_LINK_TTL_HOURS: f64 = 720.0;

/// Settings of the schedule bounds, with their defaults.
pub const BACKUP_INTERVAL_FLOOR: &str = "backup_interval_floor";
pub const CLIENT_BACKUP_INTERVAL_FLOOR: &str = "client_backup_interval_floor";
pub const BACKUP_INTERVAL_CEILING: &str = "backup_interval_ceiling";

fn secs(settings: &Map<String, Value>, key: &str, default: i64) -> i64 {
    settings
        .get(key)
        .and_then(|v| parse_duration(v).ok())
        .map(|d| d.whole_seconds())
        .unwrap_or(default)
}

/// The intervals a schedule may have: what the admin allows everyone, and for a client's
/// token at most what the admin allows clients (hourly by default).
pub fn schedule_bounds(settings: &Map<String, Value>, for_client: bool) -> ScheduleBounds {
    let floor = secs(
        settings,
        BACKUP_INTERVAL_FLOOR,
        ScheduleBounds::ADMIN.floor_secs,
    );
    let ceiling = secs(
        settings,
        BACKUP_INTERVAL_CEILING,
        ScheduleBounds::ADMIN.ceiling_secs,
    );
    let floor = if for_client {
        floor.max(secs(
            settings,
            CLIENT_BACKUP_INTERVAL_FLOOR,
            ScheduleBounds::CLIENT_FLOOR_SECS,
        ))
    } else {
        floor
    };
    ScheduleBounds {
        floor_secs: floor,
        ceiling_secs: ceiling.max(floor),
    }
}

/// Directories no platform may be in, nor contain: the system's own.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/backups",
    "/var/cache",
    "/var/mail",
    "/var/run",
];

/// Why `path` may not hold a platform (or be a platform directory), if it may not: a system
/// directory, the control plane's own (the backup store, webconf's directory, its state), or a
/// directory that contains one of them.
pub fn forbidden_path(path: &domain::HostPath, own: &[std::path::PathBuf]) -> Option<String> {
    let p = path.as_path();
    if p == std::path::Path::new("/") {
        return Some("/ is the whole host".into());
    }
    for sys in SYSTEM_DIRS {
        if p.starts_with(sys) {
            return Some(format!("{path} is in the system directory {sys}"));
        }
    }
    for dir in own {
        if p.starts_with(dir) || dir.starts_with(p) {
            return Some(format!(
                "{path} is, or holds, the control plane's own {}",
                dir.display()
            ));
        }
    }
    None
}

/// The control plane's own directories on this host, from its environment.
pub fn own_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = vec![std::path::PathBuf::from("/var/lib/hosting")];
    for (var, default) in [
        ("HOSTING_BACKUP_DIR", "/var/backups/hosting"),
        ("HOSTING_WEBCONF_DIR", "/var/lib/hosting/webconf"),
    ] {
        dirs.push(std::path::PathBuf::from(config::string(var, default)));
    }
    if let Ok(key) = std::env::var("HOSTING_DBPROV_KEY_FILE") {
        dirs.push(std::path::PathBuf::from(key));
    }
    dirs
}

use crate::ParseError;
use std::fmt;

/// A closed set of values stored as text (in PostgreSQL and on the wire).
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseError::new(format!(
                        "'{}' is not a valid {}: expected one of {}",
                        other,
                        stringify!($name),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }
    };
}

text_enum!(
    /// The role of a host.
    ServerKind { Web = "web", Db = "db" }
);

text_enum!(
    /// How a platform's codebase is scanned and how its sites are installed and maintained.
    Driver { Hooks = "hooks", Wordpress = "wordpress", Drupal = "drupal" }
);

text_enum!(
    PlatformStatus {
        Queued = "queued",
        Enabled = "enabled",
        Locked = "locked",
        Failed = "failed",
        Deleted = "deleted",
    }
);

text_enum!(
    SiteStatus {
        Installing = "installing",
        Enabled = "enabled",
        Disabled = "disabled",
        Deleted = "deleted",
        Failed = "failed",
    }
);

text_enum!(
    TaskStatus {
        Queued = "queued",
        Processing = "processing",
        Success = "success",
        Warning = "warning",
        Error = "error",
    }
);

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Warning | TaskStatus::Error
        )
    }
}

text_enum!(
    /// Every kind of task. The service that owns a type consumes it from its task queue.
    TaskType {
        Install = "install",
        Verify = "verify",
        LoginReset = "login-reset",
        Disable = "disable",
        Enable = "enable",
        Delete = "delete",
        Backup = "backup",
        Restore = "restore",
        BackupDelete = "backup-delete",
        VerifyBackup = "verify-backup",
        Migrate = "migrate",
        Clone = "clone",
        PlatformVerify = "platform-verify",
        PlatformLock = "platform-lock",
        PlatformUnlock = "platform-unlock",
        PlatformDelete = "platform-delete",
        MigrateSites = "migrate-sites",
        // Checks a server's agent and the software it runs (its arguments name the server).
        ServerVerify = "server-verify",
        // Removes finished tasks older than the setting `task_retention_days`.
        PurgeTasks = "purge-tasks",
        // Does nothing: the bench measures the control plane's own cost with it. The gateway
        // accepts it only when started with `HOSTING_BENCH_TASKS=true`.
        Noop = "noop",
    }
);

text_enum!(
    /// What a restricted API token may do: the site task types it may start (`install` is
    /// making a site), and setting a site's backup schedule. Everything else an admin does
    /// (settings, tokens, servers, platforms, clients) needs an unrestricted admin token.
    Scope {
        Install = "install",
        Verify = "verify",
        LoginReset = "login-reset",
        Disable = "disable",
        Enable = "enable",
        Delete = "delete",
        Backup = "backup",
        Restore = "restore",
        BackupDelete = "backup-delete",
        VerifyBackup = "verify-backup",
        Migrate = "migrate",
        Clone = "clone",
        BackupSchedule = "backup-schedule",
    }
);

impl Scope {
    /// The scope a site task type needs; platform tasks have none (admins only).
    pub fn of_task(t: TaskType) -> Option<Scope> {
        Scope::parse(t.as_str()).ok()
    }
}

/// The services that own task types, as named in routing keys and queue names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Installer,
    Backupper,
    Migrator,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Installer => "installer",
            Service::Backupper => "backupper",
            Service::Migrator => "migrator",
        }
    }
}

impl TaskType {
    pub fn owner(self) -> Service {
        use TaskType::*;
        match self {
            Install | Verify | LoginReset | Disable | Enable | Delete | PlatformVerify
            | PlatformLock | PlatformUnlock | PlatformDelete | ServerVerify | Noop => {
                Service::Installer
            }
            Backup | Restore | BackupDelete | VerifyBackup | PurgeTasks => Service::Backupper,
            Migrate | Clone | MigrateSites => Service::Migrator,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for t in TaskType::ALL {
            assert_eq!(TaskType::parse(t.as_str()).unwrap(), *t);
        }
        let err = TaskStatus::parse("done").unwrap_err();
        assert!(err.0.contains("queued"), "{err}");
    }
}

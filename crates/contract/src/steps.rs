//! The steps of every saga, as types. A saga's action and undo match on its step enum with no
//! catch-all, so a step added here does not compile until both say what it does; the list of a
//! saga's steps (`ALL`) is made from the enum by the same macro, so the crash tests, which
//! iterate it, cover a new step by themselves. Migrate and clone share `MoveStep` and run the
//! subsets `MoveStep::MIGRATE` and `MoveStep::CLONE`, written out by hand: a unit test below
//! fails for a step in neither. A step's name is what the saga's stored progress and the
//! fault-injection knobs (`HOSTING_SAGA_CRASH_AT=<saga>:<step>:<before|after>`) call it.

/// One step of a saga.
pub trait SagaStep: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Its name in the stored progress, the logs and the fault-injection knobs.
    fn name(self) -> &'static str;
    /// Whether its undo does something. One that does not creates nothing (or is the last
    /// step, whose effect is the point of the saga), and says why beside its declaration.
    fn undoable(self) -> bool;
}

macro_rules! saga_steps {
    ($(#[$doc:meta])* $enum:ident {
        $($(#[$vdoc:meta])* $variant:ident = $name:literal, undo = $undo:literal;)+
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum {
            $($(#[$vdoc])* $variant),+
        }

        impl $enum {
            /// Every step, in the order the saga runs them.
            pub const ALL: &'static [$enum] = &[$($enum::$variant),+];

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($enum::$variant),)+
                    _ => None,
                }
            }
        }

        impl SagaStep for $enum {
            fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name),+
                }
            }
            fn undoable(self) -> bool {
                match self {
                    $($enum::$variant => $undo),+
                }
            }
        }
    };
}

saga_steps!(
    /// A site's install (the installer).
    InstallStep {
        SystemUser = "system-user", undo = true;
        Database = "database", undo = true;
        SiteDirectory = "site-directory", undo = true;
        /// What the install action creates lives in the site's database and directory, which
        /// the undos of the two steps before remove.
        Install = "install", undo = false;
        Vhost = "vhost", undo = true;
        /// It only looks. A site that answers 5xx is not installed: the unwind removes it.
        ServeCheck = "serve-check", undo = false;
        /// The last step: its effect is the point of the saga.
        Enable = "enable", undo = false;
    }
);

saga_steps!(
    /// A site's delete (the installer).
    DeleteStep {
        /// A backup harms nothing and is kept.
        Backup = "backup", undo = false;
        Vhost = "vhost", undo = true;
        SiteDirectory = "site-directory", undo = true;
        /// The point of no return: once the database is dropped the way out is forward.
        Database = "database", undo = false;
        /// Past the point of no return, the site's directory, then its PHP pool and unix user go.
        SystemUser = "system-user", undo = false;
        /// It records the outcome.
        Finish = "finish", undo = false;
    }
);

saga_steps!(
    /// A restore from a backup (the backupper).
    RestoreStep {
        MaintenanceOn = "maintenance-on", undo = true;
        /// The safety backup is kept whatever happens next; it is what lets a user undo a
        /// restore they regret.
        SafetyBackup = "safety-backup", undo = false;
        Database = "database", undo = true;
        Unpack = "unpack", undo = true;
        Swap = "swap", undo = true;
        /// With `move-tables`: the site's tables into a database of this task's, then the
        /// restored ones into the site's database (two steps, so that a re-run knows which one
        /// it is in).
        TablesAside = "tables-aside", undo = true;
        TablesIn = "tables-in", undo = true;
        /// The swap's undo puts the old directory and database back and writes the settings
        /// and vhost for them.
        Verify = "verify", undo = false;
        /// Coming out of maintenance is what every path ends with.
        MaintenanceOff = "maintenance-off", undo = false;
        /// It only looks. A restored site that answers 5xx is not restored: the unwind puts
        /// the old one back.
        ServeCheck = "serve-check", undo = false;
        /// It cannot fail the restore: the restored site is already serving; what it could
        /// not remove is logged.
        Cleanup = "cleanup", undo = false;
    }
);

saga_steps!(
    /// A migrate (and rename) or a clone (the migrator): one enum for both, as they share
    /// their steps; [`MoveStep::MIGRATE`] and [`MoveStep::CLONE`] say which run in which.
    MoveStep {
        /// A clone is a site of its own, with its own unix user (a migrated site keeps its).
        CloneUser = "clone-user", undo = true;
        /// Undone by the maintenance-off of the unwind.
        MaintenanceOn = "maintenance-on", undo = true;
        /// The backup is kept; it is the way back if a migrate is regretted later.
        Backup = "backup", undo = false;
        Database = "database", undo = true;
        Deploy = "deploy", undo = true;
        /// This and the next two change only the deployed copy, which the deploy's and the
        /// database's undos remove.
        UpdateDb = "update-db", undo = false;
        FixPaths = "fix-paths", undo = false;
        ClearCache = "clear-cache", undo = false;
        /// On the same db server, with `move-tables`: the site's tables aside into a database
        /// of the task's, then the migrated ones into the site's own database.
        TablesAside = "tables-aside", undo = true;
        TablesIn = "tables-in", undo = true;
        Switch = "switch", undo = true;
        /// Coming out of maintenance is what every path ends with.
        MaintenanceOff = "maintenance-off", undo = false;
        /// It only looks; a site that answers 5xx from its target unwinds the move.
        ServeCheck = "serve-check", undo = false;
        /// It cannot fail the migrate: the site serves from the target already.
        Cleanup = "cleanup", undo = false;
    }
);

impl MoveStep {
    pub const MIGRATE: &'static [MoveStep] = &[
        MoveStep::MaintenanceOn,
        MoveStep::Backup,
        MoveStep::Database,
        MoveStep::Deploy,
        MoveStep::UpdateDb,
        MoveStep::FixPaths,
        MoveStep::ClearCache,
        MoveStep::TablesAside,
        MoveStep::TablesIn,
        MoveStep::Switch,
        MoveStep::MaintenanceOff,
        MoveStep::ServeCheck,
        MoveStep::Cleanup,
    ];
    /// A clone leaves the original as it is: no maintenance, no cleanup.
    pub const CLONE: &'static [MoveStep] = &[
        MoveStep::CloneUser,
        MoveStep::Backup,
        MoveStep::Database,
        MoveStep::Deploy,
        MoveStep::UpdateDb,
        MoveStep::FixPaths,
        MoveStep::ClearCache,
        MoveStep::Switch,
        MoveStep::ServeCheck,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_move_step_runs_in_a_migrate_or_a_clone() {
        for s in MoveStep::ALL {
            assert!(
                MoveStep::MIGRATE.contains(s) || MoveStep::CLONE.contains(s),
                "{s:?} runs in neither"
            );
        }
    }

    #[test]
    fn names_read_back() {
        for s in InstallStep::ALL {
            assert_eq!(InstallStep::parse(s.name()), Some(*s));
        }
        assert_eq!(RestoreStep::parse("swap"), Some(RestoreStep::Swap));
        assert_eq!(DeleteStep::parse("nothing"), None);
    }
}

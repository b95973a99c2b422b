use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A server record (a web or a db host).
    ServerId
);
id_type!(
    /// A platform: a codebase on a web server.
    PlatformId
);
id_type!(
    /// A client, the owner of sites.
    ClientId
);
id_type!(
    /// A site: one installation on a platform.
    SiteId
);
id_type!(
    /// A task: every change to a site, a platform or a server.
    TaskId
);
id_type!(
    /// A backup archive.
    BackupId
);

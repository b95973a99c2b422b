//! The message contract between the services.
//!
//! Every message is a type here, named in the AMQP `type` property with a version suffix
//! (`task.v1`, `webconf.v1`, ...). New fields are optional (`#[serde(default)]`), so an older
//! consumer keeps reading newer messages. Names of exchanges, queues and routing keys are built
//! here too, so no service spells them by hand.

use domain::{
    DbIdent, DomainName, Driver, HostPath, Name, ServerKind, SiteId, SystemUser, TaskId,
    TaskStatus, TaskType,
};
pub mod steps;
pub use seal::{RecipientKey, Sealed};
use serde::{Deserialize, Serialize};

/// The exchanges and queues of one installation. `prefix` namespaces them, so several stacks
/// (tests running in parallel, staging beside production) can share one broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    /// Direct exchange; routing key = the service that owns the task type.
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }
    /// Direct exchange; routing key `<service>.<server>`.
    pub fn rpc_exchange(&self) -> String {
        format!("{}.rpc", self.prefix)
    }
    /// Topic exchange; routing key `task.<id>.<kind>`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Fanout exchange where rejected (poison) messages go.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }
    pub fn task_queue(&self, service: &str) -> String {
        format!("{}.tasks.{}", self.prefix, service)
    }
    pub fn rpc_queue(&self, service: &str, server: &Name) -> String {
        format!("{}.rpc.{}.{}", self.prefix, service, server)
    }
    pub fn rpc_routing_key(service: &str, server: &Name) -> String {
        format!("{service}.{server}")
    }
    /// Direct exchange for RPC replies; routing key = the caller's reply queue. Replies go
    /// here rather than through the default exchange, which would let an agent publish into
    /// any queue (a task queue among them) by naming it.
    pub fn replies_exchange(&self) -> String {
        format!("{}.replies", self.prefix)
    }
    /// The broker user of the agent of one server (made when the server is registered).
    pub fn agent_user(&self, kind: ServerKind, server: &Name) -> String {
        format!("{}.agent.{kind}.{server}", self.prefix)
    }
    /// What the agent of `server` may do on the broker, as RabbitMQ permission patterns: read
    /// (consume) its own RPC queue, which the control plane declared and bound at
    /// registration; publish replies, and its own heartbeats (`agent.<kind>.<name>` on the
    /// events exchange, the only routing key its topic permission allows). Nothing else: it
    /// declares nothing (so it makes no exchange or queue to route through), binds nothing
    /// (it needs write on a queue and read on an exchange for that, and has neither), reads no
    /// other queue, publishes no task, no dead letter and no event of a task.
    pub fn agent_grant(&self, kind: ServerKind, server: &Name) -> AgentGrant {
        let q = regex_escape(&self.rpc_queue(agent_service(kind), server));
        let replies = regex_escape(&self.replies_exchange());
        let events = regex_escape(&self.events_exchange());
        AgentGrant {
            configure: "^$".into(),
            write: format!("^({replies}|{events})$"),
            read: format!("^{q}$"),
            events_exchange: self.events_exchange(),
            events_write: format!("^{}$", regex_escape(&heartbeat_routing_key(kind, server))),
        }
    }
}

/// The agent that does a server's work: webconf on a web server, dbprov on a db server.
pub fn agent_service(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Web => WebconfRpc::SERVICE,
        ServerKind::Db => DbprovRpc::SERVICE,
    }
}

/// The routing key of a server agent's heartbeats on the events exchange.
pub fn heartbeat_routing_key(kind: ServerKind, server: &Name) -> String {
    format!("agent.{kind}.{server}")
}

/// A broker user's permissions (regular expressions over exchange and queue names, as
/// RabbitMQ reads them) and its topic permission on the events exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentGrant {
    pub configure: String,
    pub write: String,
    pub read: String,
    pub events_exchange: String,
    pub events_write: String,
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.^$|?*+()[]{}-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub const HEARTBEAT_MESSAGE_TYPE: &str = "agent.v1";

/// What a server's agent says of itself, every few seconds, on the events exchange: the
/// control plane shows it as the server's agent state. Published with the AMQP `user_id` of
/// the agent's own broker user, which the broker checks, so one host cannot speak for another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub kind: ServerKind,
    pub server: Name,
    pub service: String,
    /// The agent's own version (the workspace's).
    pub version: String,
    /// The software it runs for sites, by name (`nginx`, `php`, `mariadb`): its version, or
    /// why it could not be read.
    #[serde(default)]
    pub software: std::collections::BTreeMap<String, String>,
}

pub const TASK_MESSAGE_TYPE: &str = "task.v1";
pub const WEBCONF_MESSAGE_TYPE: &str = "webconf.v1";
pub const DBPROV_MESSAGE_TYPE: &str = "dbprov.v1";
pub const EVENT_MESSAGE_TYPE: &str = "event.v1";
/// v2: the reply says which it is (`BackupperReply`).
pub const BACKUP_MESSAGE_TYPE: &str = "backup.v2";

/// A task's arguments: one variant per kind of task that takes any. The gateway parses a
/// request into one, the store keeps its JSON (the `args` column, as the API shows it), and a
/// worker reads it back with [`TaskArgs::of`], by the task's type, so a worker never picks keys
/// out of loose JSON. Reading is lenient about keys it does not know (what a later version
/// might add); the API's own checks are strict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskArgs {
    None(NoArgs),
    Backup(BackupArgs),
    /// `restore` and `verify-backup`.
    OfBackup(BackupRef),
    BackupDelete(BackupDeleteArgs),
    Delete(DeleteArgs),
    /// `migrate` (a new domain renames) and `clone`.
    Move(MoveArgs),
    MigrateSites(MigrateSitesArgs),
    ServerVerify(ServerArgs),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoArgs {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupArgs {
    /// The backup's description (one line of text); the backupper's default when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRef {
    pub backup: domain::BackupId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupDeleteArgs {
    pub backups: Vec<domain::BackupId>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteArgs {
    /// Delete whatever state the site is in, going on past what cannot be removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveArgs {
    pub platform: domain::PlatformId,
    /// A new domain (a rename, or the clone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainName>,
    /// Another db server for the site's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_server: Option<domain::ServerId>,
    /// A clone's new site, recorded with the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_site: Option<SiteId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateSitesArgs {
    pub target: domain::PlatformId,
    /// Sites moved at once (the API's default, 4).
    #[serde(default = "MigrateSitesArgs::default_concurrency")]
    pub concurrency: u32,
    /// Failures after which no more are started (the API's default, 3).
    #[serde(default = "MigrateSitesArgs::default_failure_budget")]
    pub failure_budget: u32,
    /// Every site's database moves to this server too (a web and a database server retired
    /// at once); none keeps each site's database where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_server: Option<domain::ServerId>,
}

impl MigrateSitesArgs {
    fn default_concurrency() -> u32 {
        4
    }
    fn default_failure_budget() -> u32 {
        3
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerArgs {
    pub server: domain::ServerId,
}

impl TaskArgs {
    /// Reads stored arguments as the task's type has them.
    pub fn of(task_type: TaskType, args: &serde_json::Value) -> Result<Self, String> {
        use TaskType::*;
        fn read<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
            T::deserialize(v).map_err(|e| e.to_string())
        }
        let parsed = match task_type {
            Backup => TaskArgs::Backup(read(args)?),
            Restore | VerifyBackup => TaskArgs::OfBackup(read(args)?),
            BackupDelete => TaskArgs::BackupDelete(read(args)?),
            Delete => TaskArgs::Delete(read(args)?),
            Migrate | Clone => TaskArgs::Move(read(args)?),
            MigrateSites => TaskArgs::MigrateSites(read(args)?),
            ServerVerify => TaskArgs::ServerVerify(read(args)?),
            Install | Verify | LoginReset | Disable | Enable | PlatformVerify | PlatformLock
            | PlatformUnlock | PlatformDelete | PurgeTasks | Noop => TaskArgs::None(NoArgs {}),
        };
        Ok(parsed)
    }

    pub fn none() -> Self {
        TaskArgs::None(NoArgs {})
    }

    /// The JSON the store keeps.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// One RPC service on a host: the service its queue is named after (`<SERVICE>.<server>`), the
/// message type its requests carry (with the version; a callee refuses any other), and the
/// request and reply types. The caller (`bus::RpcClient::ask`) and the callee (`bus::Serve`,
/// `Bus::serve`) are written once against it, so no service decodes or encodes by hand.
pub trait Rpc: 'static {
    const SERVICE: &'static str;
    const MESSAGE_TYPE: &'static str;
    type Request: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;
    type Reply: Serialize + serde::de::DeserializeOwned + Send + 'static;
}

/// The web server's agent: vhosts, pools, site users, paths.
pub enum WebconfRpc {}
impl Rpc for WebconfRpc {
    const SERVICE: &'static str = "webconf";
    const MESSAGE_TYPE: &'static str = WEBCONF_MESSAGE_TYPE;
    type Request = WebconfRequest;
    type Reply = WebconfReply;
}

/// The db server's agent: databases, users, grants.
pub enum DbprovRpc {}
impl Rpc for DbprovRpc {
    const SERVICE: &'static str = "dbprov";
    const MESSAGE_TYPE: &'static str = DBPROV_MESSAGE_TYPE;
    type Request = DbprovRequest;
    type Reply = DbprovReply;
}

/// The backupper: backups (on the route [`BACKUP_STORE`]) and deploys.
pub enum BackupperRpc {}
impl Rpc for BackupperRpc {
    const SERVICE: &'static str = "backupper";
    const MESSAGE_TYPE: &'static str = BACKUP_MESSAGE_TYPE;
    type Request = BackupRequest;
    type Reply = BackupperReply;
}

/// "Run this task." The task's arguments live in the state database, which is the source of
/// truth; the message only names the task, so a stale or duplicated message is harmless.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMessage {
    pub task: TaskId,
    #[serde(rename = "type")]
    pub task_type: TaskType,
}

/// A request to the web server configuration service on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum WebconfRequest {
    /// Write (or rewrite) a site's vhost, test the configuration, reload. Idempotent: an
    /// unchanged vhost is not rewritten and nginx is not reloaded.
    WriteVhost(Box<Vhost>),
    /// Remove a site's vhost if present, test, reload.
    RemoveVhost { domain: DomainName },
    /// Make the site's unix user and group if they do not exist (marked as made for `site`);
    /// answers their ids. A user of that name made by anyone else is refused.
    EnsureSiteUser { user: SystemUser, site: SiteId },
    /// Remove the site's PHP pool (reloading php-fpm), stop its processes, and remove its
    /// unix user and group, if they exist and were made for `site`.
    RemoveSiteUser { user: SystemUser, site: SiteId },
    /// The PHP that site pools run: its version and extensions. A php-fpm started before an
    /// extension was installed is reloaded first, so the answer is what sites get.
    PhpInfo,
    /// What is at a path on this host (a platform root about to be registered).
    InspectPath { path: HostPath },
    /// The versions of the software this host runs for sites (nginx, PHP).
    Software,
    /// This agent's public key, which a site's settings and action context are sealed to.
    PublicKey,
    /// Make the site directory if it is missing and `create` is set (marked as made for its
    /// site; one that exists without that mark is refused), then lay it out: its owners and
    /// modes, its public files and private directories. Idempotent.
    PrepareSiteDir { dir: SiteDir, create: bool },
    /// Write the site's settings file where it differs (and put its owner and mode right).
    /// `text` is sealed to this agent's key: it holds the database password.
    WriteSettings {
        site: SiteId,
        user: SystemUser,
        path: HostPath,
        text: Sealed,
    },
    /// Remove a directory that carries `site`'s mark, or no mark when `unmarked_ok`; with
    /// `deployed_by`, one that carries that task's deploy mark (and no other).
    RemoveSiteDir {
        site: SiteId,
        path: HostPath,
        #[serde(default)]
        unmarked_ok: bool,
        #[serde(default)]
        deployed_by: Option<TaskId>,
    },
    /// Rename a site directory to a sibling (a delete sets it aside until its database is
    /// dropped, and an undo puts it back), if it carries `site`'s mark, or no mark when
    /// `unmarked_ok`. Nothing moves when `to` exists already.
    MoveSiteDir {
        site: SiteId,
        from: HostPath,
        to: HostPath,
        #[serde(default)]
        unmarked_ok: bool,
        #[serde(default)]
        deployed_by: Option<TaskId>,
    },
    /// What a directory's mark file says (`mark` in the answer), never read through a symlink.
    ReadMark { path: HostPath, mark: MarkKind },
    /// Writes a directory's mark file (`None` removes it).
    WriteMark {
        path: HostPath,
        mark: MarkKind,
        content: Option<String>,
    },
    /// Run a platform action for a site, as the site's own user.
    RunAction(Box<ActionRequest>),
    /// Read a platform's codebase on this host: its manifest (hooks driver) or a scan of its
    /// code (drupal, wordpress).
    ScanPlatform { root: HostPath, driver: Driver },
    /// Stream the site's files, as a plain tar read as the site's user, to the backup store
    /// for a backup made by `task`. Bulk data never rides the broker: this request carries
    /// only where to send it and the token that lets it in.
    SendSiteFiles(Box<SendSiteFiles>),
    /// Fetch a backup's archive from the backup store (with a token for that one download)
    /// and unpack its site files into `dest`, a fresh directory beside the site's, handed to
    /// the site's user; the archive is checked against its record's SHA-256 before any of it
    /// is used, and every entry as for any archive from outside.
    ReceiveSiteFiles(Box<ReceiveSiteFiles>),
}

/// Which mark file of a directory (see `cell::SITE_MARK`, `cell::DEPLOY_MARK`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MarkKind {
    /// Made for one site (`site <id>`).
    Site,
    /// Deployed from a backup by one task (`task <id>`).
    Deploy,
}

/// See `WebconfRequest::ReceiveSiteFiles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveSiteFiles {
    pub task: TaskId,
    pub site: SiteId,
    pub user: SystemUser,
    pub dest: HostPath,
    /// Remove what is at `dest` first: it is named by the task, and an interrupted run of
    /// the task left it.
    #[serde(default)]
    pub replace: bool,
    /// The archive's SHA-256, as its backup record says.
    pub sha256: String,
    /// What may be unpacked at most: entries, and bytes.
    pub max_entries: u64,
    pub max_bytes: u64,
    /// The backup store's download address (`http://host:port/v1/archives`).
    pub url: String,
    /// The download's token, sealed to the agent's key (see `SendSiteFiles::token`).
    pub token: Sealed,
}

/// See `WebconfRequest::SendSiteFiles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendSiteFiles {
    pub task: TaskId,
    pub site: SiteId,
    pub user: SystemUser,
    pub path: HostPath,
    /// Directories inside it whose contents are left out (its temporary files).
    pub skip: Vec<String>,
    /// The backup store's upload address (`http://host:port/v1/site-files`).
    pub url: String,
    /// The upload's token, sealed to the agent's key: good for this task's upload from this
    /// host, once, until it expires.
    pub token: Sealed,
}

/// What an agent sent: the tar's size and SHA-256, which the store checks against what it
/// received, end to end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SentFiles {
    pub bytes: u64,
    pub sha256: String,
    pub files: u64,
}

/// The route the control plane's backupper (the backup store) answers backup requests on,
/// wherever the site lives.
pub const BACKUP_STORE: &str = "store";

/// A site's directory, for the requests that make or lay it out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteDir {
    pub site: SiteId,
    /// Its own unix user, which owns it.
    pub user: SystemUser,
    pub path: HostPath,
    /// The private directory's path inside it (`private`, `data/private`).
    pub private: String,
}

/// A platform action to run on the web server that holds the platform's code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRequest {
    pub site: SiteId,
    /// The site's unix user: the action runs as it.
    pub user: SystemUser,
    pub platform_root: HostPath,
    /// The platform's manifest as its verify recorded it.
    pub manifest: Box<platform::Manifest>,
    pub action: platform::Action,
    /// The site's `platform::SiteContext` as JSON, sealed to the agent's key: it holds the
    /// database password and the application secret.
    pub context: Sealed,
    pub timeout_secs: u64,
}

/// What a platform action did: its output lines (the database password masked) and its
/// result, the JSON object it printed last, or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionOutput {
    pub lines: Vec<ActionLine>,
    /// Lines past the most an answer carries, counted and not kept.
    #[serde(default)]
    pub lines_dropped: u64,
    pub result: Result<serde_json::Value, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionLine {
    pub level: LogLevel,
    pub text: String,
}

/// The level of a line in a task's log, as the log stores it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn parse(level: &str) -> Self {
        match level {
            "warn" | "warning" => LogLevel::Warning,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

/// What a `move-site-dir` or `remove-site-dir` found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DirOutcome {
    /// Moved, or removed.
    Done,
    /// `to` exists already: nothing moved (an interrupted run had moved it).
    TargetExists,
    /// Nothing was there.
    Missing,
    /// It carries another site's mark, or none: left alone.
    NotOurs,
}

/// What a path on a host is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    Directory,
    File,
    Symlink,
    Other,
    Missing,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vhost {
    pub domain: DomainName,
    #[serde(default)]
    pub aliases: Vec<DomainName>,
    /// The document root: the platform's web root.
    pub document_root: HostPath,
    /// The site's own directory (settings, files), handed to PHP as `HOSTING_SITE_DIR`.
    pub site_dir: HostPath,
    /// Where requests that do not match a file go, relative to the document root.
    pub front_controller: String,
    /// Serve the site, or send its visitors to the "site disabled" page.
    #[serde(default)]
    pub mode: VhostMode,
    /// The site's own PHP pool, written with the vhost. A vhost that serves PHP needs one.
    #[serde(default)]
    pub pool: Option<PhpPool>,
}

/// A site's php-fpm pool: its own user, socket and limits on what its PHP may open.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhpPool {
    pub user: SystemUser,
    /// The platform's codebase, which the pool may read.
    pub platform_root: HostPath,
    /// The site's directory, and its private directory in it (temporary files, sessions,
    /// the PHP error log), which is never served.
    pub site_dir: HostPath,
    pub private_dir: HostPath,
}

impl PhpPool {
    pub fn tmp_dir(&self) -> String {
        format!("{}/tmp", self.private_dir)
    }
    pub fn sessions_dir(&self) -> String {
        format!("{}/sessions", self.private_dir)
    }
    /// Where PHP logs the site's errors: read by the tasks that check a site serves.
    pub fn error_log(&self) -> String {
        format!("{}/logs/php-errors.log", self.private_dir)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum VhostMode {
    #[default]
    Serve,
    /// Every request except `/.well-known/acme-challenge/` (so certificates still renew)
    /// is redirected to `redirect`, the control plane's public "site disabled" page.
    Disabled { redirect: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebconfReply {
    /// Whether the configuration changed (and nginx was reloaded).
    pub changed: bool,
    /// For `ensure-site-user`: the user's uid and gid.
    #[serde(default)]
    pub ids: Option<(u32, u32)>,
    /// For `php-info`.
    #[serde(default)]
    pub php: Option<PhpRuntime>,
    /// For `inspect-path`.
    #[serde(default)]
    pub path: Option<PathKind>,
    /// For `software`: by name, its version (or why it could not be read).
    #[serde(default)]
    pub software: Option<std::collections::BTreeMap<String, String>>,
    /// For `public-key`.
    #[serde(default)]
    pub public_key: Option<RecipientKey>,
    /// For `move-site-dir` and `remove-site-dir`.
    #[serde(default)]
    pub dir: Option<DirOutcome>,
    /// For `read-mark`.
    #[serde(default)]
    pub mark: Option<String>,
    /// For `run-action`.
    #[serde(default)]
    pub action: Option<ActionOutput>,
    /// For `scan-platform`.
    #[serde(default)]
    pub manifest: Option<Box<platform::Manifest>>,
    /// For `send-site-files`, and `receive-site-files` (what arrived and was unpacked).
    #[serde(default)]
    pub sent: Option<SentFiles>,
}

impl WebconfReply {
    pub fn changed(changed: bool) -> Self {
        Self {
            changed,
            ids: None,
            php: None,
            path: None,
            software: None,
            public_key: None,
            dir: None,
            mark: None,
            action: None,
            manifest: None,
            sent: None,
        }
    }
}

/// The PHP a web server's site pools run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhpRuntime {
    /// `8.2.36`
    pub version: String,
    /// Lowercase extension names (`pdo_mysql`, `mbstring`, `zend opcache`).
    pub extensions: Vec<String>,
    /// Whether php-fpm was reloaded to load extensions installed after it started.
    #[serde(default)]
    pub reloaded: Vec<String>,
}

/// A request to the database provisioning service of one db server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum DbprovRequest {
    /// Create the database and its user, granted on that database only. Idempotent: an
    /// existing database is kept, the user's password is (re)set to this one. The password
    /// is sealed to this dbprov's key (`public-key`): the broker keeps persistent messages on
    /// disk, and no readable password may rest there.
    CreateDatabase {
        database: DbIdent,
        user: DbIdent,
        password: Sealed,
    },
    /// Drop the database and the user if they exist; with `if_empty`, only a database that
    /// holds no table (what an undo set aside and moved back).
    DropDatabase {
        database: DbIdent,
        user: DbIdent,
        #[serde(default)]
        if_empty: bool,
    },
    /// This dbprov's public key, which passwords are sealed to.
    PublicKey,
    /// Whether these databases hold only base tables (no views, triggers, routines or
    /// events), so that their tables can be moved between databases with `move-tables`.
    TablesOnly { databases: Vec<DbIdent> },
    /// Moves every table of `from` into `to` (made if missing) in one atomic statement, so a
    /// site's database keeps its name through a restore or migrate (an application may take
    /// its identity from it, as MediaWiki does). Idempotent: with nothing left in `from`, it
    /// is done.
    MoveTables { from: DbIdent, to: DbIdent },
    /// The version of the database server this agent provisions.
    Software,
}

impl DbprovRequest {
    pub fn drop_database(database: DbIdent, user: DbIdent) -> Self {
        DbprovRequest::DropDatabase {
            database,
            user,
            if_empty: false,
        }
    }

    /// Drops a database that holds no table any more (and its user, if any).
    pub fn drop_empty_database(database: DbIdent, user: DbIdent) -> Self {
        DbprovRequest::DropDatabase {
            database,
            user,
            if_empty: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DbprovReply {
    pub changed: bool,
    /// For `public-key`.
    #[serde(default)]
    pub public_key: Option<RecipientKey>,
    /// For `tables-only`.
    #[serde(default)]
    pub tables_only: Option<bool>,
    /// For `software`.
    #[serde(default)]
    pub software: Option<std::collections::BTreeMap<String, String>>,
}

impl DbprovReply {
    pub fn changed(changed: bool) -> Self {
        Self {
            changed,
            public_key: None,
            tables_only: None,
            software: None,
        }
    }
}

/// A request to the backupper on the host that holds the site's files: the other services'
/// way to make the backup their safety rules require before they change anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum BackupRequest {
    /// Back the site up for `task`. Idempotent per task and description: asking again (a
    /// redelivery, a resumed task) answers with the backup made the first time.
    MakeBackup {
        site: domain::SiteId,
        task: TaskId,
        description: String,
    },
    /// See [`DeployRequest`].
    Deploy(DeployRequest),
}

/// Unpack a backup's site files into `dest` (a new directory, marked as deployed by `task`)
/// and import its dump into `database` on `db_server` as `user`, whose password the task
/// keeps in its secrets as `deploy-db-password` (no password travels on the bus). Idempotent:
/// a `dest` this task deployed already is answered as done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub task: TaskId,
    pub backup: i64,
    pub dest: HostPath,
    pub db_server: Name,
    pub database: DbIdent,
    pub user: DbIdent,
    /// The unix user the deployed directory belongs to (the clone's own, or the migrated
    /// site's), whatever the archive records.
    #[serde(default)]
    pub owner: Option<SystemUser>,
    /// The web server the files go to.
    #[serde(default)]
    pub web_server: Option<Name>,
    /// The site `owner` was made for (a clone's own, or the migrated site).
    #[serde(default)]
    pub owner_site: Option<SiteId>,
}

/// A vhost's file name: the domain and `.conf`, or for a name too long for a file name (a
/// domain may have 253 characters, a file name 255 bytes, and a rewrite writes `.conf.tmp`
/// beside it) its first 200 characters and a hash of the whole.
pub fn vhost_file(domain: &DomainName) -> String {
    let d = domain.as_str();
    if d.len() <= 240 {
        return format!("{d}.conf");
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in d.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}~{h:016x}.conf", &d[..200])
}

/// The gateway's public pages, which other services write into links and vhosts: a one-time
/// login link (`/login/{token}`) and the page a disabled site sends its visitors to.
pub fn login_url(public_url: &str, token: &str) -> String {
    format!("{public_url}/login/{token}")
}

pub fn disabled_url(public_url: &str, domain: &DomainName) -> String {
    format!("{public_url}/disabled/{domain}")
}

/// The task secret holding the password of the database a deploy imports into.
pub const DEPLOY_PASSWORD_SECRET: &str = "deploy-db-password";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployReply {
    pub files: u64,
}

/// The backupper's answer: to `make-backup` a `backup`, to `deploy` a `deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "made", rename_all = "kebab-case")]
pub enum BackupperReply {
    Backup(BackupReply),
    Deploy(DeployReply),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupReply {
    pub backup: i64,
    pub size: i64,
    pub checksum: String,
}

/// The reply envelope of every RPC: the callee's answer or the reason it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RpcReply<T> {
    Ok { body: T },
    Error { message: String },
}

/// A task state change or log line, published on the events exchange for the API's event
/// stream and for dashboards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskEvent {
    Status {
        task: TaskId,
        status: TaskStatus,
        #[serde(default)]
        message: Option<String>,
    },
    Log {
        task: TaskId,
        level: String,
        message: String,
    },
}

impl TaskEvent {
    pub fn routing_key(&self) -> String {
        match self {
            TaskEvent::Status { task, .. } => format!("task.{task}.status"),
            TaskEvent::Log { task, .. } => format!("task.{task}.log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_message_wire_format_is_stable() {
        let m = TaskMessage {
            task: TaskId(7),
            task_type: TaskType::Install,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"task":7,"type":"install"}"#
        );
    }

    #[test]
    fn task_arguments_keep_their_stored_form() {
        let m = TaskArgs::Move(MoveArgs {
            platform: domain::PlatformId(3),
            domain: None,
            db_server: Some(domain::ServerId(2)),
            clone_site: None,
        });
        assert_eq!(
            m.to_value(),
            serde_json::json!({"platform": 3, "db_server": 2})
        );
        assert_eq!(TaskArgs::of(TaskType::Migrate, &m.to_value()), Ok(m));
        assert_eq!(TaskArgs::none().to_value(), serde_json::json!({}));
        assert_eq!(
            TaskArgs::Delete(DeleteArgs::default()).to_value(),
            serde_json::json!({})
        );
        assert!(TaskArgs::of(TaskType::Restore, &serde_json::json!({"backup": "x"})).is_err());
        assert!(TaskArgs::of(TaskType::Restore, &serde_json::json!({})).is_err());
        // Written before the defaults were spelled out.
        assert_eq!(
            TaskArgs::of(TaskType::MigrateSites, &serde_json::json!({"target": 2})),
            Ok(TaskArgs::MigrateSites(MigrateSitesArgs {
                target: domain::PlatformId(2),
                concurrency: 4,
                failure_budget: 3,
                db_server: None,
            }))
        );
    }

    #[test]
    fn an_agents_grant_names_only_its_own_queue() {
        let t = Topology::new("hosting-t1");
        let web2 = Name::parse("web2").unwrap();
        let g = t.agent_grant(ServerKind::Web, &web2);
        assert_eq!(g.configure, "^$");
        assert_eq!(g.read, r"^hosting\-t1\.rpc\.webconf\.web2$");
        assert_eq!(g.write, r"^(hosting\-t1\.replies|hosting\-t1\.events)$");
        assert_eq!(g.events_write, r"^agent\.web\.web2$");
        assert_eq!(
            t.agent_user(ServerKind::Db, &web2),
            "hosting-t1.agent.db.web2"
        );
    }

    #[test]
    fn an_invalid_domain_in_a_request_cannot_be_read() {
        let bad = r#"{"op":"remove-vhost","domain":"evil;.com"}"#;
        assert!(serde_json::from_str::<WebconfRequest>(bad).is_err());
    }
}

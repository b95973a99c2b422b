//! Test support: a whole stack per test, on the real services.
//!
//! [`Stack::spawn`] starts the six real binaries with a unique prefix: their own state
//! database, their own exchanges and queues, their own site databases and users (named
//! `<prefix>_<id>`), their own nginx and php-fpm (webconf's managed mode) on a free port, and
//! their own copy of the example platform in a temporary directory. [`Stack::teardown`] (or,
//! after a panic, `Drop`) removes all of it, so tests run in parallel and leave nothing behind.

pub mod faults;
pub mod hosts;
pub mod http;
pub mod proxy;
pub mod smtp;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_ADMIN_URL: &str = "postgres://hosting:hosting@127.0.0.1:5432/hosting";
/// A page to drop into a platform that reports what the PHP serving it can do: its uid,
/// whether it can read or list `?path=`, whether the extension `?ext=` is loaded.
pub const PHP_PROBE: &str = r#"<?php
header('Content-Type: application/json');
$p = (string) ($_GET['path'] ?? '');
echo json_encode([
    'uid' => posix_geteuid(),
    'read' => $p !== '' && @file_get_contents($p) !== false,
    'list' => $p !== '' && @scandir($p) !== false,
    'ext' => isset($_GET['ext']) ? extension_loaded((string) $_GET['ext']) : null,
]);
"#;

pub const MYSQL_ADMIN_URL: &str = "mysql://root@localhost/?socket=/run/mysqld/mysqld.sock";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The names of a saga's steps, from its step enum (`contract::steps`), in order: the
/// fault-injection tests iterate these, so a step added to a saga is tested by itself.
pub fn step_names<S: contract::steps::SagaStep>(steps: &[S]) -> Vec<&'static str> {
    steps.iter().map(|s| s.name()).collect()
}

/// RabbitMQ's management API on the shared broker (`scripts/deps.sh` enables it).
pub const BROKER_ADMIN_URL: &str = "http://guest:guest@127.0.0.1:15672";
pub const SERVICES: [&str; 6] = [
    "dbprov",
    "webconf",
    "installer",
    "backupper",
    "migrator",
    "gateway",
];

/// Where cargo put the service binaries: next to this test's own executable.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HOSTING_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The `id` of an API object.
pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_default()
}

/// What is in a platform's `sites/` directory besides the placeholder the repository keeps.
pub fn entries_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".gitkeep")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[derive(Default)]
pub struct StackOptions {
    /// Extra environment per service ("installer", ...) or for all ("*").
    pub env: Vec<(&'static str, String, String)>,
    /// The gateway reaches the broker through this URL (a proxy the test controls).
    pub gateway_amqp_url: Option<String>,
    /// Where the stack's directory (platforms, sites, backups, logs) goes; by default
    /// /tmp/hosting-tests.
    pub root: Option<PathBuf>,
    /// Every service (and the harness) uses this broker instead of the shared one: a
    /// private one a test may kill ([`faults::Rabbit`]).
    pub amqp_url: Option<String>,
    /// The state database lives on this PostgreSQL port instead of the shared 5432 (a
    /// private instance, [`faults::Postgres`]).
    pub pg_port: Option<u16>,
}

pub struct Stack {
    pub prefix: String,
    /// The broker this stack uses.
    pub amqp_url: String,
    pg_admin_url: String,
    pub dir: PathBuf,
    pub api: String,
    pub http_port: u16,
    pub token: String,
    pub state_db: String,
    pub state_db_url: String,
    pub example_root: PathBuf,
    options: StackOptions,
    procs: HashMap<&'static str, Child>,
    cleaned: bool,
}

impl Stack {
    pub async fn spawn() -> Self {
        Self::spawn_with(StackOptions::default()).await
    }

    pub async fn spawn_with(options: StackOptions) -> Self {
        match Self::try_spawn(options).await {
            Ok(s) => s,
            Err(e) => panic!("cannot start the stack: {e:#}"),
        }
    }

    async fn try_spawn(options: StackOptions) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}", &id[..10]);
        let dir = options
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/tmp/hosting-tests"))
            .join(&prefix);
        std::fs::create_dir_all(dir.join("logs"))?;
        let example_root = dir.join("platforms/example");
        copy_dir(&repo_root().join("platforms/example"), &example_root)?;

        let state_db = format!("hosting_{prefix}");
        let pg_port = options.pg_port.unwrap_or(5432);
        let pg_admin_url = format!("postgres://hosting:hosting@127.0.0.1:{pg_port}/hosting");
        let amqp_url = options.amqp_url.clone().unwrap_or_else(|| AMQP_URL.into());
        let admin = sqlx::PgPool::connect(&pg_admin_url)
            .await
            .context("connecting to PostgreSQL as hosting")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {state_db}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let state_db_url = format!("postgres://hosting:hosting@127.0.0.1:{pg_port}/{state_db}");

        let gateway_port = free_port();
        let http_port = free_port();
        let mut stack = Stack {
            prefix,
            amqp_url,
            pg_admin_url,
            api: format!("http://127.0.0.1:{gateway_port}"),
            http_port,
            token: String::new(),
            state_db,
            state_db_url,
            example_root,
            dir,
            options,
            procs: HashMap::new(),
            cleaned: false,
        };
        for svc in SERVICES {
            stack.start(svc)?;
        }
        stack.wait_healthy().await?;

        let token_file = stack.dir.join("admin.token");
        let out = Command::new(bin_dir().join("gateway"))
            .arg("bootstrap")
            .args(["--token-file", &token_file.to_string_lossy()])
            .args(["--platform-root", &stack.example_root.to_string_lossy()])
            .args(["--web-port", &http_port.to_string()])
            .envs(stack.env_for("gateway"))
            .output()?;
        if !out.status.success() {
            bail!("bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        stack.token = std::fs::read_to_string(&token_file)?.trim().to_owned();
        stack.wait_platform("example").await?;
        Ok(stack)
    }

    fn env_for(&self, svc: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOSTING_DATABASE_URL".to_owned(), self.state_db_url.clone()),
            ("HOSTING_AMQP_URL".into(), self.amqp_url.clone()),
            ("HOSTING_PREFIX".into(), self.prefix.clone()),
            (
                "HOSTING_LISTEN".into(),
                self.api.trim_start_matches("http://").into(),
            ),
            (
                "HOSTING_HTTP_LISTEN".into(),
                format!("127.0.0.1:{}", self.http_port),
            ),
            (
                "HOSTING_WEBCONF_DIR".into(),
                self.dir.join("webconf").to_string_lossy().into_owned(),
            ),
            ("HOSTING_DB_PREFIX".into(), format!("{}_", self.prefix)),
            (
                "HOSTING_BACKUP_DIR".into(),
                self.dir.join("backups").to_string_lossy().into_owned(),
            ),
            ("HOSTING_MYSQL_ADMIN_URL".into(), MYSQL_ADMIN_URL.into()),
            (
                "HOSTING_DBPROV_KEY_FILE".into(),
                self.dir.join("dbprov.key").to_string_lossy().into_owned(),
            ),
            ("HOSTING_PHP_MAX_CHILDREN".into(), "4".into()),
            ("HOSTING_SWEEP_INTERVAL_SECS".into(), "1".into()),
            ("HOSTING_REDISPATCH_AFTER_SECS".into(), "5".into()),
            ("RUST_LOG".into(), "info,sqlx=warn,lapin=warn".into()),
            // The shared broker sees hundreds of stacks come and go: classic queues there.
            // The tests of the replicated broker (cluster, faults) ask for quorum queues.
            ("HOSTING_QUEUE_TYPE".into(), "classic".into()),
        ];
        if svc == "gateway" {
            if let Some(url) = &self.options.gateway_amqp_url {
                env.push(("HOSTING_AMQP_URL".into(), url.clone()));
            }
        }
        for (target, k, v) in &self.options.env {
            if *target == "*" || *target == svc {
                env.push((k.to_string(), v.clone()));
            }
        }
        env
    }

    /// Starts (or restarts) one service.
    pub fn start(&mut self, svc: &'static str) -> anyhow::Result<()> {
        self.start_with(svc, &[])
    }

    pub fn start_with(
        &mut self,
        svc: &'static str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.start_as(svc, svc, extra_env)
    }

    /// Starts the service `bin` as the process `name` (a second instance: "migrator-2"), with
    /// its own log file.
    pub fn start_as(
        &mut self,
        name: &'static str,
        bin: &'static str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("logs/{name}.log")))?;
        let child = Command::new(bin_dir().join(bin))
            .envs(self.env_for(bin))
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin} from {}", bin_dir().display()))?;
        self.procs.insert(name, child);
        Ok(())
    }

    /// The servers API's view of server `id` once `ready` holds for it (within 60 s).
    pub async fn wait_server(&self, id: i64, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, s) = self.call("GET", &format!("/servers/{id}"), None).await;
            assert_eq!(status, 200, "{s}");
            if ready(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the server is not as expected: {s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the service `bin` on a test host as the process `name`, with only `env` (and
    /// `PATH`, `RUST_LOG`, the queue type): an agent on a host of its own holds nothing of the
    /// control plane's settings or secrets.
    pub fn start_on(
        &mut self,
        host: &hosts::Host,
        name: &'static str,
        bin: &'static str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("logs/{name}.log")))?;
        let child = host
            .command(&bin_dir().join(bin), &[])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("RUST_LOG", "info,sqlx=warn,lapin=warn")
            .env("HOSTING_QUEUE_TYPE", "classic")
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin} on {}", host.name))?;
        self.procs.insert(name, child);
        Ok(())
    }

    /// Waits until the process `name` exits by itself (an injected crash); whether it did.
    pub async fn wait_exit(&mut self, name: &'static str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.procs.get_mut(name).map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.procs.remove(name);
                    return true;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        false
    }

    /// Sends a signal without waiting (SIGSTOP, SIGCONT).
    pub fn signal_only(&self, name: &str, signal: i32) {
        if let Some(child) = self.procs.get(name) {
            // SAFETY: a pid of our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Publishes a message to one of this stack's exchanges as a service would (persistent,
    /// with a type), or as a hostile or broken one would (any type, any body).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message_type: &str,
        body: &[u8],
    ) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let conn = lapin::Connection::connect(
            self.first_amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("the broker");
        let ch = conn.create_channel().await.expect("a channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let props = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(message_type.into());
        ch.basic_publish(
            format!("{}.{exchange}", self.prefix).as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publishing")
        .await
        .expect("the broker's confirm");
        let _ = conn.close(200, "done".into()).await;
    }

    /// Empties one of this stack's queues (`tasks.installer`): messages lost in transit.
    pub async fn purge(&self, queue: &str) {
        let conn = lapin::Connection::connect(
            self.first_amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("the broker");
        let ch = conn.create_channel().await.expect("a channel");
        ch.queue_purge(
            format!("{}.{queue}", self.prefix).as_str().into(),
            Default::default(),
        )
        .await
        .expect("purging");
        let _ = conn.close(200, "done".into()).await;
    }

    /// Waits until the gateway has published a task's message (its outbox row is gone).
    pub async fn wait_dispatched(&self, task: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = self
                .state_query(&format!(
                    "SELECT t.id::text FROM tasks t WHERE t.id = {task}
                     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE (o.payload->>'task')::bigint = t.id)"
                ))
                .await;
            if !out.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {task} was not dispatched within 30 s");
    }

    /// Sends `copies` more copies of a task's message, all at once, to the queue of the service
    /// that owns its type: what a broker does under load (redelivery, a publish retried after
    /// its confirm was lost).
    pub async fn duplicate_task_message(&self, task: &Value, copies: usize) {
        let (id, kind) = (
            task["id"].as_i64().unwrap_or_default(),
            task["type"].as_str().unwrap_or_default(),
        );
        let owner = domain::TaskType::parse(kind)
            .map(|t| t.owner().as_str().to_owned())
            .unwrap_or_default();
        let body = json!({"task": id, "type": kind}).to_string();
        let sends = (0..copies).map(|_| {
            self.publish(
                "tasks",
                &owner,
                contract::TASK_MESSAGE_TYPE,
                body.as_bytes(),
            )
        });
        futures_util::future::join_all(sends).await;
    }

    /// What this stack's sites own outside the state database (databases, database users, unix
    /// users, PHP pools, vhosts, site directories, archives), against what its live sites and
    /// backup records say they should: every difference, as a line. Meant for a quiet stack
    /// (no task running).
    pub async fn leftovers(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let live = self
            .state_query(
                "SELECT concat_ws('|', s.domain, s.db_name, s.db_user, s.system_user, p.root, s.status)
                 FROM sites s JOIN platforms p ON p.id = s.platform_id
                 WHERE s.status IN ('enabled', 'disabled')",
            )
            .await;
        let live: Vec<Vec<String>> = live
            .iter()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        let mut compare = |what: &str, have: Vec<String>, want: Vec<String>| {
            let (have, want) = (sorted(have), sorted(want));
            let extra: Vec<_> = have.iter().filter(|h| !want.contains(h)).collect();
            let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).collect();
            if !extra.is_empty() {
                problems.push(format!("{what} left over: {extra:?}"));
            }
            if !missing.is_empty() {
                problems.push(format!("{what} missing: {missing:?}"));
            }
        };
        let (dbs, users) = self.mariadb_leftovers().await;
        compare(
            "databases",
            dbs,
            live.iter().map(|l| l[1].clone()).collect(),
        );
        compare(
            "database users",
            users,
            live.iter().map(|l| l[2].clone()).collect(),
        );
        compare(
            "unix users",
            site_users(&self.prefix)
                .into_iter()
                .map(|(u, _)| u)
                .collect(),
            live.iter().map(|l| l[3].clone()).collect(),
        );
        compare(
            "PHP pools",
            entries_in(&self.dir.join("webconf/pools")),
            live.iter().map(|l| format!("{}.conf", l[3])).collect(),
        );
        compare(
            "vhosts",
            entries_in(&self.dir.join("webconf/vhosts")),
            live.iter()
                .map(|l| {
                    domain::DomainName::parse(&l[0])
                        .map(|d| contract::vhost_file(&d))
                        .unwrap_or_default()
                })
                .collect(),
        );
        let roots = self.state_query("SELECT root FROM platforms").await;
        let mut dirs = Vec::new();
        for root in &roots {
            for e in entries_in(&Path::new(root).join("sites")) {
                dirs.push(format!("{root}/sites/{e}"));
            }
        }
        compare(
            "site directories",
            dirs,
            live.iter()
                .map(|l| format!("{}/sites/{}", l[4], l[0]))
                .collect(),
        );
        let mut archives = Vec::new();
        for d in entries_in(&self.backup_dir()) {
            for f in entries_in(&self.backup_dir().join(&d)) {
                archives.push(format!("{d}/{f}"));
            }
        }
        compare(
            "archives",
            archives,
            self.state_query("SELECT key FROM backups").await,
        );
        problems
    }
    /// Sends a signal to a service and waits for it to exit.
    pub fn signal(&mut self, svc: &'static str, signal: i32) {
        if let Some(mut child) = self.procs.remove(svc) {
            // SAFETY: a pid of our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill(&mut self, svc: &'static str) {
        self.signal(svc, libc::SIGKILL)
    }

    pub fn pid(&self, svc: &str) -> Option<u32> {
        self.procs.get(svc).map(|c| c.id())
    }

    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http::request("GET", &format!("{}/healthz", self.api), None, &[]).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the gateway did not answer /healthz within 30 s; see {}",
            self.dir.join("logs").display()
        )
    }

    /// Calls the API with the admin token.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        let r = http::request(
            method,
            &format!("{}/api/v1{path}", self.api),
            body.as_deref(),
            &[("Authorization", &auth)],
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        let json = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
        (r.status, json)
    }

    /// A request to the gateway exactly as given (any method, path, content type, body and
    /// headers), with the admin token unless `headers` has an Authorization of its own.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[(&str, &str)],
    ) -> http::Response {
        let auth = format!("Bearer {}", self.token);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            all.push(("Authorization", &auth));
        }
        http::request_typed(method, &format!("{}{path}", self.api), body, &all)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// The services that are not running any more.
    pub fn exited(&mut self) -> Vec<&'static str> {
        self.procs
            .iter_mut()
            .filter_map(|(name, c)| (!matches!(c.try_wait(), Ok(None))).then_some(*name))
            .collect()
    }

    /// GET on the stack's nginx with a Host header, as a browser at that domain would.
    /// The Host header carries the port, as a browser's does for a port other than 80 (a
    /// CMS that compares it with its own address, like WordPress, would redirect otherwise).
    pub async fn page(&self, domain: &str, path: &str) -> http::Response {
        self.page_with(domain, path, &[]).await
    }

    /// Waits for a platform's first verify (generous: a machine running the whole suite at
    /// once, brokers of the cluster tests among it, can be slow to start a stack).
    pub async fn wait_platform(&self, name: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (_, list) = self.call("GET", "/platforms", None).await;
            if let Some(p) = list
                .as_array()
                .and_then(|l| l.iter().find(|p| p["name"] == name))
            {
                if p["status"] == "enabled" {
                    return Ok(p.clone());
                }
                last = p.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, tasks) = self.call("GET", "/tasks?limit=5", None).await;
        bail!("platform {name} was not verified within 90 s: {last}; its tasks: {tasks}")
    }

    /// Waits until a task ends and returns it.
    pub async fn wait_task(&self, id: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, task) = self.call("GET", &format!("/tasks/{id}"), None).await;
            assert_eq!(status, 200, "task {id}: {task}");
            if ["success", "warning", "error"].contains(&task["status"].as_str().unwrap_or("")) {
                return task;
            }
            if Instant::now() > deadline {
                let (_, log) = self.call("GET", &format!("/tasks/{id}/log"), None).await;
                panic!("task {id} did not finish within {timeout:?}: {task}\nlog: {log:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn task_log_text(&self, id: i64) -> String {
        let (_, log) = self.call("GET", &format!("/tasks/{id}/log"), None).await;
        log.as_array()
            .map(|l| {
                l.iter()
                    .map(|x| {
                        format!(
                            "{}: {}",
                            x["level"].as_str().unwrap_or(""),
                            x["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    pub async fn create_client(&self, name: &str) -> Value {
        let (status, c) = self
            .call(
                "POST",
                "/clients",
                Some(json!({"name": name, "email": format!("{name}@clients.example.org")})),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        c
    }

    /// Accepts a site; returns (site, install task).
    pub async fn create_site(&self, domain: &str, client: &str, platform: &str) -> (Value, Value) {
        self.create_site_on(domain, client, platform, "local").await
    }

    /// Accepts a site with its database on `db_server`; returns (site, install task).
    pub async fn create_site_on(
        &self,
        domain: &str,
        client: &str,
        platform: &str,
        db_server: &str,
    ) -> (Value, Value) {
        let body = json!({"domain": domain, "client": client, "platform": platform, "profile": "standard", "language": "en", "db_server": db_server});
        let (status, r) = self.call("POST", "/sites", Some(body)).await;
        assert_eq!(status, 202, "{r}");
        (r["site"].clone(), r["task"].clone())
    }

    /// Runs a server's `verify` to success; answers its log.
    pub async fn verify_server(&self, server: i64) -> String {
        let (status, r) = self
            .call(
                "POST",
                &format!("/servers/{server}/tasks"),
                Some(json!({"type": "verify"})),
            )
            .await;
        assert_eq!(status, 202, "{r}");
        let done = self
            .wait_task(id(&r["task"]), Duration::from_secs(60))
            .await;
        self.assert_success(&done).await;
        self.task_log_text(id(&r["task"])).await
    }

    /// Installs a site on the example platform and waits for success.
    pub async fn install_site(&self, domain: &str, client: &str) -> Value {
        let (site, task) = self.create_site(domain, client, "example").await;
        let done = self
            .wait_task(
                task["id"].as_i64().unwrap_or_default(),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(
            done["status"],
            "success",
            "{done}\n{}",
            self.task_log_text(task["id"].as_i64().unwrap_or_default())
                .await
        );
        let (_, site) = self
            .call("GET", &format!("/sites/{}", site["id"]), None)
            .await;
        site
    }

    /// A copy of the example platform with another manifest, registered and verified.
    pub async fn fixture_platform(&self, name: &str, edit: impl FnOnce(String) -> String) -> Value {
        let root = self.dir.join("platforms").join(name);
        copy_dir(&repo_root().join("platforms/example"), &root)
            .expect("copying the example platform");
        let manifest = root.join("hosting.toml");
        let text = std::fs::read_to_string(&manifest).expect("the example manifest");
        std::fs::write(&manifest, edit(text)).expect("writing the fixture manifest");
        let body = json!({"name": name, "server": "local", "root": root.to_string_lossy(), "driver": "hooks"});
        let (status, r) = self.call("POST", "/platforms", Some(body)).await;
        assert_eq!(status, 202, "{r}");
        self.wait_platform(name)
            .await
            .expect("fixture platform verified")
    }

    /// A WordPress platform built from Debian's packages by `platforms/wordpress/build.sh`
    /// (then changed by `tweak`, given its root), registered and verified.
    pub async fn wordpress_platform(&self, name: &str, tweak: impl FnOnce(&Path)) -> Value {
        let root = self.dir.join("platforms").join(name);
        let out = Command::new(repo_root().join("platforms/wordpress/build.sh"))
            .arg(&root)
            .output()
            .expect("running platforms/wordpress/build.sh");
        assert!(
            out.status.success(),
            "build.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tweak(&root);
        let body = json!({"name": name, "server": "local", "root": root.to_string_lossy(), "driver": "wordpress"});
        let (status, r) = self.call("POST", "/platforms", Some(body)).await;
        assert_eq!(status, 202, "{r}");
        self.wait_platform(name)
            .await
            .expect("wordpress platform verified")
    }

    /// GET on the stack's nginx with a Host header and more headers (a cookie).
    pub async fn page_with(
        &self,
        domain: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> http::Response {
        let host = format!("{domain}:{}", self.http_port);
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        http::request(
            "GET",
            &format!("http://127.0.0.1:{}{path}", self.http_port),
            None,
            &all,
        )
        .await
        .unwrap_or_else(|e| panic!("GET {domain}{path}: {e:#}"))
    }

    /// POSTs a form to the stack's nginx with a Host header, as a browser at that domain would.
    pub async fn post_form(
        &self,
        domain: &str,
        path: &str,
        form: &str,
        headers: &[(&str, &str)],
    ) -> http::Response {
        let host = format!("{domain}:{}", self.http_port);
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        http::request_typed(
            "POST",
            &format!("http://127.0.0.1:{}{path}", self.http_port),
            Some(("application/x-www-form-urlencoded", form)),
            &all,
        )
        .await
        .unwrap_or_else(|e| panic!("POST {domain}{path}: {e:#}"))
    }

    pub fn vhost_path(&self, domain: &str) -> PathBuf {
        let file = domain::DomainName::parse(domain)
            .map(|d| contract::vhost_file(&d))
            .unwrap_or_else(|_| format!("{domain}.conf"));
        self.dir.join("webconf/vhosts").join(file)
    }

    pub fn site_dir(&self, platform_root: &Path, domain: &str) -> PathBuf {
        platform_root.join("sites").join(domain)
    }

    /// Site databases and users of this stack that exist in MariaDB right now.
    pub async fn mariadb_leftovers(&self) -> (Vec<String>, Vec<String>) {
        let pool = sqlx::MySqlPool::connect(MYSQL_ADMIN_URL)
            .await
            .expect("MariaDB as root");
        let (dbs, users) = site_databases(&pool, &self.prefix)
            .await
            .expect("listing site databases and users");
        pool.close().await;
        (dbs, users.into_iter().map(|(u, _)| u).collect())
    }

    /// Everything the services logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for svc in SERVICES {
            all.push_str(
                &std::fs::read_to_string(self.dir.join(format!("logs/{svc}.log")))
                    .unwrap_or_default(),
            );
        }
        all
    }

    pub async fn teardown(mut self) {
        self.cleanup().await;
    }

    async fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // webconf stops its nginx and php-fpm on SIGTERM. Processes stopped by a test
        // (SIGSTOP) are continued first, or they would not see it.
        let names: Vec<&'static str> = self.procs.keys().copied().collect();
        for name in names {
            self.signal_only(name, libc::SIGCONT);
            self.signal(name, libc::SIGTERM);
        }
        for pidfile in ["webconf/nginx.pid", "webconf/php-fpm.pid"] {
            if let Some(pid) = std::fs::read_to_string(self.dir.join(pidfile))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: a pid from this stack's own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        remove_site_users(&self.prefix);
        // The broker users registrations made (only where the management API runs).
        if let Ok(admin) = bus::admin::BrokerAdmin::new(BROKER_ADMIN_URL, AMQP_URL) {
            for user in admin
                .users_named(&format!("{}.agent.", self.prefix))
                .await
                .unwrap_or_default()
            {
                let _ = admin.delete_user(&user).await;
            }
        }
        if let Ok(pool) = sqlx::MySqlPool::connect(MYSQL_ADMIN_URL).await {
            let (dbs, users) = site_databases(&pool, &self.prefix)
                .await
                .unwrap_or_default();
            for db in dbs {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS `{db}`"
                )))
                .execute(&pool)
                .await;
            }
            for (u, h) in users {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP USER IF EXISTS '{u}'@'{h}'"
                )))
                .execute(&pool)
                .await;
            }
            pool.close().await;
        }
        let keep = std::env::var("HOSTING_KEEP_TEST_DIRS").is_ok();
        if let (false, Ok(admin)) = (keep, sqlx::PgPool::connect(&self.pg_admin_url).await) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.state_db
            )))
            .execute(&admin)
            .await;
            admin.close().await;
        }
        let bus = bus::Bus::new(
            &self.amqp_url,
            contract::Topology::new(&self.prefix),
            "test-cleanup",
        );
        let t = bus.topology().clone();
        let local = domain::Name::parse("local").expect("a valid name");
        let mut queues: Vec<String> = ["installer", "backupper", "migrator"]
            .iter()
            .map(|s| t.task_queue(s))
            .collect();
        queues.push(t.rpc_queue("webconf", &local));
        queues.push(t.rpc_queue("dbprov", &local));
        queues.push(t.rpc_queue("backupper", &local));
        queues.push(t.dead_letter_queue());
        // And whatever else the test made (the queues of servers it registered).
        if let Ok(admin) = bus::admin::BrokerAdmin::new(BROKER_ADMIN_URL, AMQP_URL) {
            for q in admin
                .queues_named(&format!("{}.", self.prefix))
                .await
                .unwrap_or_default()
            {
                if !queues.contains(&q) && !q.contains(".reply.") {
                    queues.push(q);
                }
            }
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            bus.delete_queues_and_exchanges(&queues),
        )
        .await;
        bus.close().await;
        if std::env::var("HOSTING_KEEP_TEST_DIRS").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A test panicked before its teardown: clean up from a fresh runtime on a thread of
        // its own (we may be inside the test's runtime here).
        let mut me = Stack {
            prefix: self.prefix.clone(),
            amqp_url: self.amqp_url.clone(),
            pg_admin_url: self.pg_admin_url.clone(),
            dir: self.dir.clone(),
            api: self.api.clone(),
            http_port: self.http_port,
            token: self.token.clone(),
            state_db: self.state_db.clone(),
            state_db_url: self.state_db_url.clone(),
            example_root: self.example_root.clone(),
            options: StackOptions::default(),
            procs: std::mem::take(&mut self.procs),
            cleaned: false,
        };
        self.cleaned = true;
        eprintln!(
            "test stack {}: logs were in {}",
            me.prefix,
            me.dir.join("logs").display()
        );
        // CI keeps only the test's output: print what the services warned about, so a failure
        // there carries its cause.
        print_log_warnings(&me.dir.join("logs"));
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(me.cleanup());
            }
        })
        .join();
    }
}

/// Prints the last warnings and errors of every service log in `dir`.
fn print_log_warnings(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        if lines.is_empty() {
            continue;
        }
        eprintln!("--- {}: its last warnings and errors", path.display());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{}", line.chars().take(600).collect::<String>());
        }
    }
}

/// Reads `'password' => '...'` from a rendered settings file (the tests' way to learn a
/// site's password without any API exposing it).
pub fn password_from_settings(settings: &str) -> Option<String> {
    let line = settings.lines().find(|l| l.contains("'password' =>"))?;
    line.split('\'').nth(3).map(str::to_owned)
}

impl Stack {
    /// (sites, tasks) as the API lists them.
    pub async fn count(api: &str, token: &str) -> (usize, usize) {
        let auth = format!("Bearer {token}");
        let mut n = Vec::new();
        for path in ["/api/v1/sites", "/api/v1/tasks?limit=1000"] {
            let r = http::request(
                "GET",
                &format!("{api}{path}"),
                None,
                &[("Authorization", &auth)],
            )
            .await
            .expect("listing");
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
            n.push(v.as_array().map(Vec::len).unwrap_or(0));
        }
        (n[0], n[1])
    }
}

impl Stack {
    pub fn backup_dir(&self) -> PathBuf {
        self.dir.join("backups")
    }

    /// Asks for a site task (`POST /sites/{site}/tasks`); the status and the answer.
    pub async fn post_site_task(&self, site: i64, body: Value) -> (u16, Value) {
        self.call("POST", &format!("/sites/{site}/tasks"), Some(body))
            .await
    }

    /// Runs a site task and waits for it; returns the finished task.
    pub async fn run_site_task(&self, site: i64, body: Value) -> Value {
        let (status, r) = self.post_site_task(site, body.clone()).await;
        assert_eq!(status, 202, "{body} -> {r}");
        self.wait_task(
            r["task"]["id"].as_i64().unwrap_or_default(),
            Duration::from_secs(120),
        )
        .await
    }

    /// Posts a platform task (`POST /platforms/{id}/tasks`, the platform named) and waits up to
    /// `within` for it to finish; answers the finished task.
    pub async fn run_platform_task(&self, platform: &str, body: Value, within: Duration) -> Value {
        let platform = self.platform_id(platform).await;
        let (status, r) = self
            .call(
                "POST",
                &format!("/platforms/{platform}/tasks"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 202, "{body} -> {r}");
        self.wait_task(id(&r["task"]), within).await
    }

    /// A site's backups as the API lists them (`GET /sites/{site}/backups`).
    pub async fn backups(&self, site: i64) -> Value {
        self.call("GET", &format!("/sites/{site}/backups"), None)
            .await
            .1
    }

    /// A site as the API shows it.
    pub async fn site(&self, id: i64) -> Value {
        let (status, s) = self.call("GET", &format!("/sites/{id}"), None).await;
        assert_eq!(status, 200, "GET /sites/{id}: {s}");
        s
    }

    pub async fn platform_id(&self, name: &str) -> i64 {
        let (_, list) = self.call("GET", "/platforms", None).await;
        list.as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == name))
            .map(id)
            .unwrap_or_else(|| panic!("no platform {name}: {list}"))
    }

    /// Asserts that a finished task succeeded; its log is in the message when it did not.
    pub async fn assert_success(&self, task: &Value) {
        if task["status"] != "success" {
            panic!(
                "task {} ended {}: {task}\n{}",
                task["id"],
                task["status"],
                self.task_log_text(id(task)).await
            );
        }
    }

    /// Waits until a line containing `text` is in a task's log.
    pub async fn wait_log(&self, task: i64, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.task_log_text(task).await;
            if log.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {task} never logged {text:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a link from the API or a mail as a browser would: the gateway's answer, and, when
    /// it redirects to a hosted site, that site's page (through the stack's nginx).
    pub async fn open_link(&self, url: &str) -> (http::Response, Option<http::Response>) {
        let first = http::request("GET", url, None, &[])
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
        if first.status != 302 {
            return (first, None);
        }
        let location = first.header("location").unwrap_or_default().to_owned();
        let rest = location.strip_prefix("http://").unwrap_or(&location);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.split(':').next().unwrap_or_default();
        let second = self
            .page(host, if path.is_empty() { "/" } else { path })
            .await;
        (first, Some(second))
    }

    /// A one-column query in MariaDB as root (the tests' way to look inside a site).
    pub async fn mariadb_query(&self, sql: &str) -> Vec<String> {
        let pool = sqlx::MySqlPool::connect(MYSQL_ADMIN_URL)
            .await
            .expect("MariaDB as root");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
        rows
    }

    /// Runs SQL in MariaDB as root (the tests' way to change a site behind its back).
    pub async fn mariadb_exec(&self, sql: &str) {
        let pool = sqlx::MySqlPool::connect(MYSQL_ADMIN_URL)
            .await
            .expect("MariaDB as root");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }

    /// The broker's first node (the stack may be given a cluster's list).
    pub fn first_amqp_url(&self) -> &str {
        self.amqp_url.split(',').next().unwrap_or(&self.amqp_url)
    }

    /// A one-column query on this stack's state database.
    pub async fn state_query(&self, sql: &str) -> Vec<String> {
        let pool = sqlx::PgPool::connect(&self.state_db_url)
            .await
            .expect("the state database");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
        rows
    }

    /// Runs SQL on this stack's state database.
    pub async fn state_exec(&self, sql: &str) {
        let pool = sqlx::PgPool::connect(&self.state_db_url)
            .await
            .expect("the state database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }
}

/// The unix users (and their groups) webconf made for this stack's sites: named with its
/// prefix and marked as the control plane's.
pub fn site_users(prefix: &str) -> Vec<(String, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 4
                && f[0].starts_with(&format!("{prefix}_"))
                && f[4].starts_with("hosting control plane site"))
            .then(|| (f[0].to_owned(), f[2].parse().unwrap_or(0)))
        })
        .collect()
}

/// A unix user's uid and gid, from /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The gid of the web server's group.
pub fn web_gid() -> u32 {
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| {
            g.lines()
                .find(|l| l.starts_with("www-data:"))
                .and_then(|l| l.split(':').nth(2).and_then(|x| x.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

fn remove_site_users(prefix: &str) {
    for (user, uid) in site_users(prefix) {
        // Processes of the user (a PHP worker of a stopped php-fpm) keep userdel from working.
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
                let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("Uid:"))
                            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
                    });
                if owner.as_deref() == Some(uid.to_string().as_str()) && uid != 0 {
                    // SAFETY: a process of one of this stack's own site users.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for _ in 0..50 {
            let out = Command::new("userdel").arg(&user).output();
            match out {
                Ok(o) if o.status.success() => break,
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("does not exist") => break,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let _ = Command::new("groupdel").arg(&user).output();
    }
}

/// The databases, and the users with their hosts, named with a stack's prefix.
async fn site_databases(
    pool: &sqlx::MySqlPool,
    prefix: &str,
) -> sqlx::Result<(Vec<String>, Vec<(String, String)>)> {
    let pattern = format!("{prefix}\\_%");
    let dbs = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
    )
    .bind(&pattern)
    .fetch_all(pool)
    .await?;
    let users = sqlx::query_as(
        "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.user WHERE User LIKE ?",
    )
    .bind(&pattern)
    .fetch_all(pool)
    .await?;
    Ok((dbs, users))
}

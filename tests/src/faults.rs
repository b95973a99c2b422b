//! Private instances of the broker and the state database, for tests that kill them: each
//! has its own ports and directory, so the shared instances other tests use are never
//! touched. Killing is SIGKILL of the whole process group, as a crash or an OOM kill would.

use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kill_group(child: &mut Child) {
    // SAFETY: the group of a child we started as its own group leader.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

async fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// Every process below `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    // The command may hold spaces and parentheses: fields follow the last ')'.
                    let rest = stat.rsplit_once(')')?.1;
                    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
                    Some((p, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

/// One RabbitMQ node of its own (or a node of a cluster of its own).
pub struct Rabbit {
    pub name: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// The nodes it clusters with (classic peer discovery), itself included.
    peers: Vec<String>,
    child: Option<Child>,
}

impl Rabbit {
    /// Starts a single node and waits until it takes connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut nodes = Self::cluster(dir, 1).await?;
        Ok(nodes.remove(0))
    }

    /// Starts `n` nodes that form one cluster, and waits until all take connections.
    pub async fn cluster(dir: &Path, n: usize) -> anyhow::Result<Vec<Self>> {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut nodes: Vec<Self> = (0..n)
            .map(|i| {
                let port = crate::free_port();
                Rabbit {
                    name: format!("hosting-{tag}-{i}@localhost"),
                    port,
                    dist_port: crate::free_port(),
                    dir: dir.join(format!("rabbit-{i}")),
                    peers: vec![],
                    child: None,
                }
            })
            .collect();
        let peers: Vec<String> = nodes.iter().map(|r| r.name.clone()).collect();
        for node in &mut nodes {
            node.peers = peers.clone();
            node.spawn()?;
        }
        for node in &nodes {
            node.wait_ready().await?;
        }
        Ok(nodes)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn home(&self) -> PathBuf {
        // All nodes of a cluster share the cookie: the parent of their directories.
        self.dir.parent().unwrap_or(&self.dir).join("rabbit-home")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let home = self.home();
        std::fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        if !cookie.exists() {
            std::fs::write(
                &cookie,
                uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
            )?;
            std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
        }
        let mut conf =
            String::from("loopback_users = none\nlog.console = false\nlog.file.level = warning\n");
        if self.peers.len() > 1 {
            conf.push_str("cluster_formation.peer_discovery_backend = classic_config\n");
            for (i, p) in self.peers.iter().enumerate() {
                conf.push_str(&format!(
                    "cluster_formation.classic_config.nodes.{} = {p}\n",
                    i + 1
                ));
            }
        }
        std::fs::write(self.dir.join("rabbitmq.conf"), conf)?;
        std::fs::write(self.dir.join("enabled_plugins"), "[].\n")?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("out.log"))?;
        let d = |s: &str| self.dir.join(s).to_string_lossy().into_owned();
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", &home)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting rabbitmq-server")?;
        self.child = Some(child);
        Ok(())
    }

    /// Takes AMQP connections.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_port(self.port, Duration::from_secs(120))
            .await
            .with_context(|| {
                format!(
                    "RabbitMQ node {} did not start; see {}",
                    self.name,
                    self.dir.display()
                )
            })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lapin::Connection::connect(&self.url(), lapin::ConnectionProperties::default())
                .await
            {
                Ok(c) => {
                    let _ = c.close(200, "ready".into()).await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => bail!("RabbitMQ {}: {e}", self.name),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Starts the node again on its own data and ports, and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }

    /// `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .env("HOME", self.home())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-n", &self.name])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of its own, with the `hosting` role and database the stack expects.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(bin: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{bin}")]);
    c
}

impl Postgres {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("postgres");
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("chown")
            .args(["postgres:postgres", &dir.to_string_lossy()])
            .status()?;
        if !status.success() {
            bail!("cannot give {} to postgres", dir.display());
        }
        let out = as_postgres("initdb")
            .args([
                "-D",
                &dir.join("data").to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut pg = Postgres {
            port: crate::free_port(),
            dir,
            child: None,
        };
        pg.spawn()?;
        pg.wait_ready().await?;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        let pool = sqlx::PgPool::connect(&admin).await?;
        for sql in [
            "CREATE ROLE hosting LOGIN SUPERUSER PASSWORD 'hosting'",
            "CREATE DATABASE hosting OWNER hosting",
        ] {
            sqlx::raw_sql(sql).execute(&pool).await?;
        }
        pool.close().await;
        Ok(pg)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("out.log"))?;
        let child = as_postgres("postgres")
            .args(["-D", &self.dir.join("data").to_string_lossy()])
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.to_string_lossy()),
            ])
            .args([
                "-c",
                "max_connections=200",
                "-c",
                // The data survives a killed server in the page cache; only a crashed
                // machine would need fsync.
                "fsync=off",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        loop {
            match sqlx::PgPool::connect(&url).await {
                Ok(p) => {
                    p.close().await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => bail!("PostgreSQL did not start: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// SIGKILL of the server and all its processes at once, as a crash of its machine would
    /// (PostgreSQL's processes each lead a session of their own, so the group is not enough).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut all = descendants(c.id());
            all.push(c.id());
            for pid in all {
                // SAFETY: processes of the server this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = c.wait();
        }
        // A killed postmaster leaves its pid file; the next start checks it is stale.
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Test hosts: real hosts on one machine. Each has a network namespace of its own with its own
//! address on a bridge to the root namespace (where the control plane runs, as on its own
//! machine), and runs its processes in a mount namespace of their own, in which the host's data
//! root is mounted at [`HOST_ROOT`] and the directory holding every test's stack (the control
//! plane's files and the other hosts' roots among them) is hidden under an empty tmpfs. Names
//! and addresses come from the process id, so parallel runs do not collide.

use anyhow::{bail, Context};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{id, Stack, StackOptions};
use serde_json::{json, Value};

/// Where a host's own data root is, as its processes see it.
pub const HOST_ROOT: &str = "/srv/hosting";

static NETWORKS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A bridge in the root namespace, 10.x.y.1/24, that the hosts' links are attached to: the
/// machines' network.
pub struct Network {
    tag: String,
    bridge: String,
    net: [u8; 3],
    pub gateway: Ipv4Addr,
    namespaces: Vec<String>,
    forwards: Vec<JoinHandle<()>>,
}

impl Network {
    pub fn create() -> anyhow::Result<Self> {
        let n = NETWORKS.fetch_add(1, Ordering::SeqCst);
        // 14 bits: one /24 of 10.64.0.0/10 each, and a name of its own.
        let v = (std::process::id().wrapping_mul(8).wrapping_add(n)) & 0x3fff;
        let tag = format!("{v:04x}");
        let net = [10, 64 + (v >> 8) as u8, (v & 0xff) as u8];
        let gateway = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let bridge = format!("hb{tag}");
        // A bridge left by a run that was killed goes first.
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(Self {
            tag,
            bridge,
            net,
            gateway,
            namespaces: Vec::new(),
            forwards: Vec::new(),
        })
    }

    /// A new host `name` (`web2`, `db2`) on this network, its data root a fresh directory
    /// `<stack dir>/hosts/<name>`; `hidden` is the directory its processes must not see.
    pub fn add_host(&mut self, name: &str, stack_dir: &Path) -> anyhow::Result<Host> {
        let idx = self.namespaces.len() as u8;
        let netns = format!("h{}-{name}", self.tag);
        let (outside, inside) = (
            format!("hv{}{idx}a", self.tag),
            format!("hv{}{idx}b", self.tag),
        );
        let address = Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 10 + idx);
        let _ = ip(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns])?;
        self.namespaces.push(netns.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &outside, "master", &self.bridge, "up"])?;
        ip(&["link", "set", &inside, "netns", &netns])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &netns, "link", "set", &inside, "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &self.gateway.to_string(),
        ])?;
        let root = stack_dir.join("hosts").join(name);
        std::fs::create_dir_all(&root)?;
        let hidden = stack_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| stack_dir.to_path_buf());
        Ok(Host {
            name: name.to_owned(),
            netns,
            address,
            root,
            hidden,
        })
    }

    /// Forwards `gateway:port` to `upstream` (a service of the control plane that listens
    /// on loopback only, as the broker does here), for the hosts to reach it.
    pub async fn forward(&mut self, port: u16, upstream: SocketAddr) -> anyhow::Result<()> {
        let listener = TcpListener::bind((self.gateway, port))
            .await
            .with_context(|| format!("listening on {}:{port}", self.gateway))?;
        self.forwards.push(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for f in &self.forwards {
            f.abort();
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// One host of a [`Network`].
pub struct Host {
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
    /// Its data root on the machine's disk (mounted at [`HOST_ROOT`] for its processes).
    pub root: PathBuf,
    hidden: PathBuf,
}

impl Host {
    /// `program` with `args`, to run on this host: in its network namespace, and in a mount
    /// namespace of its own where its data root is [`HOST_ROOT`] and everything else of the
    /// tests is hidden. The process is `program` itself (each step execs the next), so its pid
    /// is the one to signal.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                // Bound first, then hidden: the bind is a mount of its own and stays.
                "mkdir -p \"$3\" && mount --bind \"$1\" \"$3\" && mount -t tmpfs -o mode=0755,size=1m hosting-hidden \"$2\" && shift 3 && exec \"$@\"",
                "sh",
            ])
            .arg(&self.root)
            .arg(&self.hidden)
            .arg(HOST_ROOT)
            .arg(program)
            .args(args);
        c
    }

    /// A shell command run on this host, to completion: what it printed, or why it failed.
    pub fn run(&self, script: &str) -> anyhow::Result<String> {
        let out = self
            .command(Path::new("/bin/sh"), &["-c", script])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "on {}: {script}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET on this host's own nginx (a web server of the topology, port [`WEB_PORT`]) with a
    /// Host header, as a browser at that domain would.
    pub async fn page(&self, domain: &str, path: &str) -> crate::http::Response {
        let with_port = format!("{domain}:{WEB_PORT}");
        crate::http::request(
            "GET",
            &format!("http://{}:{WEB_PORT}{path}", self.address),
            None,
            &[("Host", with_port.as_str())],
        )
        .await
        .unwrap_or_else(|e| panic!("GET {domain}{path} on {}: {e:#}", self.name))
    }

    /// The databases on this host's own MariaDB ([`MariaDb`]).
    pub fn databases(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .run(&format!(
                "mariadb --socket={HOST_MARIADB_SOCKET} -u root -N -e 'SHOW DATABASES'"
            ))?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The users on this host's own MariaDB whose names start with `<prefix>_` (a stack's).
    pub fn mariadb_users(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            prefix.chars().all(|c| c.is_ascii_alphanumeric()),
            "a stack prefix is letters and digits: {prefix:?}"
        );
        let head = format!("{prefix}_");
        Ok(self
            .run(&format!(
                "mariadb --socket={HOST_MARIADB_SOCKET} -u root -N -e \
                 \"SELECT User FROM mysql.user WHERE LEFT(User, {}) = '{head}'\"",
                head.len()
            ))?
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

/// The port a topology web server's nginx listens on.
pub const WEB_PORT: u16 = 8088;

/// A MariaDB server of a host's own, with its data directory in the host's root, listening
/// on the host's address (port 3306) and on a socket in its root; root may log in over the
/// socket without a password, as on a fresh Debian.
pub struct MariaDb {
    child: Option<std::process::Child>,
    pub address: Ipv4Addr,
}

/// The socket of a host's own MariaDB, as the host's processes see it.
pub const HOST_MARIADB_SOCKET: &str = "/srv/hosting/mysql-run/mysqld.sock";

impl MariaDb {
    pub async fn start(host: &Host) -> anyhow::Result<Self> {
        let out = host
            .command(
                Path::new("/bin/sh"),
                &[
                    "-c",
                    "install -d -o mysql -g mysql -m 0750 /srv/hosting/mysql /srv/hosting/mysql-run /srv/hosting/mysql-tmp \
                     && mariadb-install-db --no-defaults --datadir=/srv/hosting/mysql --user=mysql \
                        --tmpdir=/srv/hosting/mysql-tmp \
                        --auth-root-authentication-method=normal --skip-test-db >/srv/hosting/install-db.log 2>&1",
                ],
            )
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            let log = std::fs::read_to_string(host.root.join("install-db.log")).unwrap_or_default();
            bail!("mariadb-install-db on {}: {log}", host.name);
        }
        let log = std::fs::File::create(host.root.join("mariadbd.out"))?;
        let child = host
            .command(
                Path::new("/usr/sbin/mariadbd"),
                &[
                    "--no-defaults",
                    "--user=mysql",
                    "--datadir=/srv/hosting/mysql",
                    // Its own temporary files: /tmp is the machine's, shared by every host.
                    "--tmpdir=/srv/hosting/mysql-tmp",
                    &format!("--socket={HOST_MARIADB_SOCKET}"),
                    "--pid-file=/srv/hosting/mysql-run/mysqld.pid",
                    &format!("--bind-address={}", host.address),
                    "--port=3306",
                    "--skip-log-bin",
                    // Grants name addresses or '%', never host names; without this every TCP
                    // connection from a web server waits for a reverse lookup that, with no DNS
                    // server reachable from the hosts, takes the resolver's full 10 s.
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-log-file-size=16M",
                    "--max-connections=100",
                ],
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mariadbd")?;
        let db = Self {
            child: Some(child),
            address: host.address,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((host.address, 3306)).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "MariaDB on {} did not listen within 60 s: {}",
                    host.name,
                    std::fs::read_to_string(host.root.join("mariadbd.out")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(db)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: the server this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Registers a server; answers it with its agent's environment.
async fn register(stack: &Stack, body: Value) -> (Value, Vec<(String, String)>) {
    let (status, server) = stack.call("POST", "/servers", Some(body)).await;
    assert_eq!(status, 201, "{server}");
    let env = server["agent_credentials"]["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    (server, env)
}

/// The control plane on the machine, and `web2` and `db2` registered, their agents started
/// under the credentials their registration answered, and connected.
pub struct Topology {
    pub stack: Stack,
    /// The backup store's door for site files (`host:port`).
    pub upload: String,
    pub web2: Host,
    pub db2: Host,
    pub web2_server: Value,
    pub db2_server: Value,
    // Dropped last: the hosts' processes go with the stack first.
    _mariadb: MariaDb,
    net: Network,
}

impl Topology {
    pub async fn start() -> Self {
        let mut net = Network::create().expect("the test network");
        // The broker listens on loopback only, as a control plane's would behind its
        // firewall; the hosts reach it at the bridge's address.
        net.forward(5672, "127.0.0.1:5672".parse().expect("an address"))
            .await
            .expect("the broker forwarded");
        // The backup store takes site files from the hosts' agents at the bridge's address.
        let upload = format!("{}:{}", net.gateway, crate::free_port());
        let options = StackOptions {
            env: vec![
                ("backupper", "HOSTING_UPLOAD_LISTEN".into(), upload.clone()),
                (
                    "backupper",
                    "HOSTING_UPLOAD_URL".into(),
                    format!("http://{upload}"),
                ),
                (
                    "gateway",
                    "HOSTING_BROKER_ADMIN_URL".into(),
                    crate::BROKER_ADMIN_URL.into(),
                ),
                (
                    "gateway",
                    "HOSTING_AGENT_AMQP_URL".into(),
                    format!("amqp://{}:5672/%2f", net.gateway),
                ),
                ("*", "HOSTING_HEARTBEAT_SECS".into(), "1".into()),
            ],
            ..Default::default()
        };
        let mut stack = Stack::spawn_with(options).await;
        let web2 = net.add_host("web2", &stack.dir).expect("web2");
        let db2 = net.add_host("db2", &stack.dir).expect("db2");
        let mariadb = MariaDb::start(&db2).await.expect("db2's own MariaDB");

        let (web2_server, web2_env) = register(
            &stack,
            json!({"name": "web2", "kind": "web", "host": web2.address.to_string(), "port": WEB_PORT,
                   "platform_dirs": [format!("{HOST_ROOT}/platforms")]}),
        )
        .await;
        let (db2_server, db2_env) = register(
            &stack,
            json!({"name": "db2", "kind": "db", "host": db2.address.to_string(), "port": 3306}),
        )
        .await;
        assert!(
            web2_env
                .iter()
                .any(|(k, v)| k == "HOSTING_AMQP_URL" && v.contains(&net.gateway.to_string())),
            "{web2_env:?}"
        );
        start_agent(
            &mut stack,
            &web2,
            "webconf-web2",
            "webconf",
            &web2_env,
            &[
                ("HOSTING_WEBCONF_DIR", format!("{HOST_ROOT}/webconf")),
                (
                    "HOSTING_HTTP_LISTEN",
                    format!("{}:{WEB_PORT}", web2.address),
                ),
            ],
        );
        start_agent(
            &mut stack,
            &db2,
            "dbprov-db2",
            "dbprov",
            &db2_env,
            &[
                (
                    "HOSTING_MYSQL_ADMIN_URL",
                    format!("mysql://root@localhost/?socket={HOST_MARIADB_SOCKET}"),
                ),
                ("HOSTING_DBPROV_KEY_FILE", format!("{HOST_ROOT}/dbprov.key")),
            ],
        );
        stack
            .wait_server(id(&web2_server), |v| v["agent"]["state"] == "connected")
            .await;
        stack
            .wait_server(id(&db2_server), |v| v["agent"]["state"] == "connected")
            .await;
        Self {
            stack,
            upload,
            web2,
            db2,
            web2_server,
            db2_server,
            _mariadb: mariadb,
            net,
        }
    }

    /// The example platform's code copied onto web2's disk only, registered on web2 as
    /// `example-web2` and verified there (by web2's agent); answers its root as web2 sees it.
    pub async fn platform_on_web2(&self) -> String {
        crate::copy_dir(
            &crate::repo_root().join("platforms/example"),
            &self.web2.root.join("platforms/example"),
        )
        .expect("the example platform copied onto web2");
        let root = format!("{HOST_ROOT}/platforms/example");
        let body =
            json!({"name": "example-web2", "server": "web2", "root": root, "driver": "hooks"});
        let (status, r) = self.stack.call("POST", "/platforms", Some(body)).await;
        assert_eq!(status, 202, "{r}");
        self.stack
            .wait_platform("example-web2")
            .await
            .expect("the platform on web2 verified by web2's agent");
        root
    }

    pub async fn teardown(self) {
        self.stack.teardown().await;
        drop(self._mariadb);
        drop(self.net);
    }
}

fn start_agent(
    stack: &mut Stack,
    host: &Host,
    name: &'static str,
    bin: &'static str,
    credentials: &[(String, String)],
    extra: &[(&str, String)],
) {
    let env: Vec<(&str, &str)> = credentials
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .collect();
    stack
        .start_on(host, name, bin, &env)
        .unwrap_or_else(|e| panic!("{bin} on {}: {e:#}", host.name));
}

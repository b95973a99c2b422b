//! The nginx (and php-fpm) this webconf drives.
//!
//! Managed mode (the default): webconf owns an nginx and a php-fpm instance whose whole
//! configuration lives in `HOSTING_WEBCONF_DIR`; it starts them if they are not running and
//! stops them when it stops. This is what `make up` and the tests use, so several stacks can
//! share a host, and no root-owned system configuration is touched.
//! Unmanaged mode (`HOSTING_MANAGE_NGINX=false`): vhosts are written to `HOSTING_VHOST_DIR`
//! for a system nginx that includes them, reloaded with `nginx -s reload`, and pools to
//! `HOSTING_PHP_FPM_POOL_DIR` for the system's php-fpm.

use anyhow::{bail, Context};
use domain::HostPath;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct Settings {
    pub managed: bool,
    /// Managed mode: everything lives here.
    pub dir: HostPath,
    pub listen: std::net::SocketAddr,
    pub nginx_bin: String,
    pub php_fpm_bin: Option<String>,
    pub vhost_dir: PathBuf,
    pub fastcgi_params: String,
    /// One php-fpm pool file per site, and one socket per pool.
    pub pool_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub fpm_pid: PathBuf,
    /// Unmanaged mode: php-fpm's main configuration file, if not its default.
    pub fpm_conf: Option<String>,
    /// Unmanaged mode: the main configuration file nginx -t checks.
    pub main_conf: Option<String>,
    pub stop_on_exit: bool,
    pub php_max_children: u32,
    /// The web server's user and group (nginx's workers run as it; pools' sockets are its).
    pub web_group: String,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let managed: bool = config::parse("HOSTING_MANAGE_NGINX", true)?;
        let dir = HostPath::parse(&config::string(
            "HOSTING_WEBCONF_DIR",
            "/var/lib/hosting/webconf",
        ))
        .map_err(|e| anyhow::anyhow!("HOSTING_WEBCONF_DIR: {e}"))?;
        let listen = config::parse(
            "HOSTING_HTTP_LISTEN",
            "127.0.0.1:8088".parse::<std::net::SocketAddr>()?,
        )?;
        let php_fpm_bin = config::optional("HOSTING_PHP_FPM_BIN").or_else(find_php_fpm);
        let fpm_ver = fpm_version(php_fpm_bin.as_deref());
        let d = dir.as_str();
        Ok(Self {
            managed,
            listen,
            nginx_bin: config::string("HOSTING_NGINX_BIN", "/usr/sbin/nginx"),
            php_fpm_bin,
            vhost_dir: if managed {
                PathBuf::from(format!("{d}/vhosts"))
            } else {
                PathBuf::from(config::string(
                    "HOSTING_VHOST_DIR",
                    "/etc/nginx/sites-enabled",
                ))
            },
            fastcgi_params: if managed {
                format!("{d}/fastcgi_params")
            } else {
                config::string("HOSTING_FASTCGI_PARAMS", "/etc/nginx/fastcgi_params")
            },
            pool_dir: if managed {
                PathBuf::from(format!("{d}/pools"))
            } else {
                PathBuf::from(config::string(
                    "HOSTING_PHP_FPM_POOL_DIR",
                    &format!("/etc/php/{fpm_ver}/fpm/pool.d"),
                ))
            },
            socket_dir: if managed {
                PathBuf::from(format!("{d}/sockets"))
            } else {
                PathBuf::from(config::string("HOSTING_PHP_FPM_SOCKET_DIR", "/run/php"))
            },
            fpm_pid: if managed {
                PathBuf::from(format!("{d}/php-fpm.pid"))
            } else {
                PathBuf::from(config::string(
                    "HOSTING_PHP_FPM_PID",
                    &format!("/run/php/php{fpm_ver}-fpm.pid"),
                ))
            },
            fpm_conf: config::optional("HOSTING_PHP_FPM_CONF"),
            web_group: WEB_USER.into(),
            main_conf: config::optional("HOSTING_NGINX_CONF"),
            stop_on_exit: config::parse("HOSTING_STOP_WEB_ON_EXIT", true)?,
            php_max_children: config::parse("HOSTING_PHP_MAX_CHILDREN", 8)?,
            dir,
        })
    }
}

/// `8.2` from `/usr/sbin/php-fpm8.2`, for Debian's paths.
fn fpm_version(bin: Option<&str>) -> String {
    bin.and_then(|b| b.rsplit("php-fpm").next())
        .filter(|v| !v.is_empty())
        .unwrap_or("8.2")
        .to_owned()
}

const WEB_USER: &str = "www-data";

fn find_php_fpm() -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir("/usr/sbin")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("php-fpm"))
        .collect();
    found.sort();
    found.pop().map(|n| format!("/usr/sbin/{n}"))
}

/// Whether we run as root, in which case workers drop to the web user.
fn web_user() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    (root
        && std::path::Path::new("/etc/passwd").exists()
        && std::fs::read_to_string("/etc/passwd")
            .is_ok_and(|p| p.lines().any(|l| l.starts_with("www-data:"))))
    .then_some("www-data")
}

#[derive(Clone)]
pub struct Nginx {
    pub settings: Arc<Settings>,
    /// One configuration change at a time (vhosts and pools): test and reload see exactly
    /// one change.
    pub lock: Arc<Mutex<u64>>,
    started_here: Arc<Mutex<bool>>,
    /// The most vhosts the running master has held: when far fewer are left, a reload starts
    /// a fresh master.
    peak_vhosts: Arc<std::sync::atomic::AtomicUsize>,
    pub fpm: crate::fpm::Fpm,
}

/// What a reload is for.
#[derive(Debug, Clone, Copy)]
pub enum Reload {
    Nginx,
    Fpm,
}

impl Nginx {
    pub fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        Self {
            fpm: crate::fpm::Fpm::new(settings.clone()),
            settings,
            lock: Arc::new(Mutex::new(0)),
            started_here: Arc::default(),
            peak_vhosts: Arc::default(),
        }
    }

    fn d(&self) -> &str {
        self.settings.dir.as_str()
    }

    /// A configuration written but not (yet) loaded is marked on disk until its reload
    /// succeeds: a change that finds the files as they should be (a retry after webconf was
    /// killed, or after a reload failed) still reloads.
    fn marker(&self, what: Reload) -> PathBuf {
        PathBuf::from(format!(
            "{}/reload-pending-{}",
            self.d(),
            match what {
                Reload::Nginx => "nginx",
                Reload::Fpm => "php-fpm",
            }
        ))
    }

    pub async fn set_pending(&self, what: Reload) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(self.d()).await?;
        tokio::fs::write(self.marker(what), b"").await?;
        Ok(())
    }

    pub async fn clear_pending(&self, what: Reload) {
        let _ = tokio::fs::remove_file(self.marker(what)).await;
    }

    pub async fn is_pending(&self, what: Reload) -> bool {
        tokio::fs::try_exists(self.marker(what))
            .await
            .unwrap_or(false)
    }

    fn nginx_args(&self) -> Vec<String> {
        match (&self.settings.managed, &self.settings.main_conf) {
            (true, _) => vec![
                "-c".into(),
                format!("{}/nginx.conf", self.d()),
                "-p".into(),
                format!("{}/", self.d()),
                "-e".into(),
                format!("{}/logs/error.log", self.d()),
            ],
            (false, Some(conf)) => vec!["-c".into(), conf.clone()],
            (false, None) => vec![],
        }
    }

    /// Writes the managed configuration and starts nginx and php-fpm if they are not running;
    /// reloads a php-fpm that runs already, so that it serves the pools as written and what
    /// it loaded is known.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.settings.vhost_dir).await?;
        tokio::fs::create_dir_all(&self.settings.pool_dir).await?;
        tokio::fs::create_dir_all(&self.settings.socket_dir).await?;
        if !self.settings.managed {
            if self.settings.php_fpm_bin.is_some() && self.fpm.running().await {
                self.fpm.test().await?;
                self.fpm.reload().await?;
            }
            return Ok(());
        }
        let d = self.d();
        for sub in ["logs", "tmp"] {
            tokio::fs::create_dir_all(format!("{d}/{sub}")).await?;
        }
        let user = web_user();
        if let Some(u) = user {
            // nginx workers write request bodies here.
            let status = tokio::process::Command::new("chown")
                .arg(format!("{u}:{u}"))
                .arg(format!("{d}/tmp"))
                .status()
                .await?;
            if !status.success() {
                bail!("cannot chown {d}/tmp to {u}");
            }
        }
        let nginx_conf = self.main_conf(&format!("{d}/vhosts/*.conf"));
        tokio::fs::write(format!("{d}/nginx.conf"), nginx_conf).await?;
        tokio::fs::write(format!("{d}/fastcgi_params"), FASTCGI_PARAMS).await?;
        // Rewritten with the generation it had: the hash size follows the vhosts there are.
        let generation = self.read_generation().await;
        self.write_generation(generation).await?;

        if self.settings.php_fpm_bin.is_some() {
            tokio::fs::write(format!("{d}/php-fpm.conf"), self.fpm.main_conf()).await?;
            self.fpm.test().await?;
            if self.fpm.running().await {
                self.fpm.reload().await?;
            } else {
                self.fpm.start().await?;
                *self.started_here.lock().await = true;
            }
        } else {
            tracing::warn!(
                "no php-fpm binary found (set HOSTING_PHP_FPM_BIN); PHP sites will answer 502"
            );
        }

        if pid_alive(&format!("{d}/nginx.pid")).await {
            self.test().await?;
            self.run_nginx(&["-s", "reload"]).await?;
        } else {
            self.test().await?;
            self.run_nginx(&[]).await?;
            *self.started_here.lock().await = true;
        }
        self.peak_vhosts.store(
            self.vhost_count().await,
            std::sync::atomic::Ordering::SeqCst,
        );
        let generation = self.read_generation().await;
        self.wait_for_generation(generation).await?;
        // Everything on disk is live now, whatever an earlier webconf left pending.
        self.clear_pending(Reload::Nginx).await;
        if self.settings.php_fpm_bin.is_some() {
            self.clear_pending(Reload::Fpm).await;
        }
        tracing::info!(listen = %self.settings.listen, "nginx serving");
        Ok(())
    }

    /// The managed nginx.conf, including the vhosts `vhosts` names (a glob, or one file).
    fn main_conf(&self, vhosts: &str) -> String {
        let d = self.d();
        let user_line = web_user()
            .map(|u| format!("user {u};\n"))
            .unwrap_or_default();
        format!(
            "# Managed by webconf; rewritten at every start.\n{user_line}worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n    access_log {d}/logs/access.log;\n    client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n    scgi_temp_path {d}/tmp/scgi;\n    server_tokens off;\n    # Any valid name (up to 253 characters) fits a bucket; the hash's size follows the\n    # number of vhosts (generation.conf).\n    server_names_hash_bucket_size 512;\n    sendfile on;\n    client_max_body_size 64m;\n    types {{\n        text/html html htm; text/css css; text/plain txt; application/javascript js; application/json json;\n        image/png png; image/jpeg jpg jpeg; image/gif gif; image/svg+xml svg; image/webp webp; image/x-icon ico;\n        font/woff woff; font/woff2 woff2; application/pdf pdf;\n    }}\n    default_type application/octet-stream;\n    include {d}/generation.conf;\n    include {vhosts};\n}}\n"
        )
    }

    /// Checks vhosts about to be loaded. Managed: only the given files, in a configuration of
    /// their own that is otherwise the real one, so a change costs what its own vhosts cost
    /// to parse, not all 10,000; what only the whole configuration can refuse (a conflict
    /// between two vhosts) is caught by the reload itself, which nginx refuses without
    /// leaving the running configuration, and which `reload` reports. Unmanaged: `nginx -t`
    /// of the system's whole configuration.
    pub async fn test_vhosts(&self, files: &[PathBuf]) -> anyhow::Result<()> {
        if !self.settings.managed {
            return self.test().await;
        }
        if files.is_empty() {
            return Ok(());
        }
        let d = self.d();
        let list = format!("{d}/test-vhosts.conf");
        let includes: String = files
            .iter()
            .map(|f| format!("include {};\n", f.display()))
            .collect();
        tokio::fs::write(&list, includes).await?;
        let conf = format!("{d}/test-nginx.conf");
        tokio::fs::write(&conf, self.main_conf(&list)).await?;
        let out = tokio::process::Command::new(&self.settings.nginx_bin)
            .args(["-t", "-q", "-c", &conf, "-p", &format!("{d}/"), "-e"])
            .arg(format!("{d}/logs/error.log"))
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.settings.nginx_bin))?;
        if !out.status.success() {
            bail!(
                "nginx -t refused the vhost: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    async fn run_nginx(&self, extra: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(&self.settings.nginx_bin)
            .args(self.nginx_args())
            .args(extra)
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.settings.nginx_bin))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() {
            bail!("{stderr}");
        }
        Ok(stderr)
    }

    /// `nginx -t`: the whole configuration, as nginx would load it.
    pub async fn test(&self) -> anyhow::Result<()> {
        self.run_nginx(&["-t", "-q"])
            .await
            .map(|_| ())
            .context("nginx -t refused the configuration")
    }

    fn generation_conf(&self, generation: u64, vhosts: usize) -> String {
        // nginx looks for the smallest hash that holds every name, up to this ceiling; a
        // ceiling below what the names need makes it warn and build a slow one. Eight names a
        // vhost (its domain and aliases) leave room; the memory used is what is needed.
        let max_size = vhosts.saturating_mul(8).max(1024);
        format!(
            "# Managed by webconf. The default server answers unknown hosts with 404 and tells\n# webconf which configuration generation the workers run.\nserver_names_hash_max_size {max_size};\nserver {{\n    listen {listen} default_server;\n    server_name _;\n    location = /.hosting/generation {{ default_type text/plain; return 200 \"{generation}\"; }}\n    location / {{ return 404; }}\n}}\n",
            listen = self.settings.listen
        )
    }

    /// How many vhost files there are (a directory listing, no file read).
    async fn vhost_count(&self) -> usize {
        let mut n = 0;
        if let Ok(mut dir) = tokio::fs::read_dir(&self.settings.vhost_dir).await {
            while let Ok(Some(e)) = dir.next_entry().await {
                if e.file_name().to_string_lossy().ends_with(".conf") {
                    n += 1;
                }
            }
        }
        n
    }

    async fn write_generation(&self, generation: u64) -> anyhow::Result<()> {
        let vhosts = self.vhost_count().await;
        tokio::fs::write(
            format!("{}/generation.conf", self.d()),
            self.generation_conf(generation, vhosts),
        )
        .await?;
        Ok(())
    }

    async fn read_generation(&self) -> u64 {
        let text = tokio::fs::read_to_string(format!("{}/generation.conf", self.d()))
            .await
            .unwrap_or_default();
        text.split("return 200 \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
    }

    /// Reloads nginx and, in managed mode, waits until a fresh connection is served by the
    /// new configuration, so a task that reloads ends only when its vhost answers.
    ///
    /// Managed, the master is sent SIGHUP itself: `nginx -s reload` would parse the whole
    /// configuration once more just to find the pid file. A configuration the master refuses
    /// leaves the running one in place; its `[emerg]` line in the error log is the answer,
    /// returned as the error. When the configuration shrank to a quarter of the most it held
    /// since the master started, the master is replaced instead (nginx's binary upgrade:
    /// SIGUSR2, then SIGQUIT to the old one), because a master never gives back the memory
    /// an old configuration took, and its workers inherit it.
    pub async fn reload(&self) -> anyhow::Result<()> {
        if !self.settings.managed {
            self.run_nginx(&["-s", "reload"]).await?;
            return Ok(());
        }
        let d = self.d().to_owned();
        let generation = self.read_generation().await.wrapping_add(1).max(1);
        self.write_generation(generation).await?;
        let vhosts = self.vhost_count().await;
        let peak = self
            .peak_vhosts
            .fetch_max(vhosts, std::sync::atomic::Ordering::SeqCst)
            .max(vhosts);
        let Some(master) = read_pid(&format!("{d}/nginx.pid")).await else {
            bail!("nginx is not running (no pid in {d}/nginx.pid)");
        };
        let old_workers = accepting_workers(master);
        let log = format!("{d}/logs/error.log");
        let mut log_from = tokio::fs::metadata(&log)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let fresh = peak >= 1000 && vhosts.saturating_mul(4) < peak;
        if fresh {
            self.upgrade_master(master, &log, &mut log_from).await?;
            self.peak_vhosts
                .store(vhosts, std::sync::atomic::Ordering::SeqCst);
        } else {
            // SAFETY: a signal to the pid nginx wrote for its own master.
            if unsafe { libc::kill(master, libc::SIGHUP) } != 0 {
                bail!("cannot signal nginx's master (pid {master})");
            }
        }
        self.wait_for_generation_or_refusal(generation, &log, &mut log_from)
            .await?;
        // New workers serving is not enough: until the old ones close their listening sockets
        // they may still take a new connection with the old configuration.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while old_workers.iter().any(|pid| worker_accepts(*pid)) {
            if tokio::time::Instant::now() > deadline {
                bail!("nginx's previous workers did not stop accepting within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A new master from the binary, on the configuration as written; the old one leaves
    /// gracefully once the new one runs.
    async fn upgrade_master(&self, old: i32, log: &str, log_from: &mut u64) -> anyhow::Result<()> {
        let d = self.d();
        tracing::info!("starting a fresh nginx master, to give back an old configuration's memory");
        // SAFETY: a signal to the pid nginx wrote for its own master.
        if unsafe { libc::kill(old, libc::SIGUSR2) } != 0 {
            bail!("cannot signal nginx's master (pid {old})");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let new = loop {
            match read_pid(&format!("{d}/nginx.pid")).await {
                Some(p) if p != old => break p,
                _ => {}
            }
            if let Some(refused) = refusal(log, log_from).await {
                bail!("nginx refused the new configuration: {refused}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nginx's new master did not start within 30 s (see {log})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tracing::info!(old, new, "nginx master replaced");
        // SAFETY: as above; the old master hands over and leaves.
        unsafe { libc::kill(old, libc::SIGQUIT) };
        Ok(())
    }

    async fn wait_for_generation_or_refusal(
        &self,
        generation: u64,
        log: &str,
        log_from: &mut u64,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let want = generation.to_string();
        loop {
            if let Ok(body) = probe(self.settings.listen).await {
                if body.trim() == want {
                    return Ok(());
                }
            }
            if let Some(refused) = refusal(log, log_from).await {
                bail!("nginx refused the new configuration and runs the previous one: {refused}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nginx did not load configuration generation {generation} within 60 s (see {log})");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for_generation(&self, generation: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let want = generation.to_string();
        loop {
            if let Ok(body) = probe(self.settings.listen).await {
                if body.trim() == want {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nginx did not load configuration generation {generation} within 15 s (see {}/logs/error.log)", self.d());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop_if_owned(&self) {
        if !self.settings.managed || !self.settings.stop_on_exit {
            return;
        }
        let _ = self.run_nginx(&["-s", "quit"]).await;
        if let Some(pid) = read_pid(&self.settings.fpm_pid.to_string_lossy()).await {
            // SAFETY: sending a signal to a pid we read from our own pid file.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
    }
}

/// The master's worker processes that still accept connections.
fn accepting_workers(master: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // the parent pid is the second field after the parenthesized command name
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                })
                .flatten()
                .is_some_and(|ppid| ppid == master.to_string())
        })
        .filter(|pid| worker_accepts(*pid))
        .collect()
}

/// A worker that exists and is not "shutting down" (nginx retitles a worker when it closes
/// its listening sockets).
fn worker_accepts(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(title) => {
            let title = String::from_utf8_lossy(&title);
            title.contains("worker process") && !title.contains("shutting down")
        }
        Err(_) => false,
    }
}

/// An `[emerg]` line nginx logged since `offset` (a configuration it refused), if any; the
/// offset moves on past what was read, so each call reads only what is new, however much the
/// workers log meanwhile. A log that shrank (rotated) is read from its start.
async fn refusal(log: &str, offset: &mut u64) -> Option<String> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(log).await.ok()?;
    let len = f.metadata().await.ok()?.len();
    if len < *offset {
        *offset = 0;
    }
    f.seek(std::io::SeekFrom::Start(*offset)).await.ok()?;
    let mut bytes = Vec::new();
    // At most 4 MiB a call; the rest at the next.
    f.take(4 << 20).read_to_end(&mut bytes).await.ok()?;
    // Only whole lines: a line being written is read again next time.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *offset += whole as u64;
    String::from_utf8_lossy(&bytes[..whole])
        .lines()
        .find(|l| l.contains("[emerg]"))
        .map(|l| l.trim().to_owned())
}

async fn read_pid(path: &str) -> Option<i32> {
    tokio::fs::read_to_string(path)
        .await
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn pid_alive(path: &str) -> bool {
    match read_pid(path).await {
        // SAFETY: signal 0 only checks that the process exists.
        Some(pid) if pid > 0 => unsafe { libc::kill(pid, 0) == 0 },
        _ => false,
    }
}

async fn probe(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(b"GET /.hosting/generation HTTP/1.0\r\nHost: hosting-generation.invalid\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

const FASTCGI_PARAMS: &str = "fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME $fastcgi_script_name;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param REQUEST_SCHEME $scheme;
fastcgi_param HTTPS $https if_not_empty;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;
fastcgi_param REDIRECT_STATUS 200;
";

/// The versions of what this web server runs for sites, by name: `nginx` and `php`.
pub async fn software(settings: Arc<Settings>) -> std::collections::BTreeMap<String, String> {
    let mut s = std::collections::BTreeMap::new();
    s.insert(
        "nginx".into(),
        bus::agent::program_version(&settings.nginx_bin, &["-v"]).await,
    );
    s.insert(
        "php".into(),
        match &settings.php_fpm_bin {
            Some(bin) => bus::agent::program_version(bin, &["-v"]).await,
            None => "not installed (no php-fpm found)".into(),
        },
    );
    s
}

//! php-fpm: one pool per site, each running as the site's own user on its own socket, with
//! `open_basedir` on the platform and the site's directories and its temporary files, uploads,
//! sessions and error log in the site's private directory. Pools are `ondemand`: an idle site
//! costs no process. Every change is checked with `php-fpm -t` before php-fpm reloads, and the
//! reload is waited for.

use crate::nginx::Settings;
use anyhow::{bail, Context};
use contract::{PhpPool, PhpRuntime};
use domain::SystemUser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// A unix socket's path fits in `sockaddr_un.sun_path` (108 bytes, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone)]
pub struct Fpm {
    settings: Arc<Settings>,
    /// The extensions the running php-fpm loaded when it (re)started: an extension installed
    /// since is missing from it until it reloads.
    loaded: Arc<Mutex<Option<Vec<String>>>>,
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Fpm {
    pub fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            loaded: Arc::default(),
        }
    }

    fn bin(&self) -> anyhow::Result<&str> {
        self.settings
            .php_fpm_bin
            .as_deref()
            .context("no php-fpm binary found (install php-fpm, or set HOSTING_PHP_FPM_BIN)")
    }

    pub fn pool_path(&self, user: &SystemUser) -> PathBuf {
        self.settings.pool_dir.join(format!("{user}.conf"))
    }

    pub fn socket(&self, user: &SystemUser) -> String {
        format!("{}/{user}.sock", self.settings.socket_dir.display())
    }

    /// The main configuration php-fpm is started with (managed mode), or its own default.
    fn conf_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.settings.managed {
            args.push("-y".into());
            args.push(format!("{}/php-fpm.conf", self.settings.dir));
        } else if let Some(conf) = &self.settings.fpm_conf {
            args.push("-y".into());
            args.push(conf.clone());
        }
        // A pool's workers share one OPcache: a script cached for one site must not be served
        // to another whose user could not read the file.
        args.push("-d".into());
        args.push("opcache.validate_permission=1".into());
        args
    }

    pub fn render_pool(&self, pool: &PhpPool) -> anyhow::Result<String> {
        let socket = self.socket(&pool.user);
        if socket.len() > MAX_SOCKET_PATH {
            bail!(
                "the pool's socket path {socket} is longer than a unix socket may be ({MAX_SOCKET_PATH} bytes): choose a shorter HOSTING_WEBCONF_DIR"
            );
        }
        if !pool
            .private_dir
            .as_path()
            .starts_with(pool.site_dir.as_path())
        {
            bail!(
                "the private directory {} is not inside the site directory {}",
                pool.private_dir,
                pool.site_dir
            );
        }
        // Every value is a checked type: a system user name, normalized paths of a narrow
        // alphabet (no quotes, spaces, semicolons or newlines). Users and groups are given by
        // number: php-fpm looks names up in /etc/passwd one by one, and with a thousand site
        // users that alone made `php-fpm -t` take seconds.
        let identity = if running_as_root() {
            let (uid, gid, comment) =
                crate::users::lookup(pool.user.as_str())?.with_context(|| {
                    format!(
                        "the site's system user {} does not exist on this web server",
                        pool.user
                    )
                })?;
            // Only a user made for a site: never a pool for postgres, mysql or daemon.
            if !crate::users::is_ours(&comment) {
                bail!(
                    "the system user {} was not made by the control plane; no pool runs as it",
                    pool.user
                );
            }
            let web = crate::users::group_id(&self.settings.web_group).with_context(|| {
                format!(
                    "the web server's group {} does not exist",
                    self.settings.web_group
                )
            })?;
            format!("user = {uid}\ngroup = {gid}\nlisten.owner = {uid}\nlisten.group = {web}\n")
        } else {
            String::new()
        };
        // Short on purpose: php-fpm reads its configuration one byte per system call, so
        // every byte here is paid a thousand times over on a host with a thousand sites, at
        // each `php-fpm -t` and reload. Comments live here, not in the file:
        // - OPcache must see a settings file change at once (revalidate_freq 0), not up to
        //   seconds later with old database credentials.
        // - All pools share one OPcache: a script cached for one site is served to another
        //   only if that one's user may read the file (validate_permission), and no site may
        //   list or reset the cache of all (restrict_api names a path no site has). Set per
        //   pool, so that a system php-fpm (unmanaged mode) applies them too.
        Ok(format!(
            "[{user}]\n\
{identity}\
listen = {socket}\n\
listen.mode = 0660\n\
pm = ondemand\n\
pm.max_children = {max}\n\
security.limit_extensions = .php\n\
env[TMPDIR] = {tmp}\n\
php_admin_value[open_basedir] = {root}/:{site}/\n\
php_admin_value[upload_tmp_dir] = {tmp}\n\
php_admin_value[sys_temp_dir] = {tmp}\n\
php_admin_value[session.save_path] = {sessions}\n\
php_admin_value[error_log] = {log}\n\
php_admin_flag[log_errors] = on\n\
php_admin_value[opcache.revalidate_freq] = 0\n\
php_admin_flag[opcache.validate_permission] = on\n\
php_admin_value[opcache.restrict_api] = /hosting-no-opcache-api\n",
            user = pool.user,
            max = self.settings.php_max_children,
            tmp = pool.tmp_dir(),
            root = pool.platform_root,
            site = pool.site_dir,
            sessions = pool.sessions_dir(),
            log = pool.error_log(),
        ))
    }

    /// The managed master's own configuration: the pools of `pool_dir`, and one pool of its
    /// own (php-fpm refuses to start without any) that serves nothing and runs as nobody.
    pub fn main_conf(&self) -> String {
        let d = &self.settings.dir;
        let idle_user = if running_as_root() {
            "user = nobody\ngroup = nogroup\n"
        } else {
            ""
        };
        format!(
            "; Managed by webconf; rewritten at every start.\n\
[global]\n\
pid = {d}/php-fpm.pid\n\
error_log = {d}/logs/php-fpm.log\n\
daemonize = yes\n\
; A reload lets requests in flight finish first.\n\
process_control_timeout = 10s\n\
include = {pools}/*.conf\n\
\n\
[hosting-idle]\n\
{idle_user}\
listen = {d}/php-idle.sock\n\
listen.mode = 0600\n\
pm = ondemand\n\
pm.max_children = 1\n",
            pools = self.settings.pool_dir.display(),
        )
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let bin = self.bin()?;
        tokio::process::Command::new(bin)
            .args(self.conf_args())
            .args(args)
            .output()
            .await
            .with_context(|| format!("cannot run {bin}"))
    }

    /// `php-fpm -t`: the whole configuration, every pool in it, as php-fpm would load it.
    pub async fn test(&self) -> anyhow::Result<()> {
        let out = self.run(&["-t"]).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("error"))
                .take(3)
                .collect();
            bail!(
                "php-fpm -t refused the configuration: {}",
                if lines.is_empty() {
                    err.trim().to_owned()
                } else {
                    lines.join(" | ")
                }
            );
        }
        Ok(())
    }

    fn pid_file(&self) -> PathBuf {
        self.settings.fpm_pid.clone()
    }

    async fn master_pid(&self) -> Option<i32> {
        let pid: i32 = tokio::fs::read_to_string(self.pid_file())
            .await
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: signal 0 only checks that the process exists.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    pub async fn running(&self) -> bool {
        self.master_pid().await.is_some()
    }

    /// Starts php-fpm (managed mode).
    pub async fn start(&self) -> anyhow::Result<()> {
        let modules = self.modules().await.ok();
        let out = self.run(&[]).await?;
        if !out.status.success() {
            bail!(
                "php-fpm did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        *self.loaded.lock().await = modules;
        Ok(())
    }

    /// Reloads php-fpm and waits until it runs the new configuration. php-fpm re-executes
    /// itself on SIGUSR2 (its listening sockets carried over, so no connection is refused) and
    /// writes its pid file once the new configuration is loaded: the file is removed first,
    /// and its return is what is waited for.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let Some(pid) = self.master_pid().await else {
            if self.settings.managed {
                return self.start().await;
            }
            bail!(
                "php-fpm is not running (no live process in {})",
                self.pid_file().display()
            );
        };
        let modules = self.modules().await.ok();
        let _ = tokio::fs::remove_file(self.pid_file()).await;
        // SAFETY: a signal to the pid php-fpm wrote.
        if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
            bail!(
                "cannot signal php-fpm ({pid}): {}",
                std::io::Error::last_os_error()
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.master_pid().await.is_some() {
                *self.loaded.lock().await = modules;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "php-fpm did not come back within 30 s of its reload (see {})",
                    if self.settings.managed {
                        format!("{}/logs/php-fpm.log", self.settings.dir)
                    } else {
                        "its log".into()
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `php-fpm -m`: what a php-fpm started now would load.
    async fn modules(&self) -> anyhow::Result<Vec<String>> {
        let out = self.run(&["-m"]).await?;
        if !out.status.success() {
            bail!(
                "php-fpm -m failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| !l.is_empty() && !l.starts_with('['))
            .collect();
        list.sort();
        list.dedup();
        Ok(list)
    }

    async fn version(&self) -> anyhow::Result<String> {
        let out = self.run(&["-v"]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .context("php-fpm -v printed no version")
    }

    /// The PHP that site pools run. If extensions were installed after php-fpm started, it is
    /// reloaded first (under the caller's configuration lock), so they are what sites get.
    pub async fn info(&self) -> anyhow::Result<PhpRuntime> {
        let now = self.modules().await?;
        let loaded = self.loaded.lock().await.clone();
        let missing: Vec<String> = match &loaded {
            Some(l) => now.iter().filter(|m| !l.contains(m)).cloned().collect(),
            None => vec![],
        };
        if !missing.is_empty() {
            tracing::info!(
                ?missing,
                "extensions installed since php-fpm started: reloading it"
            );
            self.test().await?;
            self.reload().await?;
        }
        Ok(PhpRuntime {
            version: self.version().await?,
            extensions: now,
            reloaded: missing,
        })
    }
}

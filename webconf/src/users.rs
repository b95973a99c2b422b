//! Site users: one unix user and group per site, made and removed by this host's agent.
//!
//! Each is marked as ours in its comment field (`hosting control plane site <id>`, the field allows no colon), so an
//! existing user of that name that someone else made is never taken over or removed.

use anyhow::{bail, Context};
use domain::{SiteId, SystemUser};
use std::time::Duration;
use tokio::sync::Mutex;

pub struct Users {
    /// useradd and userdel lock the user database themselves; this keeps our own requests
    /// from racing each other for that lock.
    lock: Mutex<()>,
}

fn mark(site: SiteId) -> String {
    format!("{MARK_PREFIX}{site}")
}

const MARK_PREFIX: &str = "hosting control plane site ";

/// Whether a user's comment marks it as made for a site.
pub(crate) fn is_ours(comment: &str) -> bool {
    comment
        .strip_prefix(MARK_PREFIX)
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses a user that this agent did not make for `site`: the agent runs actions and reads
/// or hands over files as a site's user only, never as root or any other account, whoever
/// sent the request.
pub(crate) fn check_site_user(user: &SystemUser, site: SiteId) -> anyhow::Result<()> {
    if !running_as_root() {
        return Ok(()); // nothing runs as another user then
    }
    match lookup(user.as_str())? {
        Some((uid, _, gecos)) if uid != 0 && gecos == mark(site) => Ok(()),
        Some(_) => bail!("{user} is not the system user made for site {site} on this web server"),
        None => bail!(
            "the site's system user {user} does not exist on this web server (a verify task makes it)"
        ),
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A user's uid, gid and comment, if it exists.
pub(crate) fn lookup(name: &str) -> anyhow::Result<Option<(u32, u32, String)>> {
    let c = std::ffi::CString::new(name).context("a user name with a NUL byte")?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers; the strings pwd points to live in buf, read before it goes.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        bail!(
            "looking up {name}: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    if result.is_null() {
        return Ok(None);
    }
    let gecos = if pwd.pw_gecos.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string inside buf.
        unsafe { std::ffi::CStr::from_ptr(pwd.pw_gecos) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(Some((pwd.pw_uid, pwd.pw_gid, gecos)))
}

/// Runs useradd or userdel, trying again while another process holds the user database's
/// lock (other agents, or an administrator, may change users on this host at the same time).
async fn shadow_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .await
            .with_context(|| format!("cannot run {program}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let locked = err.contains("lock") || err.contains("try again");
        if !locked || tokio::time::Instant::now() > deadline {
            bail!("{program} {}: {err}", args.join(" "));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Users {
    pub fn new() -> Self {
        Self {
            lock: Mutex::new(()),
        }
    }

    /// Makes the site's user (and its group) if it does not exist; answers its ids and whether
    /// it was made now. Without root nothing can be made: our own ids stand in.
    pub async fn ensure(
        &self,
        user: &SystemUser,
        site: SiteId,
    ) -> anyhow::Result<(bool, (u32, u32))> {
        if !running_as_root() {
            // SAFETY: getuid and getgid cannot fail.
            return Ok((false, unsafe { (libc::getuid(), libc::getgid()) }));
        }
        let _guard = self.lock.lock().await;
        match lookup(user.as_str())? {
            Some((uid, gid, gecos)) if gecos == mark(site) => return Ok((false, (uid, gid))),
            Some((_, _, gecos)) => bail!(
                "a system user named {user} exists on this web server and was not made for site {site} (its comment says {gecos:?}); remove it or change HOSTING_DB_PREFIX"
            ),
            None => {}
        }
        let comment = mark(site);
        // A uid is never given twice on a host: a deleted site's files, left in a temporary
        // directory or a directory its delete could not remove, must not become the next
        // site's. The next uid comes from a host-wide high-water mark, kept under a lock.
        let mut uid = next_uid()?;
        loop {
            let uid_text = uid.to_string();
            match shadow_tool(
                "useradd",
                &[
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--user-group",
                    "--uid",
                    &uid_text,
                    "--comment",
                    &comment,
                    user.as_str(),
                ],
            )
            .await
            {
                Ok(()) => break,
                // Taken meanwhile (another agent on this host): the next one.
                Err(e) if e.to_string().contains("not unique") => uid = next_uid()?,
                Err(e) => return Err(e),
            }
        }
        let (uid, gid, _) =
            lookup(user.as_str())?.with_context(|| format!("useradd made no user {user}"))?;
        tracing::info!(%user, uid, gid, "site user made");
        Ok((true, (uid, gid)))
    }

    /// Stops the user's processes and removes the user and its group, if they exist and are
    /// the site's. `true` if something was removed.
    pub async fn remove(&self, user: &SystemUser, site: SiteId) -> anyhow::Result<bool> {
        if !running_as_root() {
            return Ok(false);
        }
        let _guard = self.lock.lock().await;
        let uid = match lookup(user.as_str())? {
            None => return Ok(false),
            Some((uid, _, gecos)) if gecos == mark(site) => uid,
            Some(_) => {
                bail!("the system user {user} was not made for site {site}; it is left alone")
            }
        };
        // userdel refuses a user that still runs processes (a PHP worker, a stuck action).
        for _ in 0..50 {
            if kill_processes_of(uid) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shadow_tool("userdel", &[user.as_str()]).await?;
        // With USERGROUPS_ENAB (Debian's default) userdel removes the group too; where it
        // does not, the group goes here.
        if group_exists(user.as_str()) {
            shadow_tool("groupdel", &[user.as_str()]).await?;
        }
        tracing::info!(%user, "site user removed");
        Ok(true)
    }
}

/// A group's gid, if it exists.
pub(crate) fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
        })
}

/// Where the host-wide high-water mark of site uids is kept.
const UID_MARK: &str = "/var/lib/hosting/site-uid-high-water";

/// The next uid for a site: above every uid in use and every uid given before, within the
/// range of ordinary users (`UID_MIN`..`UID_MAX` of /etc/login.defs).
fn next_uid() -> anyhow::Result<u32> {
    use std::io::{Read, Seek, Write};
    let defs = std::fs::read_to_string("/etc/login.defs").unwrap_or_default();
    let def = |key: &str, default: u32| {
        defs.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(key)).then(|| f.next()?.parse().ok())?
            })
            .unwrap_or(default)
    };
    let (min, max) = (def("UID_MIN", 1000), def("UID_MAX", 60000));
    let in_use = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok())
        .filter(|u| (min..=max).contains(u))
        .max()
        .unwrap_or(0);
    std::fs::create_dir_all("/var/lib/hosting")?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(UID_MARK)
        .with_context(|| format!("opening {UID_MARK}"))?;
    // SAFETY: flock on a descriptor we own; it is released when the file is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        bail!("locking {UID_MARK}: {}", std::io::Error::last_os_error());
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let given: u32 = text.trim().parse().unwrap_or(0);
    let mut next = given.max(in_use).max(min - 1) + 1;
    if next > max {
        // Every uid has been given once: start again from the lowest one nobody has, which is
        // the best there is (tell the operator).
        let taken: std::collections::HashSet<u32> = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').nth(2)?.parse().ok())
            .collect();
        next = (min..=max)
            .find(|u| !taken.contains(u))
            .with_context(|| format!("no uid is left for a new site on this host (UID_MIN {min} to UID_MAX {max} in /etc/login.defs)"))?;
        tracing::warn!(
            uid = next,
            "every site uid was given once; reusing the lowest free one"
        );
    }
    file.set_len(0)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    writeln!(file, "{next}")?;
    file.sync_all()?;
    Ok(next)
}

fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .map(|g| g.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

/// Sends SIGKILL to every process whose real uid is `uid`; the number signalled.
fn kill_processes_of(uid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let owned = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|u| u.parse::<u32>().ok())
            })
            == Some(uid);
        if owned {
            // SAFETY: a signal to a process of the site's own user.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

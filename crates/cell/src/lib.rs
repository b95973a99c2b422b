//! A site as a cell on its web server: its own unix user and group, and a site directory laid
//! out so that neighbours cannot read it and the web server gets only what it serves.
//!
//! ```text
//! <site dir>/            site user : web group   0710  nginx may pass, not list; others nothing
//!   settings.php         root      : site group  0640  the site reads it, cannot change it
//!   files/               site user : web group   2750  public files; new ones keep the web group
//!   private/             site user : site group  0700  never served
//!     tmp/ sessions/ logs/                       0700  PHP's temporary files, sessions, errors
//! ```
//!
//! When the services do not run as root (a developer's machine) nothing can be handed to
//! another user, and ownership is left as it is.

use anyhow::{bail, Context};
use domain::SystemUser;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Marks a site directory as made by us for one site (`site <id>`): an undo, a force delete
/// or a migrate's cleanup only removes a directory that carries its own site's mark.
pub const SITE_MARK: &str = ".hosting-site";

/// Marks a directory deployed from a backup by one task (`task <id>`): that task's undo
/// removes only a directory it deployed.
pub const DEPLOY_MARK: &str = ".hosting-deployed";

/// A directory a task keeps beside a site directory (a restore's fresh copy, a delete's
/// moved-aside one): named by the task, not by the domain, which may be as long as a file name
/// can be.
pub fn beside(site_dir: &std::path::Path, what: &str, task: domain::TaskId) -> std::path::PathBuf {
    site_dir.with_file_name(format!(".{what}-t{task}"))
}

/// What a deployed directory's [`DEPLOY_MARK`] holds for the task that deployed it.
pub fn deploy_mark(task: domain::TaskId) -> String {
    format!("task {task}\n")
}

/// What a site directory's [`SITE_MARK`] holds for `site`.
pub fn site_mark(site: domain::SiteId) -> String {
    format!("site {site}\n")
}

pub const SITE_DIR_MODE: u32 = 0o710;
pub const FILES_MODE: u32 = 0o2750;
pub const PRIVATE_MODE: u32 = 0o700;
pub const SETTINGS_MODE: u32 = 0o640;
/// The site's public files, relative to its directory.
pub const FILES_DIR: &str = "files";
/// Inside the private directory: what PHP writes (and what backups leave out: `tmp`).
pub const PRIVATE_SUBDIRS: [&str; 3] = ["tmp", "sessions", "logs"];

/// The ids a site's files are given: its own user and group, and the web server's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub web_gid: u32,
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A user's uid and gid from the system's user database, if the user exists.
pub fn user_ids(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let c = std::ffi::CString::new(name).context("a user name with a NUL byte")?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings
    // (only the numeric fields are read).
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
            "looking up the user {name}: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some((pwd.pw_uid, pwd.pw_gid)))
}

/// The web server's group (`www-data`), which may read public files and the pools' sockets.
pub fn web_gid() -> Option<u32> {
    static GID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *GID.get_or_init(|| user_ids(WEB_USER).ok().flatten().map(|(_, gid)| gid))
}

pub const WEB_USER: &str = "www-data";

/// The owner of a site's files: `None` when we are not root (nothing can be handed over);
/// an error when we are root and the site's user does not exist yet.
pub fn owner_of(user: &SystemUser) -> anyhow::Result<Option<Owner>> {
    if !running_as_root() {
        return Ok(None);
    }
    let (uid, gid) = user_ids(user.as_str())?.with_context(|| {
        format!("the site's system user {user} does not exist on this web server (a verify task makes it)")
    })?;
    let web_gid =
        web_gid().with_context(|| format!("the web server's user {WEB_USER} does not exist"))?;
    Ok(Some(Owner { uid, gid, web_gid }))
}

// The site's user owns its directory and may rename, replace or symlink anything in it while
// we work there as root. So nothing below the site directory is reached by path: each
// directory is opened relative to its parent, without following symlinks, and changed
// through its descriptor.

fn c_name(name: &str) -> anyhow::Result<std::ffi::CString> {
    if name.is_empty() || name.contains('/') {
        bail!("'{name}' is not a single path segment");
    }
    std::ffi::CString::new(name).context("a name with a NUL byte")
}

/// Opens a directory, refusing a symlink as its last component (the site directory's parents
/// are root's, so only the last one can be the site's doing).
fn open_dir(path: &Path) -> anyhow::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("a path with a NUL byte")?;
    // SAFETY: a valid C string; the descriptor returned is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "opening {}: {} (it must be a directory, not a symlink)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` in `parent` as a directory, making it first if it is missing.
fn open_subdir(parent: &OwnedFd, name: &str, where_: &Path) -> anyhow::Result<OwnedFd> {
    let c = c_name(name)?;
    // SAFETY: a valid descriptor and C string.
    let made = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) };
    if made != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            bail!("creating {}/{name}: {e}", where_.display());
        }
    }
    // SAFETY: as above; the descriptor returned is owned below.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "{}/{name} must be a directory, and is not (a symlink or a file in its place is refused): {}",
            where_.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_owner_and_mode(
    fd: &OwnedFd,
    mode: u32,
    owner: Option<(u32, u32)>,
    what: &Path,
) -> anyhow::Result<()> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
        bail!(
            "setting the mode of {}: {}",
            what.display(),
            std::io::Error::last_os_error()
        );
    }
    if let Some((uid, gid)) = owner {
        // SAFETY: a valid descriptor.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
            bail!(
                "giving {} to uid {uid}, gid {gid}: {}",
                what.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Makes what is missing of a site directory's layout and gives every part of it its owner
/// and mode (the directory itself must exist). Idempotent: verify runs it on every site.
/// `private` is the private directory's name inside the site directory.
pub fn lay_out(site_dir: &Path, private: &str, owner: Option<Owner>) -> anyhow::Result<()> {
    let site = open_dir(site_dir)?;
    let web = owner.map(|o| (o.uid, o.web_gid));
    let own = owner.map(|o| (o.uid, o.gid));
    // A site from before sites had users of their own: its uploads belong to the web server's
    // user. The whole tree becomes the site's, once.
    if let Some(o) = owner {
        let legacy = open_subdir(&site, FILES_DIR, site_dir)
            .ok()
            .and_then(|f| std::fs::File::from(f).metadata().ok())
            .is_some_and(|m| {
                let uid = std::os::unix::fs::MetadataExt::uid(&m);
                uid != 0 && uid != o.uid
            });
        if legacy {
            adopt_tree(&site, site_dir, o, true)?;
        }
    }
    set_owner_and_mode(&site, SITE_DIR_MODE, web, site_dir)?;
    let files = open_subdir(&site, FILES_DIR, site_dir)?;
    set_owner_and_mode(&files, FILES_MODE, web, &site_dir.join(FILES_DIR))?;
    // The private directory may be nested (`data/private`): each level is the site's.
    let mut dir = site;
    let mut path = site_dir.to_path_buf();
    for part in private.split('/') {
        dir = open_subdir(&dir, part, &path)?;
        path.push(part);
        set_owner_and_mode(&dir, PRIVATE_MODE, own, &path)?;
    }
    for sub in PRIVATE_SUBDIRS {
        let d = open_subdir(&dir, sub, &path)?;
        set_owner_and_mode(&d, PRIVATE_MODE, own, &path.join(sub))?;
    }
    Ok(())
}

/// Gives every entry below `dir` to the site (public files to the web server's group), through
/// descriptors, never following a symlink. At the top, root's own files (settings, marks)
/// are left as they are.
fn adopt_tree(dir: &OwnedFd, path: &Path, owner: Owner, top: bool) -> anyhow::Result<()> {
    adopt(dir, path, owner, top, false)
}

fn adopt(dir: &OwnedFd, path: &Path, owner: Owner, top: bool, public: bool) -> anyhow::Result<()> {
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .with_context(|| format!("reading {}", path.display()))?;
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let c = c_name(name)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, C string and stat buffer.
        if unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            continue;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if top && !is_dir && st.st_uid == 0 {
            continue;
        }
        let public = public || (top && name == FILES_DIR);
        let gid = if public { owner.web_gid } else { owner.gid };
        // SAFETY: as above; AT_SYMLINK_NOFOLLOW changes a symlink itself.
        unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                owner.uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if is_dir {
            if let Ok(child) = open_subdir(dir, name, path) {
                adopt(&child, &path.join(name), owner, false, public)?;
            }
        }
    }
    Ok(())
}

/// Writes a settings file if its content differs (and always puts its owner and mode right):
/// root's, readable by the site's group only, so the site reads its credentials and cannot
/// change them, and no neighbour (nor the web server) can read them. The directory is the
/// site's, so the file is never opened through a symlink, nor read if it is not a plain file.
pub async fn write_settings(
    path: &Path,
    content: &str,
    owner: Option<Owner>,
) -> anyhow::Result<bool> {
    let (path, content) = (path.to_path_buf(), content.to_owned());
    tokio::task::spawn_blocking(move || write_settings_blocking(&path, &content, owner))
        .await
        .context("the settings writer stopped")?
}

fn write_settings_blocking(
    path: &Path,
    content: &str,
    owner: Option<Owner>,
) -> anyhow::Result<bool> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let group_owner = owner.map(|o| (0, o.gid));
    let mut previous_mtime = None;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        let meta = file.metadata()?;
        if meta.is_file() {
            previous_mtime = meta.modified().ok();
            let mut old = Vec::new();
            if meta.len() == content.len() as u64
                && file.read_to_end(&mut old).is_ok()
                && old == content.as_bytes()
            {
                set_owner_and_mode(&OwnedFd::from(file), SETTINGS_MODE, group_owner, path)?;
                return Ok(false);
            }
        }
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    // create_new is O_EXCL: it fails rather than follow a symlink the site put there.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(content.as_bytes())?;
    // PHP's OPcache notices a changed file by its modification time, in whole seconds: the
    // new file must be strictly newer than the one PHP may have cached, even when both were
    // written within the same second.
    let now = std::time::SystemTime::now();
    let one = std::time::Duration::from_secs(1);
    let stamp = match previous_mtime {
        Some(p) if p + one > now => p + one,
        _ => now,
    };
    file.set_modified(stamp)?;
    let fd = OwnedFd::from(file);
    set_owner_and_mode(&fd, SETTINGS_MODE, group_owner, path)?;
    drop(fd);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(true)
}

/// Opens a file in the site's directory (`parts` are the path segments below it), as root,
/// never through a symlink, and only a plain file with one link: the site may have put
/// anything there, a hard link to a file only root may read included. A fifo is opened
/// without blocking and then refused.
fn open_site_file(site_dir: &Path, parts: &[&str]) -> anyhow::Result<Option<std::fs::File>> {
    let Some((name, dirs)) = parts.split_last() else {
        bail!("no file named");
    };
    let mut dir = match open_dir(site_dir) {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    for part in dirs {
        let c = c_name(part)?;
        // SAFETY: a valid descriptor and C string; the descriptor returned is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Ok(None);
        }
        // SAFETY: fd was just returned by openat.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let c = c_name(name)?;
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: fd was just returned by openat.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata()?;
    if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Reads up to `max` bytes from `offset` of a file in the site's directory, as
/// [`open_site_file`] allows. `None` when there is no such file.
pub fn read_site_file(
    site_dir: &Path,
    parts: &[&str],
    offset: u64,
    max: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek};
    let Some(mut file) = open_site_file(site_dir, parts)? else {
        return Ok(None);
    };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    file.take(max as u64).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// The size of a file in the site's directory, as [`read_site_file`] would see it.
pub fn site_file_len(site_dir: &Path, parts: &[&str]) -> u64 {
    open_site_file(site_dir, parts)
        .ok()
        .flatten()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Reads a mark file (`.hosting-site`, `.hosting-deployed`) in a directory the site may own:
/// never through a symlink, never blocking on a fifo, at most a line.
pub async fn read_mark(dir: &Path, mark: &str) -> Option<String> {
    let (dir, mark) = (dir.to_path_buf(), mark.to_owned());
    tokio::task::spawn_blocking(move || read_site_file(&dir, &[&mark], 0, 256))
        .await
        .ok()?
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Writes a mark file, replacing what is there without following a symlink in its place.
pub async fn write_mark(dir: &Path, mark: &str, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(mark);
    let content = content.to_owned();
    tokio::task::spawn_blocking(move || {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::from(e).context(format!("removing {}", path.display())))
            }
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(content.as_bytes())?;
        Ok(())
    })
    .await
    .context("the mark writer stopped")?
}

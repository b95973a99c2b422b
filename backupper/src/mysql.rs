//! The MariaDB command-line tools, with credentials through a file descriptor.
//!
//! `mariadb-dump` and `mariadb` read their credentials from `--defaults-extra-file=/dev/fd/3`,
//! a pipe we fill before the program starts: the password never appears in the process's
//! arguments or environment (as Aegir does it).

use anyhow::{bail, Context};
use domain::{DbIdent, DbPassword};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub struct Credentials {
    pub host: String,
    pub port: u16,
    pub user: DbIdent,
    pub password: DbPassword,
}

pub fn spawn(
    bin: &str,
    args: &[&str],
    creds: &Credentials,
    stdin: Stdio,
    stdout: Stdio,
) -> anyhow::Result<Child> {
    platform::check_db_host(&creds.host).map_err(anyhow::Error::msg)?;
    let mut fds = [0i32; 2];
    // SAFETY: a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    {
        // SAFETY: write_fd was just created by pipe2 and is owned here only.
        let mut w = unsafe { std::fs::File::from_raw_fd(write_fd) };
        // The password is letters and digits (DbPassword), so it needs no quoting here.
        write!(
            w,
            "[client]\nuser={}\npassword={}\nhost={}\nport={}\n",
            creds.user,
            creds.password.expose(),
            creds.host,
            creds.port
        )?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg("--defaults-extra-file=/dev/fd/3")
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if read_fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(read_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("cannot start {bin}"));
    // SAFETY: our copy of the read end; the child has its own as fd 3.
    unsafe { libc::close(read_fd) };
    child
}

/// `mariadb-dump` options for a consistent, complete, streamable dump.
pub fn dump_args(database: &DbIdent) -> Vec<String> {
    [
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(database.to_string()))
    .collect()
}

/// The server version from a dump's header (`-- Server version\t10.11.6-MariaDB`).
pub fn server_version(first_chunk: &[u8]) -> String {
    let head = String::from_utf8_lossy(&first_chunk[..first_chunk.len().min(4096)]);
    head.lines()
        .find_map(|l| l.strip_prefix("-- Server version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// `mariadb-dump` ends a complete dump with this comment line.
pub fn dump_is_complete(tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&tail[tail.len().saturating_sub(512)..]);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.starts_with("-- Dump completed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_without_its_trailer_is_incomplete() {
        assert!(dump_is_complete(
            b"INSERT INTO t VALUES (1);\n-- Dump completed on 2026-11-23 22:00:00\n"
        ));
        assert!(!dump_is_complete(b"INSERT INTO t VALUES (1);\n"));
        assert!(!dump_is_complete(b""));
        assert_eq!(
            server_version(b"-- MariaDB dump\n-- Server version\t10.11.6-MariaDB\n"),
            "10.11.6-MariaDB"
        );
    }
}

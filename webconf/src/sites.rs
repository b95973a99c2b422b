//! The site side of the web server's agent: site directories and their settings, platform
//! scans and platform actions, on this host. The control plane's task services keep the
//! sagas and ask for these steps by RPC; they never touch a site's files themselves. Secrets
//! (the settings file, an action's context) arrive sealed to this agent's key, because the
//! broker keeps persistent requests on disk.

use anyhow::{bail, Context};
use contract::{ActionLine, ActionOutput, ActionRequest, DirOutcome, LogLevel, SiteDir};
use domain::{Driver, HostPath, SiteId, SystemUser};
use platform::{Manifest, RunAs, SiteContext};
use std::path::Path;
use std::time::Duration;

/// The most output lines of one action an answer carries (the rest are counted): an RPC
/// answer is one broker message.
const MAX_ACTION_LINES: usize = 2000;
/// And the most bytes of one line.
const MAX_LINE_BYTES: usize = 4096;

pub struct Sites {
    key: seal::KeyPair,
}

impl Sites {
    pub fn new(key: seal::KeyPair) -> Self {
        Self { key }
    }

    pub fn public_key(&self) -> contract::RecipientKey {
        self.key.public()
    }

    fn open(&self, sealed: &contract::Sealed, what: &str) -> anyhow::Result<Vec<u8>> {
        self.key.open(sealed).with_context(|| {
            format!("{what} could not be opened with this web server's key (was the agent's key replaced?)")
        })
    }

    /// See `WebconfRequest::PrepareSiteDir`.
    pub async fn prepare(&self, dir: &SiteDir, create: bool) -> anyhow::Result<bool> {
        let path = dir.path.as_path();
        let mark = cell::site_mark(dir.site);
        let mut made = false;
        match cell::read_mark(path, cell::SITE_MARK).await {
            Some(m) if m == mark => {}
            Some(_) => bail!(
                "{} exists and belongs to another site; remove it or choose another domain",
                path.display()
            ),
            None if tokio::fs::try_exists(path).await? => {
                if create {
                    bail!(
                        "{} already exists and was not made for this site; remove it or choose another domain",
                        path.display()
                    )
                }
                // A site directory from before directories were marked, or deployed from a
                // backup: verify lays it out as it is.
            }
            None if !create => bail!("the site directory {} is missing", path.display()),
            None => {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                // Made (and marked) by us before it is handed to the site's user.
                tokio::fs::create_dir(path)
                    .await
                    .with_context(|| format!("creating {}", path.display()))?;
                cell::write_mark(path, cell::SITE_MARK, &mark).await?;
                made = true;
            }
        }
        let owner = cell::owner_of(&dir.user)?;
        let (p, private) = (path.to_path_buf(), dir.private.clone());
        tokio::task::spawn_blocking(move || cell::lay_out(&p, &private, owner))
            .await
            .context("laying out the site directory")??;
        Ok(made)
    }

    /// See `WebconfRequest::WriteSettings`.
    pub async fn write_settings(
        &self,
        user: &SystemUser,
        path: &HostPath,
        text: &contract::Sealed,
    ) -> anyhow::Result<bool> {
        let text = String::from_utf8(self.open(text, "the settings file")?)
            .context("the settings file is not UTF-8")?;
        cell::write_settings(path.as_path(), &text, cell::owner_of(user)?).await
    }

    /// See `WebconfRequest::RemoveSiteDir`.
    pub async fn remove(
        &self,
        site: SiteId,
        path: &HostPath,
        unmarked_ok: bool,
    ) -> anyhow::Result<DirOutcome> {
        let path = path.as_path();
        if !exists(path).await? {
            return Ok(DirOutcome::Missing);
        }
        if !is_sites(path, site, unmarked_ok).await {
            return Ok(DirOutcome::NotOurs);
        }
        tokio::fs::remove_dir_all(path)
            .await
            .with_context(|| format!("removing {}", path.display()))?;
        Ok(DirOutcome::Done)
    }

    /// See `WebconfRequest::MoveSiteDir`.
    pub async fn rename(
        &self,
        site: SiteId,
        from: &HostPath,
        to: &HostPath,
        unmarked_ok: bool,
    ) -> anyhow::Result<DirOutcome> {
        let (from, to) = (from.as_path(), to.as_path());
        // A rename within its parent only: what a delete's aside and its undo need, and no
        // more, whoever sent the request.
        if from.parent() != to.parent() || from == to {
            bail!(
                "{} can only be renamed within its own directory, not to {}",
                from.display(),
                to.display()
            );
        }
        if exists(to).await? {
            return Ok(DirOutcome::TargetExists);
        }
        if !exists(from).await? {
            return Ok(DirOutcome::Missing);
        }
        if !is_sites(from, site, unmarked_ok).await {
            return Ok(DirOutcome::NotOurs);
        }
        tokio::fs::rename(from, to)
            .await
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        Ok(DirOutcome::Done)
    }

    /// See `WebconfRequest::ScanPlatform`.
    pub async fn scan(&self, root: &HostPath, driver: Driver) -> anyhow::Result<Manifest> {
        let manifest = match driver {
            Driver::Hooks => Manifest::read(root).await?,
            Driver::Drupal | Driver::Wordpress => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || match driver {
                    Driver::Drupal => platform::drupal::scan(&root),
                    _ => platform::wordpress::scan(&root),
                })
                .await
                .context("the scan stopped")??
            }
        };
        Ok(manifest)
    }

    /// See `WebconfRequest::RunAction`. The action's own failure is in the output (with the
    /// lines it printed); an error here means it could not be started.
    pub async fn run_action(&self, request: &ActionRequest) -> anyhow::Result<ActionOutput> {
        let context = self.open(&request.context, "the site's context")?;
        let mut ctx: SiteContext = serde_json::from_slice(&context)
            .map_err(|e| anyhow::anyhow!("the site's context does not read: {e}"))?;
        ctx.run_as = if cell::running_as_root() {
            let (uid, gid) = cell::user_ids(request.user.as_str())?.with_context(|| {
                format!(
                    "the site's system user {} does not exist on this web server (a verify task makes it)",
                    request.user
                )
            })?;
            Some(RunAs { uid, gid })
        } else {
            None
        };
        let mut lines = Vec::new();
        let mut dropped = 0u64;
        let result = request
            .manifest
            .run_action(
                &request.platform_root,
                request.action,
                &ctx,
                Duration::from_secs(request.timeout_secs),
                |level, mut text| {
                    if lines.len() >= MAX_ACTION_LINES {
                        dropped += 1;
                        return;
                    }
                    if text.len() > MAX_LINE_BYTES {
                        let mut end = MAX_LINE_BYTES;
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        text.truncate(end);
                        text.push('…');
                    }
                    lines.push(ActionLine {
                        level: LogLevel::parse(level),
                        text,
                    });
                },
            )
            .await
            .map_err(|e| e.to_string());
        tracing::info!(site = %request.site, action = ?request.action, ok = result.is_ok(), "platform action");
        Ok(ActionOutput {
            lines,
            lines_dropped: dropped,
            result,
        })
    }
}

async fn exists(path: &Path) -> anyhow::Result<bool> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::from(e).context(format!("looking at {}", path.display()))),
    }
}

/// Whether `dir` is `site`'s: its mark says so, or it carries none and `unmarked_ok`.
async fn is_sites(dir: &Path, site: SiteId, unmarked_ok: bool) -> bool {
    match cell::read_mark(dir, cell::SITE_MARK).await {
        Some(m) => m == cell::site_mark(site),
        None => unmarked_ok,
    }
}

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
        crate::users::check_site_user(&dir.user, dir.site)?;
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
        site: SiteId,
        user: &SystemUser,
        path: &HostPath,
        text: &contract::Sealed,
    ) -> anyhow::Result<bool> {
        crate::users::check_site_user(user, site)?;
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
        deployed_by: Option<domain::TaskId>,
    ) -> anyhow::Result<DirOutcome> {
        let path = path.as_path();
        if !exists(path).await? {
            return Ok(DirOutcome::Missing);
        }
        if !is_sites(path, site, unmarked_ok, deployed_by).await {
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
        deployed_by: Option<domain::TaskId>,
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
        if !is_sites(from, site, unmarked_ok, deployed_by).await {
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
        crate::users::check_site_user(&request.user, request.site)?;
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

/// Whether `dir` is `site`'s: with `deployed_by`, when it carries that task's deploy mark;
/// else when its site mark says so, or it carries none and `unmarked_ok`.
async fn is_sites(
    dir: &Path,
    site: SiteId,
    unmarked_ok: bool,
    deployed_by: Option<domain::TaskId>,
) -> bool {
    if let Some(task) = deployed_by {
        return cell::read_mark(dir, cell::DEPLOY_MARK).await == Some(cell::deploy_mark(task));
    }
    match cell::read_mark(dir, cell::SITE_MARK).await {
        Some(m) => m == cell::site_mark(site),
        None => unmarked_ok,
    }
}

fn mark_file(kind: contract::MarkKind) -> &'static str {
    match kind {
        contract::MarkKind::Site => cell::SITE_MARK,
        contract::MarkKind::Deploy => cell::DEPLOY_MARK,
    }
}

impl Sites {
    /// See `WebconfRequest::ReadMark`.
    pub async fn read_mark(&self, path: &HostPath, kind: contract::MarkKind) -> Option<String> {
        cell::read_mark(path.as_path(), mark_file(kind)).await
    }

    /// See `WebconfRequest::WriteMark`.
    pub async fn write_mark(
        &self,
        path: &HostPath,
        kind: contract::MarkKind,
        content: Option<&str>,
    ) -> anyhow::Result<bool> {
        let file = mark_file(kind);
        match content {
            Some(c) => cell::write_mark(path.as_path(), file, c)
                .await
                .map(|()| true),
            None => match tokio::fs::remove_file(path.as_path().join(file)).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(anyhow::Error::from(e).context(format!("removing {file} in {path}"))),
            },
        }
    }
}

/// The tar of a site's files as it is written, cut into chunks for the HTTP body, counted and
/// hashed on the way (the backup store checks both against what arrived).
struct ChunkWriter {
    chunks: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    hasher: sha2::Sha256,
    bytes: u64,
}

/// How long a download may go without a byte moving.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one upload of a site's files may take in all (the backup store's own idle
/// timeout ends a stalled one much sooner).
const UPLOAD_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// How much of the tar goes in one chunk of the body.
const CHUNK: usize = 256 << 10;

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.chunks
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| std::io::Error::other("the upload to the backup store stopped"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// One transfer with the backup store's door: where, and the task's token for it.
struct Transfer {
    uri: hyper::Uri,
    host: String,
    port: u16,
    token: String,
}

impl Transfer {
    /// An HTTP/1 connection to the door, and its driver (abort it when done).
    async fn connect<B>(
        &self,
    ) -> anyhow::Result<(
        hyper::client::conn::http1::SendRequest<B>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    )>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (host, port) = (self.host.as_str(), self.port);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to the backup store at {host}:{port}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        Ok((sender, tokio::spawn(connection)))
    }

    /// A request to the transfer's address with its Host and its token.
    fn request(&self, method: hyper::Method) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(self.uri.path())
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
    }
}

impl Sites {
    /// A transfer's address at the backup store and its token, opened; `what` is `upload` or
    /// `download`.
    fn transfer(
        &self,
        url: &str,
        token: &contract::Sealed,
        what: &str,
    ) -> anyhow::Result<Transfer> {
        let token = String::from_utf8(self.open(token, &format!("the {what}'s token"))?)
            .with_context(|| format!("the {what}'s token is not text"))?;
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("the {what} address {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the {what} address {url} is not http://");
        }
        let host = uri
            .host()
            .with_context(|| format!("the {what} address {url} has no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        Ok(Transfer {
            uri,
            host,
            port,
            token,
        })
    }

    /// See `WebconfRequest::SendSiteFiles`: a plain tar of the site directory, read as the
    /// site's own user, PUT to the backup store with the upload's token.
    pub async fn send_files(
        &self,
        request: &contract::SendSiteFiles,
    ) -> anyhow::Result<contract::SentFiles> {
        use http_body_util::BodyExt;
        crate::users::check_site_user(&request.user, request.site)?;
        let transfer = self.transfer(&request.url, &request.token, "upload")?;
        let read_as = cell::owner_of(&request.user)?.map(|o| (o.uid, o.gid));
        let skip: Vec<std::path::PathBuf> = request.skip.iter().map(Into::into).collect();
        let site_dir = request.path.to_path_buf();
        if !exists(&site_dir).await? {
            bail!("the site directory {} is missing", request.path);
        }

        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let writer = tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            let sink = ChunkWriter {
                chunks: tx.clone(),
                buffer: Vec::with_capacity(CHUNK),
                hasher: sha2::Sha256::new(),
                bytes: 0,
            };
            match archive::write_files_tar(sink, &site_dir, &skip, read_as) {
                Ok((files, mut sink)) => {
                    std::io::Write::flush(&mut sink)?;
                    let sha256 = hex::encode(sink.hasher.finalize_reset());
                    Ok(contract::SentFiles {
                        bytes: sink.bytes,
                        sha256,
                        files: files.count,
                    })
                }
                Err(e) => {
                    // The body ends with an error, so the store never takes it as whole.
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    Err(anyhow::anyhow!("reading the site's files: {e}"))
                }
            }
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|c| c.map(|c| c.map(hyper::body::Frame::data)))
        }));
        let (mut sender, driver) = transfer.connect().await?;
        let put = transfer
            .request(hyper::Method::PUT)
            .header(hyper::header::CONTENT_TYPE, "application/x-tar")
            .body(body)?;
        // A backup store that stops reading must not hold this request for ever.
        let response = tokio::time::timeout(UPLOAD_LIMIT, sender.send_request(put))
            .await
            .map_err(|_| anyhow::anyhow!("the backup store took no more of the site's files"))
            .and_then(|r| r.map_err(anyhow::Error::from));
        let sent = writer.await.context("the site's files reader stopped")?;
        let response = response.context("sending the site's files to the backup store")?;
        let status = response.status();
        let answer = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
            .await
            .map_err(|_| anyhow::anyhow!("the backup store did not answer"))??
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            bail!(
                "the backup store refused the site's files ({status}): {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let sent = sent?;
        tracing::info!(site = %request.site, task = %request.task, bytes = sent.bytes, files = sent.files, "site files sent");
        Ok(sent)
    }
}

impl Sites {
    /// See `WebconfRequest::ReceiveSiteFiles`: the archive fetched with the download's token
    /// into a file beside `dest`, unpacked from there (checked whole first, every entry as
    /// untrusted), and the file removed whatever happens.
    pub async fn receive_files(
        &self,
        request: &contract::ReceiveSiteFiles,
    ) -> anyhow::Result<contract::SentFiles> {
        use http_body_util::BodyExt;
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        crate::users::check_site_user(&request.user, request.site)?;
        let transfer = self.transfer(&request.url, &request.token, "download")?;
        let dest = request.dest.to_path_buf();
        // Only a fresh directory named by the task (`.restore-t<id>`, `.deploy-t<id>`) beside
        // a site's: what `replace` removes is that task's own.
        let named = dest
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.ends_with(&format!("-t{}", request.task)));
        if !named {
            bail!(
                "{} is not a directory named by task {}",
                request.dest,
                request.task
            );
        }
        if exists(&dest).await? {
            if !request.replace {
                bail!(
                    "{} exists already; files are unpacked into a fresh directory",
                    request.dest
                );
            }
            tokio::fs::remove_dir_all(&dest)
                .await
                .with_context(|| format!("removing {} (an interrupted run's)", request.dest))?;
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let name = dest
            .file_name()
            .context("the destination has no name")?
            .to_string_lossy()
            .into_owned();
        let download = dest.with_file_name(format!("{name}.tar.zst"));

        let (mut sender, driver) = transfer.connect().await?;
        let get = transfer
            .request(hyper::Method::GET)
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(get))
            .await
            .map_err(|_| anyhow::anyhow!("the backup store did not answer"))?
            .context("asking the backup store for the archive")?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let answer = body.collect().await?.to_bytes();
            driver.abort();
            bail!(
                "the backup store refused the archive ({status}): {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let fetched = async {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = tokio::fs::remove_file(&download).await; // from an interrupted run
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&download)
                .with_context(|| format!("writing {}", download.display()))?;
            let mut file = tokio::fs::File::from_std(file);
            let (mut hasher, mut bytes) = (sha2::Sha256::new(), 0u64);
            loop {
                let frame = tokio::time::timeout(TRANSFER_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| anyhow::anyhow!("the archive's download stalled"))?;
                let Some(frame) = frame else { break };
                let frame = frame.context("the archive's download broke off")?;
                if let Some(chunk) = frame.data_ref() {
                    bytes += chunk.len() as u64;
                    if bytes > request.max_bytes {
                        bail!("the archive is larger than the restore allows");
                    }
                    hasher.update(chunk);
                    file.write_all(chunk).await?;
                }
            }
            file.flush().await?;
            anyhow::Ok((bytes, hex::encode(hasher.finalize())))
        }
        .await;
        driver.abort();
        let unpacked = match fetched {
            Ok((bytes, sha256)) => {
                let (path, dest, expected) =
                    (download.clone(), dest.clone(), request.sha256.clone());
                let limits = archive::Limits {
                    max_entries: request.max_entries,
                    max_bytes: request.max_bytes,
                };
                let handover = cell::owner_of(&request.user)?.map(|o| archive::Handover {
                    uid: o.uid,
                    gid: o.gid,
                    web_subtree: cell::FILES_DIR.into(),
                    web_gid: o.web_gid,
                });
                tokio::task::spawn_blocking(move || {
                    archive::extract(
                        &path,
                        &expected,
                        &dest,
                        limits,
                        handover.as_ref(),
                        &mut std::io::sink(),
                    )
                })
                .await
                .context("the unpacking stopped")?
                .map(|x| contract::SentFiles {
                    bytes,
                    sha256,
                    files: x.files.count,
                })
                .map_err(|e| anyhow::anyhow!("unpacking the archive: {e}"))
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&download).await;
        let unpacked = unpacked?;
        tracing::info!(site = %request.site, task = %request.task, files = unpacked.files, "site files unpacked");
        Ok(unpacked)
    }
}

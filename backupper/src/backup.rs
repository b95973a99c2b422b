//! Backup: one zstd-compressed tar holding the site directory and a dump of its database,
//! streamed: the dump goes into the archive in chunks while the site's files are read, with
//! no temporary copy of either.

use crate::mysql::{self, Credentials};
use crate::Backupper;
use anyhow::{bail, Context};
use site::SiteTask;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use store::{Backup, NewBackup};
use worker::TaskLog;

/// The dump's reader stopped because the archive's writer stopped taking chunks.
#[derive(Debug)]
struct WriterStopped;

impl std::fmt::Display for WriterStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive writer stopped")
    }
}

impl std::error::Error for WriterStopped {}

pub const ON_REQUEST: &str = "Generated on request";
pub const BEFORE_RESTORE: &str = "Generated before being restored to a previous version";

fn task_lock(task: domain::TaskId) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<BTreeMap<i64, std::sync::Weak<tokio::sync::Mutex<()>>>> =
        Mutex::new(BTreeMap::new());
    let Ok(mut locks) = LOCKS.lock() else {
        return Arc::default();
    };
    locks.retain(|_, l| l.strong_count() > 0);
    if let Some(l) = locks.get(&task.0).and_then(std::sync::Weak::upgrade) {
        return l;
    }
    let l = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(task.0, Arc::downgrade(&l));
    l
}

/// What an earlier attempt of `task` left in the domain's directory: a half-written archive
/// (it was killed mid-write) or a whole one it was killed before recording. Removed before
/// the next attempt writes its own; recorded archives stay.
async fn remove_unrecorded(b: &Backupper, domain: &domain::DomainName, task: domain::TaskId) {
    let dir = b.settings.backup_dir.join(domain.as_str());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let (partial, whole) = (format!("-t{task}.tar.partial"), format!("-t{task}.tar.zst"));
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let leftover = if name.ends_with(&partial) {
            true
        } else if name.ends_with(&whole) {
            let key = format!("{domain}/{name}");
            matches!(b.store.backup_key_recorded(&key).await, Ok(false))
        } else {
            false
        };
        if leftover {
            tracing::info!(file = %e.path().display(), "removing what an earlier attempt of this task left");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Makes a backup of the site for `task`, or returns the one this task made already (a
/// re-run after a crash does not make a second one).
pub async fn make_backup(
    b: &Backupper,
    st: &SiteTask,
    task: domain::TaskId,
    description: &str,
    log: &TaskLog,
) -> anyhow::Result<Backup> {
    let began = std::time::Instant::now();
    let fence = bus::fence::current();
    // One backup at a time per task in this process: a caller's retry (an RPC that timed
    // out) waits for the first attempt and then finds its backup, rather than racing it.
    let _one_at_a_time = task_lock(task).lock_owned().await;
    if let Some(done) = b.store.backup_of_task(task, description).await? {
        log.info(format!("backup {} was already made by this task", done.id))
            .await;
        return Ok(done);
    }
    let domain = st.site.domain.clone();
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .context("formatting the time")?;
    // One directory per domain, for the operator; file names short whatever the domain's
    // length (a file name has at most 255 bytes, a domain up to 253 characters).
    let key = format!("{domain}/site{}-{stamp}-t{task}.tar.zst", st.site.id);
    let path = b.settings.backup_dir.join(&key);
    let partial = path.with_extension("partial");
    remove_unrecorded(b, &domain, task).await;
    log.info(format!(
        "backing up {domain}: its files and database into {key}"
    ))
    .await;
    b.faults
        .crash_point("backup", "archive", saga::When::Before);
    let dir = path.parent().context("archive path")?.to_path_buf();
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    // Archives hold the site's settings (with its database password) and all its data.
    tokio::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).await?;

    let creds = Credentials {
        host: st.db_host.clone(),
        port: st.db_port,
        user: st.site.db_user.clone(),
        password: st.password(&b.store).await?,
    };
    let args = mysql::dump_args(&st.site.db_name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = mysql::spawn(
        &b.settings.dump_bin,
        &args,
        &creds,
        Stdio::null(),
        Stdio::piped(),
    )?;
    let mut stdout = child.stdout.take().context("dump stdout")?;
    let mut stderr = child.stderr.take().context("dump stderr")?;

    let (tx, rx) = std::sync::mpsc::sync_channel::<archive::DumpPiece>(2);
    let version: Arc<Mutex<Option<String>>> = Arc::default();
    let (chunk_bytes, level, workers) = (
        b.settings.dump_chunk_bytes,
        b.settings.zstd_level,
        b.settings.zstd_workers,
    );
    let reader = {
        let version = version.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, u64)> {
            let mut total = 0u64;
            let mut tail: Vec<u8> = Vec::new();
            let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            // Chunks are compressed on a thread of their own, so the dump streams on while one
            // is compressed (as `mariadb-dump | zstd` would), and alongside the files.
            let compressor = std::thread::spawn(move || -> anyhow::Result<()> {
                let mut encoder = archive::DumpEncoder::new(level, workers);
                for chunk in raw_rx {
                    let piece = archive::DumpPiece::Chunk(encoder.chunk(&chunk)?);
                    if tx.send(piece).is_err() {
                        return Err(WriterStopped.into());
                    }
                }
                // The writer checks this against the chunks it got: a dump cut short fails.
                let _ = tx.send(archive::DumpPiece::End(encoder.finish()));
                Ok(())
            });
            let read = (|| {
                loop {
                    let mut chunk = Vec::with_capacity(chunk_bytes);
                    let n = (&mut stdout)
                        .take(chunk_bytes as u64)
                        .read_to_end(&mut chunk)?;
                    if n == 0 {
                        return anyhow::Ok(());
                    }
                    if total == 0 {
                        if let Ok(mut v) = version.lock() {
                            *v = Some(mysql::server_version(&chunk));
                        }
                    }
                    total += n as u64;
                    tail = chunk[chunk.len().saturating_sub(512)..].to_vec();
                    if raw_tx.send(chunk).is_err() {
                        return Ok(()); // the compressor stopped; it says why
                    }
                }
            })();
            drop(raw_tx);
            // If reading stopped early, mariadb-dump must see its pipe close (and exit) before
            // its stderr and exit status are waited for.
            drop(stdout);
            let compressed = compressor
                .join()
                .map_err(|_| anyhow::anyhow!("the dump's compressor panicked"))?;
            // Checked before mariadb-dump's status: when the writer stopped, the dump died of
            // its closed pipe, which is not the cause.
            compressed?;
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            let status = child.wait()?;
            if !status.success() {
                bail!("mariadb-dump failed ({status}): {}", err.trim());
            }
            read?;
            Ok((mysql::dump_is_complete(&tail), total))
        })
    };

    let manifest_base = serde_json::json!({
        "site": {"id": st.site.id, "domain": st.site.domain, "aliases": st.site.aliases, "profile": st.site.profile,
                 "language": st.site.language, "db_name": st.site.db_name},
        "platform": {"id": st.platform.id, "name": st.platform.name, "root": st.platform.root},
        "packages": b.store.site_packages(st.site.id).await?,
    });
    // Rows are counted while the dump starts, each in its own consistent snapshot (they were
    // never one: a site written to during the backup may differ slightly, which verify-backup
    // reports); the manifest, written last, waits for the count.
    let (rows_tx, rows_rx) = std::sync::mpsc::sync_channel::<BTreeMap<String, i64>>(1);
    let counting = async {
        let rows = crate::rows::count(
            &creds.host,
            creds.port,
            &creds.user,
            &creds.password,
            &st.site.db_name,
        )
        .await;
        if let Ok(rows) = &rows {
            let _ = rows_tx.send(rows.clone());
        }
        drop(rows_tx);
        rows
    };
    // The site's temporary files are not kept; its sessions, logs and private files are.
    let skip = vec![std::path::Path::new(&st.manifest.application.private_dir).join("tmp")];
    // The site's files: read here when they are on this host's disk, else streamed by the
    // agent of the site's web server (see `uploads`).
    let (files, upload) = if st.web_server == b.settings.server {
        // Read as the site's own user: it owns the directory and could swap a part of it for
        // a symlink to somewhere only root may read while the backup runs.
        let read_as = st.owner()?.map(|o| (o.uid, o.gid));
        let site_dir = st.site_dir.to_path_buf();
        let files = archive::SiteFiles::Dir {
            site_dir,
            skip_contents: skip,
            read_as,
        };
        (files, None)
    } else {
        let (reader, upload) = ask_for_files(b, st, task, &skip).await?;
        log.info(format!(
            "the site's files come from {}'s agent",
            st.web_server
        ))
        .await;
        (archive::SiteFiles::Tar(Box::new(reader)), Some(upload))
    };
    // A worker that loses its lease drops this future mid-archive, while the blocking writer
    // goes on: whichever of the two ends last removes the partial archive.
    let abandon = AbandonGuard::new(partial.clone());
    let writer = {
        let partial = partial.clone();
        let (level, workers) = (b.settings.zstd_level, b.settings.zstd_workers);
        let abandoned = abandon.flag.clone();
        tokio::task::spawn_blocking(move || {
            let written =
                archive::write_archive(&partial, files, rx, level, workers, |files, dump| {
                    let m = archive::Manifest {
                        format: 1,
                        site: manifest_base["site"].clone(),
                        platform: manifest_base["platform"].clone(),
                        packages: manifest_base["packages"].clone(),
                        database: archive::DatabaseInfo {
                            engine: "mariadb".into(),
                            version: version
                                .lock()
                                .ok()
                                .and_then(|v| v.clone())
                                .unwrap_or_else(|| "unknown".into()),
                            dump_sha256: dump.sha256.clone(),
                            dump_bytes: dump.bytes,
                            dump_parts: dump.parts,
                            rows: rows_rx.recv().map_err(|_| {
                                archive::ArchiveError::Refused(
                                    "the rows of the database could not be counted".into(),
                                )
                            })?,
                        },
                        files: *files,
                        created: time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    };
                    serde_json::to_vec_pretty(&m)
                        .map_err(|e| archive::ArchiveError::Refused(e.to_string()))
                });
            if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::fs::remove_file(&partial);
            }
            written
        })
    };
    let sending = async move {
        match upload {
            Some(u) => u.sent().await.map(Some),
            None => Ok(None),
        }
    };
    let (rows, dump, written, sent) = tokio::join!(counting, reader, writer, sending);
    let finished = (|| {
        let dump = dump.context("dump reader")?;
        let written = written.context("archive writer")?;
        // The dump's own error says most (its stderr), unless it only stopped because the
        // archive's writer did; then the writer's error is the cause.
        let (complete, dump_bytes) = match dump {
            Err(e) if e.is::<WriterStopped>() => {
                return Err(written.err().map(anyhow::Error::from).unwrap_or(e))
                    .context("writing the archive failed")
            }
            other => other?,
        };
        let written = written.context("writing the archive failed")?;
        let rows = rows.context("counting the rows of the database")?;
        if let Some(sent) = sent? {
            if sent.files != written.files.count {
                bail!(
                    "{} files were sent and {} archived; no backup was recorded",
                    sent.files,
                    written.files.count
                );
            }
        }
        if dump_bytes == 0 || !complete {
            bail!("the database dump is incomplete ({dump_bytes} bytes, no completion trailer); no backup was recorded");
        }
        Ok((rows, written))
    })();
    let (rows, written) = match finished {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    tokio::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .await?;
    tokio::fs::rename(&partial, &path).await?;
    abandon.disarm();
    b.faults.crash_point("backup", "archive", saga::When::After);
    let manifest = serde_json::json!({
        "rows": rows,
        "files": written.files, "dump_bytes": written.dump.bytes, "dump_sha256": written.dump.sha256, "dump_parts": written.dump.parts,
    });
    // Recorded under the claim of the task it is made for: a worker that lost its lease (or a
    // second run of the same request) removes its archive and records nothing.
    let epoch = fence.filter(|f| f.task == task).map(|f| f.epoch);
    let recorded = b
        .store
        .record_backup(&NewBackup {
            site: st.site.id,
            task,
            key: &key,
            size: i64::try_from(written.size)?,
            checksum: &written.sha256,
            description,
            manifest: &manifest,
            epoch,
        })
        .await;
    let record = match recorded {
        Ok(store::Recorded::New(r)) => r,
        Ok(store::Recorded::Existing(r)) => {
            let _ = tokio::fs::remove_file(&path).await;
            log.info(format!("backup {} was already made by this task", r.id))
                .await;
            return Ok(r);
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
    };
    b.faults.crash_point("backup", "record", saga::When::After);
    telemetry::metrics::backup_written(written.size, began.elapsed());
    log.info(format!(
        "backup {} of {domain}: {} files ({} bytes) and {} bytes of database in {} bytes ({key})",
        record.id, written.files.count, written.files.bytes, written.dump.bytes, written.size
    ))
    .await;
    Ok(record)
}

/// Removes a partial archive when the backup that writes it is dropped before it is renamed
/// into place, and tells the blocking writer (which outlives a dropped future) to remove it
/// too when it ends.
struct AbandonGuard {
    partial: std::path::PathBuf,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl AbandonGuard {
    fn new(partial: std::path::PathBuf) -> Self {
        Self {
            partial,
            flag: Default::default(),
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// An upload of the site's files under way: the agent's answer, checked against what
/// arrived.
struct Upload {
    /// Held until the agent answers: dropping it closes the upload's door.
    awaited: crate::uploads::Awaited,
    answer: tokio::task::JoinHandle<anyhow::Result<contract::WebconfReply>>,
    done: tokio::sync::oneshot::Receiver<crate::uploads::Received>,
    web_server: domain::Name,
}

impl Upload {
    /// What the agent sent, once it says so and it matches what arrived, byte for byte.
    async fn sent(self) -> anyhow::Result<contract::SentFiles> {
        let answer = match self.answer.await {
            Ok(answer) => answer,
            Err(e) => Err(anyhow::anyhow!(
                "the request for the site's files stopped: {e}"
            )),
        };
        let sent = answer.and_then(|reply| {
            reply
                .sent
                .with_context(|| format!("webconf on {} did not say what it sent", self.web_server))
        });
        let sent = match sent {
            Ok(s) => s,
            Err(e) => {
                // The archive's writer must not wait for an upload that never comes.
                self.awaited.cancel();
                return Err(e.context(format!(
                    "the site's files did not come from {}",
                    self.web_server
                )));
            }
        };
        match self.done.await.ok() {
            Some(r) if r.bytes == sent.bytes && r.sha256 == sent.sha256 => Ok(sent),
            Some(r) => bail!(
                "{} sent {} bytes (SHA-256 {}) and {} bytes (SHA-256 {}) arrived; no backup was recorded",
                self.web_server,
                sent.bytes,
                sent.sha256,
                r.bytes,
                r.sha256
            ),
            None => bail!(
                "{} says it sent the site's files, and they did not arrive whole",
                self.web_server
            ),
        }
    }
}

/// Asks the agent of the site's web server to stream the site's files here, with a token for
/// this one upload sealed to the agent's key.
async fn ask_for_files(
    b: &Backupper,
    st: &SiteTask,
    task: domain::TaskId,
    skip: &[std::path::PathBuf],
) -> anyhow::Result<(crate::uploads::ChunkReader, Upload)> {
    let (Some(url), Some(uploads)) = (&b.settings.upload_url, &b.uploads) else {
        bail!(
            "the site's files are on {}, and this backup store takes no uploads: set HOSTING_UPLOAD_LISTEN and HOSTING_UPLOAD_URL (an address {} can reach)",
            st.web_server,
            st.web_server
        );
    };
    let web = b.store.server(st.platform.server_id).await?;
    let from = web.host.parse::<std::net::IpAddr>().ok();
    let mut awaited = uploads.expect(task, from, b.settings.upload_ttl);
    let key = st.web_key(&b.rpc, &b.store, b.settings.rpc_timeout).await?;
    let request = contract::WebconfRequest::SendSiteFiles(Box::new(contract::SendSiteFiles {
        task,
        site: st.site.id,
        user: st.site.system_user.clone(),
        path: st.site_dir.clone(),
        skip: skip
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        url: format!(
            "{}{}",
            url.trim_end_matches('/'),
            crate::uploads::SITE_FILES_PATH
        ),
        token: key.seal(awaited.token.as_bytes())?,
    }));
    let (rpc, server, timeout) = (
        b.rpc.clone(),
        st.web_server.clone(),
        b.settings.backup_timeout,
    );
    let answer = tokio::spawn(async move { site::webconf(&rpc, &server, request, timeout).await });
    let chunks = awaited.chunks.take().context("the upload's chunks")?;
    let done = awaited.done.take().context("the upload's end")?;
    Ok((
        crate::uploads::ChunkReader::new(chunks),
        Upload {
            awaited,
            answer,
            done,
            web_server: st.web_server.clone(),
        },
    ))
}

//! Configuration changes, coalesced. Each request that changes vhosts or pools hands its
//! files to one applier, which takes every change that is waiting, writes them all, checks
//! them together (the changed vhosts, and `php-fpm -t` when a pool changed) and reloads once:
//! 100 changes at once cost a handful of reloads, and each request is answered only when its
//! change is live. A batch that does not pass is split: each change is then tried on its own,
//! so one bad vhost fails its own request and no other. Every change is all or nothing: the
//! files it wrote go back to what they were when it fails.

use crate::nginx::{Nginx, Reload};
use anyhow::Context;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Which server reads a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Nginx,
    Fpm,
}

/// One file of a change: its new text, or `None` to remove it.
#[derive(Debug, Clone)]
pub struct FileChange {
    pub path: PathBuf,
    pub text: Option<String>,
    pub reader: Reader,
}

/// The most changes one batch takes; more wait for the next.
const MAX_BATCH: usize = 500;

type Request = (Vec<FileChange>, oneshot::Sender<anyhow::Result<bool>>);

#[derive(Clone)]
pub struct Applier {
    queue: mpsc::UnboundedSender<Request>,
}

impl Applier {
    /// `crash_after_write`: the test knob `HOSTING_WEBCONF_CRASH_AT=vhost-written`.
    pub fn start(nginx: Nginx, crash_after_write: bool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(nginx, waiting, crash_after_write));
        Self { queue }
    }

    /// Applies a change; `true` when a file changed (or a reload an earlier change left
    /// pending was done). Answered once what it wrote is live, or rolled back.
    pub async fn apply(&self, files: Vec<FileChange>) -> anyhow::Result<bool> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send((files, done))
            .map_err(|_| anyhow::anyhow!("webconf's applier has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("webconf's applier dropped the change"))?
    }
}

async fn run(nginx: Nginx, mut waiting: mpsc::UnboundedReceiver<Request>, crash: bool) {
    // A change to a file the batch changes already waits for the next batch: each change
    // must find on disk what the one before it left, to be checked and rolled back alone.
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match waiting.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut paths: std::collections::HashSet<PathBuf> =
            first.0.iter().map(|f| f.path.clone()).collect();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(more) if more.0.iter().any(|f| paths.contains(&f.path)) => {
                    held = Some(more);
                    break;
                }
                Ok(more) => {
                    paths.extend(more.0.iter().map(|f| f.path.clone()));
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let _guard = nginx.lock.lock().await;
        let size = batch.len();
        let started = std::time::Instant::now();
        apply_batch(&nginx, batch, crash).await;
        tracing::info!(changes = size, took = ?started.elapsed(), "configuration changes applied");
    }
}

/// A change with what its files held before.
struct Staged {
    files: Vec<(FileChange, Option<String>)>,
    done: oneshot::Sender<anyhow::Result<bool>>,
}

impl Staged {
    fn changed(&self) -> bool {
        !self.files.is_empty()
    }

    fn touches(&self, reader: Reader) -> bool {
        self.files.iter().any(|(f, _)| f.reader == reader)
    }

    async fn write(&self) -> anyhow::Result<()> {
        for (f, _) in &self.files {
            match &f.text {
                Some(t) => write_atomically(&f.path, t).await?,
                None => remove(&f.path).await?,
            }
        }
        Ok(())
    }

    async fn roll_back(&self) -> anyhow::Result<()> {
        for (f, before) in &self.files {
            match before {
                Some(t) => write_atomically(&f.path, t).await?,
                None => remove(&f.path).await?,
            }
        }
        Ok(())
    }
}

async fn apply_batch(nginx: &Nginx, batch: Vec<Request>, crash: bool) {
    // What each change really changes: files whose text differs from what is on disk.
    let mut staged = Vec::with_capacity(batch.len());
    for (files, done) in batch {
        let mut changed = Vec::new();
        for f in files {
            let before = tokio::fs::read_to_string(&f.path).await.ok();
            if before != f.text {
                changed.push((f, before));
            }
        }
        staged.push(Staged {
            files: changed,
            done,
        });
    }
    let (with_changes, unchanged): (Vec<Staged>, Vec<Staged>) =
        staged.into_iter().partition(Staged::changed);
    match apply_together(nginx, &with_changes, crash).await {
        Ok(()) => {
            for s in with_changes {
                let _ = s.done.send(Ok(true));
            }
        }
        Err(Failure { error, .. }) if with_changes.len() == 1 => {
            if let Some(s) = with_changes.into_iter().next() {
                let _ = s.done.send(Err(error));
            }
        }
        // Refused by the checks: each change is checked on its own (cheap: its own vhosts),
        // the bad ones answered with their error, and the rest applied together.
        Err(Failure {
            error,
            loading: false,
        }) => {
            tracing::warn!(error = %format!("{error:#}"), changes = with_changes.len(), "a batch of changes did not pass its checks; checking each on its own");
            let mut good = Vec::new();
            for s in with_changes {
                match check_alone(nginx, &s).await {
                    Ok(()) => good.push(s),
                    Err(e) => {
                        let _ = s.done.send(Err(e));
                    }
                }
            }
            let result = apply_together(nginx, &good, crash).await;
            answer_all(good, result);
        }
        // Refused when loading (what only the whole configuration shows, such as a conflict
        // between vhosts): each change is applied on its own.
        Err(Failure { error, .. }) => {
            tracing::warn!(error = %format!("{error:#}"), changes = with_changes.len(), "nginx or php-fpm refused a batch of changes; applying each on its own");
            for s in with_changes {
                let result = apply_together(nginx, std::slice::from_ref(&s), crash).await;
                answer_all(vec![s], result);
            }
        }
    }
    // Changes that found the files as they should be: what an earlier change left written
    // but not loaded (a failed reload, a webconf killed in between) is loaded now.
    if !unchanged.is_empty() {
        let pending = reload_pending(nginx).await;
        for s in unchanged {
            let _ = s.done.send(match &pending {
                Ok(reloaded) => Ok(*reloaded),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            });
        }
    }
}

fn answer_all(changes: Vec<Staged>, result: Result<(), Failure>) {
    match result {
        Ok(()) => {
            for s in changes {
                let _ = s.done.send(Ok(true));
            }
        }
        Err(Failure { error, .. }) => {
            let why = format!("{error:#}");
            for s in changes {
                let _ = s.done.send(Err(anyhow::anyhow!("{why}")));
            }
        }
    }
}

/// Why changes were not applied (and were rolled back): `loading` when the checks passed and
/// nginx or php-fpm refused the whole configuration.
struct Failure {
    error: anyhow::Error,
    loading: bool,
}

/// Writes one change, runs the checks on it alone, and puts the files back.
async fn check_alone(nginx: &Nginx, change: &Staged) -> anyhow::Result<()> {
    change.write().await?;
    let checked = async {
        if change.touches(Reader::Fpm) {
            nginx.fpm.test().await?;
        }
        nginx
            .test_vhosts(&written_vhosts(std::slice::from_ref(change)))
            .await
    }
    .await;
    change.roll_back().await?;
    checked
}

fn written_vhosts(changes: &[Staged]) -> Vec<PathBuf> {
    changes
        .iter()
        .flat_map(|c| &c.files)
        .filter(|(f, _)| f.reader == Reader::Nginx && f.text.is_some())
        .map(|(f, _)| f.path.clone())
        .collect()
}

/// Writes, checks and loads the changes as one: all live, or all rolled back.
async fn apply_together(nginx: &Nginx, changes: &[Staged], crash: bool) -> Result<(), Failure> {
    if changes.is_empty() {
        return Ok(());
    }
    let fail = |error: anyhow::Error| Failure {
        error,
        loading: false,
    };
    let pools = changes.iter().any(|c| c.touches(Reader::Fpm));
    let vhosts = changes.iter().any(|c| c.touches(Reader::Nginx));
    // Marked before anything is written: a webconf killed between the write and the reload
    // finds the marker on its next try and reloads.
    if pools {
        nginx.set_pending(Reload::Fpm).await.map_err(fail)?;
    }
    if vhosts {
        nginx.set_pending(Reload::Nginx).await.map_err(fail)?;
    }
    // How far it got: a failure before any reload leaves the servers as they were.
    let mut reloading = false;
    let result = async {
        for c in changes {
            c.write().await?;
        }
        if vhosts && crash {
            eprintln!("HOSTING_WEBCONF_CRASH_AT: aborting after writing a vhost");
            std::process::abort();
        }
        if pools {
            nginx.fpm.test().await?;
        }
        nginx.test_vhosts(&written_vhosts(changes)).await?;
        reloading = true;
        // The pools first: a vhost may send requests to a new socket.
        if pools {
            nginx.fpm.reload().await.context("reloading php-fpm")?;
        }
        if vhosts {
            nginx.reload().await?;
        }
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            if pools {
                nginx.clear_pending(Reload::Fpm).await;
            }
            if vhosts {
                nginx.clear_pending(Reload::Nginx).await;
            }
            Ok(())
        }
        Err(e) => {
            for c in changes {
                c.roll_back().await.map_err(fail)?;
            }
            // What is on disk is what ran before. A reload that got as far as the servers
            // may have loaded part of it; loading the old files again settles that.
            if !reloading {
                // Nothing was loaded. A marker stays: it may be an earlier change's.
                return Err(fail(e));
            }
            if pools && nginx.fpm.test().await.is_ok() && nginx.fpm.reload().await.is_ok() {
                nginx.clear_pending(Reload::Fpm).await;
            }
            if vhosts && nginx.reload().await.is_ok() {
                nginx.clear_pending(Reload::Nginx).await;
            }
            Err(Failure {
                error: e,
                loading: true,
            })
        }
    }
}

/// Reloads what an earlier change wrote but could not load; `true` if it did.
async fn reload_pending(nginx: &Nginx) -> anyhow::Result<bool> {
    let mut reloaded = false;
    if nginx.is_pending(Reload::Fpm).await {
        nginx.fpm.test().await?;
        nginx.fpm.reload().await?;
        nginx.clear_pending(Reload::Fpm).await;
        reloaded = true;
    }
    if nginx.is_pending(Reload::Nginx).await {
        nginx.test().await?;
        nginx.reload().await?;
        nginx.clear_pending(Reload::Nginx).await;
        reloaded = true;
    }
    Ok(reloaded)
}

async fn remove(path: &std::path::Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

pub async fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("conf.tmp");
    tokio::fs::write(&tmp, text)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

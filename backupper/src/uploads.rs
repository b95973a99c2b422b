//! The backup store's door for web servers' agents: the file side of backups and restores of
//! sites on other hosts. Bulk data never rides the broker: the backupper asks the agent by RPC
//! to send the site's files (a plain tar it PUTs here) or to fetch an archive (which it GETs
//! from here), with a token made for that one transfer. A token is good once, for one task,
//! one direction and one host (the web server's address as registered), until it expires;
//! anything else is refused before a byte moves. What arrived is checked against what the
//! other side says it sent (size and SHA-256), end to end.

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long an upload may go without a byte arriving.
const IDLE: Duration = Duration::from_secs(120);

/// The path agents PUT site files to.
pub const SITE_FILES_PATH: &str = "/v1/site-files";
/// The path agents GET archives from.
pub const ARCHIVES_PATH: &str = "/v1/archives";

/// What arrived of one upload: its size and SHA-256, once the whole body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    pub sha256: String,
}

struct Expected {
    task: domain::TaskId,
    /// The only address the request may come from, when the web server's host is an address.
    from: Option<IpAddr>,
    expires: Instant,
    door: Door,
}

/// Which way a token lets bytes through.
enum Door {
    /// Site files in, to the archive's writer.
    Upload {
        chunks: mpsc::Sender<bytes::Bytes>,
        done: oneshot::Sender<Received>,
    },
    /// An archive out.
    Download { archive: std::path::PathBuf },
}

/// The uploads the store waits for, by token.
#[derive(Clone, Default)]
pub struct Uploads {
    expected: Arc<Mutex<HashMap<String, Expected>>>,
}

/// One upload the store waits for: its token (to seal to the agent), the file's bytes as
/// they arrive, and what arrived in all once the body ended.
pub struct Awaited {
    pub token: String,
    pub chunks: Option<mpsc::Receiver<bytes::Bytes>>,
    pub done: Option<oneshot::Receiver<Received>>,
    uploads: Uploads,
}

impl Awaited {
    /// No upload can start with this token any more; one that waits for it sees its end.
    pub fn cancel(&self) {
        if let Ok(mut map) = self.uploads.expected.lock() {
            map.remove(&self.token);
        }
    }
}

impl Drop for Awaited {
    /// An upload nobody waits for any more (the backup failed or was dropped) cannot start.
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Uploads {
    /// Waits for one upload for `task` from `from`, good for `ttl`.
    pub fn expect(&self, task: domain::TaskId, from: Option<IpAddr>, ttl: Duration) -> Awaited {
        let (tx, chunks) = mpsc::channel(8);
        let (done_tx, done) = oneshot::channel();
        let door = Door::Upload {
            chunks: tx,
            done: done_tx,
        };
        let mut awaited = self.open(task, from, ttl, door);
        awaited.chunks = Some(chunks);
        awaited.done = Some(done);
        awaited
    }

    /// Lets `archive` be fetched once for `task` from `from`, within `ttl`.
    pub fn offer(
        &self,
        task: domain::TaskId,
        from: Option<IpAddr>,
        ttl: Duration,
        archive: std::path::PathBuf,
    ) -> Awaited {
        self.open(task, from, ttl, Door::Download { archive })
    }

    fn open(
        &self,
        task: domain::TaskId,
        from: Option<IpAddr>,
        ttl: Duration,
        door: Door,
    ) -> Awaited {
        use rand::RngExt;
        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        if let Ok(mut map) = self.expected.lock() {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
            map.insert(
                token.clone(),
                Expected {
                    task,
                    from,
                    expires: now + ttl,
                    door,
                },
            );
        }
        Awaited {
            token,
            chunks: None,
            done: None,
            uploads: self.clone(),
        }
    }

    /// Takes the upload `token` opens for a request from `peer`, or says why not. A token is
    /// taken once: a second request with it is refused.
    fn admit(
        &self,
        token: &str,
        peer: IpAddr,
        upload: bool,
    ) -> Result<Expected, (StatusCode, String)> {
        let mut map = self.expected.lock().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the upload table is broken".to_owned(),
            )
        })?;
        let refused = |why: &str| (StatusCode::FORBIDDEN, why.to_owned());
        let Some(expected) = map.remove(token) else {
            return Err(refused(
                "this token opens no upload: it was never made, was used already, or its backup ended",
            ));
        };
        if expected.expires <= Instant::now() {
            return Err(refused("this token has expired"));
        }
        if matches!(expected.door, Door::Upload { .. }) != upload {
            return Err(refused(if upload {
                "this token is for fetching an archive, not for sending files"
            } else {
                "this token is for sending files, not for fetching an archive"
            }));
        }
        // A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        if expected.from.is_some_and(|from| from != peer) {
            let why = format!(
                "this token is for task {}'s upload from its site's web server, not from {peer}",
                expected.task
            );
            return Err((StatusCode::FORBIDDEN, why));
        }
        Ok(expected)
    }
}

fn error(status: StatusCode, message: String) -> axum::response::Response {
    let code = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else if status == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "invalid"
    };
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The request's token, and what it opens for `peer` (one way), or the answer that refuses.
fn admitted(
    uploads: &Uploads,
    headers: &HeaderMap,
    peer: SocketAddr,
    upload: bool,
) -> Result<Expected, (StatusCode, String)> {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a transfer needs its token: Authorization: Bearer <token>".into(),
        ));
    };
    uploads
        .admit(token.trim(), peer.ip(), upload)
        .inspect_err(|(_, why)| tracing::warn!(%peer, %why, "a transfer was refused"))
}

async fn receive(
    State(uploads): State<Uploads>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    let expected = match admitted(&uploads, &headers, peer, true) {
        Ok(e) => e,
        Err((status, why)) => return error(status, why),
    };
    let task = expected.task;
    let Door::Upload { chunks, done } = expected.door else {
        return error(StatusCode::FORBIDDEN, "not an upload's token".into());
    };
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    loop {
        // A web server that goes silent mid-upload must not hold the backup for ever: the
        // archive's writer waits on these bytes.
        let next = match tokio::time::timeout(IDLE, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no byte of the upload came for {} s", IDLE.as_secs()),
                )
            }
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off: {e}"),
                )
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        if chunks.send(chunk).await.is_err() {
            return error(
                StatusCode::CONFLICT,
                "the backup this upload was for stopped".into(),
            );
        }
    }
    drop(chunks);
    let received = Received {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    };
    let _ = done.send(received.clone());
    tracing::info!(%task, bytes, "site files received");
    (
        StatusCode::OK,
        Json(serde_json::json!({"received": bytes, "sha256": received.sha256})),
    )
        .into_response()
}

/// An archive, to the agent whose token opens it.
async fn send(
    State(uploads): State<Uploads>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> axum::response::Response {
    let expected = match admitted(&uploads, &headers, peer, false) {
        Ok(e) => e,
        Err((status, why)) => return error(status, why),
    };
    let Door::Download { archive } = expected.door else {
        return error(StatusCode::FORBIDDEN, "not a download's token".into());
    };
    let file = match tokio::fs::File::open(&archive).await {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("the archive cannot be read: {e}"),
            )
        }
    };
    tracing::info!(task = %expected.task, archive = %archive.display(), "archive sent");
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/zstd")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// Serves the door at `listen` until the process stops.
pub async fn serve(listen: SocketAddr, uploads: Uploads) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route(SITE_FILES_PATH, axum::routing::put(receive))
        .route(ARCHIVES_PATH, axum::routing::get(send))
        .with_state(uploads);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "taking site files from web servers' agents, and giving archives");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// The bytes of an upload as a blocking reader, for the archive's writer.
pub struct ChunkReader {
    chunks: mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChunkReader {
    pub fn new(chunks: mpsc::Receiver<bytes::Bytes>) -> Self {
        Self {
            chunks,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(c) => self.current = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_token_opens_one_upload_from_its_host_until_it_expires() {
        let uploads = Uploads::default();
        let task = domain::TaskId(7);
        let awaited = uploads.expect(task, Some(ip("10.1.1.10")), Duration::from_secs(60));
        // From another host: refused, and the token is spent.
        let other = uploads.admit(&awaited.token, ip("10.1.1.11"), true).err();
        assert_eq!(other.map(|e| e.0), Some(StatusCode::FORBIDDEN));
        assert!(uploads
            .admit(&awaited.token, ip("10.1.1.10"), true)
            .is_err());

        let awaited = uploads.expect(task, Some(ip("10.1.1.10")), Duration::from_secs(60));
        assert!(uploads.admit(&awaited.token, ip("10.1.1.10"), true).is_ok());
        // Once only.
        assert!(uploads
            .admit(&awaited.token, ip("10.1.1.10"), true)
            .is_err());
        // Another task's token is not this one, and a made-up one opens nothing.
        let second = uploads.expect(domain::TaskId(8), None, Duration::from_secs(60));
        assert_ne!(second.token, awaited.token);
        assert!(uploads.admit("made-up", ip("10.1.1.10"), true).is_err());

        let expired = uploads.expect(task, None, Duration::from_millis(0));
        let refused = uploads.admit(&expired.token, ip("10.1.1.10"), true).err();
        assert!(
            refused.is_some_and(|(_, why)| why.contains("expired") || why.contains("never made"))
        );
        // A backup that stopped waiting closes its door.
        let dropped = uploads.expect(task, None, Duration::from_secs(60));
        let token = dropped.token.clone();
        drop(dropped);
        assert!(uploads.admit(&token, ip("10.1.1.10"), true).is_err());
        // One way only: an archive's token sends no files, and an upload's fetches nothing.
        let offered = uploads.offer(task, None, Duration::from_secs(60), "/nowhere".into());
        assert!(uploads
            .admit(&offered.token, ip("10.1.1.10"), true)
            .is_err());
        let upload = uploads.expect(task, None, Duration::from_secs(60));
        assert!(uploads
            .admit(&upload.token, ip("10.1.1.10"), false)
            .is_err());
    }
}

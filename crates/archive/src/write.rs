use crate::{ArchiveError, FileStats, DUMP_PREFIX, MANIFEST_NAME, SITE_PREFIX};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};

/// Counts and hashes what goes to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub files: FileStats,
    pub dump_sha256: String,
    pub dump_bytes: u64,
    pub dump_parts: u32,
}

/// Writes an archive to `path`: the site directory `site_dir` as `site/`, the dump chunks that
/// arrive on `dump` as `database/dump-NNNNN.sql` (interleaved with the files), and finally the
/// manifest that `manifest` builds from the totals. Blocking: run it on a blocking thread.
pub fn write_archive(
    path: &Path,
    site_dir: &Path,
    dump: Receiver<Vec<u8>>,
    level: i32,
    workers: u32,
    manifest: impl FnOnce(&FileStats, &str, u64, u32) -> Result<Vec<u8>, ArchiveError>,
) -> Result<Written, ArchiveError> {
    let file = File::create(path)?;
    let hashing = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(hashing, level)?;
    if workers > 1 {
        encoder.multithread(workers)?;
    }
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);

    let mut dump_state = DumpState {
        hasher: Sha256::new(),
        bytes: 0,
        parts: 0,
        open: true,
    };
    let mut files = FileStats::default();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = site_dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&full)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_child = rel.join(entry.file_name());
            let name = Path::new(SITE_PREFIX).join(&rel_child);
            let meta = entry.path().symlink_metadata()?;
            let ft = meta.file_type();
            if ft.is_dir() {
                tar.append_dir(&name, entry.path())?;
                stack.push(rel_child);
            } else if ft.is_file() || ft.is_symlink() {
                tar.append_path_with_name(entry.path(), &name)?;
                files.count += 1;
                files.bytes += meta.len();
            }
            // Sockets, fifos and devices in a site directory are not site data: skipped.
            dump_state.drain(&mut tar, &dump, false)?;
        }
    }
    dump_state.drain(&mut tar, &dump, true)?;
    let dump_sha256 = hex::encode(dump_state.hasher.clone().finalize());
    let manifest_bytes = manifest(&files, &dump_sha256, dump_state.bytes, dump_state.parts)?;
    append_bytes(&mut tar, MANIFEST_NAME, &manifest_bytes)?;
    let encoder = tar.into_inner()?;
    let mut hashing = encoder.finish()?;
    hashing.flush()?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    hashing
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(Written {
        size: hashing.bytes,
        sha256,
        files,
        dump_sha256,
        dump_bytes: dump_state.bytes,
        dump_parts: dump_state.parts,
    })
}

struct DumpState {
    hasher: Sha256,
    bytes: u64,
    parts: u32,
    open: bool,
}

impl DumpState {
    /// Appends the dump chunks that are ready; with `wait`, all of them until the sender
    /// closes.
    fn drain<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        rx: &Receiver<Vec<u8>>,
        wait: bool,
    ) -> Result<(), ArchiveError> {
        while self.open {
            let chunk = if wait {
                match rx.recv() {
                    Ok(c) => c,
                    Err(_) => {
                        self.open = false;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.open = false;
                        break;
                    }
                }
            };
            self.parts += 1;
            self.bytes += chunk.len() as u64;
            self.hasher.update(&chunk);
            append_bytes(tar, &format!("{DUMP_PREFIX}{:05}.sql", self.parts), &chunk)?;
        }
        Ok(())
    }
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)?;
    Ok(())
}

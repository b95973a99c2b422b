use crate::{ArchiveError, FileStats, DUMP_PREFIX, MANIFEST_NAME, SITE_PREFIX};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};

/// How much of the archive is written before the kernel is asked to start writing it to disk.
const WRITEBACK_STRETCH: u64 = 8 << 20;

/// The archive file, with its writeback started stretch by stretch as it is written
/// (`sync_file_range`), so the final `fsync` waits mostly for the last stretch, not for the
/// whole archive at once (here: 50-90 ms instead of 110-170 ms for 73 MB).
struct WritebackFile {
    file: File,
    written: u64,
    started: u64,
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STRETCH {
            start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor and a range of it. Only starts writeback; its errors
    // show again in the final fsync, which is what decides.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

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

#[derive(Debug)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub files: FileStats,
    pub dump: DumpSummary,
}

/// What the archive's writer receives from the dump's side: its chunks, then, once the whole
/// dump went by, its summary. A sender that closes without `End` cut the dump short.
pub enum DumpPiece {
    Chunk(DumpChunk),
    End(DumpSummary),
}

/// One chunk of the dump, already made into its archive entry and compressed as a zstd frame
/// of its own (see [`DumpEncoder`]).
pub struct DumpChunk {
    len: u64,
    frame: Vec<u8>,
}

/// What a whole dump was: its checksum, size and number of chunks.
#[derive(Debug, Clone, Default)]
pub struct DumpSummary {
    pub sha256: String,
    pub bytes: u64,
    pub parts: u32,
}

/// Turns the dump, chunk by chunk, into compressed archive entries, on the thread that reads
/// the dump. The archive then splices these frames in between the frames of the site's files:
/// the dump is compressed alongside the files, as two `zstd` processes would, rather than
/// after them through the one encoder (which made the files, not the dump, finish last). A
/// zstd file may hold any number of frames; `zstd -d` and every decoder read them as one stream.
pub struct DumpEncoder {
    level: i32,
    workers: u32,
    hasher: Sha256,
    bytes: u64,
    parts: u32,
}

impl DumpEncoder {
    /// `workers` as for the files: once the files are in, the dump has the machine to itself.
    pub fn new(level: i32, workers: u32) -> Self {
        Self {
            level,
            workers,
            hasher: Sha256::new(),
            bytes: 0,
            parts: 0,
        }
    }

    /// The next chunk's entry (`database/dump-NNNNN.sql`), compressed.
    pub fn chunk(&mut self, data: &[u8]) -> Result<DumpChunk, ArchiveError> {
        self.parts += 1;
        self.bytes += data.len() as u64;
        self.hasher.update(data);
        let header = entry_header(&format!("{DUMP_PREFIX}{:05}.sql", self.parts), data.len())?;
        let padding = (512 - data.len() % 512) % 512;
        let mut encoder = zstd::stream::write::Encoder::new(
            Vec::with_capacity(data.len() / 2 + 1024),
            self.level,
        )?;
        if self.workers > 1 {
            encoder.multithread(self.workers)?;
            // Jobs small enough that a chunk of a few MiB is shared among the workers.
            encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(1 << 20))?;
        }
        encoder.write_all(header.as_bytes())?;
        encoder.write_all(data)?;
        encoder.write_all(&[0u8; 512][..padding])?;
        Ok(DumpChunk {
            len: data.len() as u64,
            frame: encoder.finish()?,
        })
    }

    pub fn finish(self) -> DumpSummary {
        DumpSummary {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
            parts: self.parts,
        }
    }
}

type ArchiveFile = HashingWriter<io::BufWriter<WritebackFile>>;

/// The archive's zstd stream: the site's files compressed here (multithreaded), frame after
/// frame, with the dump's frames, compressed elsewhere, spliced in between.
struct Frames {
    encoder: Option<zstd::stream::write::Encoder<'static, ArchiveFile>>,
    level: i32,
    workers: u32,
}

impl Frames {
    fn new(file: ArchiveFile, level: i32, workers: u32) -> io::Result<Self> {
        let mut frames = Self {
            encoder: None,
            level,
            workers,
        };
        frames.encoder = Some(frames.encoder_for(file)?);
        Ok(frames)
    }

    fn encoder_for(
        &self,
        file: ArchiveFile,
    ) -> io::Result<zstd::stream::write::Encoder<'static, ArchiveFile>> {
        let mut encoder = zstd::stream::write::Encoder::new(file, self.level)?;
        if self.workers > 1 {
            encoder.multithread(self.workers)?;
        }
        Ok(encoder)
    }

    fn finish(&mut self) -> io::Result<ArchiveFile> {
        self.encoder
            .take()
            .ok_or_else(|| io::Error::other("the archive was finished already"))?
            .finish()
    }

    /// Ends the current frame, writes `frame` as it is, and starts the next.
    fn splice(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut file = self.finish()?;
        file.write_all(frame)?;
        self.encoder = Some(self.encoder_for(file)?);
        Ok(())
    }
}

impl Write for Frames {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.encoder {
            Some(e) => e.write(buf),
            None => Err(io::Error::other("the archive was finished already")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Some(e) => e.flush(),
            None => Ok(()),
        }
    }
}

/// Where an archive's `site/` entries come from.
pub enum SiteFiles {
    /// The site directory on this host. The directories in `skip_contents` (relative to it,
    /// such as its temporary files) are recorded empty. With `read_as`, the site's files are
    /// read with that user's and group's file system identity: the site owns its directory
    /// and can swap a directory for a symlink while it is read, and must then reach nothing
    /// it could not read itself.
    Dir {
        site_dir: PathBuf,
        skip_contents: Vec<PathBuf>,
        read_as: Option<(u32, u32)>,
    },
    /// A plain tar of the site directory, as [`write_files_tar`] makes it on the site's web
    /// server, streamed from there. Only directories, plain files and symlinks under relative
    /// names without `..` are taken; anything else fails the archive.
    Tar(Box<dyn io::Read + Send>),
}

/// Writes an archive to `path`: the site's files (see [`SiteFiles`]) as `site/`, the dump
/// chunks that arrive on `dump` (from a [`DumpEncoder`]) as `database/dump-NNNNN.sql`,
/// interleaved with the files as they come, and finally the manifest that `manifest` builds
/// from the site's files and the dump's summary. The archive itself is opened first, as the
/// caller. Blocking: run it on a blocking thread.
pub fn write_archive(
    path: &Path,
    files: SiteFiles,
    dump: Receiver<DumpPiece>,
    level: i32,
    workers: u32,
    manifest: impl FnOnce(&FileStats, &DumpSummary) -> Result<Vec<u8>, ArchiveError>,
) -> Result<Written, ArchiveError> {
    let file = WritebackFile {
        file: File::create(path)?,
        written: 0,
        started: 0,
    };
    let hashing = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut tar = tar::Builder::new(Frames::new(hashing, level, workers)?);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);

    let mut dump_state = DumpState {
        bytes: 0,
        parts: 0,
        open: true,
        summary: None,
    };
    let files = match files {
        SiteFiles::Dir {
            site_dir,
            skip_contents,
            read_as,
        } => {
            let _identity = read_as
                .map(|(uid, gid)| FsIdentity::assume(uid, gid))
                .transpose()?;
            walk_site_dir(
                &mut tar,
                &site_dir,
                &skip_contents,
                Path::new(SITE_PREFIX),
                |tar| dump_state.drain(tar, &dump, false),
            )?
        }
        SiteFiles::Tar(stream) => {
            copy_site_tar(&mut tar, stream, |tar| dump_state.drain(tar, &dump, false))?
        }
    };
    dump_state.drain(&mut tar, &dump, true)?;
    let summary = match dump_state.summary {
        Some(s) if s.bytes == dump_state.bytes && s.parts == dump_state.parts => s,
        _ => {
            return Err(ArchiveError::Refused(
                "the database dump was cut short".into(),
            ))
        }
    };
    let manifest_bytes = manifest(&files, &summary)?;
    append_bytes(&mut tar, MANIFEST_NAME, &manifest_bytes)?;
    let mut hashing = tar.into_inner()?.finish()?;
    hashing.flush()?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    hashing
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .file
        .sync_all()?;
    Ok(Written {
        size: hashing.bytes,
        sha256,
        files,
        dump: summary,
    })
}

/// Writes a plain tar of the site directory to `sink`, names relative to it, read as
/// `read_as` (see [`SiteFiles::Dir`]): what a web server's agent streams to the backup store,
/// which makes it into the archive's `site/` (see [`SiteFiles::Tar`]). Blocking.
pub fn write_files_tar<W: Write>(
    sink: W,
    site_dir: &Path,
    skip_contents: &[PathBuf],
    read_as: Option<(u32, u32)>,
) -> Result<(FileStats, W), ArchiveError> {
    let _identity = read_as
        .map(|(uid, gid)| FsIdentity::assume(uid, gid))
        .transpose()?;
    let mut tar = tar::Builder::new(sink);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let files = walk_site_dir(&mut tar, site_dir, skip_contents, Path::new(""), |_| Ok(()))?;
    let sink = tar.into_inner()?;
    Ok((files, sink))
}

/// Appends the site directory's entries under `prefix`, in name order, calling `each` after
/// every entry (the archive splices the dump's chunks in there).
fn walk_site_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    site_dir: &Path,
    skip_contents: &[PathBuf],
    prefix: &Path,
    mut each: impl FnMut(&mut tar::Builder<W>) -> Result<(), ArchiveError>,
) -> Result<FileStats, ArchiveError> {
    let mut files = FileStats::default();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = site_dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&full)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_child = rel.join(entry.file_name());
            let name = prefix.join(&rel_child);
            let ft = entry.file_type()?;
            if ft.is_dir() {
                tar.append_dir(&name, entry.path())?;
                if !skip_contents.contains(&rel_child) {
                    stack.push(rel_child);
                }
            } else if ft.is_file() {
                files.bytes += append_file(tar, &entry.path(), &name)?;
                files.count += 1;
            } else if ft.is_symlink() {
                tar.append_path_with_name(entry.path(), &name)?;
                files.count += 1;
            }
            // Sockets, fifos and devices in a site directory are not site data: skipped.
            each(tar)?;
        }
    }
    Ok(files)
}

/// Copies a site's files from a tar that another host made (see [`write_files_tar`]) under
/// `site/`, calling `each` after every entry. The other host is not trusted to send only
/// what it should: names must be relative with no `..`, and only directories, plain files
/// and symlinks pass.
fn copy_site_tar<W: Write>(
    tar: &mut tar::Builder<W>,
    stream: Box<dyn io::Read + Send>,
    mut each: impl FnMut(&mut tar::Builder<W>) -> Result<(), ArchiveError>,
) -> Result<FileStats, ArchiveError> {
    let mut files = FileStats::default();
    let mut source = tar::Archive::new(stream);
    for entry in source.entries()? {
        let mut entry = entry?;
        let rel = entry.path()?.into_owned();
        if rel.as_os_str().is_empty()
            || !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ArchiveError::Refused(format!(
                "the web server sent the site file {} (a name must be relative, without '..')",
                rel.display()
            )));
        }
        let name = Path::new(SITE_PREFIX).join(&rel);
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Directory => tar.append_data(&mut header, &name, io::empty())?,
            tar::EntryType::Regular => {
                let size = header.size()?;
                let mut counted = Counted {
                    inner: &mut entry,
                    bytes: 0,
                };
                tar.append_data(&mut header, &name, &mut counted)?;
                // A stream cut inside an entry gives fewer bytes than its header says.
                if counted.bytes != size {
                    return Err(ArchiveError::Refused(format!(
                        "{} arrived with {} of its {size} bytes",
                        rel.display(),
                        counted.bytes
                    )));
                }
                files.bytes += size;
                files.count += 1;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| {
                    ArchiveError::Refused(format!("the symlink {} has no target", rel.display()))
                })?;
                files.count += 1;
                tar.append_link(&mut header, &name, &target)?;
            }
            other => {
                return Err(ArchiveError::Refused(format!(
                    "the web server sent {} as a {other:?}: only directories, files and symlinks are site files",
                    rel.display()
                )))
            }
        }
        each(tar)?;
    }
    // The reader stops at the first end block; the rest (the second end block, the
    // sender's padding) is read too, so the sender sees its whole stream taken, and it must
    // be zeros.
    let mut rest = source.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = io::Read::read(&mut rest, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::Refused(
                "the site's files went on past the end of their tar".into(),
            ));
        }
    }
    Ok(files)
}

/// Counts what is read through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: io::Read> io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// This thread's file system identity (Linux's fsuid and fsgid, which are per thread) for as
/// long as the guard lives. Leaving uid 0 also drops the thread's file system capabilities,
/// so permissions are checked as for that user.
struct FsIdentity {
    /// This thread's supplementary groups before, to put back.
    groups: Vec<libc::gid_t>,
}

impl FsIdentity {
    /// Fails unless the thread then reads files as exactly `uid` and `gid`, with no
    /// supplementary group (root's group among them) left.
    fn assume(uid: u32, gid: u32) -> io::Result<Self> {
        // SAFETY: getgroups into a buffer of the size it asks for.
        let groups = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut groups = vec![0 as libc::gid_t; n.max(0) as usize];
            if n > 0 && libc::getgroups(n, groups.as_mut_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            groups
        };
        let guard = FsIdentity { groups };
        // SAFETY: the raw system calls change this thread's credentials only (glibc's
        // setgroups would change every thread's); the guard puts them back. The groups and
        // the gid first: once the fsuid is not 0, they could not be changed.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::setfsgid(gid);
            libc::setfsuid(uid);
            // setfsuid answers the previous value: asking with an invalid id reads it.
            let (now_uid, now_gid) = (
                libc::setfsuid(u32::MAX) as u32,
                libc::setfsgid(u32::MAX) as u32,
            );
            if now_uid != uid || now_gid != gid {
                return Err(io::Error::other(format!(
                    "could not take the identity {uid}:{gid} to read the site's files"
                )));
            }
        }
        Ok(guard)
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: back to this process's own ids and groups (the thread is reused by the pool).
        unsafe {
            libc::setfsuid(libc::geteuid());
            libc::setfsgid(libc::getegid());
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
        }
    }
}

/// Appends the regular file at `path` as `name`; returns the size recorded. The header is made
/// from the open file's own metadata, and exactly that many bytes follow it: a file that grows
/// while it is read (a log being written) is cut there, one that shrinks is padded with zeros,
/// as GNU tar does; copying whatever the file holds by then would write more or fewer bytes
/// than the header says and leave an archive no one can read.
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> Result<u64, ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOFOLLOW: if it was swapped for a symlink since the directory was read, it fails
    // here rather than archiving what the link points to. O_NONBLOCK: if it was swapped for a
    // fifo, opening it does not wait for a writer that never comes; it is refused below.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ArchiveError::Refused(format!(
            "{} stopped being a plain file while the backup read it",
            path.display()
        )));
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    let declared = meta.len();
    // Large reads: tar copies through an 8 KiB buffer, a read call per 8 KiB of media.
    let capacity = usize::try_from(declared.clamp(512, 256 << 10)).unwrap_or(256 << 10);
    let body = Exactly {
        inner: io::BufReader::with_capacity(capacity, file),
        left: declared,
        shrank: false,
    };
    tar.append_data(&mut header, name, body)?;
    Ok(declared)
}

/// Exactly `left` bytes of `inner`, zeros once it runs out.
struct Exactly<R> {
    inner: R,
    left: u64,
    shrank: bool,
}

impl<R: io::Read> io::Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = if self.shrank {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.shrank = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

struct DumpState {
    summary: Option<DumpSummary>,
    bytes: u64,
    parts: u32,
    open: bool,
}

impl DumpState {
    /// Appends the dump chunks that are ready; with `wait`, all of them until the sender
    /// closes.
    fn drain(
        &mut self,
        tar: &mut tar::Builder<Frames>,
        rx: &Receiver<DumpPiece>,
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
            let chunk = match chunk {
                DumpPiece::Chunk(c) => c,
                DumpPiece::End(summary) => {
                    self.summary = Some(summary);
                    continue;
                }
            };
            // Between two entries: the tar stream is at an entry boundary, so the chunk's
            // frame, one whole entry, fits in here.
            self.parts += 1;
            self.bytes += chunk.len;
            tar.get_mut().splice(&chunk.frame)?;
        }
        Ok(())
    }
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let header = entry_header(name, data.len())?;
    tar.append(&header, data)?;
    Ok(())
}

/// The header of a generated entry (the dump's chunks, the manifest): a plain file, 0600, now.
fn entry_header(name: &str, len: usize) -> Result<tar::Header, ArchiveError> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_size(len as u64);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_file_that_changes_while_read_gives_exactly_its_declared_size() {
        let read_all = |inner: &[u8], declared: u64| {
            let mut out = Vec::new();
            Exactly {
                inner,
                left: declared,
                shrank: false,
            }
            .read_to_end(&mut out)
            .unwrap();
            out
        };
        assert_eq!(read_all(b"hello world", 5), b"hello"); // grew: cut
        assert_eq!(read_all(b"hi", 5), b"hi\0\0\0"); // shrank: padded
        assert_eq!(read_all(b"", 0), b"");
    }
}

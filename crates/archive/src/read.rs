use crate::{ArchiveError, FileStats, Limits, Manifest, DUMP_PREFIX, MANIFEST_NAME, SITE_PREFIX};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

fn refused(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused(message.into())
}

pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads a file from a position of its own: the checksum and both passes read the one file
/// opened at the start, so the bytes proven are the bytes used, whatever happens to the path.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> At<'a> {
    fn start(file: &'a File) -> Self {
        At { file, pos: 0 }
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn sha256_of(file: &File) -> Result<String, ArchiveError> {
    let mut reader = At::start(file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: io::BufRead> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.hasher.update(&buf[..n]);
        }
        self.inner.consume(amt)
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Who owns what a restore unpacks: every entry belongs to the site's own user, whatever uid
/// the archive records; entries under `web_subtree` (the site's public files) get the web
/// server's group, so that nginx can serve them. Given as each entry is created, not by a
/// second walk over the tree.
#[derive(Debug, Clone)]
pub struct Handover {
    pub uid: u32,
    pub gid: u32,
    /// Relative to the site directory.
    pub web_subtree: PathBuf,
    pub web_gid: u32,
}

impl Handover {
    fn owner_of(handover: Option<&Handover>, inside: &Path) -> Option<(u32, u32)> {
        handover.map(|h| {
            if inside.starts_with(&h.web_subtree) {
                (h.uid, h.web_gid)
            } else {
                (h.uid, h.gid)
            }
        })
    }

    /// Gives `target` (the entry at `inside`, already checked not to be reached through a
    /// symlink) to its owner. `lchown`: a symlink itself, never what it points to.
    fn apply(handover: Option<&Handover>, inside: &Path, target: &Path) -> io::Result<()> {
        match Self::owner_of(handover, inside) {
            Some((uid, gid)) => std::os::unix::fs::lchown(target, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct Extracted {
    pub manifest: Manifest,
    pub files: FileStats,
}

/// A relative path of plain, UTF-8 components: no root, no `..`, no `.`-only tricks.
fn plain_relative(path: &Path) -> Result<PathBuf, ArchiveError> {
    let text = path
        .to_str()
        .ok_or_else(|| refused(format!("entry {path:?} has a name that is not UTF-8")))?;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(refused(format!("entry '{text}' climbs out with '..'")))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(format!("entry '{text}' is an absolute path")))
            }
        }
    }
    Ok(out)
}

/// Checks that no existing ancestor of `path` below `root` is a symlink, so creating `path`
/// cannot be redirected outside `root` by an entry unpacked earlier; missing ones are made
/// (and handed over where they should be). `checked` remembers the directories already seen
/// to be real: an entry can only add new paths (a symlink onto an existing directory fails),
/// so a directory once checked stays one, and thousands of files in one directory cost one
/// check, not one per file and ancestor.
fn no_symlink_ancestors(
    root: &Path,
    rel: &Path,
    checked: &mut std::collections::HashSet<PathBuf>,
    handover: Option<&Handover>,
) -> Result<(), ArchiveError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() || checked.contains(parent) {
        return Ok(());
    }
    let mut current = root.to_path_buf();
    let mut inside = PathBuf::new();
    for part in parent.components() {
        current.push(part);
        inside.push(part);
        if checked.contains(&inside) {
            continue;
        }
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(format!(
                    "entry '{}' would be written through the symlink '{}'",
                    rel.display(),
                    current.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(refused(format!(
                    "entry '{}' needs '{}' to be a directory",
                    rel.display(),
                    current.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&current)?;
                Handover::apply(handover, &inside, &current)?;
            }
            Err(e) => return Err(e.into()),
        }
        checked.insert(inside.clone());
    }
    Ok(())
}

/// Proves the archive against `expected_sha256` before any byte of it is used, then unpacks
/// its `site/` into `dest` (made here; it must not exist; on error it is removed again),
/// handing every entry to `handover`'s owner, and streams its dump, in order, into
/// `dump_sink`. The file is hashed again as it streams (so a file changed while it is read
/// fails too), and the manifest's dump checksum is checked at the end. Blocking.
pub fn extract(
    path: &Path,
    expected_sha256: &str,
    dest: &Path,
    limits: Limits,
    handover: Option<&Handover>,
    dump_sink: &mut (dyn Write + Send),
) -> Result<Extracted, ArchiveError> {
    if dest.exists() {
        return Err(refused(format!(
            "{} exists already; unpacking needs a fresh directory",
            dest.display()
        )));
    }
    // Integrity first: a tampered dump must not reach the database, not even a scratch one.
    let file = File::open(path)?;
    let actual = sha256_of(&file)?;
    if actual != expected_sha256 {
        return Err(refused(format!(
            "the archive's checksum is {actual}, but the backup record says {expected_sha256}: the file was changed or damaged, nothing of it was used"
        )));
    }
    extract_streaming(&file, expected_sha256, dest, limits, handover, dump_sink).map_err(|e| {
        // What was unpacked before the error is ours to remove.
        let _ = std::fs::remove_dir_all(dest);
        // A damaged file usually fails to decompress before its checksum can be compared:
        // say that it is damaged, which is what the user needs to know.
        match sha256_of(&file) {
            Ok(actual) if actual != expected_sha256 => refused(format!(
                "the archive's checksum is {actual}, but the backup record says {expected_sha256}: the file was changed or damaged"
            )),
            _ => match e {
                ArchiveError::Io(io) => refused(format!("the archive cannot be read ({io}): it is damaged or not a backup made here")),
                other => other,
            },
        }
    })
}

/// Reads the archive twice at once, each pass with its own decoder: one unpacks the site's
/// files (and checks every entry, the limits and the file's checksum), the other feeds the
/// dump to `dump_sink`. A backup writes the dump's chunks as they arrive, usually after most
/// files, so a single pass would leave the import idle while files unpack.
fn extract_streaming(
    path: &File,
    expected_sha256: &str,
    dest: &Path,
    limits: Limits,
    handover: Option<&Handover>,
    dump_sink: &mut (dyn Write + Send),
) -> Result<Extracted, ArchiveError> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (files, dump) = std::thread::scope(|scope| {
        let dump = scope.spawn(|| stream_dump(path, limits, dump_sink, &stop));
        let files = unpack_files(path, expected_sha256, dest, limits, handover);
        if files.is_err() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        (files, dump.join())
    });
    let (manifest, files, parts_seen) = files?;
    let (dump_sha, dump_bytes, dump_parts) =
        dump.map_err(|_| refused("the dump reader failed"))??;
    if dump_parts == 0
        || dump_parts != parts_seen
        || dump_sha != manifest.database.dump_sha256
        || dump_bytes != manifest.database.dump_bytes
    {
        return Err(refused(format!(
            "the database dump in the archive ({dump_bytes} bytes in {dump_parts} parts) does not match its manifest ({} bytes)",
            manifest.database.dump_bytes
        )));
    }
    if files.count != manifest.files.count {
        return Err(refused(format!(
            "the archive holds {} site files, its manifest says {}",
            files.count, manifest.files.count
        )));
    }
    Ok(Extracted { manifest, files })
}

/// The dump pass: database entries, in order, into `sink`; everything else skipped.
fn stream_dump(
    path: &File,
    limits: Limits,
    sink: &mut (dyn Write + Send),
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(String, u64, u32), ArchiveError> {
    let decoder = zstd::stream::read::Decoder::new(At::start(path))?;
    let mut archive = tar::Archive::new(decoder);
    let (mut hasher, mut bytes, mut parts, mut entries) = (Sha256::new(), 0u64, 0u32, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries()? {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(refused("stopped: the files pass refused the archive"));
        }
        let mut entry = entry?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(refused(format!(
                "the archive has more than {} entries (the restore limit)",
                limits.max_entries
            )));
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(part) = name.strip_prefix(DUMP_PREFIX) else {
            continue;
        };
        let expected = format!("{:05}.sql", parts + 1);
        if part != expected || !entry.header().entry_type().is_file() {
            return Err(refused(format!(
                "unexpected database entry '{name}' (expected {DUMP_PREFIX}{expected})"
            )));
        }
        parts += 1;
        // Refused by its header's size, before any of it is read.
        if bytes.saturating_add(entry.header().size()?) > limits.max_bytes {
            return Err(refused(format!(
                "the archive unpacks to more than {} bytes (the restore limit, or what its backup record says it holds)",
                limits.max_bytes
            )));
        }
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if bytes > limits.max_bytes {
                return Err(refused(format!(
                    "the archive unpacks to more than {} bytes (the restore limit)",
                    limits.max_bytes
                )));
            }
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])?;
        }
    }
    Ok((hex::encode(hasher.finalize()), bytes, parts))
}

/// The files pass: every entry checked, site files unpacked into `dest` (made here), dump
/// entries counted and skipped, the manifest read, the whole file's checksum compared.
fn unpack_files(
    path: &File,
    expected_sha256: &str,
    dest: &Path,
    limits: Limits,
    handover: Option<&Handover>,
) -> Result<(Manifest, FileStats, u32), ArchiveError> {
    // The checksum is computed while the archive streams and checked at the end: everything
    // before that lands in `dest` and the dump sink, which are scratch copies the caller
    // throws away on any error, so the site is untouched either way.
    std::fs::create_dir(dest)?;
    // Nobody but us reaches in while entries are made and handed to the site's user (who
    // could otherwise swap a directory for a symlink between our check and our write).
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))?;
    let hashing = HashingReader {
        inner: io::BufReader::with_capacity(1 << 20, At::start(path)),
        hasher: Sha256::new(),
    };
    let decoder = zstd::stream::read::Decoder::with_buffer(hashing)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries_seen: u64 = 0;
    let mut bytes_seen: u64 = 0;
    let mut files = FileStats::default();
    let mut manifest: Option<Manifest> = None;
    let mut dump_parts: u32 = 0;
    let mut checked_dirs = std::collections::HashSet::new();
    // One buffer for every file: io::copy's own is 8 KiB, a write per 8 KiB of media.
    let mut buf = vec![0u8; 1 << 20];

    for entry in archive.entries()? {
        let mut entry = entry?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(refused(format!(
                "the archive has more than {} entries (the restore limit)",
                limits.max_entries
            )));
        }
        let size = entry.header().size()?;
        bytes_seen = bytes_seen.saturating_add(size);
        if bytes_seen > limits.max_bytes {
            return Err(refused(format!(
                "the archive unpacks to more than {} bytes (the restore limit, or what its backup record says it holds)",
                limits.max_bytes
            )));
        }
        let raw_path = entry.path()?.into_owned();
        let rel = plain_relative(&raw_path)?;
        let kind = entry.header().entry_type();
        let name = rel.to_string_lossy().into_owned();

        if name == MANIFEST_NAME {
            let mut text = String::new();
            entry.by_ref().take(1 << 20).read_to_string(&mut text)?;
            manifest = Some(
                serde_json::from_str(&text)
                    .map_err(|e| refused(format!("the manifest does not parse: {e}")))?,
            );
            continue;
        }
        if let Some(part) = name.strip_prefix(DUMP_PREFIX) {
            let expected = format!("{:05}.sql", dump_parts + 1);
            if part != expected || !kind.is_file() {
                return Err(refused(format!(
                    "unexpected database entry '{name}' (expected {DUMP_PREFIX}{expected})"
                )));
            }
            dump_parts += 1; // the dump pass reads it
            continue;
        }
        let Ok(inside) = rel.strip_prefix(SITE_PREFIX) else {
            return Err(refused(format!(
                "entry '{name}' is neither site data, the database dump nor the manifest"
            )));
        };
        if inside.as_os_str().is_empty() {
            continue; // the site/ directory itself
        }
        no_symlink_ancestors(dest, inside, &mut checked_dirs, handover)?;
        let target = dest.join(inside);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777; // no setuid, setgid or sticky
        match kind {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(refused(format!(
                            "directory entry '{name}' collides with a file"
                        )))
                    }
                    Err(_) => std::fs::create_dir(&target)?,
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))?;
                Handover::apply(handover, inside, &target)?;
                checked_dirs.insert(inside.to_path_buf());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(&target)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            refused(format!("entry '{name}' appears twice"))
                        } else {
                            e.into()
                        }
                    })?;
                if let Some((uid, gid)) = Handover::owner_of(handover, inside) {
                    std::os::unix::fs::fchown(&out, Some(uid), Some(gid))?;
                }
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                }
                files.count += 1;
                files.bytes += size;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| refused(format!("symlink '{name}' has no target")))?
                    .into_owned();
                let text = link.to_str().ok_or_else(|| {
                    refused(format!("symlink '{name}' has a target that is not UTF-8"))
                })?;
                if link.is_absolute()
                    || link.components().any(|c| matches!(c, Component::ParentDir))
                {
                    return Err(refused(format!(
                        "symlink '{name}' points to '{text}', outside the site directory"
                    )));
                }
                std::os::unix::fs::symlink(&link, &target)?;
                Handover::apply(handover, inside, &target)?;
                files.count += 1;
            }
            tar::EntryType::Link => {
                return Err(refused(format!(
                    "entry '{name}' is a hard link; backups never contain them"
                )))
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(format!("entry '{name}' is a device file")))
            }
            tar::EntryType::Fifo => return Err(refused(format!("entry '{name}' is a fifo"))),
            other => {
                return Err(refused(format!(
                    "entry '{name}' has an unsupported type {other:?}"
                )))
            }
        }
    }
    // Hash whatever follows the tar's end marker too: the checksum covers the whole file.
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink())?;
    let mut hashing = decoder.finish();
    io::copy(&mut hashing.inner, &mut HashSink(&mut hashing.hasher))?;
    let actual = hex::encode(hashing.hasher.finalize());
    if actual != expected_sha256 {
        return Err(refused(format!(
            "the archive's checksum is {actual}, but the backup record says {expected_sha256}: the file was changed or damaged"
        )));
    }
    let manifest = manifest.ok_or_else(|| {
        refused("the archive has no hosting-backup.json: it is not a backup made here")
    })?;
    Ok((manifest, files, dump_parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_archive, DatabaseInfo, DumpEncoder, DumpPiece};

    fn manifest_for(
        files: &FileStats,
        sha: &str,
        bytes: u64,
        parts: u32,
    ) -> Result<Vec<u8>, ArchiveError> {
        let m = Manifest {
            format: 1,
            site: serde_json::json!({}),
            platform: serde_json::json!({}),
            packages: serde_json::json!([]),
            database: DatabaseInfo {
                engine: "mariadb".into(),
                version: "test".into(),
                dump_sha256: sha.into(),
                dump_bytes: bytes,
                dump_parts: parts,
                rows: Default::default(),
            },
            files: *files,
            created: "now".into(),
        };
        serde_json::to_vec(&m).map_err(|e| refused(e.to_string()))
    }

    #[test]
    fn an_archive_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("files/sub")).unwrap();
        std::fs::write(site.join("settings.php"), "<?php return [];").unwrap();
        std::fs::write(site.join("files/sub/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", site.join("files/link")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dump = DumpEncoder::new(3, 2);
        let chunk =
            |data: &[u8], dump: &mut DumpEncoder| DumpPiece::Chunk(dump.chunk(data).unwrap());
        tx.send(chunk(b"CREATE TABLE t (x int);\n", &mut dump))
            .unwrap();
        tx.send(chunk(b"-- Dump completed\n", &mut dump)).unwrap();
        tx.send(DumpPiece::End(dump.finish())).unwrap();
        drop(tx);
        let path = dir.path().join("b.tar.zst");
        let w = write_archive(
            &path,
            crate::SiteFiles::Dir {
                site_dir: site.clone(),
                skip_contents: vec![],
                read_as: None,
            },
            rx,
            3,
            2,
            |files, d| manifest_for(files, &d.sha256, d.bytes, d.parts),
        )
        .unwrap();
        assert_eq!(w.files.count, 3);
        assert_eq!(w.dump.parts, 2);
        let mut dump = Vec::new();
        let out = dir.path().join("restored");
        let x = extract(&path, &w.sha256, &out, Limits::default(), None, &mut dump).unwrap();
        assert_eq!(x.files.count, 3);
        assert_eq!(dump, b"CREATE TABLE t (x int);\n-- Dump completed\n");
        assert_eq!(
            std::fs::read_to_string(out.join("files/link")).unwrap(),
            "hello"
        );
        // A changed byte fails the checksum before anything is written.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = extract(
            &path,
            &w.sha256,
            &dir.path().join("again"),
            Limits::default(),
            None,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(!dir.path().join("again").exists());
    }

    fn finished_dump() -> std::sync::mpsc::Receiver<DumpPiece> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dump = DumpEncoder::new(3, 1);
        tx.send(DumpPiece::Chunk(
            dump.chunk(b"-- Dump completed\n").unwrap(),
        ))
        .unwrap();
        tx.send(DumpPiece::End(dump.finish())).unwrap();
        rx
    }

    #[test]
    fn site_files_streamed_from_another_host_make_the_same_archive() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("files/sub")).unwrap();
        std::fs::create_dir_all(site.join("private/tmp")).unwrap();
        std::fs::write(site.join("private/tmp/skipped"), "x").unwrap();
        std::fs::write(site.join("settings.php"), "<?php return [];").unwrap();
        std::fs::write(site.join("files/sub/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", site.join("files/link")).unwrap();
        let skip = [std::path::PathBuf::from("private/tmp")];
        let (sent, stream) = crate::write_files_tar(Vec::new(), &site, &skip, None).unwrap();
        assert_eq!(sent.count, 3);
        let path = dir.path().join("b.tar.zst");
        let stream: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(stream));
        let w = write_archive(
            &path,
            crate::SiteFiles::Tar(stream),
            finished_dump(),
            3,
            1,
            |files, d| manifest_for(files, &d.sha256, d.bytes, d.parts),
        )
        .unwrap();
        assert_eq!((w.files.count, w.files.bytes), (sent.count, sent.bytes));
        let out = dir.path().join("restored");
        extract(
            &path,
            &w.sha256,
            &out,
            Limits::default(),
            None,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("files/link")).unwrap(),
            "hello"
        );
        assert!(out.join("private/tmp").is_dir());
        assert!(!out.join("private/tmp/skipped").exists());
    }

    #[test]
    fn a_streamed_tar_that_reaches_out_of_the_site_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("../escape", tar::EntryType::Regular),
            ("fifo", tar::EntryType::Fifo),
        ] {
            let mut raw = Vec::new();
            {
                let mut b = tar::Builder::new(&mut raw);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_size(0);
                h.set_mode(0o644);
                // set_path refuses `..`; a hostile host writes the name bytes itself.
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
                b.finish().unwrap();
            }
            let stream: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(raw));
            let path = dir.path().join("bad.tar.zst");
            let err = write_archive(
                &path,
                crate::SiteFiles::Tar(stream),
                finished_dump(),
                3,
                1,
                |files, d| manifest_for(files, &d.sha256, d.bytes, d.parts),
            )
            .unwrap_err();
            assert!(matches!(err, ArchiveError::Refused(_)), "{name}: {err}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::{write_archive, DatabaseInfo, DumpEncoder, DumpPiece};
    use propcheck::Gen;
    use sha2::Digest;

    fn a_backup(dir: &Path) -> Vec<u8> {
        let site = dir.join("site-src");
        std::fs::create_dir_all(site.join("files/sub")).unwrap();
        std::fs::write(site.join("settings.php"), "<?php return [];").unwrap();
        std::fs::write(site.join("files/sub/a.txt"), "hello".repeat(100)).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", site.join("files/link")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dump = DumpEncoder::new(3, 1);
        tx.send(DumpPiece::Chunk(
            dump.chunk(b"CREATE TABLE t (x int);\n-- Dump completed\n")
                .unwrap(),
        ))
        .unwrap();
        tx.send(DumpPiece::End(dump.finish())).unwrap();
        drop(tx);
        let path = dir.join("b.tar.zst");
        write_archive(
            &path,
            crate::SiteFiles::Dir {
                site_dir: site.clone(),
                skip_contents: vec![],
                read_as: None,
            },
            rx,
            3,
            1,
            |files, d| {
                let m = Manifest {
                    format: 1,
                    site: serde_json::json!({}),
                    platform: serde_json::json!({}),
                    packages: serde_json::json!([]),
                    database: DatabaseInfo {
                        engine: "mariadb".into(),
                        version: "test".into(),
                        dump_sha256: d.sha256.clone(),
                        dump_bytes: d.bytes,
                        dump_parts: d.parts,
                        rows: Default::default(),
                    },
                    files: *files,
                    created: "now".into(),
                };
                serde_json::to_vec(&m).map_err(|e| refused(e.to_string()))
            },
        )
        .unwrap();
        std::fs::read(path).unwrap()
    }

    /// Damaged or hostile archives whose checksum the record matches (an attacker who can
    /// write the store and the database): reading them panics never and writes nothing
    /// outside the directory it unpacks into.
    #[test]
    fn archives_are_read_totally() {
        let dir = tempfile::tempdir().unwrap();
        let good = a_backup(dir.path());
        let mut g = Gen::new(0xa4c_b1e5);
        let zone = dir.path().join("zone");
        std::fs::create_dir_all(&zone).unwrap();
        for round in 0..300 {
            let bytes = match g.below(4) {
                0 => g.bytes(4096),
                1 => {
                    let mut b = good.clone();
                    for _ in 0..=g.below(8) {
                        let at = g.below(b.len());
                        b[at] ^= 1 << g.below(8);
                    }
                    b
                }
                2 => good[..g.below(good.len())].to_vec(),
                _ => {
                    // A valid zstd stream of a tar of random bytes.
                    let raw = g.bytes(8192);
                    zstd::encode_all(&raw[..], 1).unwrap()
                }
            };
            let path = dir.path().join("x.tar.zst");
            std::fs::write(&path, &bytes).unwrap();
            let sha = hex::encode(Sha256::digest(&bytes));
            let dest = zone.join(format!("d{round}"));
            let mut sink = Vec::new();
            let limits = Limits {
                max_entries: 1000,
                max_bytes: 1 << 20,
            };
            let _ = extract(&path, &sha, &dest, limits, None, &mut sink);
            let outside: Vec<_> = std::fs::read_dir(&zone)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('d'))
                .collect();
            assert!(outside.is_empty(), "round {round}: {outside:?}");
            let _ = std::fs::remove_dir_all(&dest);
        }
    }
}

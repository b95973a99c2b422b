//! Backup archives.
//!
//! An archive is one zstd-compressed tar file:
//! - `site/...`: the site directory;
//! - `database/dump-00001.sql`, ...: the database dump, in chunks, because a tar entry needs
//!   its size up front and the dump is streamed (no temporary copy of it, or of the site);
//! - `hosting-backup.json`: the manifest, last, since it records counts and checksums.
//!
//! The dump's chunks are interleaved with the site's files as they arrive, so dumping and
//! reading files overlap. Each chunk's entry is compressed as a zstd frame of its own, on the
//! dump's side, and spliced in between the frames of the files, so the two are compressed at
//! the same time; the file is an ordinary `.tar.zst` (`zstd -d | tar -x` reads it). A file that
//! changes while it is archived is cut or padded to the size its header records. The whole
//! archive is hashed (SHA-256) while it is written, and its writeback to disk starts as it is
//! written, so the final `fsync` is short.
//!
//! Reading is for untrusted input: the archive's checksum must match the record, every entry
//! must be a plain file, directory or symlink under `site/` or `database/`, with no `..`,
//! absolute path or non-UTF-8 name; symlinks may not point up (`..`) or to absolute paths;
//! hard links, devices and fifos are refused; entry count and unpacked bytes are capped. Files
//! are created without following symlinks, and setuid/setgid bits are dropped.

mod read;
mod write;

pub use read::*;
pub use write::*;

use serde::{Deserialize, Serialize};

pub const MANIFEST_NAME: &str = "hosting-backup.json";
pub const SITE_PREFIX: &str = "site";
pub const DUMP_PREFIX: &str = "database/dump-";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What `hosting-backup.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub site: serde_json::Value,
    pub platform: serde_json::Value,
    #[serde(default)]
    pub packages: serde_json::Value,
    pub database: DatabaseInfo,
    pub files: FileStats,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseInfo {
    pub engine: String,
    pub version: String,
    pub dump_sha256: String,
    pub dump_bytes: u64,
    pub dump_parts: u32,
    /// Rows per table when the dump started.
    #[serde(default)]
    pub rows: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct FileStats {
    pub count: u64,
    pub bytes: u64,
}

/// Caps on what a restore unpacks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Limits {
    /// These limits, narrowed to what a backup's record says it holds, with a margin: an
    /// archive swapped for a bigger one (or a zip bomb behind a matching checksum) is refused
    /// as soon as an entry's header says it would pass them, before it is written.
    pub fn narrowed_to(self, files: u64, file_bytes: u64, dump_bytes: u64) -> Self {
        let bytes = file_bytes
            .saturating_add(dump_bytes)
            .saturating_add(file_bytes.saturating_add(dump_bytes) / 10)
            .saturating_add(64 << 20);
        // Directories are not counted among the files: room for as many again, and more.
        let entries = files.saturating_mul(2).saturating_add(10_000);
        Self {
            max_entries: self.max_entries.min(entries),
            max_bytes: self.max_bytes.min(bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 50 << 30,
        }
    }
}

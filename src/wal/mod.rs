//! A node's durable log: numbered, checksummed records appended before a change is
//! acknowledged, snapshots that let old records go, and recovery after a crash.
//!
//! Bytes only: what a record means is the store's business ([`crate::storage::journal`]).
//! The log lives in one directory:
//!
//! - `<first position>.log`: segments of [`frame`]s, each record's position one more than
//!   the one before it, across segments;
//! - `snapshot-<position>.snap`: every record needed to rebuild what the node held before
//!   that position, written while writes go on; recovery loads the newest complete snapshot,
//!   then the log from its position on (records the snapshot already saw merge again to the
//!   same state).
//!
//! A cut-off or torn end of the last segment (a crash mid-write) is cut at the last intact
//! record; a bad record with intact ones after it, or a gap in the positions, stops recovery
//! with [`OpenError::Damaged`].

pub mod frame;
pub mod reader;
pub mod snapshot;
mod writer;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use snapshot::{SnapshotWriter, read_snapshot};
pub use writer::{Log, SEGMENT_BYTES, SyncPoint};

/// The log is snapshotted once it has grown by this much, or by the size of the last
/// snapshot if that is larger (as Redis rewrites its AOF once it has doubled).
pub const DEFAULT_SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing local: a restarted node comes back empty and refills from its replicas.
    Memory,
    /// A crash of the process: a write is in the operating system's hands before it is
    /// acknowledged, and on disk within about a second.
    #[default]
    EverySec,
    /// Also a power loss: a write is on disk (`fdatasync`) before it is acknowledged.
    Always,
}

impl Durability {
    /// The name the cluster file uses.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::EverySec => "everysec",
            Durability::Always => "always",
        }
    }
}

/// Why a log or snapshot cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A record is damaged where intact records follow it, or records are missing: the node
    /// cannot know what it held.
    #[error(
        "{}: {why} at byte {offset}; this is damage, not a crash's cut-off end, so the node \
         will not guess what it held. Move {} away (the node then starts empty and refills \
         from its replicas, as a new node does), or restore it from a backup",
        path.display(),
        dir.display()
    )]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        why: String,
        /// The directory to move away.
        dir: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file of the segment whose first record has position `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// The segments of `dir`, first position and path, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    numbered(dir, "", ".log")
}

/// The snapshots of `dir` (complete or not), covered position and path, oldest first.
pub fn snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    numbered(dir, "snapshot-", ".snap")
}

fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The position the next record gets.
    pub next: u64,
    /// Records applied.
    pub records: u64,
    /// Bytes in the segments.
    pub on_disk: u64,
    /// Where a torn end was cut off: the file and the length it was cut to.
    pub cut: Option<(PathBuf, u64)>,
}

/// Takes one record (its position and payload); an error says why it cannot be read.
pub type Apply<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Hands every record of the log in `dir` from position `from` on to `apply`, in order, and
/// cuts a torn end off the last segment. `apply` refusing a record (it does not decode) is
/// damage too.
pub fn replay(dir: &Path, from: u64, apply: &mut Apply<'_>) -> Result<Replayed, OpenError> {
    let segments = segments(dir)?;
    let mut replayed = Replayed {
        next: from.max(1),
        ..Replayed::default()
    };
    // The position the next record must have, once one has been seen.
    let mut expected: Option<u64> = None;
    let last = segments.len().saturating_sub(1);
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(io_error(path))?;
        let damaged = |offset: usize, why: String| OpenError::Damaged {
            path: path.clone(),
            offset: offset as u64,
            why,
            dir: dir.to_path_buf(),
        };
        // Segments wholly before `from` are covered by the snapshot.
        if let Some((next_first, _)) = segments.get(i + 1)
            && *next_first <= from
        {
            replayed.on_disk += bytes.len() as u64;
            continue;
        }
        let mut at = 0;
        loop {
            match frame::decode(&bytes[at..]) {
                Ok(None) => break,
                Ok(Some((frame, len))) => {
                    let want = expected.unwrap_or(*first);
                    if frame.position != want {
                        return Err(damaged(
                            at,
                            format!(
                                "record {} where record {want} should be (records are missing)",
                                frame.position
                            ),
                        ));
                    }
                    if expected.is_none() && frame.position > from.max(1) {
                        return Err(damaged(
                            at,
                            format!(
                                "the log starts at record {} but records from {} on are needed \
                                 (a segment is missing)",
                                frame.position,
                                from.max(1)
                            ),
                        ));
                    }
                    expected = Some(frame.position + 1);
                    if frame.position >= from {
                        apply(frame.position, frame.payload).map_err(|why| {
                            damaged(
                                at,
                                format!("record {} cannot be read: {why}", frame.position),
                            )
                        })?;
                        replayed.records += 1;
                    }
                    replayed.next = frame.position + 1;
                    at += len;
                }
                Err(bad) => {
                    let after = expected.map_or(0, |e| e.saturating_sub(1));
                    if i != last || frame::intact_frame_follows(&bytes[at..], after) {
                        return Err(damaged(at, format!("a {} record", describe(bad))));
                    }
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        dropped_bytes = bytes.len() - at,
                        "the log ends in a record cut off by a crash; cutting it off there"
                    );
                    cut_at(path, at as u64)?;
                    replayed.cut = Some((path.clone(), at as u64));
                    break;
                }
            }
        }
        replayed.on_disk += at as u64;
        if expected.is_none() && *first > replayed.next {
            // An empty segment (a crash right after it was made) still names a position.
            replayed.next = *first;
        }
    }
    // Positions a snapshot covers are never handed out again, even if the records just
    // before it never reached the disk.
    replayed.next = replayed.next.max(from);
    Ok(replayed)
}

fn describe(bad: frame::Bad) -> &'static str {
    match bad {
        frame::Bad::Short => "cut-off",
        frame::Bad::Checksum => "damaged (checksum mismatch)",
    }
}

fn cut_at(path: &Path, len: u64) -> Result<(), OpenError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Deletes what a complete snapshot covering `covers` makes unnecessary: older snapshots,
/// and segments whose every record comes before `covers` (the one holding `covers - 1`
/// stays if it holds later records too). Returns the segment bytes deleted.
pub fn compact(dir: &Path, covers: u64) -> Result<u64, OpenError> {
    for (position, path) in snapshots(dir)? {
        if position < covers {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    let segments = segments(dir)?;
    let mut freed = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        let Some((next_first, _)) = segments.get(i + 1) else {
            break;
        };
        if *next_first > covers {
            break;
        }
        freed += fs::metadata(path).map_or(0, |m| m.len());
        fs::remove_file(path).map_err(io_error(path))?;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests;

//! Reading the log while it is written: a cursor from a position on, across segments, up to
//! what the writer has made durable. The change feed reads the log this way, from the files,
//! so a consumer far behind costs disk reads, not memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{frame, segments};

/// A position the log no longer has (compacted away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// The oldest position the log has.
    pub oldest: u64,
}

/// Where a reader is in the log.
pub struct Cursor {
    dir: PathBuf,
    /// The position of the next record to hand out.
    next: u64,
    /// The open segment and the offset of the next frame in it.
    open: Option<(File, u64)>,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The records wanted were compacted away.
    #[error("position {} is gone; the oldest the log has is {}", wanted, gone.oldest)]
    Gone {
        /// The position asked for.
        wanted: u64,
        /// What the log has.
        gone: Gone,
    },
    /// A file could not be read, or holds a damaged record.
    #[error("{0}")]
    Io(String),
}

impl Cursor {
    /// A cursor at `from` (0: the oldest record the log has).
    pub fn open(dir: &Path, from: u64) -> Result<Cursor, ReadError> {
        let oldest = oldest(dir)?;
        if from != 0 && from < oldest {
            return Err(ReadError::Gone {
                wanted: from,
                gone: Gone { oldest },
            });
        }
        Ok(Cursor {
            dir: dir.to_path_buf(),
            next: from.max(oldest),
            open: None,
        })
    }

    /// The position of the next record it hands out.
    pub fn next_position(&self) -> u64 {
        self.next
    }

    /// Up to `max` records (position and payload) from the cursor on, all before `upto`
    /// (the log's durable position: every record before it is completely in its file).
    pub fn read(&mut self, upto: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut out = Vec::new();
        // The position at which this call last moved to the next segment: finding the end
        // again there (an empty segment) means nothing more is readable yet.
        let mut moved_at = None;
        while out.len() < max && self.next < upto {
            let (file, offset) = match self.open.take() {
                Some(open) => open,
                None => (self.segment_holding(self.next)?, 0),
            };
            let mut header = [0u8; frame::HEADER];
            if file.read_exact_at(&mut header, offset).is_err() {
                // The end of this segment: the next record is the first of the next one.
                let next_segment = segments(&self.dir)
                    .map_err(|e| ReadError::Io(e.to_string()))?
                    .into_iter()
                    .find(|(first, _)| *first == self.next);
                match next_segment {
                    Some(_) if moved_at == Some(self.next) => {
                        self.open = Some((file, offset));
                        break;
                    }
                    Some((_, path)) => {
                        moved_at = Some(self.next);
                        let file = File::open(&path)
                            .map_err(|e| ReadError::Io(format!("{}: {e}", path.display())))?;
                        self.open = Some((file, 0));
                        continue;
                    }
                    None => {
                        // Every record before `upto` is in a file: if none holds the next
                        // one, it was compacted away under this reader.
                        let oldest = oldest(&self.dir)?;
                        if oldest > self.next {
                            return Err(ReadError::Gone {
                                wanted: self.next,
                                gone: Gone { oldest },
                            });
                        }
                        self.open = Some((file, offset));
                        break;
                    }
                }
            }
            let length = frame::Header::parse(&header).length;
            let size = file.metadata().map_or(0, |m| m.len());
            if offset + (frame::HEADER + length) as u64 > size {
                // Never allocate what a damaged length says; a frame being written is not
                // read before the writer says it is complete.
                self.open = Some((file, offset));
                break;
            }
            let mut bytes = vec![0u8; frame::HEADER + length];
            bytes[..frame::HEADER].copy_from_slice(&header);
            if file
                .read_exact_at(&mut bytes[frame::HEADER..], offset + frame::HEADER as u64)
                .is_err()
            {
                self.open = Some((file, offset));
                break;
            }
            let (record, len) = match frame::decode(&bytes) {
                Ok(Some(decoded)) => decoded,
                _ => {
                    return Err(ReadError::Io(format!(
                        "a damaged record in {} near position {}",
                        self.dir.display(),
                        self.next
                    )));
                }
            };
            let position = record.position;
            let payload = record.payload.to_vec();
            self.open = Some((file, offset + len as u64));
            if position < self.next {
                continue;
            }
            self.next = position + 1;
            out.push((position, payload));
        }
        Ok(out)
    }

    /// The segment that holds record `position`: the last one starting at or before it.
    fn segment_holding(&self, position: u64) -> Result<File, ReadError> {
        let all = segments(&self.dir).map_err(|e| ReadError::Io(e.to_string()))?;
        let oldest = all.first().map_or(position, |(first, _)| *first);
        let Some((_, path)) = all.into_iter().rev().find(|(first, _)| *first <= position) else {
            return Err(ReadError::Gone {
                wanted: position,
                gone: Gone { oldest },
            });
        };
        File::open(&path).map_err(|e| ReadError::Io(format!("{}: {e}", path.display())))
    }
}

/// The oldest position the log in `dir` has a record of (1 for an empty log).
pub fn oldest(dir: &Path) -> Result<u64, ReadError> {
    Ok(segments(dir)
        .map_err(|e| ReadError::Io(e.to_string()))?
        .first()
        .map_or(1, |(first, _)| *first))
}

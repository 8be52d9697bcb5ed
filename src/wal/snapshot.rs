//! Snapshot files: the records that rebuild a node's state, written to a temporary file and
//! renamed into place once complete and synced, so a crash mid-snapshot leaves the previous
//! snapshot and the log it needs untouched.
//!
//! The same [`frame`]s as the log, numbered from 1, and a last frame at position `u64::MAX`
//! whose payload is the count of frames before it: a file without it is incomplete.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{OpenError, frame, io_error};

/// The position of a snapshot's closing frame.
const END: u64 = u64::MAX;

/// The file of the snapshot that covers every record before `covers`.
pub fn snapshot_path(dir: &Path, covers: u64) -> PathBuf {
    dir.join(format!("snapshot-{covers:020}.snap"))
}

/// A snapshot being written.
pub struct SnapshotWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    done: PathBuf,
    count: u64,
    buf: Vec<u8>,
    bytes: u64,
    finished: bool,
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // A snapshot given up on leaves no temporary file behind.
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl SnapshotWriter {
    /// Starts the snapshot of `dir` that covers every record before `covers`.
    pub fn create(dir: &Path, covers: u64) -> std::io::Result<SnapshotWriter> {
        let done = snapshot_path(dir, covers);
        let tmp = done.with_extension("snap.tmp");
        let file = File::create(&tmp)?;
        Ok(SnapshotWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            tmp,
            done,
            count: 0,
            buf: Vec::new(),
            bytes: 0,
            finished: false,
        })
    }

    /// Adds one record, whose payload `write` appends to the buffer it is given.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        self.count += 1;
        self.buf.clear();
        frame::push(&mut self.buf, self.count, write);
        self.bytes += self.buf.len() as u64;
        self.file.write_all(&self.buf)?;
        // One very large value must not keep its buffer alive.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Closes, syncs and renames the snapshot into place; returns its size in bytes.
    pub fn finish(mut self) -> std::io::Result<u64> {
        let count = self.count;
        self.buf.clear();
        frame::push(&mut self.buf, END, |b| {
            b.extend_from_slice(&count.to_le_bytes())
        });
        self.bytes += self.buf.len() as u64;
        self.file.write_all(&self.buf)?;
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        fs::rename(&self.tmp, &self.done)?;
        self.finished = true;
        if let Some(dir) = self.done.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.bytes)
    }
}

/// What reading a snapshot found.
#[derive(Debug)]
pub enum SnapshotRead {
    /// Complete: this many records were applied.
    Complete(u64),
    /// It ends before its closing frame (a crash while it was written): not to be used.
    Incomplete,
}

/// Hands every record of the snapshot at `path` to `apply`, in order. A damaged record is
/// [`OpenError::Damaged`]; a missing end is [`SnapshotRead::Incomplete`] (records already
/// applied then must be discarded by the caller).
pub fn read_snapshot(
    path: &Path,
    apply: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<SnapshotRead, OpenError> {
    let file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let damaged = |offset: u64, why: String| OpenError::Damaged {
        path: path.to_path_buf(),
        offset,
        why,
        dir: dir.clone(),
    };
    let mut offset = 0u64;
    let mut count = 0u64;
    let mut header = [0u8; frame::HEADER];
    let mut payload = Vec::new();
    loop {
        if !read_full(&mut reader, &mut header).map_err(io_error(path))? {
            return Ok(SnapshotRead::Incomplete);
        }
        let head = frame::Header::parse(&header);
        let (length, position) = (head.length, head.position);
        if offset + (frame::HEADER + length) as u64 > size {
            // Never allocate what a damaged length says: the file cannot hold it.
            return Ok(SnapshotRead::Incomplete);
        }
        payload.clear();
        payload.resize(length, 0);
        if !read_full(&mut reader, &mut payload).map_err(io_error(path))? {
            return Ok(SnapshotRead::Incomplete);
        }
        if !head.checks(&payload) {
            return Err(damaged(
                offset,
                "a damaged record (checksum mismatch)".into(),
            ));
        }
        if position == END {
            let mut n = [0; 8];
            if payload.len() != 8 {
                return Err(damaged(offset, "a damaged closing record".into()));
            }
            n.copy_from_slice(&payload);
            let n = u64::from_le_bytes(n);
            if n != count {
                return Err(damaged(
                    offset,
                    format!("the snapshot says it holds {n} records but {count} were read"),
                ));
            }
            return Ok(SnapshotRead::Complete(count));
        }
        count += 1;
        if position != count {
            return Err(damaged(
                offset,
                format!("record {position} where record {count} should be"),
            ));
        }
        apply(&payload)
            .map_err(|why| damaged(offset, format!("record {count} cannot be read: {why}")))?;
        offset += (frame::HEADER + length) as u64;
        // A large record's buffer is not kept for the small ones after it.
        if payload.capacity() > 1 << 20 {
            payload = Vec::new();
        }
    }
}

/// Fills `buf`; `false` if the reader ended first (a file cut short).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match reader.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

//! Writing the log: group commit.
//!
//! Appenders put their frames into one shared buffer (taking a position each, in buffer
//! order) and return. Whoever writes takes the whole buffer at a time, under the file's lock
//! (so batches reach the file in position order), writes it to the current segment with one
//! `write`, and, under `always`, `fdatasync`s it before it tells the waiters.
//!
//! - Under `always` a writer thread does it: every request that arrived while the disk was
//!   busy goes out in the next batch, so `always` costs one `fsync` per batch, not per write.
//! - Under `everysec` the request that needs its records written (a [`Log::sync_point`])
//!   writes the buffer itself, with everyone else's records in it: one `write` to the page
//!   cache, no hand-off to another thread. The writer thread writes what no request waits
//!   for (anti-entropy, expiries) within a few milliseconds, and a second thread `fdatasync`s
//!   once a second; nobody waits for the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Durability, frame, segment_path};

/// A segment is closed and a new one started past this size: compaction drops whole
/// segments, so smaller ones free disk sooner.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What appenders and the writer share.
struct Pending {
    /// Frames not yet handed to the writer.
    buf: Vec<u8>,
    /// The position the next appended record gets.
    next: u64,
    /// Start a new segment before the frame at this offset of `buf`, whose position is
    /// given: what was appended before the request stays in the old segment.
    rotate: Option<(usize, u64)>,
    /// The log is closing: write what is left and stop.
    closing: bool,
}

/// The writing side: the current segment and a spare buffer.
struct Output {
    file: File,
    /// Bytes in `file` (no `stat` per write).
    len: u64,
    spare: Vec<u8>,
}

pub(super) struct Shared {
    pending: Mutex<Pending>,
    /// Taken before `pending` by whoever writes.
    output: Mutex<Output>,
    wake: Condvar,
    /// Every record before this position is written (and, under `always`, synced).
    done: tokio::sync::watch::Sender<u64>,
    /// [`Shared::done`] without a lock, for the fast check of a sync point.
    done_fast: AtomicU64,
    /// Mirrors [`Pending::next`] for readers that must not take the lock.
    next_fast: AtomicU64,
    /// Bytes written since the last rotation.
    since_rotation: AtomicU64,
    /// Total bytes in the segment files.
    on_disk: AtomicU64,
    /// The segment the syncer syncs.
    current: Mutex<Option<File>>,
    /// The last write error, cleared when writing works again.
    error: Mutex<Option<String>>,
    /// Set by [`Log::close`], for the syncer.
    closed: AtomicBool,
    durability: Durability,
    dir: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes whatever is pending with `out` (the file's lock held). Returns whether the log
    /// is closing.
    fn write_pending(&self, out: &mut Output) -> bool {
        let (mut batch, end, rotate, closing) = {
            let mut pending = self.lock();
            let batch = std::mem::replace(&mut pending.buf, std::mem::take(&mut out.spare));
            (batch, pending.next, pending.rotate.take(), pending.closing)
        };
        if batch.is_empty() && rotate.is_none() {
            out.spare = batch;
            return closing;
        }
        // A rotation asked for part-way through the buffer: what was appended before it goes
        // to the old segment, so the new one starts exactly at the position it promised.
        let split = rotate.map_or(batch.len(), |(at, _)| at.min(batch.len()));
        write_part(self, out, &batch[..split]);
        if let Some((_, first)) = rotate
            && start_segment(self, out, first)
        {
            self.since_rotation.store(0, Ordering::Relaxed);
        }
        write_part(self, out, &batch[split..]);
        self.done_fast.store(end, Ordering::Release);
        self.done.send_replace(end);
        // Keep the buffer's allocation for the next batch, unless a burst made it huge.
        batch.clear();
        if batch.capacity() <= 4 * 1024 * 1024 {
            out.spare = batch;
        }
        if out.len >= SEGMENT_BYTES {
            start_segment(self, out, end);
        }
        closing
    }
}

/// An open log, appending from `next`.
pub struct Log {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A point in the log a caller may wait for: every record appended before it was taken is
/// durable (as the log's durability says) once it is reached.
pub struct SyncPoint {
    shared: Arc<Shared>,
    target: u64,
}

impl SyncPoint {
    /// Waits until the point is reached (at once if it is). Under `everysec` it first lets
    /// the other requests that are ready append their records, then writes them all with one
    /// `write` (unless another writer is at it): group commit without a thread hand-off.
    pub async fn reached(self) {
        let shared = &self.shared;
        let target = self.target;
        if shared.durability == Durability::EverySec {
            tokio::task::yield_now().await;
            if shared.done_fast.load(Ordering::Acquire) < target
                && let Ok(mut out) = shared.output.try_lock()
            {
                shared.write_pending(&mut out);
            }
            if shared.done_fast.load(Ordering::Acquire) >= target {
                return;
            }
        }
        let mut done = shared.done.subscribe();
        // The sender lives as long as the log; an error means it closed, and then nothing
        // more will be written anyway.
        let _ = done.wait_for(|done| *done >= target).await;
    }
}

impl Log {
    /// Starts appending at position `next` in a new segment of `dir` (which must exist),
    /// with `on_disk` bytes of earlier segments already there.
    pub fn start(
        dir: &Path,
        durability: Durability,
        next: u64,
        on_disk: u64,
    ) -> std::io::Result<Log> {
        let file = open_segment(dir, next)?;
        let (done, _) = tokio::sync::watch::channel(next);
        let shared = Arc::new(Shared {
            output: Mutex::new(Output {
                file: file.try_clone()?,
                len: 0,
                spare: Vec::new(),
            }),
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                next,
                rotate: None,
                closing: false,
            }),
            wake: Condvar::new(),
            done,
            done_fast: AtomicU64::new(next),
            next_fast: AtomicU64::new(next),
            since_rotation: AtomicU64::new(0),
            on_disk: AtomicU64::new(on_disk),
            current: Mutex::new(file.try_clone().ok()),
            error: Mutex::new(None),
            closed: AtomicBool::new(false),
            durability,
            dir: dir.to_path_buf(),
        });
        let mut threads = Vec::new();
        let writer = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("qkv-log-writer".into())
                .spawn(move || write_loop(&writer))?,
        );
        if durability == Durability::EverySec {
            let syncer = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("qkv-log-sync".into())
                    .spawn(move || sync_loop(&syncer))?,
            );
        }
        Ok(Log {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Appends one record, whose payload `write` appends to the buffer it is given, and
    /// returns its position. Never waits for the disk: see [`Log::sync_point`].
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut pending = self.shared.lock();
        let position = pending.next;
        pending.next += 1;
        let was_empty = pending.buf.is_empty();
        frame::push(&mut pending.buf, position, write);
        self.shared.next_fast.store(pending.next, Ordering::Release);
        drop(pending);
        // Under `everysec` the writer thread looks by itself every few milliseconds: a wake-up
        // per append would cost more than the write.
        if was_empty && self.shared.durability == Durability::Always {
            self.shared.wake.notify_one();
        }
        position
    }

    /// A point after everything appended so far; `None` when that is durable already.
    pub fn sync_point(&self) -> Option<SyncPoint> {
        let target = self.shared.next_fast.load(Ordering::Acquire);
        if self.shared.done_fast.load(Ordering::Acquire) >= target {
            return None;
        }
        Some(SyncPoint {
            shared: self.shared.clone(),
            target,
        })
    }

    /// The directory of the log's files.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Follows [`Log::durable_position`] as it advances.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.done.subscribe()
    }

    /// The position the next record gets.
    pub fn next_position(&self) -> u64 {
        self.shared.next_fast.load(Ordering::Acquire)
    }

    /// Every record before this position is durable.
    pub fn durable_position(&self) -> u64 {
        self.shared.done_fast.load(Ordering::Acquire)
    }

    /// Makes the records appended from now on start a new segment, and returns the position
    /// of the first of them: a snapshot taken from now on covers every record before it.
    pub fn rotate(&self) -> u64 {
        let mut pending = self.shared.lock();
        let next = pending.next;
        if pending.rotate.is_none() {
            pending.rotate = Some((pending.buf.len(), next));
        }
        let next = pending.rotate.map_or(next, |(_, first)| first);
        drop(pending);
        self.shared.wake.notify_one();
        next
    }

    /// Bytes appended to the log since the last [`Log::rotate`] (or the start).
    pub fn bytes_since_rotation(&self) -> u64 {
        self.shared.since_rotation.load(Ordering::Relaxed)
    }

    /// Bytes the log's segments take on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        self.shared.on_disk.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of segments deleted by compaction.
    pub fn dropped(&self, bytes: u64) {
        let _ = self
            .shared
            .on_disk
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// The last error writing the log, if it is failing now.
    pub fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes and syncs everything appended, then stops the log's threads. Appends after it
    /// are never written.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_segment(dir: &Path, first: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, first))?;
    // The new name must survive a power loss too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Writes the buffer out whenever it has frames (under `everysec`, looks every few
/// milliseconds for what no request wrote itself).
fn write_loop(shared: &Shared) {
    let poll = Duration::from_millis(5);
    loop {
        {
            let mut pending = shared.lock();
            while pending.buf.is_empty() && pending.rotate.is_none() && !pending.closing {
                if shared.durability == Durability::Always {
                    pending = shared
                        .wake
                        .wait(pending)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                } else {
                    pending = shared
                        .wake
                        .wait_timeout(pending, poll)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
        let mut out = shared
            .output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shared.write_pending(&mut out) {
            // Closing: what was appended until now is written; sync it and stop.
            shared.write_pending(&mut out);
            let _ = out.file.sync_data();
            return;
        }
    }
}

/// Writes frames to the current segment and counts them.
fn write_part(shared: &Shared, out: &mut Output, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    write_batch(shared, &mut out.file, out.len, bytes);
    out.len += bytes.len() as u64;
    let len = bytes.len() as u64;
    shared.since_rotation.fetch_add(len, Ordering::Relaxed);
    shared.on_disk.fetch_add(len, Ordering::Relaxed);
}

/// Syncs the current segment and goes on in a new one whose first record is `first`.
/// Returns whether it did (on failure the current one goes on).
fn start_segment(shared: &Shared, out: &mut Output, first: u64) -> bool {
    let _ = out.file.sync_data();
    match open_segment(&shared.dir, first) {
        Ok(next) => {
            *shared
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next.try_clone().ok();
            out.file = next;
            out.len = 0;
            true
        }
        Err(e) => {
            // A file that was made but not recorded would claim positions the current
            // segment goes on holding.
            let _ = std::fs::remove_file(segment_path(&shared.dir, first));
            tracing::error!(
                dir = %shared.dir.display(),
                "cannot start a new log segment, writing on in the current one: {e}"
            );
            false
        }
    }
}

/// Writes one batch, and syncs it under `always`. A failed write is cut off again and
/// retried until it works: the records are never dropped, and nobody waiting for them is
/// told they are durable meanwhile.
fn write_batch(shared: &Shared, file: &mut File, before: u64, batch: &[u8]) {
    let mut warned = false;
    loop {
        let result = file.write_all(batch).and_then(|()| {
            if shared.durability == Durability::Always {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        let mut error = shared
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => {
                *error = None;
                return;
            }
            Err(e) if shared.closed.load(Ordering::Acquire) => {
                tracing::error!(
                    dir = %shared.dir.display(),
                    "cannot write the log while closing ({e}): the last writes are not in it"
                );
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::error!(
                        dir = %shared.dir.display(),
                        "cannot write the log ({e}); writes wait until it works again"
                    );
                    warned = true;
                }
                *error = Some(e.to_string());
                drop(error);
                let _ = file.set_len(before);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `everysec`: syncs the current segment once a second, off every request's path.
fn sync_loop(shared: &Shared) {
    loop {
        std::thread::park_timeout(Duration::from_secs(1));
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let file = shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|f| f.try_clone().ok());
        if let Some(file) = file
            && let Err(e) = file.sync_data()
        {
            tracing::warn!(dir = %shared.dir.display(), "cannot sync the log: {e}");
        }
    }
}

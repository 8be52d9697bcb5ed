//! A node's replica state on disk: recovery at start (the newest complete snapshot, then
//! the log after it), and snapshots in the background that let the log's old segments go.
//!
//! Everything a node must remember goes through one log ([`crate::storage::journal`]): its
//! keys, the hints it holds for others, `FLUSHALL` cutoffs, the members removed, and its
//! clock's high-water mark.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::hints::{HintLimits, HintStore};
use crate::storage::journal::{self, Journal, Record};
use crate::storage::{MemStore, Store, StoreOptions};
use crate::wal::{self, Durability, Log, SnapshotWriter, snapshot::SnapshotRead};

/// Keys a snapshot copies out of the store at a time.
const SNAPSHOT_PAGE: usize = 1_000;

/// A member removed, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The member's id.
    pub id: String,
    /// The removed life.
    pub generation: u64,
    /// Its identity, encoded by the membership layer.
    pub info: Vec<u8>,
}

/// What a node found on disk at start.
pub struct Recovered {
    /// The store, holding what the node had.
    pub store: Arc<MemStore>,
    /// The hints it held.
    pub hints: Arc<HintStore>,
    /// The log it appends to from now on (`None` under `durability = "memory"`).
    pub log: Option<Arc<Log>>,
    /// The clock mark to resume the hybrid clock at.
    pub clock: u64,
    /// Members removed: id and removed generation.
    pub removed: Vec<Removal>,
    /// Whether anything was recovered (a node with no data pulls its keys from its replicas).
    pub had_data: bool,
    /// What recovery did, for the node's log.
    pub summary: String,
}

/// The directory of a node's log and snapshots.
pub fn data_path(node_dir: &Path) -> PathBuf {
    node_dir.join("data")
}

/// Rebuilds what node `node` held from `node_dir` and opens its log for appending.
pub fn recover(
    node_dir: &Path,
    durability: Durability,
    options: StoreOptions,
    limits: HintLimits,
    now_ms: u64,
) -> Result<Recovered, String> {
    let node = options.node.clone();
    let fresh = |options: &StoreOptions| {
        (
            Arc::new(MemStore::new(options.clone())),
            Arc::new(HintStore::new(limits)),
        )
    };
    if durability == Durability::Memory {
        let (store, hints) = fresh(&options);
        return Ok(Recovered {
            store,
            hints,
            log: None,
            clock: 0,
            removed: Vec::new(),
            had_data: false,
            summary: "durability is memory: starting empty".into(),
        });
    }
    let dir = data_path(node_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    check_identity(&dir, &node)?;
    let started = Instant::now();
    let mut state = Replay::new(fresh(&options));
    let mut covers = 0;
    // Only the newest snapshot counts: it is renamed into place once complete and synced,
    // and the older ones and the log it covers are deleted after that. One that reads short
    // is damage, not a crash's doing (a crash leaves a `.tmp` file, removed below).
    if let Some((position, path)) = wal::snapshots(&dir).map_err(|e| e.to_string())?.pop() {
        let read = wal::read_snapshot(&path, &mut |payload| state.apply(payload, now_ms))
            .map_err(|e| e.to_string())?;
        match read {
            SnapshotRead::Complete(_) => covers = position,
            SnapshotRead::Incomplete => {
                return Err(wal::OpenError::Damaged {
                    path: path.clone(),
                    offset: fs::metadata(&path).map_or(0, |m| m.len()),
                    why: "the snapshot ends before its closing record".into(),
                    dir: dir.clone(),
                }
                .to_string());
            }
        }
    }
    let from_snapshot = state.records;
    let replayed = wal::replay(&dir, covers, &mut |_, payload| state.apply(payload, now_ms))
        .map_err(|e| e.to_string())?;
    for tmp in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if tmp.path().extension().is_some_and(|e| e == "tmp") {
            let _ = fs::remove_file(tmp.path());
        }
    }
    let log = Arc::new(
        Log::start(&dir, durability, replayed.next, replayed.on_disk)
            .map_err(|e| format!("cannot open the log in {}: {e}", dir.display()))?,
    );
    let Replay {
        store,
        hints,
        clock,
        removed,
        ..
    } = state;
    let journal = Journal::new(log.clone());
    store.attach(journal.clone());
    hints.attach(journal);
    let had_data = replayed.next > 1 || covers > 0;
    let summary = format!(
        "recovered {} keys and {} hints from {} (snapshot records: {from_snapshot}, log records: \
         {}, next position {}) in {} ms{}",
        store.len(),
        hints.pending().0,
        dir.display(),
        replayed.records,
        replayed.next,
        started.elapsed().as_millis(),
        replayed
            .cut
            .as_ref()
            .map(|(file, at)| format!("; cut a torn end off {} at byte {at}", file.display()))
            .unwrap_or_default()
    );
    Ok(Recovered {
        store,
        hints,
        log: Some(log),
        clock,
        removed,
        had_data,
        summary,
    })
}

/// The data directory belongs to one node: starting another node on it would mix two
/// nodes' histories.
fn check_identity(dir: &Path, node: &str) -> Result<(), String> {
    let path = dir.join("NODE");
    match fs::read_to_string(&path) {
        Ok(owner) if owner.trim() == node => Ok(()),
        Ok(owner) => Err(format!(
            "{} holds the data of node {:?}, not {node:?}; start {:?} with its own data_dir, or \
             move {} away",
            dir.display(),
            owner.trim(),
            owner.trim(),
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::write(&path, format!("{node}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// State being rebuilt from records.
struct Replay {
    store: Arc<MemStore>,
    hints: Arc<HintStore>,
    clock: u64,
    removed: Vec<Removal>,
    records: u64,
}

impl Replay {
    fn new((store, hints): (Arc<MemStore>, Arc<HintStore>)) -> Self {
        Replay {
            store,
            hints,
            clock: 0,
            removed: Vec::new(),
            records: 0,
        }
    }

    fn apply(&mut self, payload: &[u8], now_ms: u64) -> Result<(), String> {
        self.records += 1;
        match journal::decode(payload)? {
            Record::Merge { key, value } | Record::State { key, value } => {
                self.store
                    .absorb(&key, &value, now_ms)
                    .map_err(|e| e.to_string())?;
            }
            Record::Forget { key } => self.store.forget(&key),
            Record::Flush { before } => self.store.flush(&before, now_ms),
            Record::Hint {
                owner,
                key,
                value,
                created_ms,
            } => {
                self.hints.add(&owner, key, &value, created_ms);
            }
            Record::HintGone { owner, key } => self.hints.forget(&owner, &key),
            Record::Clock { millis } => self.clock = self.clock.max(millis),
            Record::Removed {
                id,
                generation,
                info,
            } => {
                // The newest removal of each member counts.
                self.removed.retain(|r| r.id != id);
                self.removed.push(Removal {
                    id,
                    generation,
                    info,
                });
            }
        }
        Ok(())
    }
}

/// What one snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    /// The position it covers: every record before it.
    pub covers: u64,
    /// Records written.
    pub records: u64,
    /// Its size.
    pub bytes: u64,
    /// Log bytes deleted after it.
    pub freed: u64,
}

/// What a snapshot writes besides the keys.
pub struct SnapshotExtras<'a> {
    /// The hints held.
    pub hints: &'a HintStore,
    /// The clock mark (every timestamp issued is before it), read once the log is rotated:
    /// a mark logged before the rotation may be compacted away.
    pub clock: &'a dyn Fn() -> u64,
    /// Members removed.
    pub removed: Vec<Removal>,
}

/// Writes a snapshot of `store` (and `extras`) into `dir` while writes go on, then drops
/// the log segments and snapshots it makes unnecessary.
pub fn snapshot(
    dir: &Path,
    log: &Log,
    store: &MemStore,
    extras: SnapshotExtras<'_>,
) -> std::io::Result<SnapshotStats> {
    let covers = log.rotate();
    let clock = (extras.clock)();
    let mut writer = SnapshotWriter::create(dir, covers)?;
    let mut records = 0u64;
    let mut push = |writer: &mut SnapshotWriter, record: &Record| {
        records += 1;
        writer.push(|buf| journal::encode(record, buf))
    };
    push(&mut writer, &Record::Clock { millis: clock })?;
    if let Some(before) = store.flushed() {
        push(&mut writer, &Record::Flush { before })?;
    }
    let mut failed = None;
    store.for_each_page(SNAPSHOT_PAGE, |keys| {
        if failed.is_some() {
            return;
        }
        for key in keys {
            if let Some(value) = store.get_raw(&key)
                && let Err(e) = push(&mut writer, &Record::Merge { key, value })
            {
                failed = Some(e);
                return;
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    for (owner, key, value, created_ms) in extras.hints.dump() {
        push(
            &mut writer,
            &Record::Hint {
                owner,
                key,
                value,
                created_ms,
            },
        )?;
    }
    for Removal {
        id,
        generation,
        info,
    } in extras.removed
    {
        push(
            &mut writer,
            &Record::Removed {
                id,
                generation,
                info,
            },
        )?;
    }
    // Everything before `covers` must be in its segment before the segments go: a snapshot
    // whose records before it never reached the file would let those positions be reused.
    while log.durable_position() < covers {
        std::thread::sleep(Duration::from_millis(1));
    }
    let bytes = writer.finish()?;
    let freed = wal::compact(dir, covers).map_err(std::io::Error::other)?;
    log.dropped(freed);
    Ok(SnapshotStats {
        covers,
        records,
        bytes,
        freed,
    })
}

/// The background snapshots of one node: whenever the log has grown past `after_bytes` (or
/// the last snapshot's size, if larger), a snapshot, then compaction.
pub struct Snapshots {
    /// The log's directory.
    pub dir: PathBuf,
    /// The log.
    pub log: Arc<Log>,
    /// The store to snapshot.
    pub store: Arc<MemStore>,
    /// The hints to snapshot.
    pub hints: Arc<HintStore>,
    /// The clock mark to write.
    pub clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The members removed.
    pub removed: Box<dyn Fn() -> Vec<Removal> + Send>,
    /// Log growth that triggers a snapshot.
    pub after_bytes: u64,
}

impl Snapshots {
    /// Runs on a thread of its own until `stop` is set.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("qkv-snapshot".into())
            .spawn(move || self.run(&stop))
    }

    fn run(self, stop: &AtomicBool) {
        let mut threshold = self.after_bytes;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if self.log.bytes_since_rotation() < threshold {
                continue;
            }
            let started = Instant::now();
            let extras = SnapshotExtras {
                hints: &self.hints,
                clock: &*self.clock,
                removed: (self.removed)(),
            };
            match snapshot(&self.dir, &self.log, &self.store, extras) {
                Ok(stats) => {
                    threshold = self.after_bytes.max(stats.bytes);
                    tracing::info!(
                        covers = stats.covers,
                        records = stats.records,
                        bytes = stats.bytes,
                        freed = stats.freed,
                        took_ms = started.elapsed().as_millis() as u64,
                        "snapshot written, log compacted"
                    );
                }
                Err(e) => {
                    tracing::error!(
                        dir = %self.dir.display(),
                        "snapshot failed (the log keeps everything meanwhile): {e}"
                    );
                    std::thread::sleep(Duration::from_secs(10));
                }
            }
        }
    }
}

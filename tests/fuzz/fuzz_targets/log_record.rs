//! What a node reads back from its durable log and snapshots at a restart, and what the change
//! feed reads from the log: `wal::frame` (`Header::parse`, `decode`, `intact_frame_follows`),
//! `storage::journal::decode` and what a record does to a store, hints and removals, and from
//! files, `replica::durable::recover` (the newest snapshot through `wal::read_snapshot`, then
//! `wal::replay` of the segments, which cuts a torn tail), then `wal::reader::Cursor` over the
//! recovered log up to its durable position.
//!
//! Input: a control byte, then by its low two bits
//! - 0: the bytes of a log segment, decoded in memory frame by frame, each record applied;
//! - 1: one record's payload, decoded and applied; it must encode back to what it decodes to;
//! - 2: `covers`, `first`, a `u16` LE length, that many bytes of snapshot file, then the bytes
//!   of a segment: written as `snapshot-{covers}.snap` (none if 0) and `{first}.log` (none if
//!   0) in a node's data directory, then recovered and read by a cursor;
//! - 3: `covers`, `first`, then records as `[tag][len: u16 LE][payload]`, framed by the crate's
//!   own writers (`SnapshotWriter` for tag bit 0, else `frame::push`; tag bit 1: the payload
//!   starts with the record's position as a `u64` LE instead of the next one): files whose
//!   checksums hold, recovered and read as in 2.

#![no_main]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quorumkv::membership::{GossipConfig, Membership, NodeInfo};
use quorumkv::replica::durable::{data_path, recover};
use quorumkv::replica::hints::{HintLimits, HintStore};
use quorumkv::storage::journal::{self, Record};
use quorumkv::storage::{MemStore, Store, StoreOptions};
use quorumkv::wal::reader::Cursor;
use quorumkv::wal::{Durability, SnapshotWriter, frame, segment_path, snapshot::snapshot_path};

/// The time recovery runs at.
const NOW_MS: u64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    match ctl & 3 {
        0 => segment_in_memory(rest),
        1 => {
            let mut state = Replay::new();
            if let Ok(record) = journal::decode(rest) {
                let mut again = Vec::new();
                journal::encode(&record, &mut again);
                assert_eq!(journal::decode(&again).as_ref(), Ok(&record));
                state.apply(record);
            }
        }
        2 => {
            let [covers, first, l0, l1, rest @ ..] = rest else {
                return;
            };
            let split = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
            let (snapshot, segment) = rest.split_at(split);
            let dir = fresh_dir();
            let data = data_path(&dir);
            if *covers != 0 {
                std::fs::write(snapshot_path(&data, u64::from(*covers)), snapshot).unwrap();
            }
            if *first != 0 {
                std::fs::write(segment_path(&data, u64::from(*first)), segment).unwrap();
            }
            from_files(&dir, u64::from(*covers));
        }
        _ => {
            let [covers, first, rest @ ..] = rest else {
                return;
            };
            let dir = fresh_dir();
            let data = data_path(&dir);
            let mut snapshot =
                (*covers != 0).then(|| SnapshotWriter::create(&data, u64::from(*covers)).unwrap());
            let mut segment = Vec::new();
            let mut next = u64::from(*first);
            let mut records = rest;
            while let [tag, l0, l1, more @ ..] = records {
                let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(more.len());
                let (mut payload, after) = more.split_at(len);
                records = after;
                let mut position = next;
                if tag & 2 != 0
                    && let Some((p, tail)) = payload.split_first_chunk::<8>()
                {
                    position = u64::from_le_bytes(*p);
                    payload = tail;
                }
                match &mut snapshot {
                    Some(writer) if tag & 1 != 0 => {
                        writer.push(|buf| buf.extend_from_slice(payload)).unwrap();
                    }
                    _ => {
                        frame::push(&mut segment, position, |buf| buf.extend_from_slice(payload));
                        next = position.wrapping_add(1);
                    }
                }
            }
            if let Some(writer) = snapshot {
                writer.finish().unwrap();
            }
            if *first != 0 {
                std::fs::write(segment_path(&data, u64::from(*first)), &segment).unwrap();
            }
            from_files(&dir, u64::from(*covers));
        }
    }
});

/// The log's frames in memory, as `wal::replay` reads a segment, each record applied.
fn segment_in_memory(bytes: &[u8]) {
    if let Some(head) = bytes.first_chunk::<{ frame::HEADER }>() {
        let header = frame::Header::parse(head);
        let _ = header.checks(&bytes[frame::HEADER..]);
    }
    let mut state = Replay::new();
    let mut at = 0;
    let mut last = 0;
    loop {
        match frame::decode(&bytes[at..]) {
            Ok(None) => break,
            Ok(Some((record, len))) => {
                assert!(len >= frame::HEADER && len <= bytes.len() - at);
                last = record.position;
                if let Ok(r) = journal::decode(record.payload) {
                    state.apply(r);
                }
                at += len;
            }
            Err(_) => {
                let _ = frame::intact_frame_follows(&bytes[at..], last);
                break;
            }
        }
    }
}

/// A node's restart from the files in `dir`, then the change feed's reading of its log (from
/// the oldest record, and from `covers`) up to the position the log has made durable.
fn from_files(dir: &Path, covers: u64) {
    let data = data_path(dir);
    let options = StoreOptions {
        node: "n1".into(),
        boot: 1,
        merkle_depth: 4,
        ..StoreOptions::default()
    };
    let Ok(recovered) = recover(
        dir,
        Durability::Always,
        options,
        HintLimits::default(),
        NOW_MS,
    ) else {
        return;
    };
    let _ = recovered.store.len();
    let lives: Vec<NodeInfo> = recovered
        .removed
        .iter()
        .filter_map(|r| rmp_serde::from_slice(&r.info).ok())
        .collect();
    if !lives.is_empty() {
        let _ = membership().restore_removed(lives);
    }
    let Some(log) = &recovered.log else {
        return;
    };
    log.close();
    let upto = log.durable_position();
    for from in [0, covers] {
        let Ok(mut cursor) = Cursor::open(&data, from) else {
            continue;
        };
        for _ in 0..64 {
            match cursor.read(upto, 16) {
                Ok(records) if !records.is_empty() => {
                    assert!(records.iter().all(|(p, _)| *p < upto));
                }
                _ => break,
            }
        }
    }
}

/// An empty node directory of this process, `data/` in it, on a RAM disk where there is one.
fn fresh_dir() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let root = std::env::var_os("QKV_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        root.join(format!("qkv-fuzz-log-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(data_path(base)).unwrap();
    base.clone()
}

fn membership() -> Membership {
    let me = NodeInfo::simulated("n1", Ipv4Addr::new(10, 0, 0, 1), "zone-a", 128, 1);
    Membership::new(me, &[], GossipConfig::default(), 1)
}

/// What recovery does with each record (`replica::durable`'s replay), on a store of its own.
struct Replay {
    store: MemStore,
    hints: HintStore,
    removed: Vec<NodeInfo>,
}

impl Replay {
    fn new() -> Self {
        Replay {
            store: MemStore::new(StoreOptions {
                node: "n1".into(),
                boot: 1,
                merkle_depth: 4,
                ..StoreOptions::default()
            }),
            hints: HintStore::new(HintLimits::default()),
            removed: Vec::new(),
        }
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Merge { key, value } | Record::State { key, value } => {
                let _ = self.store.absorb(&key, &value, NOW_MS);
                let _ = self.store.get(&key, NOW_MS);
            }
            Record::Forget { key } => self.store.forget(&key),
            Record::Flush { before } => self.store.flush(&before, NOW_MS),
            Record::Hint {
                owner,
                key,
                value,
                created_ms,
            } => {
                let _ = self.hints.add(&owner, key, &value, created_ms);
            }
            Record::HintGone { owner, key } => self.hints.forget(&owner, &key),
            Record::Clock { .. } => {}
            Record::Removed { info, .. } => {
                if let Ok(life) = rmp_serde::from_slice::<NodeInfo>(&info) {
                    self.removed.push(life);
                    let _ = membership().restore_removed(std::mem::take(&mut self.removed));
                }
            }
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.store.purge(NOW_MS + 365 * 24 * 3600 * 1000);
        let _ = self.hints.pending();
    }
}

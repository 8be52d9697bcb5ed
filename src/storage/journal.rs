//! What a node writes to its durable log ([`crate::wal`]): every change its store applies,
//! and what else it must remember across a restart (hints, its clock's high-water mark).
//!
//! Records are merges of CRDT states and deltas, so replaying one twice, or replaying a
//! record a snapshot already holds, changes nothing: recovery loads a snapshot taken while
//! writes went on and then the log from the snapshot's position. A record is appended under
//! the lock of what it changes (the key's shard, the hint store), so for any one key the log
//! holds changes in the order the store applied them.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Key, Value};
use crate::causality::Timestamp;
use crate::wal::{Log, SyncPoint};

/// One thing the log remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A state or delta merged into the key.
    Merge {
        /// The key.
        key: Key,
        /// What was merged.
        value: Value,
    },
    /// The key's whole state after a change (written instead of the delta when the state is
    /// small, so the change feed can show the value as of that change).
    State {
        /// The key.
        key: Key,
        /// Its state.
        value: Value,
    },
    /// The key was dropped: its tombstone forgotten (its grace period passed), or the key
    /// evicted on a node alone in its cluster.
    Forget {
        /// The key.
        key: Key,
    },
    /// `FLUSHALL`: the typed namespace's writes before `before` are gone.
    Flush {
        /// The cutoff.
        before: Timestamp,
    },
    /// A write held for another node (hinted handoff), merged into what is held already.
    Hint {
        /// The node it is for.
        owner: String,
        /// The key.
        key: Key,
        /// The write.
        value: Value,
        /// When the hint was first held (hints expire by age).
        created_ms: u64,
    },
    /// A hint left the store (delivered, or dropped by its bounds or age).
    HintGone {
        /// The node it was for.
        owner: String,
        /// The key.
        key: Key,
    },
    /// The hybrid clock may issue timestamps up to this millisecond: a restarted node starts
    /// its clock past it, so it never issues a timestamp behind one it issued before.
    Clock {
        /// The high-water mark.
        millis: u64,
    },
    /// A member removed from the cluster, with the life of it that was removed.
    Removed {
        /// The member's id.
        id: String,
        /// The removed generation.
        generation: u64,
        /// Its identity as gossip carries it, encoded (the membership layer's to read).
        info: Vec<u8>,
    },
}

/// [`Record`] borrowing its parts, encoded the same way: appending needs no copy of a value.
#[derive(Serialize)]
enum RecordRef<'a> {
    Merge {
        key: &'a Key,
        value: &'a Value,
    },
    State {
        key: &'a Key,
        value: &'a Value,
    },
    Forget {
        key: &'a Key,
    },
    Flush {
        before: &'a Timestamp,
    },
    Hint {
        owner: &'a str,
        key: &'a Key,
        value: &'a Value,
        created_ms: u64,
    },
    HintGone {
        owner: &'a str,
        key: &'a Key,
    },
    Clock {
        millis: u64,
    },
    Removed {
        id: &'a str,
        generation: u64,
        info: &'a [u8],
    },
}

/// Decodes a record's payload.
pub fn decode(payload: &[u8]) -> Result<Record, String> {
    rmp_serde::from_slice(payload).map_err(|e| e.to_string())
}

/// Encodes a record the way the log holds it (snapshots hold the same payloads).
pub fn encode(record: &Record, buf: &mut Vec<u8>) {
    let _ = rmp_serde::encode::write(buf, record);
}

/// The log of one node's store, shared by everything that must write to it.
#[derive(Clone)]
pub struct Journal {
    log: Arc<Log>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("next_position", &self.log.next_position())
            .finish()
    }
}

impl Journal {
    /// A journal writing to `log`.
    pub fn new(log: Arc<Log>) -> Self {
        Journal { log }
    }

    /// The log it writes to.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    fn append(&self, record: &RecordRef<'_>) {
        // Encoded aside first: a record that failed halfway must not reach the log, where it
        // would read as damage. (In-memory states always encode.)
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            match rmp_serde::encode::write(&mut *scratch, record) {
                Ok(()) => {
                    self.log.append(|buf| buf.extend_from_slice(&scratch));
                }
                Err(e) => tracing::error!("a change cannot be encoded for the log: {e}"),
            }
            if scratch.capacity() > 1 << 20 {
                *scratch = Vec::new();
            }
        });
    }

    /// `value` was merged into `key`.
    pub fn merged(&self, key: &Key, value: &Value) {
        self.append(&RecordRef::Merge { key, value });
    }

    /// A change left `key` with `state`, small enough to log whole.
    pub fn changed(&self, key: &Key, state: &Value) {
        self.append(&RecordRef::State { key, value: state });
    }

    /// `key`'s tombstone was forgotten.
    pub fn forgot(&self, key: &Key) {
        self.append(&RecordRef::Forget { key });
    }

    /// A `FLUSHALL` cutoff was applied.
    pub fn flushed(&self, before: &Timestamp) {
        self.append(&RecordRef::Flush { before });
    }

    /// A hint for `owner` was taken.
    pub fn hinted(&self, owner: &str, key: &Key, value: &Value, created_ms: u64) {
        self.append(&RecordRef::Hint {
            owner,
            key,
            value,
            created_ms,
        });
    }

    /// A hint for `owner` left the store.
    pub fn hint_gone(&self, owner: &str, key: &Key) {
        self.append(&RecordRef::HintGone { owner, key });
    }

    /// The clock may issue timestamps up to `millis`.
    pub fn clock(&self, millis: u64) {
        self.append(&RecordRef::Clock { millis });
    }

    /// Member `id`'s life `generation` was removed; `info` is its encoded identity.
    pub fn removed(&self, id: &str, generation: u64, info: &[u8]) {
        self.append(&RecordRef::Removed {
            id,
            generation,
            info,
        });
    }

    /// A point after every record appended so far (`None`: all durable already).
    pub fn sync_point(&self) -> Option<SyncPoint> {
        self.log.sync_point()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::PnCounter;
    use crate::storage::Kind;

    #[test]
    fn borrowed_records_decode_as_owned_ones() {
        let key = Key::new(Kind::Counter, "visits");
        let value = Value::Counter(PnCounter::new().add("n1.1", 5).expect("add"));
        let ts = Timestamp {
            millis: 7,
            logical: 1,
            node: "n1".into(),
        };
        let pairs = [
            (
                RecordRef::Merge {
                    key: &key,
                    value: &value,
                },
                Record::Merge {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            (
                RecordRef::State {
                    key: &key,
                    value: &value,
                },
                Record::State {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            (
                RecordRef::Forget { key: &key },
                Record::Forget { key: key.clone() },
            ),
            (
                RecordRef::Flush { before: &ts },
                Record::Flush { before: ts.clone() },
            ),
            (
                RecordRef::Hint {
                    owner: "n2",
                    key: &key,
                    value: &value,
                    created_ms: 9,
                },
                Record::Hint {
                    owner: "n2".into(),
                    key: key.clone(),
                    value: value.clone(),
                    created_ms: 9,
                },
            ),
            (
                RecordRef::HintGone {
                    owner: "n2",
                    key: &key,
                },
                Record::HintGone {
                    owner: "n2".into(),
                    key: key.clone(),
                },
            ),
            (
                RecordRef::Clock { millis: 11 },
                Record::Clock { millis: 11 },
            ),
            (
                RecordRef::Removed {
                    id: "n3",
                    generation: 4,
                    info: b"who",
                },
                Record::Removed {
                    id: "n3".into(),
                    generation: 4,
                    info: b"who".to_vec(),
                },
            ),
        ];
        for (borrowed, owned) in pairs {
            let bytes = rmp_serde::to_vec(&borrowed).expect("encode");
            assert_eq!(decode(&bytes), Ok(owned.clone()));
            let mut again = Vec::new();
            encode(&owned, &mut again);
            assert_eq!(again, bytes);
        }
    }
}

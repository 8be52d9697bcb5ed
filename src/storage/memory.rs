//! The in-memory store: a dashmap of merged states, a timer queue for TTLs and tombstones, and
//! the Merkle tree, all updated under the key's shard lock so they never disagree for long.

use std::collections::BTreeSet;
use std::sync::Mutex;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use super::{Applied, Hash, Key, MerkleTree, PurgeStats, Store, StoreError, Value};

/// Default time a tombstone outlives its delete before it may be forgotten. A replica cut off
/// for longer than this may bring a deleted value back (as with Cassandra's gc_grace).
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 60 * 60 * 1000;

/// Default Merkle depth: 65,536 leaves, a few keys each at a hundred thousand keys.
pub const DEFAULT_MERKLE_DEPTH: u8 = 16;

struct Entry {
    value: Value,
    item_hash: Hash,
    /// Local time at which the value was first seen as a tombstone.
    dead_since: Option<u64>,
}

/// An in-memory [`Store`].
pub struct MemStore {
    entries: DashMap<Key, Entry>,
    merkle: MerkleTree<Key>,
    /// (due time, key): a TTL to apply or a tombstone to reap. Entries may be stale; the purge
    /// re-checks the key before acting.
    timers: Mutex<BTreeSet<(u64, Key)>>,
    tombstone_grace_ms: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new(DEFAULT_MERKLE_DEPTH, DEFAULT_TOMBSTONE_GRACE_MS)
    }
}

impl MemStore {
    pub fn new(merkle_depth: u8, tombstone_grace_ms: u64) -> Self {
        MemStore {
            entries: DashMap::new(),
            merkle: MerkleTree::new(merkle_depth),
            timers: Mutex::new(BTreeSet::new()),
            tombstone_grace_ms,
        }
    }

    fn schedule(&self, due: u64, key: &Key) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((due, key.clone()));
    }

    /// Records a new state for `key` in `entry`: rehash, update the Merkle tree, and schedule
    /// its next expiry or its reaping. Returns the merged value.
    fn settle(&self, key: &Key, entry: &mut Entry, now_ms: u64) {
        entry.value.expire(now_ms);
        let hash = entry.value.item_hash(key);
        if hash != entry.item_hash {
            entry.item_hash = hash;
            self.merkle.set(key.position(), key, Some(hash));
        }
        if entry.value.is_tombstone(now_ms) {
            if entry.dead_since.is_none() {
                entry.dead_since = Some(now_ms);
                self.schedule(now_ms.saturating_add(self.tombstone_grace_ms), key);
            }
        } else {
            entry.dead_since = None;
            if let Some(t) = entry.value.next_expiry() {
                self.schedule(t, key);
            }
        }
    }

    fn merge_into(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<Value, StoreError> {
        if incoming.kind() != key.kind {
            return Err(StoreError::KindMismatch {
                key: key.kind.name(),
                value: incoming.kind().name(),
            });
        }
        match self.entries.entry(key.clone()) {
            MapEntry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                entry.value.merge(incoming)?;
                self.settle(key, entry, now_ms);
                Ok(entry.value.clone())
            }
            MapEntry::Vacant(slot) => {
                let mut entry = Entry {
                    value: incoming.clone(),
                    item_hash: [0; 32],
                    dead_since: None,
                };
                self.settle(key, &mut entry, now_ms);
                let merged = entry.value.clone();
                slot.insert(entry);
                Ok(merged)
            }
        }
    }
}

impl Store for MemStore {
    fn get(&self, key: &Key, now_ms: u64) -> Option<Value> {
        let entry = self.entries.get(key)?;
        let mut value = entry.value.clone();
        drop(entry);
        value.expire(now_ms);
        Some(value)
    }

    fn merge(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<Value, StoreError> {
        self.merge_into(key, incoming, now_ms)
    }

    fn update(
        &self,
        key: &Key,
        now_ms: u64,
        make_delta: &mut dyn FnMut(Option<&Value>) -> Result<Value, StoreError>,
    ) -> Result<Applied, StoreError> {
        let check = |delta: &Value| {
            if delta.kind() == key.kind {
                Ok(())
            } else {
                Err(StoreError::KindMismatch {
                    key: key.kind.name(),
                    value: delta.kind().name(),
                })
            }
        };
        match self.entries.entry(key.clone()) {
            MapEntry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                entry.value.expire(now_ms);
                let delta = make_delta(Some(&entry.value))?;
                check(&delta)?;
                entry.value.merge(&delta)?;
                self.settle(key, entry, now_ms);
                Ok(Applied {
                    delta,
                    merged: entry.value.clone(),
                })
            }
            MapEntry::Vacant(slot) => {
                let delta = make_delta(None)?;
                check(&delta)?;
                let mut entry = Entry {
                    value: delta.clone(),
                    item_hash: [0; 32],
                    dead_since: None,
                };
                self.settle(key, &mut entry, now_ms);
                let merged = entry.value.clone();
                slot.insert(entry);
                Ok(Applied { delta, merged })
            }
        }
    }

    fn purge(&self, now_ms: u64) -> PurgeStats {
        let mut stats = PurgeStats::default();
        loop {
            // Take one due timer at a time so the timer lock is never held with a shard lock.
            let due = {
                let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
                match timers.first() {
                    Some((t, _)) if *t <= now_ms => timers.pop_first(),
                    _ => None,
                }
            };
            let Some((_, key)) = due else { break };
            let MapEntry::Occupied(mut slot) = self.entries.entry(key.clone()) else {
                continue;
            };
            let entry = slot.get_mut();
            let was_dead = entry.dead_since.is_some();
            if entry.value.expire(now_ms) {
                stats.expired += 1;
            }
            self.settle(&key, entry, now_ms);
            let reap = was_dead
                && entry
                    .dead_since
                    .is_some_and(|t| t.saturating_add(self.tombstone_grace_ms) <= now_ms);
            if reap {
                slot.remove();
                self.merkle.set(key.position(), &key, None);
                stats.reaped += 1;
            }
        }
        stats
    }

    fn merkle(&self) -> &MerkleTree<Key> {
        &self.merkle
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::causality::{CausalContext, Timestamp};
    use crate::crdt::{LwwRegister, MvRegister, PnCounter, Version};
    use crate::storage::Kind;

    fn ts(millis: u64) -> Timestamp {
        Timestamp {
            millis,
            logical: 0,
            node: "n1".into(),
        }
    }

    #[test]
    fn ttl_reads_absent_then_becomes_a_tombstone_then_is_reaped() {
        let s = MemStore::new(4, 1000);
        let k = Key::new(Kind::Lww, "a");
        s.merge(&k, &Value::Lww(LwwRegister::set(ts(1), "v", Some(100))), 0)
            .unwrap();
        assert!(!s.get(&k, 99).unwrap().is_tombstone(99));
        assert!(s.get(&k, 100).unwrap().is_tombstone(100));
        let root_live = s.merkle().root();
        assert_eq!(
            s.purge(100),
            PurgeStats {
                expired: 1,
                reaped: 0
            }
        );
        assert_ne!(s.merkle().root(), root_live);
        assert_eq!(s.len(), 1);
        assert_eq!(s.purge(1099), PurgeStats::default());
        assert_eq!(
            s.purge(1100),
            PurgeStats {
                expired: 0,
                reaped: 1
            }
        );
        assert!(s.get(&k, 1100).is_none());
        assert_eq!(s.merkle().root(), [0; 32]);
    }

    #[test]
    fn a_rewritten_key_is_not_expired_by_its_old_timer() {
        let s = MemStore::new(4, 1000);
        let k = Key::new(Kind::Lww, "a");
        s.merge(&k, &Value::Lww(LwwRegister::set(ts(1), "v", Some(100))), 0)
            .unwrap();
        s.merge(&k, &Value::Lww(LwwRegister::set(ts(2), "w", None)), 50)
            .unwrap();
        assert_eq!(s.purge(5000), PurgeStats::default());
        let Some(Value::Lww(r)) = s.get(&k, 5000) else {
            panic!("value lost")
        };
        assert_eq!(r.get(5000), Some(&Bytes::from("w")));
    }

    #[test]
    fn update_issues_a_delta_and_kind_mismatches_are_refused() {
        let s = MemStore::new(4, 1000);
        let k = Key::new(Kind::Counter, "c");
        let applied = s
            .update(&k, 0, &mut |cur| {
                let cur = match cur {
                    Some(Value::Counter(c)) => c.clone(),
                    _ => PnCounter::new(),
                };
                cur.add("n1", 3)
                    .map(Value::Counter)
                    .map_err(|e| StoreError::Rejected(e.to_string()))
            })
            .unwrap();
        let Value::Counter(c) = applied.merged else {
            panic!()
        };
        assert_eq!(c.value(), 3);
        let wrong = Value::Kv(MvRegister::delete(&CausalContext::new()));
        assert!(matches!(
            s.merge(&k, &wrong, 0),
            Err(StoreError::KindMismatch { .. })
        ));
        let refused = s.update(&k, 0, &mut |_| Err(StoreError::Rejected("no".into())));
        assert_eq!(refused, Err(StoreError::Rejected("no".into())));
        let kv = Key::new(Kind::Kv, "x");
        let reg = MvRegister::new().write("n1", &CausalContext::new(), Version::new("v", None));
        s.merge(&kv, &Value::Kv(reg), 0).unwrap();
        assert_eq!(s.len(), 2);
    }
}

//! The in-memory store: a dashmap of merged states, a timer queue for TTLs and tombstones, and
//! the Merkle tree, all updated under the key's shard lock so they never disagree.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::mapref::entry::OccupiedEntry;

use super::compact::Held;
use super::journal::Journal;
use super::{Applied, Hash, Key, MakeDelta, MerkleTree, PurgeStats, Store, StoreError, Value};
use crate::causality::{Actor, Timestamp};

/// An entry of the map found occupied, its shard locked.
type OccupiedSlot<'a> = OccupiedEntry<'a, Key, Box<Entry>>;

/// Default time a tombstone is kept after its delete or expiry before it may be forgotten. A
/// replica cut off for longer than this may bring a deleted value back (as with Cassandra's
/// gc_grace_seconds), so anti-entropy must run more often than this.
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 60 * 60 * 1000;

/// How long a tombstone left by cache eviction is kept: long enough to reach the key's
/// other replicas, short enough that evictions free memory. An evicted value coming back from
/// a replica that missed the tombstone for longer is a cache refill, not a resurrection.
pub const EVICTED_GRACE_MS: u64 = 10_000;

/// Default Merkle depth: 65,536 leaves, a few keys each at a hundred thousand keys.
pub const DEFAULT_MERKLE_DEPTH: u8 = 16;

/// How to build a [`MemStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This node's id; the prefix of every actor the store hands out.
    pub node: String,
    /// Distinguishes this life of the store from earlier ones (a node's start time, or a test
    /// seed), so actors handed out after a restart that lost the data are new.
    pub boot: u64,
    /// Depth of the Merkle tree: `2^depth` leaves, clamped to [`super::merkle::MAX_DEPTH`].
    pub merkle_depth: u8,
    /// How long a tombstone is kept after its key died before it may be forgotten.
    pub tombstone_grace_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            node: "local".into(),
            boot: 0,
            merkle_depth: DEFAULT_MERKLE_DEPTH,
            tombstone_grace_ms: DEFAULT_TOMBSTONE_GRACE_MS,
        }
    }
}

/// Bytes counted for a key on top of its name and encoded value (map slot, Merkle item,
/// bookkeeping): an estimate, so the memory limit means roughly what it says.
const ENTRY_OVERHEAD: usize = 160;

struct Entry {
    /// The state, packed when it is a plain string (see [`Held`]).
    value: Held,
    item_hash: Hash,
    /// What this entry counts in [`MemStore::memory_used`].
    size: u32,
    /// When it was last read or written (`now_ms` of that call): the LRU clock.
    last_access: AtomicU64,
    /// The number of the actor this node issues dots under for this key (see
    /// [`MemStore::writer`]), chosen at its first local write since the entry was created.
    /// Local: never replicated.
    writer: Option<std::num::NonZeroU64>,
}

/// An in-memory [`Store`].
pub struct MemStore {
    /// Hashed with foldhash: a key hashes as its ring position (one `u64`, already a blake3
    /// digest), which SipHash, the default, took ten times as long to mix.
    ///
    /// Entries are boxed: the map's table keeps free slots (up to half of it after it grows),
    /// and a free slot of a pointer costs 8 bytes where one of an entry would cost its size.
    entries: DashMap<Key, Box<Entry>, foldhash::fast::RandomState>,
    merkle: MerkleTree<Key>,
    /// (due time, key): a TTL to apply or a tombstone to reap. Entries may be stale; the purge
    /// re-checks the key before acting.
    timers: Mutex<BTreeSet<(u64, Key)>>,
    options: StoreOptions,
    writers: AtomicU64,
    /// Sum of the entries' sizes.
    bytes: AtomicUsize,
    /// What `FLUSHALL` cleared: the typed namespace's writes before it are gone.
    flushed: std::sync::RwLock<Option<Timestamp>>,
    /// Whether there is a flush to apply: most stores never see one, and their writes then
    /// take no lock for it.
    any_flush: std::sync::atomic::AtomicBool,
    /// The durable log every change goes to, once recovery has attached it.
    journal: std::sync::OnceLock<Journal>,
    /// Held for the whole of a flush: a second caller with the same cutoff (the flush comes
    /// by gossip and by request at once) returns only once the first has cleared every entry,
    /// so "applied" means applied.
    flushing: Mutex<()>,
    /// The cutoff of the last flush that has cleared every entry: a flush (or a scan that
    /// brings one) at or before it returns without taking [`MemStore::flushing`].
    applied: std::sync::RwLock<Option<Timestamp>>,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new(StoreOptions::default())
    }
}

impl MemStore {
    /// An empty store built as `options` say.
    pub fn new(options: StoreOptions) -> Self {
        MemStore {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            merkle: MerkleTree::new(options.merkle_depth),
            timers: Mutex::new(BTreeSet::new()),
            options,
            writers: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            flushed: std::sync::RwLock::new(None),
            any_flush: std::sync::atomic::AtomicBool::new(false),
            journal: std::sync::OnceLock::new(),
            flushing: Mutex::new(()),
            applied: std::sync::RwLock::new(None),
        }
    }

    /// From now on every change is appended to `journal` before the call that makes it
    /// returns. Attached after recovery, so replaying the log does not write it again.
    pub fn attach(&self, journal: Journal) {
        if self.journal.set(journal).is_err() {
            tracing::warn!("the store has a journal already; keeping the first");
        }
    }

    /// Drops `key` whatever it holds: replaying a [`super::journal::Record::Forget`].
    pub fn forget(&self, key: &Key) {
        if let Some((key, entry)) = self.entries.remove(key) {
            self.merkle.set(key.position(), &key, None);
            self.bytes.fetch_sub(entry.size as usize, Ordering::Relaxed);
        }
    }

    /// Every key held, tombstones included, in pages of about `page` keys (for a snapshot:
    /// no copy of the whole store, and no shard lock held between pages).
    pub fn for_each_page(&self, page: usize, mut f: impl FnMut(Vec<Key>)) {
        let mut from = 0;
        loop {
            let (keys, more) = self.merkle.keys_from(from, u64::MAX, page);
            let last = keys.last().map(|(position, _)| *position);
            f(keys.into_iter().map(|(_, key)| key).collect());
            match last {
                Some(last) if more && last < u64::MAX => from = last + 1,
                _ => return,
            }
        }
    }

    /// The key's state as held, expired parts included (what a snapshot keeps).
    pub fn get_raw(&self, key: &Key) -> Option<Value> {
        self.entries.get(key).map(|e| e.value.value().into_owned())
    }

    /// A store with the given Merkle depth and grace period, for tests and tools.
    pub fn with(merkle_depth: u8, tombstone_grace_ms: u64) -> Self {
        MemStore::new(StoreOptions {
            merkle_depth,
            tombstone_grace_ms,
            ..StoreOptions::default()
        })
    }

    /// A number for a new writer actor: unique in this life of the store.
    fn new_writer(&self) -> std::num::NonZeroU64 {
        let n = self.writers.fetch_add(1, Ordering::Relaxed);
        std::num::NonZeroU64::MIN.saturating_add(n)
    }

    /// The actor numbered `n`: entries keep the number and the name is made when a write
    /// needs it, so a key costs no heap string for it.
    fn writer(&self, n: std::num::NonZeroU64) -> Actor {
        format!(
            "{}.{:x}.{:x}",
            self.options.node,
            self.options.boot,
            n.get() - 1
        )
    }

    fn schedule(&self, due: u64, key: &Key) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((due, key.clone()));
    }

    /// When `value`, a tombstone that died at `death`, may be forgotten.
    fn reap_at(&self, value: &Value, death: u64) -> u64 {
        let grace = if value.is_eviction() {
            self.options.tombstone_grace_ms.min(EVICTED_GRACE_MS)
        } else {
            self.options.tombstone_grace_ms
        };
        death.saturating_add(grace)
    }

    /// Records a new state for `key` in `entry`: rehash, update the Merkle tree, and schedule
    /// its next expiry or its reaping.
    ///
    /// Leaves the state unpacked: the caller packs it ([`Held::pack`]) once it has logged and
    /// answered it.
    fn settle(&self, key: &Key, entry: &mut Entry, now_ms: u64) {
        let value = entry.value.value_mut();
        value.expire(now_ms);
        if let Value::Typed(t) = value {
            t.keep_digest();
        }
        if self.any_flush.load(Ordering::Acquire)
            && let Value::Typed(t) = value
            && let Some(before) = &*self
                .flushed
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            t.clear_before(before);
        }
        entry.last_access.store(now_ms, Ordering::Relaxed);
        let (hash, encoded) = value.item_hash_and_size(key);
        // An eviction's tombstone lives seconds: counting it would only make the node evict
        // more live keys to make room for tombstones that are about to go anyway.
        let size = if value.is_eviction() {
            0
        } else {
            u32::try_from(key.name.len() + encoded + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
        };
        if size != entry.size {
            self.bytes.fetch_add(size as usize, Ordering::Relaxed);
            self.bytes.fetch_sub(entry.size as usize, Ordering::Relaxed);
            entry.size = size;
        }
        if hash != entry.item_hash {
            entry.item_hash = hash;
            self.merkle.set(key.position(), key, Some(hash));
        }
        match value.death_time(now_ms) {
            Some(death) => self.schedule(self.reap_at(value, death), key),
            None => {
                if let Some(t) = value.next_expiry() {
                    self.schedule(t, key);
                }
            }
        }
    }

    /// [`Store::merge`], answering with what `out` takes from the merged state (a copy of it,
    /// or nothing).
    fn merge_in<R>(
        &self,
        key: &Key,
        incoming: &Value,
        now_ms: u64,
        out: impl FnOnce(&Value) -> R,
    ) -> Result<R, StoreError> {
        Self::check_kind(key, incoming)?;
        // A key already here (the common case) needs no copy of its name for the map.
        if let Some(mut slot) = self.entries.get_mut(key) {
            return self.merge_entry(key, slot.value_mut(), incoming, now_ms, out);
        }
        match self.entries.entry(key.clone()) {
            MapEntry::Occupied(mut slot) => {
                self.merge_entry(key, slot.get_mut(), incoming, now_ms, out)
            }
            MapEntry::Vacant(slot) => {
                let mut value = incoming.clone().into_state();
                value.expire(now_ms);
                // A tombstone past its grace period has been (or will be) forgotten by every
                // replica; taking it in again would only start its grace period over.
                if value
                    .death_time(now_ms)
                    .is_some_and(|death| self.reap_at(&value, death) <= now_ms)
                {
                    return Ok(out(&value));
                }
                let mut entry = Entry {
                    value: Held::Full(value),
                    item_hash: [0; 32],
                    size: 0,
                    last_access: AtomicU64::new(now_ms),
                    writer: None,
                };
                self.settle(key, &mut entry, now_ms);
                let merged = {
                    let state = entry.value.value();
                    self.log_change(key, &state, incoming);
                    out(&state)
                };
                entry.value.pack();
                slot.insert(Box::new(entry));
                Ok(merged)
            }
        }
    }

    /// [`Store::merge`] into a key already in the map.
    fn merge_entry<R>(
        &self,
        key: &Key,
        entry: &mut Entry,
        incoming: &Value,
        now_ms: u64,
        out: impl FnOnce(&Value) -> R,
    ) -> Result<R, StoreError> {
        let before = entry.item_hash;
        entry.value.value_mut().merge(incoming)?;
        self.settle(key, entry, now_ms);
        let state = entry.value.value();
        // A merge that changed nothing (a duplicate, an old copy) needs no record.
        if entry.item_hash != before {
            self.log_change(key, &state, incoming);
        }
        let merged = out(&state);
        drop(state);
        entry.value.pack();
        Ok(merged)
    }

    /// [`Store::update`] on a key already in the map.
    fn update_entry(
        &self,
        key: &Key,
        entry: &mut Entry,
        now_ms: u64,
        make_delta: &mut MakeDelta<'_>,
    ) -> Result<Option<Applied>, StoreError> {
        if entry.value.value_mut().expire(now_ms) {
            self.settle(key, entry, now_ms);
        }
        let writer = self.writer(*entry.writer.get_or_insert_with(|| self.new_writer()));
        let made = make_delta(Some(&*entry.value.value_mut()), &writer);
        let delta = match made {
            Ok(Some(delta)) => delta,
            other => {
                entry.value.pack();
                return other.map(|_| None);
            }
        };
        if let Err(e) = Self::check_kind(key, &delta) {
            entry.value.pack();
            return Err(e);
        }
        entry.value.value_mut().merge(&delta)?;
        self.settle(key, entry, now_ms);
        self.log_change(key, &entry.value.value(), &delta);
        entry.value.pack();
        Ok(Some(Applied { delta }))
    }

    /// Appends a change to the journal, if there is one: the state it left when that is
    /// small, else the delta that made it (a large collection is not written whole per write).
    fn log_change(&self, key: &Key, state: &Value, delta: &Value) {
        if let Some(journal) = self.journal.get() {
            if state.is_small() {
                journal.changed(key, state);
            } else {
                journal.merged(key, delta);
            }
        }
    }

    /// Removes the entry in `slot` (the key `key`) and logs a `Forget`: a reaped tombstone, a
    /// discarded key. Out of the Merkle tree while the shard lock is still held, so a
    /// concurrent write to the key cannot slip in between and lose its Merkle item.
    fn remove_logged(&self, key: &Key, slot: OccupiedSlot<'_>) {
        self.merkle.set(key.position(), key, None);
        self.bytes
            .fetch_sub(slot.get().size as usize, Ordering::Relaxed);
        if let Some(journal) = self.journal.get() {
            journal.forgot(key);
        }
        slot.remove();
    }

    fn check_kind(key: &Key, value: &Value) -> Result<(), StoreError> {
        if value.kind() == key.kind {
            Ok(())
        } else {
            Err(StoreError::KindMismatch {
                key: key.kind,
                value: value.kind(),
            })
        }
    }
}

impl Store for MemStore {
    fn get(&self, key: &Key, now_ms: u64) -> Option<Value> {
        let entry = self.entries.get(key)?;
        entry.last_access.fetch_max(now_ms, Ordering::Relaxed);
        let mut value = entry.value.value().into_owned();
        drop(entry);
        value.expire(now_ms);
        Some(value)
    }

    fn merge(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<Value, StoreError> {
        self.merge_in(key, incoming, now_ms, Value::clone)
    }

    fn absorb(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<(), StoreError> {
        self.merge_in(key, incoming, now_ms, |_| ())
    }

    fn update(
        &self,
        key: &Key,
        now_ms: u64,
        make_delta: &mut MakeDelta<'_>,
    ) -> Result<Option<Applied>, StoreError> {
        // A key already here (the common case) needs no copy of its name for the map.
        if let Some(mut slot) = self.entries.get_mut(key) {
            return self.update_entry(key, slot.value_mut(), now_ms, make_delta);
        }
        match self.entries.entry(key.clone()) {
            MapEntry::Occupied(mut slot) => {
                self.update_entry(key, slot.get_mut(), now_ms, make_delta)
            }
            MapEntry::Vacant(slot) => {
                let number = self.new_writer();
                let Some(delta) = make_delta(None, &self.writer(number))? else {
                    return Ok(None);
                };
                Self::check_kind(key, &delta)?;
                let mut entry = Entry {
                    value: Held::Full(delta.clone().into_state()),
                    item_hash: [0; 32],
                    size: 0,
                    last_access: AtomicU64::new(now_ms),
                    writer: Some(number),
                };
                self.settle(key, &mut entry, now_ms);
                self.log_change(key, &entry.value.value(), &delta);
                entry.value.pack();
                slot.insert(Box::new(entry));
                Ok(Some(Applied { delta }))
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
            if entry.value.value_mut().expire(now_ms) {
                stats.expired += 1;
                self.settle(&key, entry, now_ms);
            }
            entry.value.pack();
            let reap = {
                let state = entry.value.value();
                state
                    .death_time(now_ms)
                    .is_some_and(|death| self.reap_at(&state, death) <= now_ms)
            };
            if reap {
                self.remove_logged(&key, slot);
                stats.reaped += 1;
            }
        }
        stats
    }

    fn discard(&self, key: &Key) -> bool {
        let MapEntry::Occupied(slot) = self.entries.entry(key.clone()) else {
            return false;
        };
        self.remove_logged(key, slot);
        true
    }

    fn merkle(&self) -> &MerkleTree<Key> {
        &self.merkle
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn memory_used(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    fn flushed(&self) -> Option<Timestamp> {
        if !self.any_flush.load(Ordering::Acquire) {
            return None;
        }
        self.flushed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn flush(&self, before: &Timestamp, now_ms: u64) {
        let done = |applied: &std::sync::RwLock<Option<Timestamp>>| {
            applied
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(|a| a >= before)
        };
        if done(&self.applied) {
            return;
        }
        let _flushing = self
            .flushing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let mut flushed = self
                .flushed
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if flushed.as_ref().is_some_and(|f| f >= before) {
                // No walk is under way (this holds `flushing`): that cutoff is applied.
                *self
                    .applied
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = flushed.clone();
                return;
            }
            *flushed = Some(before.clone());
            // Set under the lock: a snapshot that reads no flush cannot see the record of one.
            self.any_flush.store(true, Ordering::Release);
            if let Some(journal) = self.journal.get() {
                journal.flushed(before);
            }
        }
        let mut emptied = Vec::new();
        for mut slot in self.entries.iter_mut() {
            if slot.key().kind == super::Kind::Typed {
                let key = slot.key().clone();
                let entry = slot.value_mut();
                self.settle(&key, entry, now_ms);
                entry.value.pack();
                if entry.value.is_tombstone(now_ms) {
                    emptied.push(key);
                }
            }
        }
        // What the flush emptied goes at once: the watermark stays, so no replica's old copy
        // can bring it back.
        for key in emptied {
            if let MapEntry::Occupied(slot) = self.entries.entry(key.clone())
                && slot.get().value.is_tombstone(now_ms)
            {
                self.merkle.set(key.position(), &key, None);
                self.bytes
                    .fetch_sub(slot.get().size as usize, Ordering::Relaxed);
                slot.remove();
            }
        }
        let mut applied = self
            .applied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if applied.as_ref().is_none_or(|a| a < before) {
            *applied = Some(before.clone());
        }
    }

    fn typed_counts(&self, now_ms: u64) -> (usize, usize) {
        let (mut keys, mut expires) = (0, 0);
        for entry in self.entries.iter() {
            if let Some(expiring) = entry.value().value.typed_live(now_ms) {
                keys += 1;
                expires += usize::from(expiring);
            }
        }
        (keys, expires)
    }

    fn lru_sample(
        &self,
        count: usize,
        seed: u64,
        now_ms: u64,
        volatile_only: bool,
    ) -> Vec<(Key, u64)> {
        let leaves = 1u64 << self.merkle.depth();
        let mut picked = Vec::with_capacity(count);
        // A bounded number of leaves: in a sparse tree most are empty, and a sample of one or
        // two keys would evict whatever it found, however recently used.
        let mut state = seed | 1;
        for _ in 0..count.saturating_mul(4096) {
            if picked.len() >= count {
                break;
            }
            // xorshift64: a cheap, seeded walk over leaves.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for (_, key, _) in self.merkle.leaf_items(state % leaves) {
                if key.kind != super::Kind::Typed {
                    continue;
                }
                if let Some(entry) = self.entries.get(&key)
                    && !entry.value.is_tombstone(now_ms)
                    && (!volatile_only || entry.value.next_expiry().is_some())
                {
                    picked.push((key.clone(), entry.last_access.load(Ordering::Relaxed)));
                }
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::causality::{CausalContext, Timestamp};
    use crate::crdt::typed::TtlChange;
    use crate::crdt::{Crdt, MvRegister, PnCounter, TypedValue, Version};
    use crate::storage::Kind;

    pub(super) fn ts(millis: u64) -> Timestamp {
        Timestamp {
            millis,
            logical: 0,
            node: "n1".into(),
        }
    }

    /// A string written at `t` that expires at `expires` (if given).
    pub(super) fn string(value: &[u8], expires: Option<u64>, t: u64) -> Value {
        let ttl = expires.map_or(TtlChange::Clear, TtlChange::At);
        Value::Typed(Box::new(TypedValue::new().set_string(
            Bytes::copy_from_slice(value),
            ttl,
            &ts(t),
            t,
        )))
    }

    /// A delete written at `t`.
    fn deleted(t: u64) -> Value {
        Value::Typed(Box::new(TypedValue::new().delete(false, &ts(t), t)))
    }

    fn kv_write(s: &MemStore, key: &Key, value: &str, now: u64) -> Applied {
        s.update(key, now, &mut |cur, actor| {
            let reg = match cur {
                Some(Value::Kv(r)) => (**r).clone(),
                _ => MvRegister::new(),
            };
            let seen = reg.context().clone();
            reg.write(actor, &seen, Version::new(value.as_bytes().to_vec(), None))
                .map(|r| Some(Value::Kv(Box::new(r))))
                .map_err(|e| StoreError::Rejected(e.to_string()))
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn ttl_reads_absent_then_becomes_a_tombstone_then_is_reaped() {
        let s = MemStore::with(4, 1000);
        let k = Key::new(Kind::Typed, "a");
        s.merge(&k, &string(b"v", Some(100), 1), 0).unwrap();
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
        let s = MemStore::with(4, 1000);
        let k = Key::new(Kind::Typed, "a");
        s.merge(&k, &string(b"v", Some(100), 1), 0).unwrap();
        s.merge(&k, &string(b"w", None, 2), 50).unwrap();
        assert_eq!(s.purge(5000), PurgeStats::default());
        let Some(Value::Typed(t)) = s.get(&k, 5000) else {
            panic!("value lost")
        };
        assert_eq!(t.string(5000), Some(Bytes::from("w")));
    }

    #[test]
    fn tombstones_past_their_grace_are_not_taken_back_in() {
        let a = MemStore::with(4, 1000);
        let b = MemStore::with(4, 1000);
        let k = Key::new(Kind::Kv, "k");
        kv_write(&a, &k, "v", 0);
        let Some(Value::Kv(reg)) = a.get(&k, 0) else {
            panic!()
        };
        let del = Value::Kv(Box::new(MvRegister::delete(reg.context(), 10)));
        a.merge(&k, &del, 10).unwrap();
        // b learns of the delete late, but its grace period still runs from the delete.
        let tomb = a.get(&k, 500).unwrap();
        b.merge(&k, &tomb, 500).unwrap();
        assert_eq!(a.purge(1010).reaped, 1);
        assert_eq!(b.purge(1010).reaped, 1);
        // Anti-entropy from a replica that has not purged yet brings nothing back.
        b.merge(&k, &tomb, 1500).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn a_key_recreated_after_its_tombstone_is_reaped_gets_new_dots() {
        let a = MemStore::with(4, 1000);
        let b = MemStore::with(4, 1000);
        let k = Key::new(Kind::Kv, "k");
        let first = kv_write(&a, &k, "old", 0);
        b.merge(&k, &first.delta, 0).unwrap();
        let Some(Value::Kv(reg)) = a.get(&k, 0) else {
            panic!()
        };
        let del = Value::Kv(Box::new(MvRegister::delete(reg.context(), 10)));
        a.merge(&k, &del, 10).unwrap();
        b.merge(&k, &del, 10).unwrap();
        assert_eq!(a.purge(1010).reaped, 1);
        // b has not purged yet; a writes the key anew.
        let second = kv_write(&a, &k, "new", 1020);
        let merged = b.merge(&k, &second.delta, 1020).unwrap();
        assert!(
            !merged.is_tombstone(1020),
            "the new write was taken for an old one"
        );
    }

    #[test]
    fn update_issues_a_delta_and_kind_mismatches_are_refused() {
        let s = MemStore::with(4, 1000);
        let k = Key::new(Kind::Counter, "c");
        let applied = s
            .update(&k, 0, &mut |cur, actor| {
                let cur = match cur {
                    Some(Value::Counter(c)) => c.clone(),
                    _ => PnCounter::new(),
                };
                cur.add(actor, 3)
                    .map(|c| Some(Value::Counter(c)))
                    .map_err(|e| StoreError::Rejected(e.to_string()))
            })
            .unwrap()
            .unwrap();
        assert!(matches!(&applied.delta, Value::Counter(_)));
        let Some(Value::Counter(c)) = s.get(&k, 0) else {
            panic!()
        };
        assert_eq!(c.value(), 3);
        let wrong = Value::Kv(Box::new(MvRegister::delete(&CausalContext::new(), 0)));
        assert!(matches!(
            s.merge(&k, &wrong, 0),
            Err(StoreError::KindMismatch { .. })
        ));
        let refused = s.update(&k, 0, &mut |_, _| Err(StoreError::Rejected("no".into())));
        assert_eq!(refused, Err(StoreError::Rejected("no".into())));
        // An update with nothing to write changes nothing.
        assert_eq!(s.update(&k, 0, &mut |_, _| Ok(None)), Ok(None));
        let mut again = c.clone();
        again.merge(&c);
        assert_eq!(again, c);
    }

    #[test]
    fn concurrent_writes_and_purges_keep_the_merkle_tree_whole() {
        let s = std::sync::Arc::new(MemStore::with(6, 0));
        let keys: Vec<Key> = (0..200)
            .map(|i| Key::new(Kind::Typed, format!("k{i}")))
            .collect();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for round in 0..50u64 {
                    for k in &keys {
                        let value = if round % 2 == 0 {
                            deleted(round + 1)
                        } else {
                            string(b"v", None, round + 1)
                        };
                        s.merge(k, &value, round + 1).unwrap();
                    }
                }
            });
            for now in 0..200 {
                s.purge(now);
            }
            writer.join().unwrap();
        });
        let mut in_tree = 0;
        for leaf in 0..64 {
            in_tree += s.merkle().leaf_items(leaf).len();
        }
        assert_eq!(in_tree, s.len());
    }

    #[test]
    fn a_flush_empties_the_typed_namespace_and_keeps_old_copies_out() {
        let s = MemStore::with(4, 1000);
        let k = Key::new(Kind::Typed, "a");
        let counter = Key::new(Kind::Counter, "c");
        s.merge(&k, &string(b"old", None, 10), 10).unwrap();
        let c = PnCounter::new().add("x", 1).unwrap();
        s.merge(&counter, &Value::Counter(c), 10).unwrap();
        s.flush(&ts(20), 20);
        assert!(s.get(&k, 20).is_none(), "flushed keys go at once");
        assert!(s.get(&counter, 20).is_some(), "other key spaces stay");
        // An old copy from a replica that missed the flush brings nothing back; a write after
        // it is kept.
        let merged = s.merge(&k, &string(b"old", None, 10), 30).unwrap();
        assert!(merged.is_tombstone(30));
        let merged = s.merge(&k, &string(b"new", None, 40), 40).unwrap();
        let Value::Typed(t) = merged else { panic!() };
        assert_eq!(t.string(40), Some(Bytes::from("new")));
    }

    #[test]
    fn a_second_flush_with_the_same_cutoff_returns_once_the_first_is_done() {
        // The same flush arrives by gossip and by request at once: the one that finds the
        // cutoff already set must not answer "applied" while the other is still clearing.
        let s = MemStore::with(8, 1000);
        for i in 0..100_000 {
            s.merge(
                &Key::new(Kind::Typed, format!("k{i}")),
                &string(b"old", None, 10),
                10,
            )
            .unwrap();
        }
        std::thread::scope(|scope| {
            let first = scope.spawn(|| s.flush(&ts(20), 20));
            // Wait until the first has set the cutoff, then flush again.
            while s.flushed().is_none() {
                std::thread::yield_now();
            }
            s.flush(&ts(20), 20);
            let (live, _) = s.scan(Kind::Typed, 0, u64::MAX, 200_000, 20);
            assert!(
                live.is_empty(),
                "{} keys still live after the flush returned",
                live.len()
            );
            first.join().unwrap();
        });
    }

    #[test]
    fn scans_walk_live_keys_in_position_order() {
        let s = MemStore::with(4, 1000);
        // Mostly tombstones and keys of another key space: whole pages hold no live key.
        for i in 0..300 {
            let k = Key::new(Kind::Typed, format!("k{i}"));
            let v = if i % 6 == 0 {
                string(b"v", None, 5)
            } else {
                deleted(5)
            };
            s.merge(&k, &v, 5).unwrap();
            let counter = Key::new(Kind::Counter, format!("c{i}"));
            s.merge(
                &counter,
                &Value::Counter(crate::crdt::PnCounter::default()),
                5,
            )
            .unwrap();
        }
        let mut names = Vec::new();
        let mut from = 0;
        loop {
            let (page, looked) = s.scan(Kind::Typed, from, u64::MAX, 7, 6);
            assert!(page.windows(2).all(|w| w[0].position <= w[1].position));
            names.extend(page.iter().map(|k| k.name.clone()));
            match looked {
                Some(last) => from = last + 1,
                None => break,
            }
        }
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(
            (names.len(), distinct.len()),
            (50, 50),
            "every live key once"
        );
    }
}

#[cfg(test)]
mod lru_tests {
    use super::*;
    use crate::storage::Kind;

    fn put(store: &MemStore, name: &str, now: u64) {
        let v = super::tests::string(&[b'x'; 100], None, now);
        store
            .merge(&Key::new(Kind::Typed, name), &v, now)
            .expect("merge");
    }

    #[test]
    fn samples_carry_the_last_access_and_skip_tombstones() {
        let store = MemStore::default();
        for i in 0..500u64 {
            put(&store, &format!("k{i}"), 1000 + i);
        }
        // k0 is read late: it is no longer the least recently used.
        store.get(&Key::new(Kind::Typed, "k0"), 5000);
        let sample = store.lru_sample(16, 42, 6000, false);
        assert!(sample.len() >= 8, "{} sampled", sample.len());
        for (key, at) in &sample {
            let i: u64 = std::str::from_utf8(&key.name[1..])
                .expect("utf-8")
                .parse()
                .expect("number");
            let expected = if i == 0 { 5000 } else { 1000 + i };
            assert_eq!(*at, expected, "{key:?}");
        }
        assert!(store.memory_used() > 500 * 100);
    }
}

#[cfg(test)]
mod size_tests {
    /// What every key pays in the map, whatever it holds: an entry grown by a field shows
    /// here before it shows in the memory benchmark.
    #[test]
    fn an_entry_stays_small() {
        assert!(std::mem::size_of::<super::Held>() <= 48);
        assert!(std::mem::size_of::<super::Value>() <= 32);
        assert!(std::mem::size_of::<super::Entry>() <= 104);
    }
}

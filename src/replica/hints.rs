//! Hinted handoff's holding area: writes meant for a replica that could not take them, kept
//! for that replica (the hint's *owner*) until it is reachable again.
//!
//! Hints for the same owner and key are merged into one (every value is a CRDT state or
//! delta, so the join carries every write), which bounds a hint store by keys, not by writes.
//! Each owner's hints are bounded by count and bytes; past a bound the oldest are dropped
//! (counted and logged by the caller): anti-entropy still repairs what they carried. Hints
//! older than a maximum age are dropped too, because a hint delivered after its key's
//! tombstone was forgotten could bring a deleted value back.
//!
//! A hint leaves the store only when its owner acknowledged it, and only if no newer write
//! was merged into it meanwhile (each merge bumps the hint's version). Pure bookkeeping: no
//! I/O, time passed in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::storage::journal::Journal;
use crate::storage::{Key, Value};

/// Bounds on what one owner's hints may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// Off: no hints are taken or kept at all.
    pub enabled: bool,
    /// Most hints kept for one owner; past it the oldest are dropped.
    pub max_keys_per_owner: usize,
    /// Most encoded bytes of hints kept for one owner; past it the oldest are dropped.
    pub max_bytes_per_owner: usize,
    /// Hints older than this are dropped instead of delivered.
    pub max_age_ms: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            enabled: true,
            max_keys_per_owner: 100_000,
            max_bytes_per_owner: 64 * 1024 * 1024,
            // Half the default tombstone grace period (1 h).
            max_age_ms: 30 * 60 * 1000,
        }
    }
}

/// One pending hint, as handed to the delivery loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The key the owner missed writes of.
    pub key: Key,
    /// The merge of every write to the key the owner missed, to merge into its store.
    pub value: Value,
    /// Pass back to [`HintStore::delivered`]: a hint merged into since is kept.
    pub version: u64,
}

/// What [`HintStore::add`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// Older hints of the same owner dropped to stay within the bounds.
    pub dropped: usize,
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// Position in the owner's age order; set when the hint was first stored.
    order: u64,
    version: u64,
    bytes: usize,
    created_ms: u64,
}

#[derive(Debug, Default)]
struct OwnerHints {
    by_key: HashMap<Key, Entry>,
    /// Keys oldest first.
    by_age: BTreeMap<u64, Key>,
    bytes: usize,
}

impl OwnerHints {
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.by_key.remove(key)?;
        self.by_age.remove(&entry.order);
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn oldest(&self) -> Option<Key> {
        self.by_age.values().next().cloned()
    }
}

#[derive(Debug, Default)]
struct Inner {
    owners: HashMap<String, OwnerHints>,
    next: u64,
}

/// The hints one node holds for others.
#[derive(Debug, Default)]
pub struct HintStore {
    limits: HintLimits,
    inner: Mutex<Inner>,
    /// The durable log hints are written to (under the lock, so it holds them in order).
    journal: std::sync::OnceLock<Journal>,
}

/// Hints smaller than this are measured exactly after each merge; larger ones estimated.
const REMEASURE_BELOW: usize = 4096;

/// Encoded size of a hint, the unit of the byte bound.
fn size_of(key: &Key, value: &Value) -> usize {
    key.name.len() + rmp_serde::to_vec(value).map_or(0, |v| v.len())
}

impl HintStore {
    /// An empty store that keeps hints within `limits`.
    pub fn new(limits: HintLimits) -> Self {
        HintStore {
            limits,
            inner: Mutex::default(),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// From now on every hint taken or gone is written to `journal` (attached after
    /// recovery has replayed the hints of the log).
    pub fn attach(&self, journal: Journal) {
        let _ = self.journal.set(journal);
    }

    /// Logs that `owner`'s hint for `key` left the store (call under the store's lock).
    fn gone(&self, owner: &str, key: &Key) {
        if let Some(j) = self.journal.get() {
            j.hint_gone(owner, key);
        }
    }

    /// Every hint held: owner, key, value and when it was first held (for a snapshot).
    pub fn dump(&self) -> Vec<(String, Key, Value, u64)> {
        let inner = self.lock();
        inner
            .owners
            .iter()
            .flat_map(|(owner, hints)| {
                hints.by_key.iter().map(move |(key, e)| {
                    (owner.clone(), key.clone(), e.value.clone(), e.created_ms)
                })
            })
            .collect()
    }

    /// Drops `owner`'s hint for `key`: replaying a hint that left the store.
    pub fn forget(&self, owner: &str, key: &Key) {
        let mut inner = self.lock();
        if let Some(hints) = inner.owners.get_mut(owner) {
            hints.remove(key);
            if hints.by_key.is_empty() {
                inner.owners.remove(owner);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `value` for `owner`, merged with what is already held for the key.
    pub fn add(&self, owner: &str, key: Key, value: &Value, now_ms: u64) -> Added {
        let mut inner = self.lock();
        inner.next += 1;
        let seq = inner.next;
        let hints = inner.owners.entry(owner.to_string()).or_default();
        let merged = match hints.remove(&key) {
            Some(mut old) => {
                if let Err(e) = old.value.merge(value) {
                    // A value of another kind under the same key cannot come from this
                    // cluster's coordinators; keep the newer one.
                    tracing::warn!(?key, "hint replaced, not merged: {e}");
                    old.value = value.clone();
                }
                // Measured again while small; a large hint (a big set or hash whose writes
                // pile up) grows by what each write adds instead: encoding all of it again on
                // every write would make each write cost the size of the whole value.
                let bytes = if old.bytes < REMEASURE_BELOW {
                    size_of(&key, &old.value)
                } else {
                    old.bytes + size_of(&key, value)
                };
                Entry {
                    bytes,
                    version: seq,
                    ..old
                }
            }
            None => Entry {
                value: value.clone(),
                order: seq,
                version: seq,
                bytes: size_of(&key, value),
                created_ms: now_ms,
            },
        };
        if let Some(j) = self.journal.get() {
            j.hinted(owner, &key, value, merged.created_ms);
        }
        hints.bytes += merged.bytes;
        hints.by_age.insert(merged.order, key.clone());
        hints.by_key.insert(key.clone(), merged);
        let mut added = Added::default();
        while hints.by_key.len() > self.limits.max_keys_per_owner
            || (hints.bytes > self.limits.max_bytes_per_owner && hints.by_key.len() > 1)
        {
            let Some(oldest) = hints.oldest() else { break };
            if oldest == key && hints.by_key.len() == 1 {
                break;
            }
            hints.remove(&oldest);
            self.gone(owner, &oldest);
            added.dropped += 1;
        }
        added
    }

    /// Owners that have hints waiting.
    pub fn owners(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .owners
            .iter()
            .filter(|(_, h)| !h.by_key.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Up to `max_keys` of `owner`'s hints, oldest first, stopping early past `max_bytes`.
    /// Hints past the maximum age are dropped on the way; their number comes back too.
    pub fn batch(
        &self,
        owner: &str,
        max_keys: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> (Vec<Hint>, usize) {
        let mut inner = self.lock();
        let Some(hints) = inner.owners.get_mut(owner) else {
            return (Vec::new(), 0);
        };
        let expired: Vec<Key> = hints
            .by_key
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.created_ms) > self.limits.max_age_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            hints.remove(key);
            self.gone(owner, key);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for key in hints.by_age.values() {
            if out.len() >= max_keys || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            if let Some(e) = hints.by_key.get(key) {
                bytes += e.bytes;
                out.push(Hint {
                    key: key.clone(),
                    value: e.value.clone(),
                    version: e.version,
                });
            }
        }
        if hints.by_key.is_empty() {
            inner.owners.remove(owner);
        }
        (out, expired.len())
    }

    /// The owner acknowledged `key` at `version`: forget the hint unless it changed since.
    /// Returns whether it was forgotten.
    pub fn delivered(&self, owner: &str, key: &Key, version: u64) -> bool {
        let mut inner = self.lock();
        let Some(hints) = inner.owners.get_mut(owner) else {
            return false;
        };
        if hints.by_key.get(key).is_none_or(|e| e.version != version) {
            return false;
        }
        hints.remove(key);
        if hints.by_key.is_empty() {
            inner.owners.remove(owner);
        }
        self.gone(owner, key);
        true
    }

    /// Hints held (keys) and their bytes, over all owners.
    pub fn pending(&self) -> (usize, usize) {
        let inner = self.lock();
        inner
            .owners
            .values()
            .fold((0, 0), |(k, b), h| (k + h.by_key.len(), b + h.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::PnCounter;
    use crate::storage::Kind;

    fn counter(actor: &str, by: i64) -> Value {
        let delta = PnCounter::new().add(actor, by).expect("add");
        Value::Counter(delta)
    }

    fn key(name: &str) -> Key {
        Key::new(Kind::Counter, name)
    }

    #[test]
    fn hints_for_one_key_merge_and_leave_only_when_delivered_unchanged() {
        let store = HintStore::new(HintLimits::default());
        store.add("n2", key("a"), &counter("x.1", 1), 0);
        store.add("n2", key("a"), &counter("y.1", 2), 0);
        let (batch, expired) = store.batch("n2", 10, 1 << 20, 0);
        assert_eq!((batch.len(), expired), (1, 0));
        let Value::Counter(c) = &batch[0].value else {
            panic!("counter")
        };
        assert_eq!(c.value(), 3, "both writes are in the one hint");
        // A write merged in after the batch was taken keeps the hint.
        store.add("n2", key("a"), &counter("z.1", 4), 0);
        assert!(!store.delivered("n2", &key("a"), batch[0].version));
        let (batch, _) = store.batch("n2", 10, 1 << 20, 0);
        assert!(store.delivered("n2", &key("a"), batch[0].version));
        assert_eq!(store.pending(), (0, 0));
        assert!(store.owners().is_empty());
    }

    #[test]
    fn bounds_drop_the_oldest_first_and_old_hints_expire() {
        let store = HintStore::new(HintLimits {
            enabled: true,
            max_keys_per_owner: 3,
            max_bytes_per_owner: 1 << 20,
            max_age_ms: 1000,
        });
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let added = store.add("n2", key(name), &counter("x.1", 1), i as u64 * 100);
            assert_eq!(added.dropped, usize::from(i >= 3));
        }
        // A merge into an old hint keeps its place in the age order.
        store.add("n2", key("c"), &counter("y.1", 1), 500);
        store.add("n3", key("a"), &counter("x.1", 1), 2000);
        let (batch, expired) = store.batch("n2", 10, 1 << 20, 1250);
        let names: Vec<&[u8]> = batch.iter().map(|h| &h.key.name[..]).collect();
        // c (created at 200) expired at 1250 even though merged into at 500.
        assert_eq!((names, expired), (vec![&b"d"[..], &b"e"[..]], 1));
        assert_eq!(store.pending().0, 3);
    }

    #[test]
    fn byte_bound_keeps_at_least_the_newest_hint() {
        let store = HintStore::new(HintLimits {
            enabled: true,
            max_keys_per_owner: 100,
            max_bytes_per_owner: 10,
            max_age_ms: u64::MAX,
        });
        store.add("n2", key("first-key"), &counter("x.1", 1), 0);
        let added = store.add("n2", key("second-key"), &counter("x.1", 1), 0);
        assert_eq!(added.dropped, 1);
        let (batch, _) = store.batch("n2", 10, 1, 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].key.name, "second-key");
    }
}

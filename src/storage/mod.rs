//! The local replica store: what one node holds for the keys it replicates.
//!
//! A store keeps, for each key, the merged CRDT or causal state of that key, never a blind
//! overwrite: every change is a merge of a delta. It expires TTLs (expired values read as
//! absent at once and become tombstones in the background), forgets tombstones after a grace
//! period, and keeps a Merkle tree over key positions so that two replicas can find what they
//! disagree on. [`Store`] is the interface; [`MemStore`] the in-memory engine.

mod compact;
pub mod journal;
pub mod memory;
pub mod merkle;

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::causality::Timestamp;
use crate::crdt::typed::Type;
use crate::crdt::{Crdt, MvRegister, PnCounter, TypedValue};
use crate::ring::{RingArc, key_position};

pub use memory::MemStore;
pub use memory::StoreOptions;
pub use merkle::{Hash, MerkleTree};

/// The key spaces: `/kv/a`, `/counter/a` and the typed namespace's `a` (what `/lww`, `/set`,
/// `/hash` and the Redis protocol address) are different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `/kv`: registers with causal context.
    Kv,
    /// `/counter`: PN-counters.
    Counter,
    /// The typed namespace: strings, sets and hashes.
    Typed,
}

impl Kind {
    /// Every key space.
    pub const ALL: [Kind; 3] = [Kind::Kv, Kind::Counter, Kind::Typed];

    fn tag(self) -> u8 {
        match self {
            Kind::Kv => b'k',
            Kind::Counter => b'c',
            Kind::Typed => b't',
        }
    }

    /// The name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Counter => "counter",
            Kind::Typed => "typed",
        }
    }
}

/// A key within its key space. Built only by [`Key::new`] (or decoded), which works out its
/// ring position once: a write needs it for placement and again for the Merkle tree. Names are
/// bytes: Redis keys are binary-safe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "KeyParts")]
pub struct Key {
    /// The key space.
    pub kind: Kind,
    /// The key as the client wrote it.
    pub name: Bytes,
    /// Not sent: a node works it out from the kind and the name it received.
    #[serde(skip_serializing)]
    position: u64,
}

/// What travels of a [`Key`].
#[derive(Deserialize)]
struct KeyParts {
    kind: Kind,
    name: Bytes,
}

impl From<KeyParts> for Key {
    fn from(parts: KeyParts) -> Self {
        Key::from_bytes(parts.kind, parts.name)
    }
}

/// Keys hash by their ring position alone: equal keys have equal positions, and the position
/// is already a blake3 digest, so hashing it spreads keys as well as hashing the name and is
/// cheaper for long names.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.position.hash(state);
    }
}

impl Key {
    /// The key `name` of key space `kind`, with its ring position worked out (the name is
    /// copied: a key outlives the request buffer it was read from).
    pub fn new(kind: Kind, name: impl AsRef<[u8]>) -> Self {
        Key::from_bytes(kind, Bytes::copy_from_slice(name.as_ref()))
    }

    /// [`Key::new`] for a name already in its own buffer.
    pub fn from_bytes(kind: Kind, name: Bytes) -> Self {
        Key {
            position: key_position(&[&[kind.tag()], &name]),
            kind,
            name,
        }
    }

    /// A key that stands for ring position `position` alone, for placing a scan of the ring
    /// (no key space owns it).
    pub fn from_position(position: u64) -> Self {
        Key {
            kind: Kind::Typed,
            name: Bytes::new(),
            position,
        }
    }

    /// The name as text, for logs and messages (bytes that are not UTF-8 are replaced).
    pub fn display_name(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The key's position on the ring (and in the Merkle tree): blake3 of its kind and name,
    /// so the four key spaces spread independently.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// Most members or fields of a set or hash whose whole state the log keeps per change.
pub const SMALL_COLLECTION: usize = 64;

/// The replicated state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A `/kv` register (boxed, as the typed state is: the enum stays two words, so an
    /// entry of any kind costs the store little beyond its state).
    Kv(Box<MvRegister>),
    /// A `/counter` counter.
    Counter(PnCounter),
    /// A name of the typed namespace (boxed: it is the largest state by far, and the enum is
    /// as large as its largest variant).
    Typed(Box<TypedValue>),
}

/// Why a store refused a change. Travels back to a coordinator inside a replica's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// A value of one key space sent for a key of another (a bug, or a foreign node).
    #[error("a {} value cannot be stored under a {} key", value.name(), key.name())]
    KindMismatch {
        /// The key space of the key.
        key: Kind,
        /// The key space of the value sent.
        value: Kind,
    },
    /// The operation itself said no (for example a counter overflow); nothing was changed.
    #[error("{0}")]
    Rejected(String),
}

impl Value {
    /// The key space this state belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Kv(_) => Kind::Kv,
            Value::Counter(_) => Kind::Counter,
            Value::Typed(_) => Kind::Typed,
        }
    }

    /// Merges `other` in; both must be of the same kind.
    pub fn merge(&mut self, other: &Value) -> Result<(), StoreError> {
        match (self, other) {
            (Value::Kv(a), Value::Kv(b)) => a.merge(b),
            (Value::Counter(a), Value::Counter(b)) => a.merge(b),
            (Value::Typed(a), Value::Typed(b)) => a.merge(b),
            (a, b) => {
                return Err(StoreError::KindMismatch {
                    key: a.kind(),
                    value: b.kind(),
                });
            }
        }
        Ok(())
    }

    /// Whether the key reads as absent at `now_ms` (deleted or expired). Counters are never
    /// tombstones: an empty one reads as 0.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        match self {
            Value::Kv(r) => r.is_tombstone(now_ms),
            Value::Typed(t) => t.is_tombstone(now_ms),
            Value::Counter(_) => false,
        }
    }

    /// Drops what expired at `now_ms`. Returns whether anything changed.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        match self {
            Value::Kv(r) => r.expire(now_ms),
            Value::Typed(t) => t.expire(now_ms),
            Value::Counter(_) => false,
        }
    }

    /// When the key died, if it reads as absent at `now_ms`: replicated, so every replica
    /// agrees on when a tombstone may be forgotten.
    pub fn death_time(&self, now_ms: u64) -> Option<u64> {
        match self {
            Value::Kv(r) => r.death_time(now_ms),
            Value::Typed(t) => t.death_time(now_ms),
            Value::Counter(_) => None,
        }
    }

    /// Whether the value is a tombstone left by cache eviction (kept only briefly).
    pub fn is_eviction(&self) -> bool {
        matches!(self, Value::Typed(t) if t.is_eviction())
    }

    /// The earliest time something in the value expires.
    pub fn next_expiry(&self) -> Option<u64> {
        match self {
            Value::Kv(r) => r.next_expiry(),
            Value::Typed(t) => t.next_expiry(),
            Value::Counter(_) => None,
        }
    }

    /// Whether a whole copy of the value is small (the durable log then keeps the state a
    /// change left, not just the change): anything but a set or hash of many members.
    pub fn is_small(&self) -> bool {
        match self {
            Value::Typed(t) => t.collection_len() <= SMALL_COLLECTION,
            Value::Kv(_) | Value::Counter(_) => true,
        }
    }

    /// This value as the first state of its key: a delta stops being a delta (see
    /// [`TypedValue::into_state`]).
    pub fn into_state(self) -> Value {
        match self {
            Value::Typed(t) => Value::Typed(Box::new(t.into_state())),
            other => other,
        }
    }

    /// The hash that stands for (key, value) in the Merkle tree. Values are normalised, so
    /// equal states hash equal on every replica.
    pub fn item_hash(&self, key: &Key) -> Hash {
        self.item_hash_and_size(key).0
    }

    /// [`Value::item_hash`], and the size of the encoded value (what memory accounting uses).
    pub fn item_hash_and_size(&self, key: &Key) -> (Hash, usize) {
        // The hashed bytes are laid out in a buffer kept per thread and hashed in one call:
        // no allocation per write, and one pass of the hasher instead of one per field.
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let b = &mut *buffer;
            b.clear();
            b.push(key.kind.tag());
            b.extend_from_slice(&(key.name.len() as u64).to_le_bytes());
            b.extend_from_slice(&key.name);
            let header = b.len();
            let plain = match self {
                Value::Typed(t) => t.plain_string(),
                _ => None,
            };
            let size = if let Some((value, ts)) = plain {
                // The hot path of a cache (a string with nothing but its value), laid out field
                // by field without encoding; the tag keeps it apart from every encoded state.
                b.extend_from_slice(b"plain-string");
                b.extend_from_slice(&ts.millis.to_le_bytes());
                b.extend_from_slice(&ts.logical.to_le_bytes());
                b.extend_from_slice(&(ts.node.len() as u64).to_le_bytes());
                b.extend_from_slice(ts.node.as_bytes());
                b.extend_from_slice(&(value.len() as u64).to_le_bytes());
                b.extend_from_slice(value);
                // About what its encoding takes: the value, the node id and a few integers.
                value.len() + ts.node.len() + 24
            } else if let Value::Typed(t) = self {
                // Everything but the collections, encoded, then the collections' digest, kept
                // up to date member by member: a write to a large set or hash does not encode
                // the whole collection again.
                b.extend_from_slice(b"typed");
                let _ = rmp_serde::encode::write(&mut *b, &t.header());
                let collections = t.collection_digest();
                b.extend_from_slice(&collections.hash);
                b.len() - header + collections.size
            } else {
                // Encoding in-memory maps of strings, integers and bytes cannot fail.
                let _ = rmp_serde::encode::write(&mut *b, self);
                b.len() - header
            };
            let hash = item_digest(b);
            // A large value's buffer is not kept around.
            if b.capacity() > 64 * 1024 {
                *buffer = Vec::new();
            }
            (hash, size)
        })
    }
}

/// The 256-bit digest of an item's laid-out bytes: two 128-bit xxh3 hashes with different
/// seeds. An item hash only has to tell replicas' versions apart for anti-entropy (it is no
/// signature), and every write on every replica computes one: blake3 took about 1,000
/// instructions for a small `/lww` item, xxh3 twice takes about a tenth of that.
fn item_digest(bytes: &[u8]) -> merkle::Hash {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes());
    hash[16..].copy_from_slice(
        &xxhash_rust::xxh3::xxh3_128_with_seed(bytes, 0x9e37_79b9_7f4a_7c15).to_le_bytes(),
    );
    hash
}

/// The result of [`Store::update`]: the delta the operation made, merged into the store, to
/// send to the other replicas. (Not the merged state: copying a large collection on every
/// write would cost what the partial merge saved; an operation that reports a value works it
/// out from the state it was given.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the operation changed, to send to the other replicas.
    pub delta: Value,
}

/// A key a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedKey {
    /// Its ring position.
    pub position: u64,
    /// Its name.
    pub name: Bytes,
    /// Its type, for a key of the typed namespace.
    pub typed: Option<Type>,
}

/// What one purge pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Keys whose TTL ran out.
    pub expired: usize,
    /// Tombstones dropped after the grace period.
    pub reaped: usize,
}

/// Derives an update's delta from a key's current state (`None` if absent) and the actor to
/// issue dots under.
/// `Ok(None)`: the operation has nothing to write (a condition that does not hold).
pub type MakeDelta<'a> = dyn FnMut(Option<&Value>, &str) -> Result<Option<Value>, StoreError> + 'a;

/// A replica store. Every method takes the current time, so tests control it.
pub trait Store: Send + Sync {
    /// The key's state with expired parts dropped, tombstones included (they carry the
    /// context a client needs); `None` for a key this replica has never seen or has reaped.
    fn get(&self, key: &Key, now_ms: u64) -> Option<Value>;

    /// Merges a delta or a whole state from another replica; returns the merged state.
    fn merge(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<Value, StoreError>;

    /// [`Store::merge`] for a caller that does not need the merged state (a replica taking a
    /// write): no copy of it is made.
    fn absorb(&self, key: &Key, incoming: &Value, now_ms: u64) -> Result<(), StoreError> {
        self.merge(key, incoming, now_ms).map(drop)
    }

    /// Atomically reads the key's current state, lets `make_delta` derive a delta from it,
    /// and merges that delta in. For operations whose dots this node issues: `make_delta` gets
    /// the actor to issue them under, one that no other node and no earlier life of this key on
    /// this node has used, so a dot is never issued twice. `make_delta` runs under the key's
    /// lock and must not call back into the store.
    fn update(
        &self,
        key: &Key,
        now_ms: u64,
        make_delta: &mut MakeDelta<'_>,
    ) -> Result<Option<Applied>, StoreError>;

    /// Turns expired values into tombstones and drops tombstones that died more than the grace
    /// period ago.
    fn purge(&self, now_ms: u64) -> PurgeStats;

    /// The Merkle tree over this store's keys.
    fn merkle(&self) -> &MerkleTree<Key>;

    /// Keys stored with positions in `arc`.
    fn keys_in(&self, arc: RingArc) -> Vec<Key> {
        self.merkle().keys_in(arc)
    }

    /// Number of keys stored, tombstones included.
    fn len(&self) -> usize;

    /// An estimate of the bytes the stored keys and values take (their encoded size plus a
    /// fixed overhead per key), for the memory limit; 0 if the engine does not count.
    fn memory_used(&self) -> usize {
        0
    }

    /// About `count` live keys of the typed namespace picked at random (from random Merkle leaves, so the
    /// pick costs no scan), each with when it was last read or written: eviction takes the
    /// least recently used of them, as Redis's allkeys-lru samples. With `volatile_only`, only
    /// keys with a time to live (`volatile-lru`).
    fn lru_sample(
        &self,
        _count: usize,
        _seed: u64,
        _now_ms: u64,
        _volatile_only: bool,
    ) -> Vec<(Key, u64)> {
        Vec::new()
    }

    /// Drops `key` outright, without a tombstone (logged, so a restart does not bring it
    /// back): for evicting a key on a node alone in its cluster, where a tombstone would protect
    /// against nothing and cost the memory eviction is meant to free. Whether it was here.
    fn discard(&self, key: &Key) -> bool;

    /// Live keys of key space `kind` with positions from `from` to `upto`, in position order,
    /// each with its type when it is one of the typed namespace's; about `limit` keys are
    /// looked at (see [`MerkleTree::keys_from`]). When keys were left out past the limit, the
    /// last position looked at: the scan is complete up to there, even where every key it
    /// looked at was dead or of another key space.
    fn scan(
        &self,
        kind: Kind,
        from: u64,
        upto: u64,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<ScannedKey>, Option<u64>) {
        let (keys, more) = self.merkle().keys_from(from, upto, limit);
        let looked = keys.last().map(|(position, _)| *position).filter(|_| more);
        let live = keys
            .into_iter()
            .filter(|(_, key)| key.kind == kind)
            .filter_map(|(position, key)| {
                let value = self.get(&key, now_ms)?;
                if value.is_tombstone(now_ms) {
                    return None;
                }
                let typed = match &value {
                    Value::Typed(t) => t.kind_at(now_ms),
                    _ => None,
                };
                Some(ScannedKey {
                    position,
                    name: key.name,
                    typed,
                })
            })
            .collect();
        (live, looked)
    }

    /// Everything of the typed namespace written before `before` is gone (`FLUSHALL`), now and
    /// whenever it arrives later from another replica.
    fn flush(&self, before: &Timestamp, now_ms: u64) {
        let _ = (before, now_ms);
    }

    /// The latest `FLUSHALL` cutoff this store applied, for a coordinator to apply to what it
    /// merged from replicas that may not have applied it yet.
    fn flushed(&self) -> Option<Timestamp> {
        None
    }

    /// Live keys of the typed namespace at `now_ms`, and how many of them have a time to
    /// live (`INFO keyspace`).
    fn typed_counts(&self, now_ms: u64) -> (usize, usize) {
        let _ = now_ms;
        (0, 0)
    }

    /// The durable log this store's changes go to, if it has one.
    fn journal(&self) -> Option<&journal::Journal> {
        None
    }

    /// A point in the durable log after every change made so far: a replica acknowledges a
    /// change only once it is reached. `None`: nothing to wait for (no log, or all durable).
    fn sync_point(&self) -> Option<crate::wal::SyncPoint> {
        self.journal().and_then(journal::Journal::sync_point)
    }

    /// Whether the store holds no key, tombstones included.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

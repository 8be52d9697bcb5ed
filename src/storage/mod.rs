//! The local replica store: what one node holds for the keys it replicates.
//!
//! A store keeps, for each key, the merged CRDT or causal state of that key, never a blind
//! overwrite: every change is a merge of a delta. It expires TTLs (expired values read as
//! absent at once and become tombstones in the background), forgets tombstones after a grace
//! period, and keeps a Merkle tree over key positions so that two replicas can find what they
//! disagree on. [`Store`] is the interface; [`MemStore`] the in-memory engine.

pub mod memory;
pub mod merkle;

use serde::{Deserialize, Serialize};

use crate::crdt::{Crdt, LwwRegister, MvRegister, OrSet, PnCounter};
use crate::ring::{RingArc, key_position};

pub use memory::MemStore;
pub use memory::StoreOptions;
pub use merkle::{Hash, MerkleTree};

/// The four key spaces; `/kv/a` and `/counter/a` are different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `/kv`: multi-value registers with causal contexts.
    Kv,
    /// `/lww`: last-write-wins registers.
    Lww,
    /// `/counter`: PN-counters.
    Counter,
    /// `/set`: add-wins OR-sets.
    Set,
}

impl Kind {
    /// Every key space, for code that goes over all of them.
    pub const ALL: [Kind; 4] = [Kind::Kv, Kind::Lww, Kind::Counter, Kind::Set];

    fn tag(self) -> u8 {
        match self {
            Kind::Kv => b'k',
            Kind::Lww => b'l',
            Kind::Counter => b'c',
            Kind::Set => b's',
        }
    }

    /// The name used in URLs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Lww => "lww",
            Kind::Counter => "counter",
            Kind::Set => "set",
        }
    }
}

/// A key within its key space. Built only by [`Key::new`] (or decoded), which works out its
/// ring position once: a write needs it for placement and again for the Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "KeyParts")]
pub struct Key {
    /// The key space.
    pub kind: Kind,
    /// The key as the client wrote it.
    pub name: String,
    /// Not sent: a node works it out from the kind and the name it received.
    #[serde(skip_serializing)]
    position: u64,
}

/// What travels of a [`Key`].
#[derive(Deserialize)]
struct KeyParts {
    kind: Kind,
    name: String,
}

impl From<KeyParts> for Key {
    fn from(parts: KeyParts) -> Self {
        Key::new(parts.kind, parts.name)
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
    /// The key `name` of key space `kind`, with its ring position worked out.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        let name = name.into();
        Key {
            position: key_position(&[&[kind.tag()], name.as_bytes()]),
            kind,
            name,
        }
    }

    /// The key's position on the ring (and in the Merkle tree): blake3 of its kind and name,
    /// so the four key spaces spread independently.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// The replicated state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// The state of a `/kv` key.
    Kv(MvRegister),
    /// The state of a `/lww` key.
    Lww(LwwRegister),
    /// The state of a `/counter` key.
    Counter(PnCounter),
    /// The state of a `/set` key.
    Set(OrSet),
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
            Value::Lww(_) => Kind::Lww,
            Value::Counter(_) => Kind::Counter,
            Value::Set(_) => Kind::Set,
        }
    }

    /// The empty state of a kind: what a never-written key merges from.
    pub fn empty(kind: Kind) -> Option<Value> {
        match kind {
            Kind::Kv => Some(Value::Kv(MvRegister::new())),
            Kind::Counter => Some(Value::Counter(PnCounter::new())),
            Kind::Set => Some(Value::Set(OrSet::new())),
            // An LWW register has no bottom: it always holds some write.
            Kind::Lww => None,
        }
    }

    /// Merges `other` in; both must be of the same kind.
    pub fn merge(&mut self, other: &Value) -> Result<(), StoreError> {
        match (self, other) {
            (Value::Kv(a), Value::Kv(b)) => a.merge(b),
            (Value::Lww(a), Value::Lww(b)) => a.merge(b),
            (Value::Counter(a), Value::Counter(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) => a.merge(b),
            (a, b) => {
                return Err(StoreError::KindMismatch {
                    key: a.kind(),
                    value: b.kind(),
                });
            }
        }
        Ok(())
    }

    /// Whether the key reads as absent at `now_ms` (deleted or expired). Counters and sets are
    /// never tombstones: an empty one reads as 0 or `[]`.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        match self {
            Value::Kv(r) => r.is_tombstone(now_ms),
            Value::Lww(r) => r.is_tombstone(now_ms),
            Value::Counter(_) | Value::Set(_) => false,
        }
    }

    /// Drops what expired at `now_ms`. Returns whether anything changed.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        match self {
            Value::Kv(r) => r.expire(now_ms),
            Value::Lww(r) => r.expire(now_ms),
            Value::Counter(_) | Value::Set(_) => false,
        }
    }

    /// When the key died, if it reads as absent at `now_ms`: replicated, so every replica
    /// agrees on when a tombstone may be forgotten.
    pub fn death_time(&self, now_ms: u64) -> Option<u64> {
        match self {
            Value::Kv(r) => r.death_time(now_ms),
            Value::Lww(r) => r.death_time(now_ms),
            Value::Counter(_) | Value::Set(_) => None,
        }
    }

    /// Whether the value is a tombstone left by cache eviction (kept only briefly).
    pub fn is_eviction(&self) -> bool {
        matches!(self, Value::Lww(r) if r.evicted && r.value.is_none())
    }

    /// The earliest time something in the value expires.
    pub fn next_expiry(&self) -> Option<u64> {
        match self {
            Value::Kv(r) => r.next_expiry(),
            Value::Lww(r) => r.next_expiry(),
            Value::Counter(_) | Value::Set(_) => None,
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
            b.extend_from_slice(key.name.as_bytes());
            let header = b.len();
            let size = if let Value::Lww(LwwRegister {
                ts,
                value,
                expires_at,
                evicted,
            }) = self
            {
                // The hot path of a cache: laid out field by field, no encoding. The pattern
                // names every field, so a field added later cannot be left out of the hash.
                b.extend_from_slice(b"lww");
                b.extend_from_slice(&ts.millis.to_le_bytes());
                b.extend_from_slice(&ts.logical.to_le_bytes());
                b.extend_from_slice(&(ts.node.len() as u64).to_le_bytes());
                b.extend_from_slice(ts.node.as_bytes());
                match value {
                    Some(v) => {
                        b.push(1);
                        b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                        b.extend_from_slice(v);
                    }
                    None => b.push(0),
                }
                match expires_at {
                    Some(t) => {
                        b.push(1);
                        b.extend_from_slice(&t.to_le_bytes());
                    }
                    None => b.push(0),
                }
                b.push(u8::from(*evicted));
                // About what its encoding takes: the value, the node id and a few integers.
                value.as_ref().map_or(0, |v| v.len()) + ts.node.len() + 24
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

/// The result of [`Store::update`]: the delta the operation made (to send to the other
/// replicas) and the key's state after merging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the operation changed, to send to the other replicas.
    pub delta: Value,
    /// The key's whole state after the delta was merged in.
    pub merged: Value,
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
pub type MakeDelta<'a> = dyn FnMut(Option<&Value>, &str) -> Result<Value, StoreError> + 'a;

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
    ) -> Result<Applied, StoreError>;

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

    /// About `count` live `/lww` keys picked at random (from random Merkle leaves, so the
    /// pick costs no scan), each with when it was last read or written: eviction takes the
    /// least recently used of them, as Redis's allkeys-lru samples.
    fn lru_sample(&self, _count: usize, _seed: u64, _now_ms: u64) -> Vec<(Key, u64)> {
        Vec::new()
    }

    /// Whether the store holds no key, tombstones included.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

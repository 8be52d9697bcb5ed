//! The value of the typed namespace: one name holds a string, a set or a hash (as a Redis key
//! does), and replicas that saw different writes, even of different types, converge.
//!
//! - **Strings** are last-write-wins registers (hybrid logical clock) that also count:
//!   increments are kept per actor as running totals, and a string's value is its last written
//!   value plus every increment that write did not see. So increments made anywhere, under any
//!   partition, all count, and a `SET` replaces the value together with the increments its
//!   coordinating replica had seen ([`TypedValue::set_string`]). A delete is a write too: the
//!   later of a delete and a `SET` wins.
//! - **Sets** are add-wins observed-remove sets (as `/set` was): each member carries the dots
//!   of its adds, a remove drops the dots it observed, so a concurrent add survives.
//! - **Hashes** are add-wins observed-remove maps whose fields are strings that count, as
//!   above: a field updated concurrently with its removal survives.
//!
//! **Types.** The parts of all three types live side by side; the key's type is the type of its
//! latest live write, by hybrid logical clock, so two sides of a partition that gave the name
//! different types agree on one type after the heal. A write to the visible type also removes
//! what it observed of the other types, so a type that lost does not come back.
//!
//! **Time.** Every write carries its timestamp. A key's expiry is a last-write-wins register;
//! once it has passed, everything written before it is gone ([`TypedValue::expire`] moves it
//! into the `cleared` watermark, which a flush of the whole namespace raises too). A write that
//! finds its key gone starts afresh (the increments and members before are not carried over).
//!
//! Every operation here makes a *delta* from the replica's current state, to be merged into
//! every replica; the merge is a join (commutative, associative, idempotent; property-tested).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::digest::{self, Cached, Digest};
use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::causality::{Actor, CausalContext, Dot, DotsExhausted, Timestamp};

/// The three types a name may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Type {
    /// A string (possibly used as a counter).
    String,
    /// A set of byte strings.
    Set,
    /// A map of fields to strings.
    Hash,
}

impl Type {
    /// The name Redis's `TYPE` answers.
    pub fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Set => "set",
            Type::Hash => "hash",
        }
    }
}

/// An `f64` compared bit for bit, so states holding one compare (and hash) equal exactly when
/// they hold the same bits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Float {}

/// One actor's running totals of increments to one string: integer and floating-point apart,
/// so integer counters stay exact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incr {
    /// How many increments the actor has made; the larger wins a merge.
    pub n: u64,
    /// The sum of its integer increments.
    pub int: i128,
    /// The sum of its floating-point increments.
    pub float: Float,
    /// When it made its last increment.
    pub ts: Timestamp,
}

/// Running totals by actor.
pub type Increments = BTreeMap<Actor, Incr>;

/// Merges `other`'s totals into `ours`: per actor, the later (larger `n`).
fn merge_increments(ours: &mut Increments, other: &Increments) {
    for (actor, theirs) in other {
        match ours.get_mut(actor) {
            Some(mine) if later(theirs, mine) => *mine = theirs.clone(),
            Some(_) => {}
            None => {
                ours.insert(actor.clone(), theirs.clone());
            }
        }
    }
}

/// Whether `a` supersedes `b` (of the same actor): more increments, or the same number and a
/// deterministic tie-break for states that cannot come from one actor.
fn later(a: &Incr, b: &Incr) -> bool {
    (a.n, &a.ts, a.int, a.float.0.to_bits()) > (b.n, &b.ts, b.int, b.float.0.to_bits())
}

/// A value written to a string: the bytes (`None` for a delete), when, and the increments the
/// writer had seen, which the write replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The bytes written; `None`: deleted.
    pub value: Option<Bytes>,
    /// When.
    pub ts: Timestamp,
    /// The increments the writer had seen.
    pub seen: Increments,
}

impl Counted {
    /// The later write, and every actor's later totals. Two copies of one write (the same
    /// time and bytes) replace what either saw.
    fn merge(&mut self, other: &Counted) {
        match (&mut self.base, &other.base) {
            (_, None) => {}
            (None, Some(theirs)) => self.base = Some(theirs.clone()),
            (Some(mine), Some(theirs)) if theirs.beats(mine) => *mine = theirs.clone(),
            (Some(mine), Some(theirs)) if theirs.ts == mine.ts && theirs.value == mine.value => {
                merge_increments(&mut mine.seen, &theirs.seen);
            }
            _ => {}
        }
        merge_increments(&mut self.incr, &other.incr);
    }

    /// The increments a write that replaces this string replaces: every total this replica
    /// knows, and those the last write had already replaced (which may include totals that
    /// have not reached this replica yet).
    fn replaced(&self) -> Increments {
        let mut seen = self.incr.clone();
        if let Some(base) = &self.base {
            merge_increments(&mut seen, &base.seen);
        }
        seen
    }
}

impl Base {
    /// Whether `self` wins over `other` as the last write.
    fn beats(&self, other: &Base) -> bool {
        (&self.ts, &self.value) > (&other.ts, &other.value)
    }
}

/// A string: its last write and its increments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// The last write, if any.
    pub base: Option<Base>,
    /// Every actor's increments.
    pub incr: Increments,
}

/// One write to a hash field, under the dot that keeps the field present: a value (`HSET`) or
/// only the field's presence (`HINCRBY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldWrite {
    /// When.
    pub ts: Timestamp,
    /// The bytes written by `HSET`; `None` for an increment's presence.
    pub value: Option<Bytes>,
    /// The field's increments the writer had seen, which an `HSET` replaces.
    pub seen: Increments,
}

/// A hash field: the writes that keep it present, its increments, and the increments removed
/// with it (an `HDEL` replaces what it saw).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The live writes, by dot.
    pub writes: Dots<FieldWrite>,
    /// Every actor's increments.
    pub incr: Increments,
    /// Increments removed with the field.
    pub reset: Increments,
}

impl Field {
    /// The increments a write that replaces or removes this field replaces: its totals, those
    /// removed with it before, and those its writes had replaced.
    fn replaced(&self) -> Increments {
        let mut seen = self.incr.clone();
        merge_increments(&mut seen, &self.reset);
        for w in self.writes.values() {
            merge_increments(&mut seen, &w.seen);
        }
        seen
    }

    /// Whether the field still holds anything: its writes, or the increments it counted or
    /// removed (kept so that a stale replica's old increments cannot count again).
    fn is_kept(&self) -> bool {
        !self.writes.is_empty() || !self.incr.is_empty() || !self.reset.is_empty()
    }
}

/// The key's time to live: a last-write-wins register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// When the key expires, in Unix milliseconds; `None`: never.
    pub at_ms: Option<u64>,
    /// When this was set.
    pub ts: Timestamp,
}

/// The last write that left the key empty: its time starts the tombstone's grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// When.
    pub ts: Timestamp,
    /// A cache eviction rather than a client's delete (forgotten sooner).
    pub evicted: bool,
}

/// The value of one name of the typed namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypedValue {
    /// Every dot of the set and hash parts this replica has seen, removed ones included.
    ctx: CausalContext,
    /// Everything written before this is gone (a passed expiry a write found, a flush).
    cleared: Option<Timestamp>,
    expiry: Option<Expiry>,
    deleted: Option<Deletion>,
    string: Counted,
    set: BTreeMap<Bytes, Dots<Timestamp>>,
    hash: BTreeMap<Bytes, Field>,
    /// Set on the deltas operations make: every dot of the context that no entry holds
    /// belongs to a member the delta names (an entry, empty for a removal), so merging it
    /// visits only those members, not the whole collection. A state is never partial.
    #[serde(default)]
    partial: bool,
    /// The digest of the set and hash parts, kept up to date by merges (see
    /// [`TypedValue::collection_digest`]).
    #[serde(skip)]
    digest: Cached,
}

/// The dots that keep a set member or a hash field present, with what each carries: almost
/// always one, so a sorted vector (a few dozen bytes) rather than a B-tree, whose first node
/// takes room for eleven (about a kilobyte for a hash field's writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Dots<V>(litemap::LiteMap<Dot, V>);

impl<V> Dots<V> {
    /// None.
    pub fn new() -> Self {
        Dots(litemap::LiteMap::new())
    }
}

impl<V> Default for Dots<V> {
    fn default() -> Self {
        Dots::new()
    }
}

impl<V> std::ops::Deref for Dots<V> {
    type Target = litemap::LiteMap<Dot, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<V> std::ops::DerefMut for Dots<V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Read as a B-tree map first: the vector map would reserve room for as many entries as a
/// peer's frame claims before reading them.
impl<'de, V: Deserialize<'de>> Deserialize<'de> for Dots<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Dot, V>::deserialize(deserializer)?;
        Ok(Dots(map.into_iter().collect()))
    }
}

/// The digest tags of set members and hash fields.
const SET_TAG: u8 = b's';
const HASH_TAG: u8 = b'h';

/// A number a string holds or an increment adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A signed integer (`INCRBY`, `HINCRBY`).
    Int(i64),
    /// A floating-point number (`INCRBYFLOAT`, `HINCRBYFLOAT`).
    Float(f64),
}

/// Why an operation was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    /// The key holds another type.
    #[error("the key holds a {held}, not a {wanted}")]
    WrongType {
        /// What the key holds.
        held: &'static str,
        /// What the operation works on.
        wanted: &'static str,
    },
    /// The string (or field) is not an integer, or the result would leave the 64-bit range.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// The string (or field) is not a floating-point number.
    #[error("value is not a valid float")]
    NotAFloat,
    /// The result would be infinite or not a number.
    #[error("increment would produce NaN or Infinity")]
    NotFinite,
    /// The integer result would leave the signed 64-bit range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// An actor's dots ran out (only a forged context gets there).
    #[error(transparent)]
    Dots(#[from] DotsExhausted),
}

/// What a time-to-live write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlChange {
    /// Keeps the key's time to live (`KEEPTTL`, and every write but `SET`).
    Keep,
    /// Removes it (`SET`, `PERSIST`).
    Clear,
    /// Expires the key at this Unix time in milliseconds.
    At(u64),
}

/// The moment that stands for a Unix millisecond: before every timestamp of that millisecond.
fn moment(ms: u64) -> Timestamp {
    Timestamp {
        millis: ms,
        logical: 0,
        node: String::new(),
    }
}

/// Whether something written at `ts` is gone behind `cutoff`.
fn gone(ts: &Timestamp, cutoff: Option<&Timestamp>) -> bool {
    cutoff.is_some_and(|c| ts < c)
}

impl TypedValue {
    /// A value no one has written.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of a string with only `value` written at `ts` (what
    /// [`TypedValue::plain_string`] recognises): how a store unpacks its compact form.
    pub fn plain(value: Bytes, ts: Timestamp) -> Self {
        TypedValue {
            string: Counted {
                base: Some(Base {
                    value: Some(value),
                    ts,
                    seen: Increments::new(),
                }),
                incr: Increments::new(),
            },
            ..TypedValue::default()
        }
    }

    /// The key's time to live, unless a later `SET` replaced it (a written value newer than
    /// the expiry: `SET` clears the time to live, as in Redis, without writing a register).
    fn live_expiry(&self) -> Option<&Expiry> {
        self.expiry.as_ref().filter(|e| {
            !self
                .string
                .base
                .as_ref()
                .is_some_and(|b| b.value.is_some() && b.ts > e.ts)
        })
    }

    /// Before this, everything is gone at `now_ms`: the cleared watermark or a passed expiry.
    fn cutoff(&self, now_ms: u64) -> Option<Timestamp> {
        let expired = self
            .live_expiry()
            .and_then(|e| e.at_ms)
            .filter(|&at| at <= now_ms)
            .map(moment);
        match (self.cleared.clone(), expired) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The string part's value at the cutoff, if it holds one: rendered bytes, and when it was
    /// last written.
    fn string_at(&self, cutoff: Option<&Timestamp>) -> Option<(Bytes, Timestamp)> {
        render(&self.string, &BTreeMap::new(), cutoff)
    }

    /// When the set part was last written, if it has a live member.
    fn set_ts(&self, cutoff: Option<&Timestamp>) -> Option<Timestamp> {
        self.set
            .values()
            .flat_map(|dots| dots.values())
            .filter(|ts| !gone(ts, cutoff))
            .max()
            .cloned()
    }

    /// When the hash part was last written, if it has a live field.
    fn hash_ts(&self, cutoff: Option<&Timestamp>) -> Option<Timestamp> {
        self.hash
            .values()
            .flat_map(|f| f.writes.values())
            .map(|w| &w.ts)
            .filter(|ts| !gone(ts, cutoff))
            .max()
            .cloned()
    }

    /// The key's type at `now_ms`: the type of its latest live write; `None` when the key is
    /// absent (never written, deleted, expired or flushed).
    pub fn kind_at(&self, now_ms: u64) -> Option<Type> {
        let cutoff = self.cutoff(now_ms);
        // The usual key holds one type, and what the watermark made gone has been dropped:
        // unless an expiry passed since, a set or hash part holding anything is live, with no
        // need to look at timestamps (which would take time in the collection's size).
        let string = self.string.base.is_some() || !self.string.incr.is_empty();
        if cutoff == self.cleared && !string {
            let set = !self.set.is_empty();
            let hash = self.hash.values().any(|f| !f.writes.is_empty());
            match (set, hash) {
                (false, false) => return None,
                (true, false) => return Some(Type::Set),
                (false, true) => return Some(Type::Hash),
                (true, true) => {}
            }
        }
        let cutoff = cutoff.as_ref();
        let string = self.string_at(cutoff).map(|(_, ts)| ts);
        [
            (string, Type::String),
            (self.set_ts(cutoff), Type::Set),
            (self.hash_ts(cutoff), Type::Hash),
        ]
        .into_iter()
        .filter_map(|(ts, kind)| ts.map(|ts| (ts, kind)))
        .max()
        .map(|(_, kind)| kind)
    }

    /// Members and fields held (live or not): what a whole copy of the value costs.
    pub fn collection_len(&self) -> usize {
        self.set.len() + self.hash.len()
    }

    /// Whether the key reads as absent at `now_ms`.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        self.kind_at(now_ms).is_none()
    }

    /// The string the key holds at `now_ms`, if it holds a string.
    pub fn string(&self, now_ms: u64) -> Option<Bytes> {
        if self.kind_at(now_ms) != Some(Type::String) {
            return None;
        }
        let cutoff = self.cutoff(now_ms);
        self.string_at(cutoff.as_ref()).map(|(v, _)| v)
    }

    /// The members of the set the key holds at `now_ms`, sorted; none if it holds no set.
    pub fn members(&self, now_ms: u64) -> Vec<&Bytes> {
        if self.kind_at(now_ms) != Some(Type::Set) {
            return Vec::new();
        }
        let cutoff = self.cutoff(now_ms);
        self.live_members(cutoff.as_ref()).collect()
    }

    fn live_members<'a, 'c>(
        &'a self,
        cutoff: Option<&'c Timestamp>,
    ) -> impl Iterator<Item = &'a Bytes> + use<'a, 'c> {
        self.set
            .iter()
            .filter(move |(_, dots)| dots.values().any(|ts| !gone(ts, cutoff)))
            .map(|(m, _)| m)
    }

    /// The fields of the hash the key holds at `now_ms` and their values, sorted by field;
    /// none if it holds no hash.
    pub fn fields(&self, now_ms: u64) -> Vec<(&Bytes, Bytes)> {
        if self.kind_at(now_ms) != Some(Type::Hash) {
            return Vec::new();
        }
        let cutoff = self.cutoff(now_ms);
        self.live_fields(cutoff.as_ref()).collect()
    }

    fn live_fields<'a, 'c>(
        &'a self,
        cutoff: Option<&'c Timestamp>,
    ) -> impl Iterator<Item = (&'a Bytes, Bytes)> + use<'a, 'c> {
        self.hash
            .iter()
            .filter_map(move |(name, f)| field_value(f, cutoff).map(|v| (name, v)))
    }

    /// When the key expires, if it exists at `now_ms` and has a time to live.
    pub fn expires_at(&self, now_ms: u64) -> Option<u64> {
        if self.is_tombstone(now_ms) {
            return None;
        }
        self.live_expiry()
            .and_then(|e| e.at_ms)
            .filter(|&at| at > now_ms)
    }

    /// The earliest time something in the value expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.as_ref().and_then(|e| e.at_ms)
    }

    /// Drops the string's last write once a passed expiry has made it gone (the bulk of an
    /// expired cache entry). Returns whether anything changed.
    ///
    /// The watermark does not move: a `PERSIST` or `SET` another replica made before the
    /// expiry, not seen here yet, still cancels it, and brings its own copy of the value. Only a
    /// write that finds the key gone makes the expiry final (`base_delta`). Set members and
    /// hash fields stay until the key's tombstone is forgotten, because dropping them here
    /// would read as their removal to the replicas that kept them.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let cutoff = self.cutoff(now_ms);
        if self
            .string
            .base
            .as_ref()
            .is_some_and(|b| gone(&b.ts, cutoff.as_ref()))
        {
            self.string.base = None;
            return true;
        }
        false
    }

    /// Drops everything written before `cutoff` (a flush of the namespace).
    pub fn clear_before(&mut self, cutoff: &Timestamp) {
        if self.cleared.as_ref().is_some_and(|c| c >= cutoff) {
            return;
        }
        self.cleared = Some(cutoff.clone());
        self.compact();
    }

    /// When the key died, if it reads as absent at `now_ms`: replicated, so every replica
    /// agrees on when the tombstone may be forgotten.
    pub fn death_time(&self, now_ms: u64) -> Option<u64> {
        if !self.is_tombstone(now_ms) {
            return None;
        }
        let times = [
            self.deleted.as_ref().map(|d| d.ts.millis),
            self.cutoff(now_ms).map(|c| c.millis),
            self.string.base.as_ref().map(|b| b.ts.millis),
        ];
        times.into_iter().flatten().max()
    }

    /// Whether the value is a tombstone left by a cache eviction (kept only briefly).
    pub fn is_eviction(&self) -> bool {
        self.deleted.as_ref().is_some_and(|d| d.evicted)
            && self.set.is_empty()
            && self.hash.values().all(|f| f.writes.is_empty())
            && self.string.base.as_ref().is_some_and(|b| b.value.is_none())
    }

    /// The newest timestamp anywhere in the value: what a replica's clock must order after.
    pub fn newest(&self) -> Option<&Timestamp> {
        let base = self.string.base.as_ref().map(|b| &b.ts);
        if self.plain_string().is_some() {
            return base;
        }
        let incr = self.string.incr.values().map(|i| &i.ts);
        let set = self.set.values().flat_map(|d| d.values());
        let hash = self.hash.values().flat_map(|f| {
            f.writes
                .values()
                .map(|w| &w.ts)
                .chain(f.incr.values().map(|i| &i.ts))
        });
        let others = [
            self.expiry.as_ref().map(|e| &e.ts),
            self.deleted.as_ref().map(|d| &d.ts),
            self.cleared.as_ref(),
        ];
        base.into_iter()
            .chain(incr)
            .chain(set)
            .chain(hash)
            .chain(others.into_iter().flatten())
            .max()
    }

    /// A string with only a written value, nothing else: the cache's usual value, which the
    /// Merkle tree hashes without encoding it.
    pub fn plain_string(&self) -> Option<(&Bytes, &Timestamp)> {
        let base = self.string.base.as_ref()?;
        let plain = self.ctx.is_empty()
            && self.cleared.is_none()
            && self.expiry.is_none()
            && self.deleted.is_none()
            && self.string.incr.is_empty()
            && base.seen.is_empty()
            && self.set.is_empty()
            && self.hash.is_empty();
        match &base.value {
            Some(v) if plain => Some((v, &base.ts)),
            _ => None,
        }
    }

    /// Drops what the cleared watermark has made gone, so that equal information has one
    /// representation. Increment totals stay: an actor's count must never go back.
    fn compact(&mut self) {
        let Some(cutoff) = self.cleared.clone() else {
            return;
        };
        self.digest = Cached(None);
        let cutoff = Some(&cutoff);
        if self
            .string
            .base
            .as_ref()
            .is_some_and(|b| gone(&b.ts, cutoff))
        {
            self.string.base = None;
        }
        self.set.retain(|_, dots| {
            dots.retain(|_, ts| !gone(ts, cutoff));
            !dots.is_empty()
        });
        for field in self.hash.values_mut() {
            field.writes.retain(|_, w| !gone(&w.ts, cutoff));
        }
        self.hash.retain(|_, f| f.is_kept());
    }

    /// The type check of a write of `kind`: it may write a key that is absent or holds `kind`.
    fn check_type(&self, kind: Type, now_ms: u64) -> Result<(), TypedError> {
        match self.kind_at(now_ms) {
            Some(held) if held != kind => Err(TypedError::WrongType {
                held: held.name(),
                wanted: kind.name(),
            }),
            _ => Ok(()),
        }
    }

    /// The start of every delta made at `now_ms`: the watermark the writer saw, and the removal
    /// of what it observed of the types other than `keep` (so a type that lost a conflict, or
    /// that a `SET` replaced, does not come back).
    fn base_delta(&self, keep: Option<Type>, ts: &Timestamp, now_ms: u64) -> TypedValue {
        // Removing the other types' members covers their dots without naming them: such a
        // delta is merged over the whole value.
        let names_all = (keep == Some(Type::Set) || self.set.is_empty())
            && (keep == Some(Type::Hash) || self.hash.is_empty());
        let mut delta = TypedValue {
            cleared: self.cutoff(now_ms),
            partial: names_all,
            ..TypedValue::default()
        };
        // A write that starts the key anew, or replaces the string whose written value voided
        // an older time to live, clears that time to live explicitly: otherwise it would apply
        // again once the value that voided it is replaced. (A passed expiry stays final through
        // the watermark above.)
        let has_ttl = self.expiry.as_ref().is_some_and(|e| e.at_ms.is_some());
        let voided = has_ttl && self.live_expiry().is_none();
        let replaces_string = keep != Some(Type::String)
            && (self.string.base.is_some() || !self.string.incr.is_empty());
        if has_ttl && ((voided && replaces_string) || self.kind_at(now_ms).is_none()) {
            delta.expiry = Some(Expiry {
                at_ms: None,
                ts: ts.clone(),
            });
        }
        if replaces_string {
            delta.string.base = Some(Base {
                value: None,
                ts: ts.clone(),
                seen: self.string.replaced(),
            });
        }
        if keep != Some(Type::Set) {
            for dots in self.set.values() {
                for dot in dots.keys() {
                    delta.ctx.insert(dot.clone());
                }
            }
        }
        if keep != Some(Type::Hash) {
            for (name, field) in &self.hash {
                for dot in field.writes.keys() {
                    delta.ctx.insert(dot.clone());
                }
                if !field.incr.is_empty() {
                    let removed = delta.hash.entry(name.clone()).or_default();
                    removed.reset = field.replaced();
                }
            }
        }
        delta
    }

    /// `SET`: the string `value`, written at `ts`, replacing the key whatever it held (and the
    /// increments this replica had seen), with the time to live `ttl` asks for.
    pub fn set_string(&self, value: Bytes, ttl: TtlChange, ts: &Timestamp, now_ms: u64) -> Self {
        let mut delta = self.base_delta(Some(Type::String), ts, now_ms);
        delta.string.base = Some(Base {
            value: Some(value),
            ts: ts.clone(),
            seen: self.string.replaced(),
        });
        // The new value voids every older expiry; one to keep is written again, at its time.
        delta.expiry = match ttl {
            TtlChange::Clear => None,
            TtlChange::At(at) => Some(Expiry {
                at_ms: Some(at),
                ts: ts.clone(),
            }),
            TtlChange::Keep => self.expires_at(now_ms).map(|at| Expiry {
                at_ms: Some(at),
                ts: ts.clone(),
            }),
        };
        delta
    }

    /// The expiry a write with `ttl` leaves behind.
    fn expiry_change(&self, ttl: TtlChange, ts: &Timestamp, now_ms: u64) -> Option<Expiry> {
        let at_ms = match ttl {
            TtlChange::Keep => return None,
            TtlChange::Clear => None,
            TtlChange::At(at) => Some(at),
        };
        // Clearing an expiry the key does not have (or had, and passed) writes nothing.
        if at_ms.is_none() && self.expires_at(now_ms).is_none() {
            return None;
        }
        Some(Expiry {
            at_ms,
            ts: ts.clone(),
        })
    }

    /// `DEL`: removes the key whatever it holds; concurrent adds to a set or hash survive it,
    /// a concurrent `SET` wins if later.
    pub fn delete(&self, evicted: bool, ts: &Timestamp, now_ms: u64) -> Self {
        let mut delta = self.base_delta(None, ts, now_ms);
        delta.string.base = Some(Base {
            value: None,
            ts: ts.clone(),
            seen: self.string.replaced(),
        });
        delta.deleted = Some(Deletion {
            ts: ts.clone(),
            evicted,
        });
        if let Some(cleared) = self.expiry_change(TtlChange::Clear, ts, now_ms) {
            delta.expiry = Some(cleared);
        } else if self.expiry.as_ref().is_some_and(|e| e.at_ms.is_some()) {
            // A time to live a SET voided: the delete replaces that SET's value.
            delta.expiry = Some(Expiry {
                at_ms: None,
                ts: ts.clone(),
            });
        }
        delta
    }

    /// `EXPIRE`, `PERSIST` and friends: the key's time to live.
    pub fn set_expiry(&self, ttl: TtlChange, ts: &Timestamp, now_ms: u64) -> Self {
        let mut delta = TypedValue {
            cleared: self.cutoff(now_ms),
            partial: true,
            ..TypedValue::default()
        };
        let at_ms = match ttl {
            TtlChange::Keep => return delta,
            TtlChange::Clear => None,
            TtlChange::At(at) => Some(at),
        };
        delta.expiry = Some(Expiry {
            at_ms,
            ts: ts.clone(),
        });
        delta
    }

    /// `INCRBY` and `INCRBYFLOAT`: `actor` adds `by` to the string. Returns the delta and the
    /// string's value after it, as this replica sees it.
    pub fn incr(
        &self,
        actor: &str,
        by: Number,
        ts: &Timestamp,
        now_ms: u64,
    ) -> Result<(Self, Bytes), TypedError> {
        self.check_type(Type::String, now_ms)?;
        let cutoff = self.cutoff(now_ms);
        let present = self.kind_at(now_ms) == Some(Type::String);
        let mut delta = self.base_delta(Some(Type::String), ts, now_ms);
        // A string that expired or was flushed starts again from 0: the increments it had are
        // replaced, as of the moment it went, so that a write after that moment on a replica
        // that has not seen this one still wins. (A deleted string needs nothing: its delete
        // replaced them. A string this replica never saw needs nothing either: the increment
        // adds to whatever the other replicas hold.)
        if let Some(went) = &cutoff
            && !present
            && !self.string.incr.is_empty()
            && self
                .string
                .base
                .as_ref()
                .is_none_or(|b| gone(&b.ts, Some(went)))
        {
            delta.string.base = Some(Base {
                value: None,
                ts: went.clone(),
                seen: self.string.replaced(),
            });
        }
        let current = if present {
            self.string_at(cutoff.as_ref()).map(|(v, _)| v)
        } else {
            None
        };
        let entry = bump(self.string.incr.get(actor), current.as_ref(), by, ts)?;
        delta.string.incr.insert(actor.to_string(), entry);
        // The value it leaves: the string part merged (a string write moves neither the
        // watermark nor the expiry).
        let mut after = self.string.clone();
        after.merge(&delta.string);
        let value = render(&after, &BTreeMap::new(), cutoff.as_ref())
            .map_or_else(|| Bytes::from_static(b"0"), |(v, _)| v);
        Ok((delta, value))
    }

    /// `SADD` and `SREM` in one step: `actor` adds `add` and removes `remove`. Returns the
    /// delta and how many of `add` were not members and of `remove` were.
    pub fn update_set(
        &self,
        actor: &str,
        add: &[Bytes],
        remove: &[Bytes],
        ts: &Timestamp,
        now_ms: u64,
    ) -> Result<(Self, u32, u32), TypedError> {
        self.check_type(Type::Set, now_ms)?;
        let cutoff = self.cutoff(now_ms);
        let cutoff = cutoff.as_ref();
        let is_live = |dots: &Dots<Timestamp>| dots.values().any(|ts| !gone(ts, cutoff));
        let live = |member: &Bytes| self.set.get(member).is_some_and(is_live);
        let mut delta = self.base_delta(Some(Type::Set), ts, now_ms);
        let mut issued = self.ctx.clone();
        let (mut added, mut removed) = (0, 0);
        for member in add {
            added += u32::from(!live(member));
            self.observe_member(member, &mut delta.ctx);
            let dot = issued.next_dot(actor)?;
            issued.insert(dot.clone());
            delta.ctx.insert(dot.clone());
            delta
                .set
                .entry(member.clone())
                .or_default()
                .insert(dot, ts.clone());
        }
        for member in remove {
            removed += u32::from(live(member));
            self.observe_member(member, &mut delta.ctx);
            // Named, so that merging the delta visits it.
            delta.set.entry(member.clone()).or_default();
        }
        // The last live members removed (a write that adds one leaves the set live).
        let emptied = added == 0
            && removed > 0
            && self
                .set
                .values()
                .filter(|dots| is_live(dots))
                .take(removed as usize + 1)
                .count()
                == removed as usize;
        if emptied {
            delta.deleted = Some(Deletion {
                ts: ts.clone(),
                evicted: false,
            });
        }
        Ok((delta, added, removed))
    }

    fn observe_member(&self, member: &Bytes, ctx: &mut CausalContext) {
        for dot in self.set.get(member).into_iter().flat_map(|d| d.keys()) {
            ctx.insert(dot.clone());
        }
    }

    /// `HSET`, `HINCRBY`, `HDEL` in one step: `actor` sets the fields of `set`, adds to the
    /// fields of `incr`, and removes the fields of `remove` (a field in two of them is the
    /// caller's mistake). Returns the delta, the fields `set` created, the fields `remove`
    /// removed, and the value of each `incr` field after it, as this replica sees them.
    #[allow(clippy::type_complexity)]
    pub fn update_hash(
        &self,
        actor: &str,
        set: &[(Bytes, Bytes)],
        incr: &[(Bytes, Number)],
        remove: &[Bytes],
        ts: &Timestamp,
        now_ms: u64,
    ) -> Result<(Self, u32, u32, Vec<Bytes>), TypedError> {
        self.check_type(Type::Hash, now_ms)?;
        let cutoff = self.cutoff(now_ms);
        let cutoff = cutoff.as_ref();
        let mut delta = self.base_delta(Some(Type::Hash), ts, now_ms);
        let mut issued = self.ctx.clone();
        let empty = Field::default();
        let field = |name: &Bytes| self.hash.get(name).unwrap_or(&empty);
        let live = |name: &Bytes| field_value(field(name), cutoff);
        let (mut created, mut removed) = (0, 0);
        for (name, value) in set {
            let f = field(name);
            created += u32::from(live(name).is_none());
            let d = delta.hash.entry(name.clone()).or_default();
            for dot in f.writes.keys() {
                delta.ctx.insert(dot.clone());
            }
            let dot = issued.next_dot(actor)?;
            issued.insert(dot.clone());
            delta.ctx.insert(dot.clone());
            d.writes.insert(
                dot,
                FieldWrite {
                    ts: ts.clone(),
                    value: Some(value.clone()),
                    seen: f.replaced(),
                },
            );
        }
        let mut values = Vec::with_capacity(incr.len());
        for (name, by) in incr {
            let f = field(name);
            let current = live(name);
            let d = delta.hash.entry(name.clone()).or_default();
            if current.is_none() {
                // A field that is gone starts again from 0.
                d.reset = f.replaced();
            }
            // One presence dot per writer: the increment's own replaces the writer's earlier.
            for (dot, w) in f.writes.iter() {
                if w.value.is_none() {
                    delta.ctx.insert(dot.clone());
                }
            }
            let dot = issued.next_dot(actor)?;
            issued.insert(dot.clone());
            delta.ctx.insert(dot.clone());
            d.writes.insert(
                dot,
                FieldWrite {
                    ts: ts.clone(),
                    value: None,
                    seen: Increments::new(),
                },
            );
            let entry = bump(f.incr.get(actor), current.as_ref(), *by, ts)?;
            d.incr.insert(actor.to_string(), entry);
        }
        for name in remove {
            let f = field(name);
            removed += u32::from(live(name).is_some());
            for dot in f.writes.keys() {
                delta.ctx.insert(dot.clone());
            }
            // Named even without increments, so that merging the delta visits it.
            let d = delta.hash.entry(name.clone()).or_default();
            if !f.incr.is_empty() {
                d.reset = f.replaced();
            }
        }
        // What the write leaves, worked out from the fields it touched (the watermark stays
        // where it was: a hash write moves neither it nor the expiry).
        for (name, _) in incr {
            let mut after = field(name).clone();
            if let Some(d) = delta.hash.get(name) {
                merge_field(&mut after, &self.ctx, d, &delta.ctx);
            }
            values.push(field_value(&after, cutoff).unwrap_or_else(|| Bytes::from_static(b"0")));
        }
        // The last live fields removed (a write that sets or adds to one leaves the key live).
        let emptied = removed > 0
            && set.is_empty()
            && incr.is_empty()
            && self
                .hash
                .values()
                .filter(|f| f.writes.values().any(|w| !gone(&w.ts, cutoff)))
                .take(removed as usize + 1)
                .count()
                == removed as usize;
        if emptied {
            delta.deleted = Some(Deletion {
                ts: ts.clone(),
                evicted: false,
            });
        }
        Ok((delta, created, removed, values))
    }
}

/// An actor's totals after it adds `by` to a string whose value is `current`.
fn bump(
    mine: Option<&Incr>,
    current: Option<&Bytes>,
    by: Number,
    ts: &Timestamp,
) -> Result<Incr, TypedError> {
    let mut entry = mine.cloned().unwrap_or_default();
    entry.n = entry.n.checked_add(1).ok_or(TypedError::Overflow)?;
    entry.ts = ts.clone();
    let now = current
        .map(parse_number)
        .transpose()
        .map_err(|_| match by {
            Number::Int(_) => TypedError::NotAnInteger,
            Number::Float(_) => TypedError::NotAFloat,
        })?;
    match by {
        Number::Int(by) => {
            let value = match now {
                None => 0,
                Some(Parsed::Int(v)) => v,
                Some(Parsed::Float(_)) => return Err(TypedError::NotAnInteger),
            };
            let after = value + i128::from(by);
            if i64::try_from(after).is_err() {
                return Err(TypedError::Overflow);
            }
            entry.int += i128::from(by);
        }
        Number::Float(by) => {
            let value = match now {
                None => 0.0,
                Some(Parsed::Int(v)) => v as f64,
                Some(Parsed::Float(f)) => f,
            };
            if !(value + by).is_finite() || !by.is_finite() {
                return Err(TypedError::NotFinite);
            }
            entry.float = Float(entry.float.0 + by);
        }
    }
    Ok(entry)
}

/// A string's value read as a number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parsed {
    Int(i128),
    Float(f64),
}

/// `bytes` as Redis reads a number: an integer, else a finite float; anything else is not a
/// number (for an integer increment, not an integer).
fn parse_number(bytes: &Bytes) -> Result<Parsed, TypedError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TypedError::NotAnInteger)?;
    if let Some(i) = parse_integer(text) {
        return Ok(Parsed::Int(i128::from(i)));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && !text.trim().is_empty() && text.trim() == text => {
            Ok(Parsed::Float(f))
        }
        _ => Err(TypedError::NotAnInteger),
    }
}

/// A floating-point result as Redis writes one: fixed-point with at most 17 decimals, no
/// trailing zeros, no exponent (so a result below 1e-17 is `0`). Rounded to 15 significant
/// digits first, so sums of decimal fractions read as the decimal (0.1 + 0.2 is 0.3), as
/// Redis's long double arithmetic gives; where Redis shows 17 digits of a long double (1/3),
/// this shows 15.
pub fn format_float(x: f64) -> String {
    // 15 significant digits, d.dddddddddddddde±x, laid out as a decimal by hand (printing
    // the rounded f64 with 17 decimals would show its binary expansion: 10.59999...).
    let scientific = format!("{:.14e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exponent.parse::<i64>().unwrap_or(0) + 1;
    let (int, frac) = if point <= 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        ("0".to_string(), format!("{zeros}{digits}"))
    } else if point as usize >= digits.len() {
        let zeros = "0".repeat(point as usize - digits.len());
        (format!("{digits}{zeros}"), String::new())
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_string(), f.to_string())
    };
    let frac = frac.get(..17).unwrap_or(&frac).trim_end_matches('0');
    let shown = if frac.is_empty() {
        int
    } else {
        format!("{int}.{frac}")
    };
    if x < 0.0 && shown != "0" {
        format!("-{shown}")
    } else {
        shown
    }
}

/// `text` as Redis reads an integer (`string2ll`): optional `-`, digits, no leading zeros, no
/// `+`, no spaces, within 64 bits.
pub fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = match digits.as_bytes() {
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical { text.parse().ok() } else { None }
}

/// What a string (or field) shows: its last value plus the increments that write did not see.
/// `reset` holds increments removed without a value (a field's `HDEL`). `None` when nothing
/// live is left.
fn render(
    s: &Counted,
    reset: &Increments,
    cutoff: Option<&Timestamp>,
) -> Option<(Bytes, Timestamp)> {
    let base = s.base.as_ref().filter(|b| !gone(&b.ts, cutoff));
    let seen = base.map(|b| &b.seen);
    render_with(
        base.and_then(|b| b.value.as_ref()),
        base.map(|b| &b.ts),
        seen,
        reset,
        &s.incr,
        cutoff,
    )
}

/// [`render`] from its parts: the live written value (if any) and when, the increments it
/// replaced, and every actor's increments.
fn render_with(
    value: Option<&Bytes>,
    written: Option<&Timestamp>,
    seen: Option<&Increments>,
    reset: &Increments,
    incr: &Increments,
    cutoff: Option<&Timestamp>,
) -> Option<(Bytes, Timestamp)> {
    let mut int: i128 = 0;
    let mut float = 0.0f64;
    let mut counted: Option<&Timestamp> = None;
    for (actor, e) in incr {
        if gone(&e.ts, cutoff) {
            continue;
        }
        let baseline = [seen.and_then(|s| s.get(actor)), reset.get(actor)]
            .into_iter()
            .flatten()
            .max_by(|a, b| a.n.cmp(&b.n));
        let (bn, bi, bf) = baseline.map_or((0, 0, 0.0), |b| (b.n, b.int, b.float.0));
        if e.n <= bn {
            continue;
        }
        int += e.int - bi;
        float += e.float.0 - bf;
        counted = counted.max(Some(&e.ts));
    }
    let ts = written.filter(|_| value.is_some()).max(counted).cloned();
    let ts = ts?;
    if counted.is_none() {
        return value.map(|v| (v.clone(), ts));
    }
    let shown = match value.map(parse_number) {
        None => Parsed::Int(0),
        Some(Ok(p)) => p,
        // Not a number: the increments cannot apply, the written value stands.
        Some(Err(_)) => return value.map(|v| (v.clone(), ts)),
    };
    let text = match shown {
        Parsed::Int(v) if float == 0.0 => (v + int).to_string(),
        Parsed::Int(v) => format_float(v as f64 + int as f64 + float),
        Parsed::Float(f) => format_float(f + int as f64 + float),
    };
    Some((Bytes::from(text), ts))
}

/// A hash field's value, if it is present: its latest live `HSET` value plus the increments
/// neither that write nor a removal replaced.
fn field_value(f: &Field, cutoff: Option<&Timestamp>) -> Option<Bytes> {
    let live: Vec<&FieldWrite> = f.writes.values().filter(|w| !gone(&w.ts, cutoff)).collect();
    if live.is_empty() {
        return None;
    }
    let base = live
        .iter()
        .filter(|w| w.value.is_some())
        .max_by(|a, b| (&a.ts, &a.value).cmp(&(&b.ts, &b.value)));
    let rendered = render_with(
        base.and_then(|w| w.value.as_ref()),
        base.map(|w| &w.ts),
        base.map(|w| &w.seen),
        &f.reset,
        &f.incr,
        cutoff,
    );
    Some(rendered.map_or_else(|| Bytes::from_static(b"0"), |(v, _)| v))
}

impl Crdt for TypedValue {
    fn merge(&mut self, other: &Self) {
        // A delta an operation made touches only the members it names (unless it moves the
        // watermark, which may drop anything): the write costs time in what it changed, not
        // in the collection's size.
        let named_only = other.partial && other.cleared <= self.cleared;
        // The dotted parts first: they need both sides' contexts as they were.
        if named_only {
            self.merge_named(other);
        } else {
            merge_dotted(&mut self.set, &self.ctx, &other.set, &other.ctx);
            merge_fields(&mut self.hash, &self.ctx, &other.hash, &other.ctx);
            self.digest = Cached(None);
        }
        self.ctx.join(&other.ctx);
        self.string.merge(&other.string);
        if let Some(theirs) = &other.expiry
            && self
                .expiry
                .as_ref()
                .is_none_or(|mine| (&theirs.ts, theirs.at_ms) > (&mine.ts, mine.at_ms))
        {
            self.expiry = Some(theirs.clone());
        }
        if let Some(theirs) = &other.deleted
            && self
                .deleted
                .as_ref()
                .is_none_or(|mine| (&theirs.ts, theirs.evicted) > (&mine.ts, mine.evicted))
        {
            self.deleted = Some(theirs.clone());
        }
        if other.cleared > self.cleared {
            self.cleared = other.cleared.clone();
        }
        // Two partial deltas joined stay partial (each named what it covers). A full merge
        // gives a value merged over the whole next time, which is always right.
        self.partial = named_only && self.partial;
        if named_only {
            // The string part, as `compact` would (the named members were done above).
            if self
                .string
                .base
                .as_ref()
                .is_some_and(|b| gone(&b.ts, self.cleared.as_ref()))
            {
                self.string.base = None;
            }
        } else {
            self.set.retain(|_, dots| !dots.is_empty());
            self.hash.retain(|_, f| f.is_kept());
            self.compact();
        }
    }
}

impl TypedValue {
    /// [`Crdt::merge`] of a partial delta: only the members it names, each compacted against
    /// the watermark, the collection digest updated member by member.
    fn merge_named(&mut self, other: &Self) {
        let keep_empty = self.partial;
        let cutoff = self.cleared.clone();
        let cutoff = cutoff.as_ref();
        let mut digest = self.digest.0;
        for (name, dots) in &other.set {
            let before = digest.map(|_| set_member_digest(name, self.set.get(name)));
            let mine = self.set.entry(name.clone()).or_default();
            merge_dots(mine, &self.ctx, dots, &other.ctx);
            mine.retain(|_, ts| !gone(ts, cutoff));
            if mine.is_empty() && !keep_empty {
                self.set.remove(name);
            }
            if let (Some(d), Some(before)) = (digest.as_mut(), before) {
                d.toggle(&before, false);
                d.toggle(&set_member_digest(name, self.set.get(name)), true);
            }
        }
        for (name, field) in &other.hash {
            let before = digest.map(|_| hash_field_digest(name, self.hash.get(name)));
            let mine = self.hash.entry(name.clone()).or_default();
            merge_field(mine, &self.ctx, field, &other.ctx);
            mine.writes.retain(|_, w| !gone(&w.ts, cutoff));
            if !mine.is_kept() && !keep_empty {
                self.hash.remove(name);
            }
            if let (Some(d), Some(before)) = (digest.as_mut(), before) {
                d.toggle(&before, false);
                d.toggle(&hash_field_digest(name, self.hash.get(name)), true);
            }
        }
        self.digest = Cached(digest);
    }

    /// The digest of the set and hash parts: the XOR of one digest per member, and the sum
    /// of their encoded sizes. Kept up to date by merges once known; worked out over the
    /// whole collection when not.
    pub fn collection_digest(&self) -> Digest {
        if let Some(d) = self.digest.0 {
            return d;
        }
        let mut d = Digest::default();
        for (name, dots) in &self.set {
            d.toggle(&set_member_digest(name, Some(dots)), true);
        }
        for (name, field) in &self.hash {
            d.toggle(&hash_field_digest(name, Some(field)), true);
        }
        d
    }

    /// Works out the collection digest if it is not known, so that later merges keep it.
    pub fn keep_digest(&mut self) {
        if self.digest.0.is_none() {
            self.digest = Cached(Some(self.collection_digest()));
        }
    }

    /// Everything but the set and hash parts, to encode for the Merkle item hash beside
    /// [`TypedValue::collection_digest`].
    pub fn header(&self) -> impl Serialize + '_ {
        (
            &self.ctx,
            &self.cleared,
            &self.expiry,
            &self.deleted,
            &self.string,
            self.partial,
        )
    }

    /// This value as a state to keep: a delta stored as the first state of its key stops
    /// being partial and loses the empty entries that only named what it removed.
    pub fn into_state(mut self) -> Self {
        if self.partial {
            self.partial = false;
            self.set.retain(|_, dots| !dots.is_empty());
            self.hash.retain(|_, f| f.is_kept());
            self.digest = Cached(None);
        }
        self
    }
}

/// A set member's digest (nothing when it is absent).
fn set_member_digest(name: &Bytes, dots: Option<&Dots<Timestamp>>) -> Digest {
    dots.map_or_else(Digest::default, |d| digest::member(SET_TAG, name, d))
}

/// A hash field's digest (nothing when it is absent).
fn hash_field_digest(name: &Bytes, field: Option<&Field>) -> Digest {
    field.map_or_else(Digest::default, |f| digest::member(HASH_TAG, name, f))
}

/// The observed-remove merge of dotted entries: keep a dot of ours unless the other side has
/// seen it and dropped it; take a dot of theirs unless we have seen it.
fn merge_dots<V: Clone>(
    mine: &mut Dots<V>,
    my_ctx: &CausalContext,
    theirs: &Dots<V>,
    their_ctx: &CausalContext,
) {
    mine.retain(|d, _| theirs.contains_key(d) || !their_ctx.contains(d));
    for (d, v) in theirs.iter() {
        if !my_ctx.contains(d) && !mine.contains_key(d) {
            mine.insert(d.clone(), v.clone());
        }
    }
}

fn merge_dotted(
    mine: &mut BTreeMap<Bytes, Dots<Timestamp>>,
    my_ctx: &CausalContext,
    theirs: &BTreeMap<Bytes, Dots<Timestamp>>,
    their_ctx: &CausalContext,
) {
    let empty = Dots::new();
    for (member, dots) in mine.iter_mut() {
        merge_dots(
            dots,
            my_ctx,
            theirs.get(member).unwrap_or(&empty),
            their_ctx,
        );
    }
    for (member, dots) in theirs {
        if !mine.contains_key(member) {
            let mut fresh = Dots::new();
            merge_dots(&mut fresh, my_ctx, dots, their_ctx);
            if !fresh.is_empty() {
                mine.insert(member.clone(), fresh);
            }
        }
    }
}

/// One hash field's merge: its writes observed-remove, its increments by actor.
fn merge_field(mine: &mut Field, my_ctx: &CausalContext, other: &Field, their_ctx: &CausalContext) {
    merge_dots(&mut mine.writes, my_ctx, &other.writes, their_ctx);
    merge_increments(&mut mine.incr, &other.incr);
    merge_increments(&mut mine.reset, &other.reset);
}

fn merge_fields(
    mine: &mut BTreeMap<Bytes, Field>,
    my_ctx: &CausalContext,
    theirs: &BTreeMap<Bytes, Field>,
    their_ctx: &CausalContext,
) {
    let empty = Field::default();
    for (name, field) in mine.iter_mut() {
        merge_field(field, my_ctx, theirs.get(name).unwrap_or(&empty), their_ctx);
    }
    for (name, other) in theirs {
        if !mine.contains_key(name) {
            let mut field = Field::default();
            merge_field(&mut field, my_ctx, other, their_ctx);
            mine.insert(name.clone(), field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: u64, node: &str) -> Timestamp {
        Timestamp {
            millis: ms,
            logical: 0,
            node: node.into(),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn apply(v: &mut TypedValue, delta: &TypedValue) {
        v.merge(delta);
    }

    #[test]
    fn a_string_counts_and_a_set_replaces_what_it_saw() {
        let mut a = TypedValue::new();
        let d = a.set_string(b("10"), TtlChange::Clear, &ts(1, "n1"), 1);
        apply(&mut a, &d);
        let mut b_side = a.clone();
        let (d1, v1) = a.incr("x", Number::Int(1), &ts(2, "n1"), 2).expect("incr");
        assert_eq!(v1, b("11"));
        apply(&mut a, &d1);
        let (d2, v2) = b_side
            .incr("y", Number::Int(5), &ts(3, "n2"), 3)
            .expect("incr");
        assert_eq!(v2, b("15"));
        apply(&mut b_side, &d2);
        a.merge(&b_side);
        b_side.merge(&a);
        assert_eq!(a.string(10), Some(b("16")));
        assert_eq!(a, b_side);
        // A SET replaces the increments it saw; one it did not see still counts.
        let mut c = a.clone();
        let (d3, _) = c
            .incr("z", Number::Int(100), &ts(4, "n3"), 4)
            .expect("incr");
        apply(&mut c, &d3);
        let d = a.set_string(b("1"), TtlChange::Clear, &ts(5, "n1"), 5);
        apply(&mut a, &d);
        a.merge(&c);
        assert_eq!(a.string(10), Some(b("101")));
    }

    #[test]
    fn floats_and_non_numbers() {
        let mut a = TypedValue::new();
        let d = a.set_string(b("10.5"), TtlChange::Clear, &ts(1, "n1"), 1);
        apply(&mut a, &d);
        let (d, v) = a
            .incr("x", Number::Float(0.1), &ts(2, "n1"), 2)
            .expect("float");
        assert_eq!(v, b("10.6"));
        apply(&mut a, &d);
        assert_eq!(
            a.incr("x", Number::Int(1), &ts(3, "n1"), 3).map(|_| ()),
            Err(TypedError::NotAnInteger)
        );
        let d = a.set_string(b("abc"), TtlChange::Clear, &ts(4, "n1"), 4);
        apply(&mut a, &d);
        assert_eq!(
            a.incr("x", Number::Int(1), &ts(5, "n1"), 5).map(|_| ()),
            Err(TypedError::NotAnInteger)
        );
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(11.0), "11");
        assert_eq!(format_float(-2.5), "-2.5");
        assert_eq!(format_float(1e20), "100000000000000000000");
        assert_eq!(format_float(1.5e-10), "0.00000000015");
        assert_eq!(format_float(1e-20), "0");
        assert_eq!(format_float(-1e-20), "0");
        assert_eq!(format_float(1.0 / 3.0), "0.333333333333333");
        assert_eq!(format_float(5.0e3), "5000");
    }

    #[test]
    fn the_later_write_decides_the_type_and_the_loser_does_not_come_back() {
        let base = TypedValue::new();
        let mut a = base.clone();
        let mut bb = base.clone();
        let d = a.set_string(b("v"), TtlChange::Clear, &ts(1, "n1"), 1);
        apply(&mut a, &d);
        let (d, _, _) = bb
            .update_set("y", &[b("m")], &[], &ts(2, "n2"), 2)
            .expect("sadd");
        apply(&mut bb, &d);
        a.merge(&bb);
        assert_eq!(a.kind_at(10), Some(Type::Set));
        assert_eq!(
            a.set_string(b("w"), TtlChange::Clear, &ts(3, "n1"), 3)
                .kind_at(10),
            Some(Type::String)
        );
        // Removing the last member leaves the key empty: the old string stays gone.
        let (d, _, removed) = a
            .update_set("x", &[], &[b("m")], &ts(4, "n1"), 4)
            .expect("srem");
        assert_eq!(removed, 1);
        apply(&mut a, &d);
        assert_eq!(a.kind_at(10), None);
        assert!(a.death_time(10).is_some());
    }

    #[test]
    fn expiry_removes_everything_before_it() {
        let mut a = TypedValue::new();
        let (d, _, _) = a
            .update_set("x", &[b("m")], &[], &ts(1, "n1"), 1)
            .expect("sadd");
        apply(&mut a, &d);
        let d = a.set_expiry(TtlChange::At(100), &ts(2, "n1"), 2);
        apply(&mut a, &d);
        assert_eq!(a.expires_at(50), Some(100));
        assert_eq!(a.kind_at(100), None);
        // A write after the expiry makes a new key, without the old members or a TTL.
        let (d, added, _) = a
            .update_set("x", &[b("n")], &[], &ts(150, "n1"), 150)
            .expect("sadd");
        assert_eq!(added, 1);
        apply(&mut a, &d);
        assert_eq!(a.members(160), vec![&b("n")]);
        assert_eq!(a.expires_at(160), None);
        // A later expiry does not bring the first member back.
        let d = a.set_expiry(TtlChange::At(1000), &ts(170, "n1"), 170);
        apply(&mut a, &d);
        assert_eq!(a.members(180), vec![&b("n")]);
    }

    #[test]
    fn a_hash_field_survives_a_concurrent_removal_and_counts() {
        let mut a = TypedValue::new();
        let (d, created, _, _) = a
            .update_hash("x", &[(b("f"), b("1"))], &[], &[], &ts(1, "n1"), 1)
            .expect("hset");
        assert_eq!(created, 1);
        apply(&mut a, &d);
        let mut bb = a.clone();
        let (d, _, removed, _) = a
            .update_hash("x", &[], &[], &[b("f")], &ts(2, "n1"), 2)
            .expect("hdel");
        assert_eq!(removed, 1);
        apply(&mut a, &d);
        let (d, _, _, values) = bb
            .update_hash("y", &[], &[(b("f"), Number::Int(5))], &[], &ts(3, "n2"), 3)
            .expect("hincrby");
        assert_eq!(values, vec![b("6")]);
        apply(&mut bb, &d);
        a.merge(&bb);
        // The field survives; the removal took the value it observed (1), not the increment.
        assert_eq!(a.fields(10), vec![(&b("f"), b("5"))]);
        // After a removal the field starts from 0.
        let (d, _, _, _) = a
            .update_hash("x", &[], &[], &[b("f")], &ts(4, "n1"), 4)
            .expect("hdel");
        apply(&mut a, &d);
        let (_, _, _, values) = a
            .update_hash("x", &[], &[(b("f"), Number::Int(2))], &[], &ts(5, "n1"), 5)
            .expect("hincrby");
        assert_eq!(values, vec![b("2")]);
    }
}

//! The data types as clients see them: what each write means for its type (the delta it
//! makes, the checks it needs, what it reports) and how a read's merged state is shown.
//!
//! The coordinator's quorum mechanics (placement, forwarding, fallbacks, hints, the tally,
//! read repair) know nothing of the types: they drive any [`Operation`]. A new data type is a
//! module here with its writes implementing [`Operation`], a variant of [`Write`] for each,
//! and its views for the front ends; the coordinator does not change.

pub mod counter;
pub mod kv;
pub mod typed;

use serde::{Deserialize, Serialize};

use crate::causality::Timestamp;
use crate::ops::{OpError, Written};
use crate::storage::{Applied, Key, Kind, Store, StoreError, Value};

/// What one write means for its data type, whatever node coordinates it.
pub trait Operation: Send + Sync {
    /// The key space it writes to.
    fn kind(&self) -> Kind;

    /// Short operation name for metrics and logs.
    fn name(&self) -> &'static str;

    /// Whether the write can make the data larger: under `noeviction` a node past its memory
    /// limit refuses the writes that can, and takes the others (deletes, removals, expiries).
    fn may_grow(&self) -> bool {
        true
    }

    /// Refuses a write that is wrong in itself, whatever the cluster's state.
    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        let _ = limits;
        Ok(())
    }

    /// Whether the delta issues dots, so only a replica of the key may make it: its store
    /// knows the highest dot it handed out for the key. A node outside the key's preference
    /// list forwards such a write to a replica.
    fn issues_dots(&self) -> bool {
        false
    }

    /// Whether the key is read at R before the delta is made, so that the delta builds on
    /// what a quorum has seen (a remove removes only what it observed).
    fn observes(&self) -> bool {
        false
    }

    /// Whether the delta is made from the key's current state (the increments a `SET`
    /// replaces, the members a delete removes). A node that is not a replica of the key reads
    /// it at R for that state; a replica uses its own.
    fn builds_on_state(&self) -> bool {
        self.issues_dots()
    }

    /// Makes the delta to send to the key's replicas, and fills in what the write reports.
    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError>;

    /// Whether replicas answer with their merged state, for [`Operation::report`].
    fn wants_states(&self) -> bool {
        false
    }

    /// Completes the report once the write is acknowledged, from the states of the replicas
    /// that acknowledged it (this node's own first, when it is one), if
    /// [`Operation::wants_states`].
    fn report(&self, written: &mut Written, states: &[&Value], now_ms: u64) {
        let _ = (written, states, now_ms);
    }
}

/// The limits a write is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest value (and largest total of set members) a request may carry.
    pub max_value_bytes: usize,
}

/// The longest time to live a write may ask for: a hundred years, far enough, and no overflow
/// when added to the clock.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Checks a time to live in milliseconds.
pub fn check_ttl(ttl_ms: Option<u64>) -> Result<(), OpError> {
    match ttl_ms {
        Some(0) => Err(OpError::bad(
            "a ttl of 0 would expire at once; use a ttl of 1 second or more",
        )),
        Some(t) if t > MAX_TTL_MS => Err(OpError::bad(format!(
            "a ttl of {} s is too large; use at most 100 years",
            t / 1000
        ))),
        _ => Ok(()),
    }
}

/// Checks a value's size.
pub fn check_value_size(len: usize, limits: &Limits) -> Result<(), OpError> {
    let max = limits.max_value_bytes;
    if len > max {
        return Err(OpError::TooLarge(format!(
            "the value is {len} bytes; this cluster stores values of at most {max} bytes"
        )));
    }
    Ok(())
}

/// What [`Operation::delta`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// A delta made on this node's store with [`Base::update`]: merged there already.
    Applied(Value),
    /// A delta to merge into every replica, this node's own included when it is one.
    New(Value),
    /// Nothing to write (a delete of a key no replica has): the write succeeds as is.
    Nothing,
}

/// What a write's delta is made from.
pub struct Base<'a> {
    key: &'a Key,
    now_ms: u64,
    store: Option<&'a dyn Store>,
    observed: Option<&'a Value>,
    timestamp: &'a (dyn Fn(u64) -> Timestamp + Sync),
    limits: Limits,
    /// What the write reports back; the operation fills in its part.
    pub written: Written,
}

impl<'a> Base<'a> {
    /// The base of a write to `key` at `now_ms` coordinated by a node with `store` (`None`: the
    /// node is not a replica and builds on `observed`): what a read at R saw first (if the
    /// operation observes), the node's hybrid clock, and the limits what the write makes must
    /// stay within (an `APPEND` can only be checked against the value it extends).
    pub fn new(
        key: &'a Key,
        now_ms: u64,
        store: Option<&'a dyn Store>,
        observed: Option<&'a Value>,
        timestamp: &'a (dyn Fn(u64) -> Timestamp + Sync),
        limits: Limits,
    ) -> Self {
        Base {
            key,
            now_ms,
            store,
            observed,
            timestamp,
            limits,
            written: Written::default(),
        }
    }

    /// The limits the value the write makes must stay within.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The time the write is made at.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// An expiry `ttl_ms` from now.
    pub fn expiry(&self, ttl_ms: Option<u64>) -> Option<u64> {
        ttl_ms.map(|t| self.now_ms.saturating_add(t))
    }

    /// A last-write-wins timestamp after everything this node has issued or seen.
    pub fn timestamp(&self) -> Timestamp {
        (self.timestamp)(self.now_ms)
    }

    /// The merge of what a read at R saw, for an operation that [`Operation::observes`];
    /// `None` when no replica had the key.
    pub fn observed(&self) -> Option<&Value> {
        self.observed
    }

    /// Makes a dot-issuing delta on this node's store: `make` gets the key's current state
    /// and the actor to issue dots under, under the key's lock, and its delta is merged there
    /// at once. A refusal (`Err(message)`) changes nothing and is the client's 400.
    pub fn update(
        &mut self,
        mut make: impl FnMut(Option<&Value>, &str) -> Result<Value, String>,
    ) -> Result<Applied, OpError> {
        let store = self
            .store
            .ok_or_else(|| OpError::bad("a dot-issuing write needs a replica's store"))?;
        let applied = store
            .update(self.key, self.now_ms, &mut |current, actor| {
                make(current, actor).map(Some).map_err(StoreError::Rejected)
            })
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        applied.ok_or_else(|| OpError::bad("the store made no delta"))
    }

    /// Makes a delta from the key's current state with `make` (which may find nothing to
    /// write, `Ok(None)`, or refuse with the client's error): on this node's replica under the
    /// key's lock, merged there at once; on a node that is not a replica, from what the read
    /// at R observed, for every replica to merge.
    pub fn from_state(
        &mut self,
        mut make: impl FnMut(Option<&Value>, &str) -> Result<Option<Value>, OpError>,
    ) -> Result<Delta, OpError> {
        let Some(store) = self.store else {
            return Ok(match make(self.observed, "")? {
                Some(delta) => Delta::New(delta),
                None => Delta::Nothing,
            });
        };
        let mut refused = None;
        let applied = store.update(self.key, self.now_ms, &mut |current, actor| {
            make(current, actor).map_err(|e| {
                refused = Some(e);
                StoreError::Rejected(String::new())
            })
        });
        match (applied, refused) {
            (_, Some(e)) => Err(e),
            (Ok(Some(applied)), None) => Ok(Delta::Applied(applied.delta)),
            (Ok(None), None) => Ok(Delta::Nothing),
            (Err(e), None) => Err(OpError::BadRequest(e.to_string())),
        }
    }
}

/// A change to one key, as clients ask for it and as it is forwarded between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// `PUT /kv`.
    KvPut(kv::Put),
    /// `DELETE /kv`.
    KvDelete(kv::Delete),
    /// `POST /counter`, Redis `COUNTER.INCRBY`.
    CounterAdd(counter::Add),
    /// A write to the typed namespace: `/lww`, `/set`, `/hash` and the Redis commands.
    Typed(typed::TypedWrite),
}

impl Write {
    /// The write as the operation it is: the one place that knows every type.
    pub fn op(&self) -> &dyn Operation {
        match self {
            Write::KvPut(op) => op,
            Write::KvDelete(op) => op,
            Write::CounterAdd(op) => op,
            Write::Typed(op) => op,
        }
    }

    /// The key space the write belongs to.
    pub fn kind(&self) -> Kind {
        self.op().kind()
    }

    /// Short operation name for metrics and logs.
    pub fn name(&self) -> &'static str {
        self.op().name()
    }
}

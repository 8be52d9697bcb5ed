//! The replica side of a node: its share of the data, and what it does with the requests of
//! other nodes' coordinators (reads, merges, hints, batches, Merkle queries).
//!
//! A [`Replica`] only ever merges what it receives, so a retried or duplicated message changes
//! nothing. It holds the node's hybrid logical clock too: every last-write-wins timestamp a
//! replica merges moves the clock past it, so this node's next write orders after it.

pub mod durable;
pub mod hints;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::causality::{HybridClock, Timestamp};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rpc::{
    ArcHashes, Call, ClockNow, Hint, MAX_ARCS, Merge, MergeBatch, MerkleStep, Read, ReadBatch,
    ReplicaError, Request, Response, ScanKeys, respond,
};
use crate::storage::{Key, Store, StoreError, Value};

use hints::HintStore;

/// A node id shared by everything that names it: cloning one costs no allocation.
pub type NodeId = Arc<str>;

/// Most keys one [`ScanKeys`] answers.
pub const MAX_SCAN: usize = 10_000;

/// How far ahead of this node's clock another node's LWW timestamp may be before the clock
/// stops following it (it still orders after it, by the logical part).
pub const MAX_CLOCK_DRIFT_MS: u64 = 60_000;

/// How far past the timestamps it issues a node's durable clock mark runs: one record in the
/// log per second of timestamps, and a restarted node's first timestamps at most this far
/// ahead of where its clock stopped.
pub const CLOCK_LEASE_MS: u64 = 1_000;

/// One node's replica store, hints and clock.
pub struct Replica {
    me: NodeId,
    store: Arc<dyn Store>,
    hints: Arc<HintStore>,
    clock: Arc<dyn Clock>,
    hlc: Mutex<HybridClock>,
    /// The milliseconds the hybrid clock has reached (issued or observed): lets
    /// [`Replica::observe`] skip the lock for timestamps already behind it.
    hlc_millis: AtomicU64,
    /// Timestamps from this millisecond on need a new clock mark in the durable log first.
    clock_lease: AtomicU64,
    /// Whether reads are answered: not while the node joins or bootstraps.
    serving_reads: AtomicBool,
    metrics: Metrics,
}

impl Replica {
    /// A replica of node `me` over `store`, holding hints in `hints` (both may outlive it, as
    /// a durable engine's data would outlive a process).
    pub fn new(
        me: &str,
        store: Arc<dyn Store>,
        hints: Arc<HintStore>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        Replica {
            hlc: Mutex::new(HybridClock::new(me, MAX_CLOCK_DRIFT_MS)),
            hlc_millis: AtomicU64::new(0),
            clock_lease: AtomicU64::new(0),
            serving_reads: AtomicBool::new(true),
            me: me.into(),
            store,
            hints,
            clock,
            metrics,
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// The replica store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The hints this node holds for others.
    pub fn hints(&self) -> &HintStore {
        &self.hints
    }

    /// The node's wall clock, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether this replica answers reads: not while the node joins or bootstraps.
    pub fn serves_reads(&self) -> bool {
        self.serving_reads.load(Ordering::Relaxed)
    }

    /// Starts or stops answering reads.
    pub fn set_serving_reads(&self, serving: bool) {
        self.serving_reads.store(serving, Ordering::Relaxed);
    }

    /// A last-write-wins timestamp after everything this node has issued or seen.
    pub fn timestamp(&self, now_ms: u64) -> Timestamp {
        let ts = self
            .hlc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .now(now_ms);
        self.hlc_millis.fetch_max(ts.millis, Ordering::Relaxed);
        if ts.millis >= self.clock_lease.load(Ordering::Relaxed)
            && let Some(journal) = self.store.journal()
        {
            // Logged before the timestamp is used: whatever acknowledges a write made with it
            // waits for this record too.
            let lease = ts.millis.saturating_add(CLOCK_LEASE_MS);
            journal.clock(lease);
            self.clock_lease.fetch_max(lease, Ordering::Relaxed);
        }
        ts
    }

    /// A clock mark past every timestamp issued so far (and past the mark in the log).
    pub fn clock_mark(&self) -> u64 {
        let issued = self
            .hlc_millis
            .load(Ordering::Relaxed)
            .saturating_add(CLOCK_LEASE_MS);
        self.clock_lease.load(Ordering::Relaxed).max(issued)
    }

    /// Starts the clock at `millis` (a durable clock mark recovered from the log): every
    /// timestamp this node issued before its restart orders before the ones it issues now.
    pub fn resume_clock(&self, millis: u64) {
        let mut hlc = self
            .hlc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hlc.resume_at(millis);
        self.hlc_millis.fetch_max(millis, Ordering::Relaxed);
        self.clock_lease.fetch_max(millis, Ordering::Relaxed);
    }

    /// Lets later local timestamps order after the newest timestamp in `value`.
    pub fn observe(&self, value: &Value) {
        let Value::Typed(t) = value else {
            return;
        };
        if let Some(ts) = t.newest() {
            self.observe_ts(ts);
        }
    }

    /// Lets later local timestamps order after another node's clock reading.
    pub fn observe_clock(&self, ts: &Timestamp) {
        self.observe_ts(ts);
    }

    /// Lets later local timestamps order after `ts`.
    fn observe_ts(&self, ts: &Timestamp) {
        // Older in milliseconds than what the clock has reached: every later local timestamp
        // orders after it already, no need for the lock.
        if ts.millis < self.hlc_millis.load(Ordering::Relaxed) {
            return;
        }
        let now = self.now_ms();
        let mut hlc = self
            .hlc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = hlc.observe(ts, now) {
            tracing::warn!(node = %ts.node, "not following a remote clock: {e}");
        }
        self.hlc_millis.fetch_max(ts.millis, Ordering::Relaxed);
    }

    /// The replica's state of a key, tombstones included; refused while bootstrapping.
    pub fn read(&self, key: &Key) -> Result<Option<Value>, ReplicaError> {
        if !self.serves_reads() {
            return Err(ReplicaError::NotServingReads);
        }
        Ok(self.store.get(key, self.now_ms()))
    }

    /// Merges a delta or a state in; the merged state when `reply_state` asks for it.
    pub fn merge(
        &self,
        key: &Key,
        value: &Value,
        reply_state: bool,
    ) -> Result<Option<Value>, StoreError> {
        self.observe(value);
        let now = self.now_ms();
        if reply_state {
            self.store.merge(key, value, now).map(Some)
        } else {
            self.store.absorb(key, value, now).map(|()| None)
        }
    }

    /// Keeps a write for `owner` in this node's hint store.
    pub fn hold_hint(&self, owner: &str, key: Key, value: &Value) {
        let added = self.hints.add(owner, key, value, self.now_ms());
        let m = &self.metrics;
        m.hints_stored.inc();
        if added.dropped > 0 {
            m.hints_dropped
                .with_label_values(&["overflow"])
                .inc_by(added.dropped as u64);
            tracing::warn!(
                owner,
                dropped = added.dropped,
                "hint store full for this owner: oldest hints dropped (anti-entropy will repair)"
            );
        }
    }

    /// Applies a `FLUSHALL`: everything of the typed namespace written before `before` is gone.
    pub fn flush(&self, before: &Timestamp) {
        self.observe_ts(before);
        self.store.flush(before, self.now_ms());
    }

    /// The latest `FLUSHALL` cutoff this replica applied.
    pub fn flushed(&self) -> Option<Timestamp> {
        self.store.flushed()
    }

    /// Hints held and their bytes.
    pub fn pending_hints(&self) -> (usize, usize) {
        self.hints.pending()
    }

    /// Serves a request of another node's coordinator, at once: every replica request needs
    /// no waiting. Gives back what is not a replica request (a ping, a forwarded write).
    pub fn serve(&self, req: Request) -> Result<Response, Box<Request>> {
        Ok(match req {
            Request::Read(Read { key }) => respond::<Read>(self.read(&key)),
            Request::Merge(Merge {
                key,
                value,
                reply_state,
            }) => respond::<Merge>(
                self.merge(&key, &value, reply_state)
                    .map_err(ReplicaError::from),
            ),
            Request::Hint(hint) => respond::<Hint>(self.take_hint(hint)),
            Request::MergeBatch(MergeBatch { items }) => {
                let failed = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (key, value))| {
                        self.merge(key, value, false).err().map(|e| (i as u32, e))
                    })
                    .collect();
                MergeBatch::respond(failed)
            }
            Request::ReadBatch(ReadBatch { keys }) => {
                let now = self.now_ms();
                ReadBatch::respond(keys.iter().map(|k| self.store.get(k, now)).collect())
            }
            Request::ArcHashes(ArcHashes { arcs }) if arcs.len() > MAX_ARCS => {
                Response::Error(ReplicaError::TooManyArcs { asked: arcs.len() })
            }
            Request::ArcHashes(ArcHashes { arcs }) => ArcHashes::respond(
                arcs.iter()
                    .map(|a| self.store.merkle().arc_hash(*a))
                    .collect(),
            ),
            Request::MerkleStep(MerkleStep { query }) => respond::<MerkleStep>(
                self.store
                    .merkle()
                    .answer(&query)
                    .map_err(|e| ReplicaError::Merkle(e.to_string())),
            ),
            Request::ScanKeys(ScanKeys {
                kind,
                from,
                upto,
                limit,
                flushed,
            }) => {
                if let Some(before) = flushed {
                    self.flush(&before);
                }
                let limit = limit.clamp(1, MAX_SCAN);
                ScanKeys::respond(self.store.scan(kind, from, upto, limit, self.now_ms()))
            }
            Request::ClockNow(ClockNow) => ClockNow::respond(self.timestamp(self.now_ms())),
            other @ (Request::Ping
            | Request::Coordinate(_)
            | Request::Batch(_)
            | Request::Flush(_)) => {
                return Err(Box::new(other));
            }
        })
    }

    /// A hint for another node is held; one for this very node is just a write to it.
    fn take_hint(&self, Hint { owner, key, value }: Hint) -> Result<(), ReplicaError> {
        if owner == *self.me {
            self.merge(&key, &value, false)?;
        } else {
            self.hold_hint(&owner, key, &value);
        }
        Ok(())
    }
}

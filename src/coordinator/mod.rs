//! The coordinator: quorum reads and writes for any key, from any node.
//!
//! For a key and N, the preference list comes from the ring; the operation goes to all N
//! replicas at once (this node's own replica without a network hop), and the client gets its
//! answer as soon as W acks (or R answers) are in. Late read answers are still collected in
//! the background, merged with the rest, and every replica found older than the merge is
//! repaired (read repair).
//!
//! Writes that issue dots (`/kv` puts, counter deltas, set updates) are made by a replica of the
//! key, whose store knows the highest dot it has handed out for the key: a node outside the
//! preference list forwards them to the first live replica. Everything else (reads, `/lww`,
//! `/kv` deletes) any node coordinates itself. Replicas only ever merge what they receive, so a
//! retried or duplicated message changes nothing.
//!
//! Time comes from a [`Clock`] and the network from a [`Transport`], so the same code runs in
//! a process over QUIC and in a simulated cluster on tokio's paused clock.

pub mod antientropy;
pub mod evict;
pub mod gather;
pub mod handoff;
pub mod hints;
pub mod replica;
pub mod transfer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::causality::HybridClock;
use crate::clock::Clock;
use crate::config::Quorum;
use crate::crdt::{Crdt, LwwRegister, MvRegister, OrSet, PnCounter, Version};
use crate::membership::MemberState;
use crate::metrics::Metrics;
use crate::node::ClusterView;
use crate::ops::{Consistency, Need, OpError, Plan, ReadResult, Write, Written, check_key};
use crate::rpc::{EncodedRequest, Request, Response};
use crate::storage::{Key, Kind, Store, StoreError, Value};
use crate::transport::{BoxFuture, Peer, Reply, Transport, TransportError};

use antientropy::{AntiEntropySettings, Budget};
use gather::{Gathered, Needed, Tally};
use hints::{HintLimits, HintStore};

/// How far ahead of this node's clock another node's LWW timestamp may be before the clock
/// stops following it (it still orders after it, by the logical part).
const MAX_CLOCK_DRIFT_MS: u64 = 60_000;

/// The cluster's defaults for what a request leaves out, and the coordinator's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub n: u32,
    pub w: Quorum,
    pub r: Quorum,
    pub timeout_ms: u64,
    pub max_value_bytes: usize,
    /// Bounds on the hints this node holds for others.
    pub hints: HintLimits,
    pub anti_entropy: AntiEntropySettings,
    /// Evict least recently used `/lww` keys past this many stored bytes (0: never).
    pub max_memory_bytes: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults::from(&crate::config::ClusterSettings::default())
    }
}

impl From<&crate::config::ClusterSettings> for Defaults {
    fn from(c: &crate::config::ClusterSettings) -> Self {
        Defaults {
            n: c.replicas,
            w: c.write_quorum,
            r: c.read_quorum,
            timeout_ms: c.request_timeout_ms,
            max_value_bytes: c.max_value_bytes,
            hints: HintLimits {
                enabled: c.hinted_handoff,
                max_keys_per_owner: c.hint_max_keys,
                max_bytes_per_owner: c.hint_max_bytes,
                max_age_ms: c.hint_max_age_s.saturating_mul(1000),
            },
            anti_entropy: AntiEntropySettings {
                interval_ms: c.anti_entropy_interval_ms,
                keys_per_sec: c.anti_entropy_keys_per_sec,
            },
            max_memory_bytes: c.max_memory_bytes,
        }
    }
}

/// What a coordinator is built from.
pub struct CoordinatorSpec {
    pub me: String,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub transport: Arc<dyn Transport>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub defaults: Defaults,
    pub metrics: Metrics,
    /// The hints this node holds for others: kept apart from the coordinator so that they
    /// can outlive it as the store does (a simulated crash keeps both, as a durable engine
    /// would).
    pub hints: Arc<HintStore>,
}

/// Coordinates client operations on one node. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    view: watch::Receiver<Arc<ClusterView>>,
    transport: Arc<dyn Transport>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hlc: Mutex<HybridClock>,
    /// The milliseconds the hybrid clock has reached (issued or observed): lets `observe`
    /// skip the lock for timestamps already behind it.
    hlc_millis: std::sync::atomic::AtomicU64,
    defaults: Defaults,
    metrics: Metrics,
    /// Writes held for replicas that could not take them (hinted handoff).
    hints: Arc<HintStore>,
    /// Keys anti-entropy may still repair this second.
    anti_entropy_budget: Budget,
    /// Bootstrap and hand-off progress; whether reads are served yet.
    transfers: transfer::Transfers,
    /// Ids of forwarded writes: this node's next one, and the ones it ran for others.
    started_ms: u64,
    forward_seq: std::sync::atomic::AtomicU64,
    forwarded: replica::ForwardedWrites,
    /// An eviction task is running.
    evicting: std::sync::atomic::AtomicBool,
    /// Placements worked out for the current view and the cluster's N.
    placements: std::sync::RwLock<Option<Arc<PlacementCache>>>,
}

/// A node id shared by everything that names it: cloning one costs no allocation.
pub type NodeId = Arc<str>;

/// One replica of a key, as the coordinator will reach it.
#[derive(Debug, Clone)]
struct Target {
    id: NodeId,
    zone: Arc<str>,
    peer: Option<Peer>,
    state: MemberState,
}

impl Target {
    /// Whether this is node `id`.
    fn is(&self, id: &str) -> bool {
        *self.id == *id
    }
}

/// Where the keys of one vnode arc live for one N: the replicas in preference order, then the
/// live members after them in the ring's order (the fallbacks that take hints for unreachable
/// replicas).
struct Placement {
    replicas: Vec<Target>,
    fallbacks: Vec<Target>,
}

impl Placement {
    /// The replicas other than node `me`: those a coordinator on `me` calls.
    fn others(&self, me: &str) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|t| !t.is(me))
            .map(|t| t.id.clone())
            .collect()
    }
}

/// The placements of one view for one N, by vnode, each worked out the first time a key of its
/// arc is asked for: every request needs its key's placement, and all keys of an arc share it.
struct PlacementCache {
    view: Arc<ClusterView>,
    n: u32,
    by_vnode: Vec<std::sync::OnceLock<Arc<Placement>>>,
}

impl Coordinator {
    pub fn new(spec: CoordinatorSpec) -> Self {
        Coordinator {
            inner: Arc::new(Inner {
                hlc: Mutex::new(HybridClock::new(spec.me.clone(), MAX_CLOCK_DRIFT_MS)),
                hlc_millis: std::sync::atomic::AtomicU64::new(0),
                hints: spec.hints,
                anti_entropy_budget: Budget::new(spec.defaults.anti_entropy.keys_per_sec),
                transfers: transfer::Transfers::default(),
                started_ms: spec.clock.now_ms(),
                forward_seq: std::sync::atomic::AtomicU64::new(0),
                forwarded: replica::ForwardedWrites::default(),
                evicting: std::sync::atomic::AtomicBool::new(false),
                placements: std::sync::RwLock::new(None),
                me: spec.me.as_str().into(),
                view: spec.view,
                transport: spec.transport,
                store: spec.store,
                clock: spec.clock,
                defaults: spec.defaults,
                metrics: spec.metrics,
            }),
        }
    }

    pub fn me(&self) -> &str {
        &self.inner.me
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn defaults(&self) -> Defaults {
        self.inner.defaults
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.inner.view.borrow())
    }

    /// Checks a request's N/W/R and deadline against the cluster, before anything is done.
    /// Defaults are clamped to the cluster's size; explicit values are not.
    pub fn plan(&self, c: &Consistency) -> Result<Plan, OpError> {
        let d = self.inner.defaults;
        let view = self.view();
        let members = view.ring.len() as u32;
        if members == 0 {
            return Err(OpError::Unavailable {
                needed: 1,
                acks: 0,
                message: "this node knows no ring members yet; retry in a moment".into(),
            });
        }
        let n = match c.n {
            Some(n) if n > members => {
                return Err(OpError::bad(format!(
                    "n={n} but the cluster has {members} members; use n from 1 to {members}"
                )));
            }
            Some(n) => n,
            None => d.n.min(members),
        };
        let quorum =
            |name: &str, given: Option<Quorum>, default: Quorum| match given.unwrap_or(default) {
                Quorum::LocalQuorum => {
                    let zone = view
                        .member(&self.inner.me)
                        .map(|m| m.info.zone.clone())
                        .unwrap_or_default();
                    Ok(Need::ZoneQuorum(zone))
                }
                Quorum::EachQuorum => Ok(Need::EachZone),
                q => {
                    let k = q.resolve(n);
                    if given.is_some() && k > n {
                        Err(OpError::bad(format!(
                            "{name}={k} is more than n={n}; use {name} from 1 to {n}, or one, \
                         quorum, all, local_quorum or each_quorum"
                        )))
                    } else {
                        Ok(Need::Count(k.min(n)))
                    }
                }
            };
        Ok(Plan {
            n,
            w: quorum("w", c.w, d.w)?,
            r: quorum("r", c.r, d.r)?,
            timeout_ms: c.timeout_ms.unwrap_or(d.timeout_ms),
            sloppy: c.sloppy.unwrap_or(true),
        })
    }

    /// Reads a key at R: the merge of at least R replicas' states. Stale replicas are repaired
    /// in the background.
    pub async fn read(
        &self,
        kind: Kind,
        name: &str,
        c: &Consistency,
    ) -> Result<ReadResult, OpError> {
        check_key(name)?;
        let plan = self.plan(c)?;
        let key = Key::new(kind, name);
        let deadline = deadline(plan.timeout_ms);
        let value = self.quorum_read(&key, &plan, deadline).await?;
        Ok(ReadResult {
            value: value.merged,
            answers: value.answers,
            now_ms: self.now_ms(),
        })
    }

    /// Applies a write at W.
    pub async fn write(
        &self,
        name: &str,
        write: Write,
        c: &Consistency,
    ) -> Result<Written, OpError> {
        check_key(name)?;
        self.check_write(&write)?;
        let plan = self.plan(c)?;
        let key = Key::new(write.kind(), name);
        let written = self.execute(key, write, plan, true).await;
        self.evict_if_full();
        written
    }

    /// Refuses writes that are wrong in themselves, whatever the cluster's state.
    fn check_write(&self, write: &Write) -> Result<(), OpError> {
        let max = self.inner.defaults.max_value_bytes;
        // A hundred years: far enough, and no overflow when added to the clock.
        const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
        let check_ttl = |ttl: &Option<u64>| match ttl {
            Some(0) => Err(OpError::bad(
                "a ttl of 0 would expire at once; use a ttl of 1 second or more",
            )),
            Some(t) if *t > MAX_TTL_MS => Err(OpError::bad(format!(
                "a ttl of {} s is too large; use at most 100 years",
                t / 1000
            ))),
            _ => Ok(()),
        };
        match write {
            Write::KvPut { value, ttl_ms, .. } | Write::LwwPut { value, ttl_ms } => {
                if value.len() > max {
                    return Err(OpError::TooLarge(format!(
                        "the value is {} bytes; this cluster stores values of at most {max} bytes",
                        value.len()
                    )));
                }
                check_ttl(ttl_ms)
            }
            Write::SetUpdate { add, remove } => {
                if add.is_empty() && remove.is_empty() {
                    return Err(OpError::bad(
                        "nothing to do: give members to \"add\" or \"remove\"",
                    ));
                }
                if let Some(both) = add.iter().find(|m| remove.contains(m)) {
                    return Err(OpError::bad(format!(
                        "{both:?} is both added and removed; send it in one of the two lists"
                    )));
                }
                let bytes: usize = add.iter().chain(remove).map(String::len).sum();
                if bytes > max {
                    return Err(OpError::TooLarge(format!(
                        "the members add up to {bytes} bytes; a request may carry at most {max}"
                    )));
                }
                Ok(())
            }
            Write::KvDelete { .. } | Write::LwwDelete | Write::CounterAdd { .. } => Ok(()),
        }
    }

    /// Where `key` lives in `view` for `n`: from the cache when `n` is the cluster's.
    fn placement(&self, view: &Arc<ClusterView>, key: &Key, n: u32) -> Arc<Placement> {
        let pos = key.position();
        let cached = self.inner.defaults.n.min(view.ring.len() as u32) == n;
        match view.ring.vnode_of(pos).filter(|_| cached) {
            Some(vnode) => Arc::clone(
                self.placement_cache(view, n).by_vnode[vnode]
                    .get_or_init(|| Arc::new(place(view, pos, n))),
            ),
            None => Arc::new(place(view, pos, n)),
        }
    }

    /// The placement cache of `view` for `n`, started afresh when the view has changed.
    fn placement_cache(&self, view: &Arc<ClusterView>, n: u32) -> Arc<PlacementCache> {
        let current = |slot: &Option<Arc<PlacementCache>>| {
            slot.as_ref()
                .filter(|c| Arc::ptr_eq(&c.view, view) && c.n == n)
                .map(Arc::clone)
        };
        let read = self
            .inner
            .placements
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cache) = current(&read) {
            return cache;
        }
        drop(read);
        let mut slot = self
            .inner
            .placements
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cache) = current(&slot) {
            return cache;
        }
        let cache = Arc::new(PlacementCache {
            view: Arc::clone(view),
            n,
            by_vnode: (0..view.ring.vnode_count())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        });
        *slot = Some(Arc::clone(&cache));
        cache
    }

    /// Runs a checked write. `may_forward` is false for a write another node forwarded here,
    /// so that two nodes whose rings disagree never bounce it between them.
    async fn execute(
        &self,
        key: Key,
        write: Write,
        plan: Plan,
        may_forward: bool,
    ) -> Result<Written, OpError> {
        let deadline = deadline(plan.timeout_ms);
        let view = self.view();
        let placement = self.placement(&view, &key, plan.n);
        let targets = &placement.replicas;
        let local = targets.iter().any(|t| t.is(&self.inner.me));
        let needed = needed(&plan.w, targets)?;
        if write.issues_dots() && !local && may_forward {
            return self
                .forward(key, write, plan, targets, needed.total as u32, deadline)
                .await;
        }
        let now = self.now_ms();
        let mut written = Written {
            acks: 0,
            context: None,
            counter: None,
            added: 0,
            removed: 0,
        };
        let expiry = |ttl_ms: Option<u64>| ttl_ms.map(|t| now.saturating_add(t));
        let store = &self.inner.store;
        // The delta to send, and whether this node's replica already holds it.
        let (delta, applied_locally) = match write {
            Write::KvPut {
                value,
                context,
                ttl_ms,
            } => {
                let seen = context.unwrap_or_default();
                let version = Version::new(value, expiry(ttl_ms));
                let applied = store
                    .update(&key, now, &mut |cur, actor| {
                        let delta = match cur {
                            Some(Value::Kv(reg)) => reg.write(actor, &seen, version.clone()),
                            _ => MvRegister::new().write(actor, &seen, version.clone()),
                        };
                        delta
                            .map(Value::Kv)
                            .map_err(|e| StoreError::Rejected(e.to_string()))
                    })
                    .map_err(store_error)?;
                if let Value::Kv(reg) = &applied.delta {
                    written.context = Some(reg.context().clone());
                }
                (applied.delta, true)
            }
            Write::CounterAdd { delta } => {
                let applied = store
                    .update(&key, now, &mut |cur, actor| {
                        let delta = match cur {
                            Some(Value::Counter(c)) => c.add(actor, delta),
                            _ => PnCounter::new().add(actor, delta),
                        };
                        delta.map(Value::Counter).map_err(|e| {
                            StoreError::Rejected(format!("{e}; the counter is left as it was"))
                        })
                    })
                    .map_err(store_error)?;
                if let Value::Counter(c) = &applied.merged {
                    written.counter = Some(c.value());
                }
                (applied.delta, true)
            }
            Write::SetUpdate { add, remove } => {
                if !remove.is_empty() && local {
                    // A remove removes what it observed: observe at R first, so that adds
                    // acknowledged elsewhere are seen, not only what this replica holds.
                    self.quorum_read(&key, &plan, deadline).await?;
                }
                let (mut added, mut removed) = (0, 0);
                let applied = store
                    .update(&key, now, &mut |cur, actor| {
                        let empty = OrSet::new();
                        let set = match cur {
                            Some(Value::Set(s)) => s,
                            _ => &empty,
                        };
                        added = add.iter().filter(|m| !set.contains(m)).count() as u32;
                        removed = remove.iter().filter(|m| set.contains(m)).count() as u32;
                        set.update(
                            actor,
                            add.iter().map(String::as_str),
                            remove.iter().map(String::as_str),
                        )
                        .map(Value::Set)
                        .map_err(|e| StoreError::Rejected(e.to_string()))
                    })
                    .map_err(store_error)?;
                written.added = added;
                written.removed = removed;
                (applied.delta, true)
            }
            Write::KvDelete { context } => {
                let seen = match context {
                    Some(ctx) => ctx,
                    None => {
                        let read = self.quorum_read(&key, &plan, deadline).await?;
                        match read.merged {
                            Some(Value::Kv(reg)) => reg.context().clone(),
                            // Nothing seen, nothing to delete.
                            _ => {
                                written.acks = read.answers;
                                return Ok(written);
                            }
                        }
                    }
                };
                written.context = Some(seen.clone());
                (Value::Kv(MvRegister::delete(&seen, now)), false)
            }
            Write::LwwPut { value, ttl_ms } => {
                let ts = self.timestamp(now);
                (
                    Value::Lww(LwwRegister::set(ts, value, expiry(ttl_ms))),
                    false,
                )
            }
            Write::LwwDelete => (Value::Lww(LwwRegister::delete(self.timestamp(now))), false),
        };
        let want_state = key.kind == Kind::Counter;
        let mut ready = Vec::new();
        if local {
            let merged = if applied_locally {
                Ok(None)
            } else {
                store
                    .absorb(&key, &delta, now)
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            };
            ready.push((self.inner.me.clone(), merged));
        }
        let others = placement.others(&self.inner.me);
        let g = if others.is_empty() {
            Gathered::ready(ready)
        } else {
            let tally = Tally::new(needed.clone(), ready, others, false);
            self.replicate(&key, delta, &placement, &plan, deadline, &tally);
            tally.wait(deadline).await
        };
        written.acks = g.ok.len() as u32;
        if !needed.met(&g.ok) {
            return Err(unavailable(&needed, written.acks, &g.failed, "write"));
        }
        if want_state {
            // The value as merged from the replicas that acknowledged the write.
            let mut merged = match store.get(&key, now) {
                Some(Value::Counter(c)) if local => c,
                _ => PnCounter::new(),
            };
            for (_, state) in &g.ok {
                if let Some(Value::Counter(c)) = state {
                    merged.merge(c);
                }
            }
            written.counter = Some(merged.value());
        }
        Ok(written)
    }

    /// Hands a dot-issuing write to the first live replica. Retries with the next one only
    /// when the write certainly did not arrive; after a silent timeout it may have been
    /// applied, and a retry elsewhere would apply it twice.
    async fn forward(
        &self,
        key: Key,
        write: Write,
        plan: Plan,
        targets: &[Target],
        needed: u32,
        deadline: Instant,
    ) -> Result<Written, OpError> {
        let mut tried = Vec::new();
        // Replicas in this node's zone first: across zones is the long way round.
        let my_zone = self
            .view()
            .member(&self.inner.me)
            .map(|m| m.info.zone.clone());
        let mut targets: Vec<&Target> = targets.iter().collect();
        targets.sort_by_key(|t| my_zone.as_deref() != Some(&*t.zone));
        // One id for every attempt: a replica that got the write already answers from memory.
        let id = format!(
            "{}/{}/{}",
            self.inner.me,
            self.inner.started_ms,
            self.inner
                .forward_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for t in targets.into_iter().filter(|t| is_reachable(t.state)) {
            let Some(peer) = &t.peer else { continue };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // The replica's own deadline ends a little before ours, so its answer gets back.
            let inner_ms = (remaining.as_millis() as u64 * 9 / 10).max(1);
            let req = Request::Coordinate {
                id: id.clone(),
                key: key.clone(),
                write: write.clone(),
                plan: Plan {
                    timeout_ms: inner_ms,
                    ..plan.clone()
                },
            };
            let result = self.inner.transport.call(peer, req, remaining).await;
            self.inner.metrics.rpc("forward", result.is_ok());
            match result {
                Ok(Response::Written(outcome)) => return outcome,
                Ok(other) => tried.push(format!("{}: unexpected answer {other:?}", t.id)),
                Err(e @ (TransportError::Unreachable(..) | TransportError::Dropped(_))) => {
                    tried.push(e.to_string());
                }
                Err(e) => {
                    return Err(OpError::Unavailable {
                        needed,
                        acks: 0,
                        message: format!(
                            "this node is not a replica of the key and forwarded the write to {}, \
                             which did not answer in time ({e}); the write may or may not have \
                             been applied",
                            t.id
                        ),
                    });
                }
            }
        }
        Err(OpError::Unavailable {
            needed,
            acks: 0,
            message: format!(
                "no replica of the key could take the write; tried: {}",
                if tried.is_empty() {
                    "none alive".to_string()
                } else {
                    tried.join("; ")
                }
            ),
        })
    }

    /// A last-write-wins timestamp after everything this node has issued or seen.
    fn timestamp(&self, now: u64) -> crate::causality::Timestamp {
        let ts = self
            .inner
            .hlc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .now(now);
        self.inner
            .hlc_millis
            .fetch_max(ts.millis, std::sync::atomic::Ordering::Relaxed);
        ts
    }

    /// Lets later local timestamps order after `value`'s, if it is an LWW register.
    fn observe(&self, value: &Value) {
        if let Value::Lww(reg) = value {
            // Older in milliseconds than what the clock has reached: every later local
            // timestamp orders after it already, no need for the lock.
            let reached = self
                .inner
                .hlc_millis
                .load(std::sync::atomic::Ordering::Relaxed);
            if reg.ts.millis < reached {
                return;
            }
            let now = self.now_ms();
            let mut hlc = self
                .inner
                .hlc
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = hlc.observe(&reg.ts, now) {
                tracing::warn!(node = %reg.ts.node, "not following a remote clock: {e}");
            }
            self.inner
                .hlc_millis
                .fetch_max(reg.ts.millis, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends `req` to one replica (this node's own without the network) until `deadline`.
    fn call(
        &self,
        target: &Target,
        req: Request,
        deadline: Instant,
        rpc: &'static str,
    ) -> BoxFuture<Result<Response, String>> {
        if target.id == self.inner.me {
            let this = self.clone();
            return Box::pin(async move {
                match this.serve_replica(req) {
                    Response::Error(e) => Err(format!("{}: {e}", this.inner.me)),
                    r => Ok(r),
                }
            });
        }
        match EncodedRequest::new(&req) {
            Ok(req) => self.call_remote(target, req, deadline, rpc),
            Err(e) => Box::pin(std::future::ready(Err(format!(
                "{}: the request could not be encoded: {e}",
                target.id
            )))),
        }
    }

    /// Sends an encoded request to another node's replica until `deadline`.
    fn call_remote(
        &self,
        target: &Target,
        req: EncodedRequest,
        deadline: Instant,
        rpc: &'static str,
    ) -> BoxFuture<Result<Response, String>> {
        let (tx, answer) = tokio::sync::oneshot::channel();
        self.send_remote(target, req, deadline, rpc, move |result| {
            let _ = tx.send(result);
        });
        let id = target.id.clone();
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(format!("{id}: the call ended without an answer")))
        })
    }

    /// Sends an encoded request to another node's replica until `deadline` and hands the
    /// answer (an error if the replica is down, refused, or silent) to `done`, from whichever
    /// task receives it: the hot path's replica calls are not futures of their own.
    fn send_remote(
        &self,
        target: &Target,
        req: EncodedRequest,
        deadline: Instant,
        rpc: &'static str,
        done: impl FnOnce(Result<Response, String>) + Send + 'static,
    ) {
        let peer = match &target.peer {
            Some(peer) if is_reachable(target.state) => peer,
            _ => return done(Err(format!("{} is {}", target.id, target.state.as_str()))),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (this, id) = (self.clone(), target.id.clone());
        let reply = Reply::new(Arc::clone(&peer.id), move |result| {
            let result = match result {
                Ok(Response::Error(e)) => Err(format!("{id}: {e}")),
                Ok(r) => Ok(r),
                Err(e) => Err(e.to_string()),
            };
            this.inner.metrics.rpc(rpc, result.is_ok());
            done(result);
        });
        self.inner.transport.call_then(peer, req, remaining, reply);
    }

    /// Reads `key` from its replicas until R answered, merges the answers, and leaves the
    /// rest of the replies to a background read repair. Also brings this node's own replica up
    /// to the merge at once, so that a write right after sees what the read saw.
    async fn quorum_read(
        &self,
        key: &Key,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<Merged, OpError> {
        let view = self.view();
        let placement = self.placement(&view, key, plan.n);
        let needed = needed(&plan.r, &placement.replicas)?;
        let now = self.now_ms();
        let mut ready = Vec::with_capacity(1);
        let mut remote = Vec::new();
        for t in &placement.replicas {
            if t.is(&self.inner.me) {
                let mine = if self.serves_reads() {
                    Ok(self.inner.store.get(key, now))
                } else {
                    Err(NOT_SERVING_READS.to_string())
                };
                ready.push((t.id.clone(), mine));
            } else {
                remote.push(t);
            }
        }
        // A key whose only replica is this node needs no tally.
        let (tally, ready) = if remote.is_empty() {
            (None, ready)
        } else {
            let others = remote.iter().map(|t| t.id.clone()).collect();
            let tally = Tally::new(needed.clone(), ready, others, true);
            (Some(tally), Vec::new())
        };
        if let Some(tally) = &tally {
            // Encoded once for every replica asked.
            match EncodedRequest::new(&Request::Read { key: key.clone() }) {
                Ok(read) => {
                    for t in remote {
                        let (tally, id) = (Arc::clone(tally), t.id.clone());
                        self.send_remote(t, read.clone(), deadline, "read", move |result| {
                            let state = result.and_then(|resp| match resp {
                                Response::State(state) => Ok(state),
                                other => Err(format!("unexpected answer {other:?}")),
                            });
                            tally.answer(id, state);
                        });
                    }
                }
                Err(e) => {
                    for t in remote {
                        let why = format!("the read could not be encoded: {e}");
                        tally.answer(t.id.clone(), Err(why));
                    }
                }
            }
        }
        let Gathered { mut ok, failed } = match &tally {
            Some(tally) => tally.wait(deadline).await,
            None => Gathered::ready(ready),
        };
        let answers = ok.len() as u32;
        let enough = needed.met(&ok);
        let merged = merge_all(ok.iter().map(|(_, v)| v));
        if let Some(value) = &merged {
            self.observe(value);
            let me = &self.inner.me;
            if let Some((_, mine)) = ok.iter_mut().find(|(id, _)| id == me) {
                if mine.as_ref() != Some(value) && self.inner.store.absorb(key, value, now).is_ok()
                {
                    self.inner.metrics.read_repairs.inc();
                    // What the background repair compares against: this replica holds it.
                    *mine = Some(value.clone());
                }
            } else if placement.replicas.iter().any(|t| t.is(me)) {
                // This replica did not answer (it is bootstrapping): it still takes what the
                // read saw, so a write that follows (a set remove, a delete) builds on it.
                let _ = self.inner.store.absorb(key, value, now);
            }
        }
        // Repairs go out once every answer is in (or timed out), from the task that receives
        // the last; no late answer and nobody behind (a single-replica read, or all agreed)
        // means nothing to do.
        let behind = ok.iter().any(|(_, v)| v.as_ref() != merged.as_ref());
        match tally {
            Some(tally) if behind || tally.has_late() => {
                let (this, repair_key) = (self.clone(), key.clone());
                tally.when_all_in(ok, move |answered| {
                    this.read_repair(repair_key, placement, answered);
                });
            }
            None if behind => self.read_repair(key.clone(), placement, ok),
            _ => {}
        }
        if !enough {
            return Err(unavailable(&needed, answers, &failed, "read"));
        }
        Ok(Merged { merged, answers })
    }

    /// Merges every answer of a read and sends the merge to every replica whose answer was
    /// older, in a task of its own: only when one was.
    fn read_repair(
        &self,
        key: Key,
        placement: Arc<Placement>,
        answered: Vec<(NodeId, Option<Value>)>,
    ) {
        if answered.windows(2).all(|w| w[0].1 == w[1].1) {
            return;
        }
        let Some(merged) = merge_all(answered.iter().map(|(_, v)| v)) else {
            return;
        };
        // Late answers may show that this node's own replica is stale too; it is repaired
        // in place (`call` does not use the network for it).
        let stale: Vec<&Target> = answered
            .iter()
            .filter(|(_, state)| state.as_ref() != Some(&merged))
            .filter_map(|(id, _)| placement.replicas.iter().find(|t| t.id == *id))
            .collect();
        // Outside a runtime (a call's answer dropped as a test ends) nothing can be sent.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if stale.is_empty() {
            return;
        }
        // Repairs get their own deadline: the read's may have passed waiting for the slowest.
        let repair_deadline =
            Instant::now() + Duration::from_millis(self.inner.defaults.timeout_ms);
        let calls: Vec<_> = stale
            .into_iter()
            .map(|t| {
                let req = Request::Merge {
                    key: key.clone(),
                    value: merged.clone(),
                    reply_state: false,
                };
                (t.id.clone(), self.call(t, req, repair_deadline, "repair"))
            })
            .collect();
        let this = self.clone();
        runtime.spawn(async move {
            for (id, call) in calls {
                match call.await {
                    Ok(_) => {
                        this.inner.metrics.read_repairs.inc();
                        tracing::debug!(replica = %id, key = ?key, "read repair");
                    }
                    Err(e) => tracing::debug!(replica = %id, "read repair failed: {e}"),
                }
            }
        });
    }
}

/// Works out the placement of ring position `pos` in `view` for `n`.
fn place(view: &ClusterView, pos: u64, n: u32) -> Placement {
    let target = |m: &crate::ring::RingMember| {
        let member = view.member(&m.id);
        let id: NodeId = m.id.as_str().into();
        Target {
            peer: member.map(|v| Peer {
                id: Arc::clone(&id),
                addr: v.info.peer,
            }),
            id,
            zone: m.zone.as_str().into(),
            state: member.map_or(MemberState::Dead, |v| v.state),
        }
    };
    let list = view.ring.preference_list(pos, n as usize);
    let replicas = list.replicas.into_iter().map(target).collect();
    // Each unreachable replica needs one fallback, and a fallback may fail in turn: twice `n`
    // is plenty, and the walk round a large ring stops there.
    let fallbacks = list
        .fallbacks
        .map(target)
        .filter(|t| t.state == MemberState::Alive)
        .take(2 * n as usize)
        .collect();
    Placement {
        replicas,
        fallbacks,
    }
}

/// The merged answer of a quorum read.
struct Merged {
    merged: Option<Value>,
    answers: u32,
}

/// Why a bootstrapping replica answers no reads.
const NOT_SERVING_READS: &str =
    "bootstrapping: this replica is still receiving its keys and answers no reads yet";

fn deadline(timeout_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms)
}

/// Whether calling a member can succeed: dead and departed members are not called at all.
fn is_reachable(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

/// The join of replica states; `None` when no replica has the key.
fn merge_all<'a>(states: impl Iterator<Item = &'a Option<Value>>) -> Option<Value> {
    let mut acc: Option<Value> = None;
    for state in states.flatten() {
        match &mut acc {
            None => acc = Some(state.clone()),
            Some(a) => {
                if let Err(e) = a.merge(state) {
                    tracing::warn!("replica answered a value of another kind: {e}");
                }
            }
        }
    }
    acc
}

fn store_error(e: StoreError) -> OpError {
    OpError::BadRequest(e.to_string())
}

/// What a plan's `need` asks of the replicas in `targets`.
fn needed(need: &Need, targets: &[Target]) -> Result<Needed, OpError> {
    let zone_of = || {
        targets
            .iter()
            .map(|t| (t.id.clone(), t.zone.clone()))
            .collect()
    };
    let majority_in = |zone: &str| targets.iter().filter(|t| *t.zone == *zone).count() / 2 + 1;
    Ok(match need {
        Need::Count(k) => Needed::count(*k as usize),
        Need::ZoneQuorum(zone) => {
            if !targets.iter().any(|t| *t.zone == **zone) {
                return Err(OpError::Unavailable {
                    needed: 1,
                    acks: 0,
                    message: format!(
                        "local_quorum: this key has no replica in zone {zone:?} (the zone of \
                         the node asked); ask a node in a zone that holds it, raise n, or use \
                         quorum"
                    ),
                });
            }
            let k = majority_in(zone);
            Needed {
                total: k,
                per_zone: vec![(zone.as_str().into(), k)],
                zone_of: zone_of(),
            }
        }
        Need::EachZone => {
            let mut zones: Vec<&Arc<str>> = targets.iter().map(|t| &t.zone).collect();
            zones.sort_unstable();
            zones.dedup();
            let per_zone: Vec<(Arc<str>, usize)> = zones
                .into_iter()
                .map(|z| (Arc::clone(z), majority_in(z)))
                .collect();
            Needed {
                total: per_zone.iter().map(|(_, k)| k).sum(),
                per_zone,
                zone_of: zone_of(),
            }
        }
    })
}

fn unavailable(needed: &Needed, acks: u32, failed: &[(NodeId, String)], what: &str) -> OpError {
    let zones: Vec<String> = needed
        .per_zone
        .iter()
        .map(|(zone, k)| format!("{k} in zone {zone}"))
        .collect();
    let needed_text = if zones.is_empty() {
        String::new()
    } else {
        format!(", of them {}", zones.join(" and "))
    };
    let needed_count = needed.total as u32;
    let why = if failed.is_empty() {
        "the others did not answer in time".to_string()
    } else {
        failed
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    OpError::Unavailable {
        needed: needed_count,
        acks,
        message: format!(
            "the {what} needed {needed_count} replica answers{needed_text} and got {acks} \
             ({why}); retry, or lower {}",
            if what == "read" { "r" } else { "w" }
        ),
    }
}

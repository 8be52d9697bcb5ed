//! Quorum writes: check, make the delta (on a replica of the key for writes that issue dots,
//! forwarding there from elsewhere), send it to every replica, and answer once W acknowledged.
//! What the delta is and what the write reports belong to the write's data type
//! ([`Operation`]); this module only drives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::gather::{Gathered, Tally};
use super::placement::{Target, needed};
use super::{Coordinator, deadline, is_reachable, unavailable};
use crate::datatype::{Base, Delta, Limits, Write};
use crate::ops::{Consistency, OpError, Plan, Written, check_key};
use crate::rpc::Coordinate;
use crate::storage::{Key, Value};
use crate::transport::{Ask, CallError, TransportError};

/// How long a replica remembers a forwarded write's id: longer than any request deadline
/// (60 s), so no duplicate or retry of it can still be on its way after.
const FORWARD_MEMORY: Duration = Duration::from_secs(120);

/// The outcome of a forwarded write, once it has one.
type Outcome = Arc<tokio::sync::OnceCell<Result<Written, OpError>>>;

/// Forwarded writes this replica ran, by id, with when each arrived first.
#[derive(Default)]
pub(super) struct ForwardedWrites {
    seen: Mutex<HashMap<String, (Instant, Outcome)>>,
}

/// This replica's answer when its durable log did not take a write before the deadline.
const LOG_TOO_SLOW: &str = "this node's durable log did not take the write in time";

impl ForwardedWrites {
    /// The outcome cell of write `id`, new if this is its first arrival.
    fn slot(&self, id: String, now: Instant) -> Outcome {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            &seen
                .entry(id)
                .or_insert_with(|| (now, Outcome::default()))
                .1,
        )
    }

    /// Forgets the ids older than [`FORWARD_MEMORY`].
    pub fn forget_old(&self, now: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (at, _)| now.duration_since(*at) < FORWARD_MEMORY);
    }
}

impl Coordinator {
    /// Applies a write at W.
    pub async fn write(
        &self,
        name: impl AsRef<[u8]>,
        write: Write,
        c: &Consistency,
    ) -> Result<Written, OpError> {
        let name = name.as_ref();
        check_key(name)?;
        let limits = Limits {
            max_value_bytes: self.inner.defaults.max_value_bytes,
        };
        write.op().check(&limits)?;
        if write.op().may_grow() && self.refuses_growth() {
            return Err(OpError::OutOfMemory(format!(
                "this node holds {} bytes of data and {} bytes of resident memory, at its \
                 max_memory_bytes of {} (or the resident bound of 1.1 times it plus 64 MiB) \
                 with eviction = \"noeviction\": delete keys, raise the limit, or choose an \
                 eviction policy",
                self.memory_used(),
                crate::metrics::resident_bytes(),
                self.inner.defaults.max_memory_bytes
            )));
        }
        let plan = self.plan(c)?;
        if write.op().may_grow() {
            self.make_room();
        }
        let key = Key::new(write.kind(), name);
        self.execute(key, write, plan, true).await
    }

    /// Runs a write another node forwarded here, once per id: a duplicate waits for (or
    /// reuses) the first one's outcome instead of applying the write again.
    pub(super) async fn run_forwarded(&self, msg: Coordinate) -> Result<Written, OpError> {
        let Coordinate {
            id,
            key,
            write,
            plan,
        } = msg;
        if write.op().may_grow() {
            self.make_room();
        }
        // Keyed by the write too: ids from two lives of a node cannot mix writes up.
        let slot = format!("{id} {} {:?}", write.name(), key);
        let once = self.inner.forwarded.slot(slot, Instant::now());
        once.get_or_init(|| self.execute(key, write, plan, false))
            .await
            .clone()
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
        let op = write.op();
        let deadline = deadline(plan.timeout_ms);
        let view = self.view();
        let placement = self.placement(&view, &key, plan.n);
        let me = &self.inner.me;
        let local = placement.has(me);
        let needed = needed(&plan.w, &placement.replicas)?;
        if op.issues_dots() && !local && may_forward {
            let total = needed.total as u32;
            return self
                .forward(key, write, plan, &placement.replicas, total, deadline)
                .await;
        }
        // A write that builds on the key's state uses this node's replica of it, or, on a node
        // that is not a replica, what a read at R sees. A dot-issuing write made off its
        // replicas (a forwarded write whose rings disagree) uses this node's store anyway.
        let on_store = local || op.issues_dots();
        let observed = if (op.observes() && (local || !op.issues_dots()))
            || (!on_store && op.builds_on_state())
        {
            Some(self.quorum_read(&key, &plan, deadline).await?)
        } else {
            None
        };
        let replica = &self.inner.replica;
        let store = replica.store();
        let now = self.now_ms();
        let (delta, mut written) = {
            let timestamp = |now_ms| replica.timestamp(now_ms);
            let seen = observed.as_ref().and_then(|o| o.merged.as_ref());
            let store = on_store.then_some(store.as_ref());
            let limits = Limits {
                max_value_bytes: self.inner.defaults.max_value_bytes,
            };
            let mut base = Base::new(&key, now, store, seen, &timestamp, limits);
            (op.delta(&mut base)?, base.written)
        };
        let mut ready = Vec::new();
        let delta = match delta {
            Delta::Nothing => {
                written.acks = observed.map_or(0, |o| o.answers);
                return Ok(written);
            }
            Delta::Applied(delta) => {
                if local {
                    ready.push((me.clone(), Ok(None)));
                }
                delta
            }
            Delta::New(delta) => {
                if local {
                    let merged = store.absorb(&key, &delta, now).map(|()| None);
                    ready.push((me.clone(), merged.map_err(|e| e.to_string())));
                }
                delta
            }
        };
        // This replica's own change counts once the durable log has it.
        let local_sync = match ready.first() {
            Some((_, Ok(_))) => store.sync_point(),
            _ => None,
        };
        let mut others = placement.others(me);
        let g = if others.is_empty() {
            if let Some(point) = local_sync
                && tokio::time::timeout_at(deadline, point.reached())
                    .await
                    .is_err()
            {
                ready = vec![(me.clone(), Err(LOG_TOO_SLOW.to_string()))];
            }
            Gathered::ready(ready)
        } else {
            if local_sync.is_some() {
                ready.clear();
                others.push(me.clone());
            }
            let tally = Tally::new(needed.clone(), ready, others, false);
            self.replicate(
                &key,
                delta,
                &placement,
                &plan,
                op.wants_states(),
                deadline,
                &tally,
            );
            let mine = async {
                if let Some(point) = local_sync {
                    let synced = tokio::time::timeout_at(deadline, point.reached()).await;
                    let answer = synced.map(|()| None).map_err(|_| LOG_TOO_SLOW.to_string());
                    tally.answer(me.clone(), answer);
                }
            };
            let ((), g) = tokio::join!(mine, tally.wait(deadline));
            g
        };
        written.acks = g.ok.len() as u32;
        if !needed.met(&g.ok) {
            return Err(unavailable(&needed, written.acks, &g.failed, "write"));
        }
        if op.wants_states() {
            let mine = local.then(|| store.get(&key, now)).flatten();
            let states: Vec<&Value> = mine
                .iter()
                .chain(g.ok.iter().flat_map(|(_, s)| s))
                .collect();
            op.report(&mut written, &states, now);
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
            let msg = Coordinate {
                id: id.clone(),
                key: key.clone(),
                write: write.clone(),
                plan: Plan {
                    timeout_ms: inner_ms,
                    ..plan.clone()
                },
            };
            let result = self.inner.transport.ask(peer, msg, remaining).await;
            self.inner.metrics.rpc("forward", result.is_ok());
            match result {
                Ok(outcome) => return outcome,
                Err(
                    e @ (CallError::Transport(
                        TransportError::Unreachable(..)
                        | TransportError::Dropped(_)
                        | TransportError::Unencodable(..),
                    )
                    | CallError::Refused { .. }
                    | CallError::Mismatched { .. }),
                ) => tried.push(e.to_string()),
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
}

//! The replica side: what a node does with the data requests of other nodes' coordinators,
//! and the store's housekeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use crate::ops::{OpError, Written};
use crate::rpc::{OneWay, Request, Response};
use crate::transport::{BoxFuture, Handler};

/// How often expired values turn into tombstones and old tombstones are forgotten.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// How long after a change of the ring's members anti-entropy runs.
const RING_CHANGE_SETTLE: Duration = Duration::from_secs(1);

/// How long a replica remembers a forwarded write's id: longer than any request deadline
/// (60 s), so no duplicate or retry of it can still be on its way after.
const FORWARD_MEMORY: Duration = Duration::from_secs(120);

/// The outcome of a forwarded write, once it has one.
type Outcome = Arc<tokio::sync::OnceCell<Result<Written, OpError>>>;

/// Forwarded writes this replica ran, by id, with when each arrived first.
#[derive(Default)]
pub struct ForwardedWrites {
    seen: Mutex<HashMap<String, (Instant, Outcome)>>,
}

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
    fn forget_old(&self, now: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (at, _)| now.duration_since(*at) < FORWARD_MEMORY);
    }
}

impl Coordinator {
    /// Answers a replica request (a read or a merge) from this node's store.
    pub fn serve_replica(&self, req: Request) -> Response {
        let now = self.now_ms();
        match req {
            Request::Read { .. } if !self.serves_reads() => {
                Response::Error(super::NOT_SERVING_READS.to_string())
            }
            Request::Read { key } => Response::State(self.store().get(&key, now)),
            Request::Merge {
                key,
                value,
                reply_state,
            } => {
                self.observe(&value);
                let merged = if reply_state {
                    self.store().merge(&key, &value, now).map(Some)
                } else {
                    self.store().absorb(&key, &value, now).map(|()| None)
                };
                match merged {
                    Ok(state) => Response::Merged(state),
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Request::Hint { owner, key, value } => {
                if owner == self.me() {
                    // A hint for this very node is just a write to it.
                    return self.serve_replica(Request::Merge {
                        key,
                        value,
                        reply_state: false,
                    });
                }
                self.keep_hint(&owner, key, &value);
                Response::Merged(None)
            }
            Request::MergeBatch { items } => {
                let mut failed = Vec::new();
                for (i, (key, value)) in items.iter().enumerate() {
                    self.observe(value);
                    if let Err(e) = self.store().absorb(key, value, now) {
                        failed.push((i as u32, e.to_string()));
                    }
                }
                Response::MergedBatch { failed }
            }
            Request::ReadBatch { keys } => {
                Response::States(keys.iter().map(|k| self.store().get(k, now)).collect())
            }
            Request::ArcHashes { arcs } if arcs.len() > crate::rpc::MAX_ARCS => {
                Response::Error(format!(
                    "{} arcs asked for; at most {} per request",
                    arcs.len(),
                    crate::rpc::MAX_ARCS
                ))
            }
            Request::ArcHashes { arcs } => Response::Hashes(
                arcs.iter()
                    .map(|a| self.store().merkle().arc_hash(*a))
                    .collect(),
            ),
            Request::Merkle { query } => match self.store().merkle().answer(&query) {
                Ok(answer) => Response::Merkle(answer),
                Err(e) => Response::Error(e.to_string()),
            },
            other => Response::Error(format!("not a replica request: {other:?}")),
        }
    }

    /// Answers any data request from a peer.
    pub async fn serve(&self, req: Request) -> Response {
        match req {
            Request::Coordinate {
                id,
                key,
                write,
                plan,
            } => {
                // A duplicate of a forwarded write waits for (or reuses) the first one's
                // outcome instead of applying the write again.
                // Keyed by the write too: ids from two lives of a node cannot mix writes up.
                let slot = format!("{id} {} {:?}", write.name(), key);
                let once = self.inner.forwarded.slot(slot, tokio::time::Instant::now());
                let outcome = once
                    .get_or_init(|| self.execute(key, write, plan, false))
                    .await;
                Response::Written(outcome.clone())
            }
            other => self.serve_replica(other),
        }
    }

    /// Runs the node's housekeeping until the task is aborted: the store's TTL expiry and
    /// tombstone reaping, hint delivery, and anti-entropy rounds (each in a task of its own,
    /// one at a time, aborted with the rest).
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let ae_interval = self.defaults().anti_entropy.interval_ms;
        tokio::spawn(async move {
            let ticker = |period: Duration| {
                let mut t = tokio::time::interval(period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            };
            let mut purge = ticker(PURGE_INTERVAL);
            let mut hints = ticker(super::handoff::HINT_DELIVERY_INTERVAL);
            // An interval of zero turns anti-entropy off: its ticker then never fires.
            let mut ae = ticker(Duration::from_millis(ae_interval.max(1)));
            ae.reset();
            let mut rounds = tokio::task::JoinSet::new();
            // A change of the ring's members (a join, a leave, a removal) moves replicas:
            // anti-entropy runs a second after it rather than at its next tick.
            let mut view = this.inner.view.clone();
            let ring_ids = |v: &crate::node::ClusterView| -> Vec<String> {
                v.ring.members().iter().map(|m| m.id.clone()).collect()
            };
            let mut members = ring_ids(&view.borrow());
            let mut view_open = true;
            loop {
                tokio::select! {
                    changed = view.changed(), if view_open => {
                        if changed.is_err() {
                            view_open = false;
                            continue;
                        }
                        let now = ring_ids(&view.borrow_and_update());
                        if now != members {
                            members = now;
                            ae.reset_after(RING_CHANGE_SETTLE);
                        }
                    }
                    _ = purge.tick() => {
                        this.inner.forwarded.forget_old(tokio::time::Instant::now());
                        // Replicas' writes land here without a client write: check too.
                        this.evict_if_full();
                        let stats = this.store().purge(this.now_ms());
                        if stats.expired + stats.reaped > 0 {
                            tracing::debug!(
                                expired = stats.expired,
                                reaped = stats.reaped,
                                "store purge"
                            );
                        }
                    }
                    _ = hints.tick() => {
                        this.deliver_hints().await;
                    }
                    _ = ae.tick(), if ae_interval > 0 => {
                        while rounds.try_join_next().is_some() {}
                        if rounds.is_empty() {
                            let this = this.clone();
                            rounds.spawn(async move { this.anti_entropy_round().await; });
                        }
                    }
                }
            }
        })
    }
}

/// Everything a node serves to its peers: gossip goes to the membership runtime, data requests
/// to the coordinator.
pub struct PeerHandler {
    pub gossip: Arc<dyn Handler>,
    pub coordinator: Coordinator,
}

impl Handler for PeerHandler {
    fn one_way(&self, from: &str, msg: OneWay) {
        self.gossip.one_way(from, msg);
    }

    fn request(&self, from: &str, req: Request) -> BoxFuture<Response> {
        match req {
            Request::Ping => self.gossip.request(from, req),
            other => {
                let coordinator = self.coordinator.clone();
                Box::pin(async move { coordinator.serve(other).await })
            }
        }
    }

    fn request_now(&self, _from: &str, req: Request) -> Result<Response, Box<Request>> {
        match req {
            Request::Read { .. } | Request::Merge { .. } => Ok(self.coordinator.serve_replica(req)),
            other => Err(Box::new(other)),
        }
    }
}

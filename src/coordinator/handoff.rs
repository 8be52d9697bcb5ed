//! Hinted handoff: how a write reaches replicas that cannot take it, and how it gets to them
//! later.
//!
//! A write goes to every replica of its preference list. When one is known to be down
//! (membership says dead, or suspect while a live fallback exists) or its call fails, the
//! write goes instead to the next live member after the preference list in ring order (the
//! *fallback*) as a hint naming the replica it was meant for (its *owner*). With `sloppy=true`
//! (the default) the fallback's acknowledgement counts toward W, as in Dynamo's sloppy quorum;
//! with `sloppy=false` no fallback is used. Either way, a write that no fallback took is kept
//! as a hint on the coordinator itself, without counting, so the owner still gets it.
//!
//! Every node delivers the hints it holds once their owner is alive again, in batches, and
//! forgets each one only when the owner acknowledged it. Hints for an owner that has left the
//! cluster (or was removed) go to the key's current replicas instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::gather::Tally;
use super::{Coordinator, Placement, Target, is_reachable};
use crate::membership::MemberState;
use crate::ops::Plan;
use crate::rpc::{EncodedRequest, Request, Response};
use crate::storage::{Key, Kind, Value};
use crate::transport::Peer;

/// How often a node looks for hints it can deliver.
pub const HINT_DELIVERY_INTERVAL: Duration = Duration::from_millis(500);
/// Most hints (keys) in one delivery batch.
const BATCH_KEYS: usize = 512;
/// Stop adding hints to a batch past this many bytes.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Fallbacks not yet used by this write, in ring order; `None` when there are none to use.
type Pool = Option<Arc<Mutex<VecDeque<Target>>>>;

/// A write on its way to the replicas, shared by their calls: what a hint needs.
struct ReplicaWrite {
    key: Key,
    delta: Value,
    pool: Pool,
    deadline: Instant,
    /// Hinted handoff is on.
    hints: bool,
}

fn take(pool: &Pool) -> Option<Target> {
    pool.as_ref()?
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop_front()
}

fn has_any(pool: &Pool) -> bool {
    pool.as_ref().is_some_and(|pool| {
        !pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    })
}

impl Coordinator {
    /// Sends the write to every replica of `placement` other than this node, each covered by
    /// a hint (on one of the placement's fallbacks) when the replica cannot take it, and
    /// reports each outcome to `tally`: the replica's merged state when asked for (counters),
    /// `None` for a hint on a fallback. `tally` expects an answer from each of those replicas.
    pub(super) fn replicate(
        &self,
        key: &Key,
        delta: Value,
        placement: &Placement,
        plan: &Plan,
        deadline: Instant,
        tally: &Arc<Tally<Option<Value>>>,
    ) {
        let me = self.me();
        if placement.replicas.iter().all(|t| t.is(me)) {
            return;
        }
        let hints = self.inner.defaults.hints.enabled;
        let pool: Pool = (plan.sloppy && hints && !placement.fallbacks.is_empty())
            .then(|| Arc::new(Mutex::new(placement.fallbacks.iter().cloned().collect())));
        // Encoded once for every replica; the key and the delta stay at hand for hints.
        let merge = EncodedRequest::new(&Request::Merge {
            key: key.clone(),
            value: delta.clone(),
            reply_state: key.kind == Kind::Counter,
        })
        .map_err(|e| e.to_string());
        let write = Arc::new(ReplicaWrite {
            key: key.clone(),
            delta,
            pool,
            deadline,
            hints,
        });
        for t in placement.replicas.iter().filter(|t| !t.is(me)) {
            // A suspect is skipped when a live fallback can stand in for it.
            let direct =
                is_reachable(t.state) && !(t.state == MemberState::Suspect && has_any(&write.pool));
            match &merge {
                Ok(merge) if direct => {
                    let (this, target, write, tally) = (
                        self.clone(),
                        t.clone(),
                        Arc::clone(&write),
                        Arc::clone(tally),
                    );
                    self.send_remote(t, merge.clone(), deadline, "merge", move |result| {
                        let error = match result {
                            Ok(Response::Merged(state)) => {
                                return tally.answer(target.id, Ok(state));
                            }
                            Ok(other) => format!("{}: unexpected answer {other:?}", target.id),
                            Err(e) => e,
                        };
                        this.cover(target, write, None, error, tally);
                    });
                }
                not_sent => {
                    let error = match not_sent {
                        Ok(_) => format!("{} is {}", t.id, t.state.as_str()),
                        Err(e) => format!("{}: the write could not be encoded: {e}", t.id),
                    };
                    // Its fallback is claimed now, so that a suspect later in the list sees
                    // whether one is left for it.
                    let first = take(&write.pool);
                    self.cover(
                        t.clone(),
                        Arc::clone(&write),
                        first,
                        error,
                        Arc::clone(tally),
                    );
                }
            }
        }
    }

    /// Covers a replica that could not take a write (`error` says why) with a hint on a
    /// fallback (`first`, if one was claimed for it, then the pool's), in a task of its own,
    /// and reports the outcome: a fallback's acknowledgement counts for the replica. Without
    /// one, the write is kept here for the owner, uncounted.
    fn cover(
        &self,
        target: Target,
        write: Arc<ReplicaWrite>,
        first: Option<Target>,
        error: String,
        tally: Arc<Tally<Option<Value>>>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (a transport dropping its queue as a test ends) no fallback
            // can be called: the write is kept here for the owner.
            if write.hints {
                self.keep_hint(&target.id, write.key.clone(), &write.delta);
            }
            return tally.answer(target.id, Err(error));
        };
        let this = self.clone();
        let cover = async move {
            let ReplicaWrite {
                key,
                delta,
                pool,
                deadline,
                hints,
            } = &*write;
            let mut first = first;
            while Instant::now() < *deadline {
                let Some(fallback) = first.take().or_else(|| take(pool)) else {
                    break;
                };
                match this
                    .hint_on(&fallback, &target.id, key, delta, *deadline)
                    .await
                {
                    Ok(()) => return tally.answer(target.id, Ok(None)),
                    Err(e) => tracing::debug!(fallback = %fallback.id, "hint refused: {e}"),
                }
            }
            if *hints {
                this.keep_hint(&target.id, key.clone(), delta);
            }
            tally.answer(target.id, Err(error));
        };
        runtime.spawn(cover);
    }

    /// Stores a hint for `owner` on `fallback` (in place when that is this node).
    async fn hint_on(
        &self,
        fallback: &Target,
        owner: &str,
        key: &Key,
        value: &Value,
        deadline: Instant,
    ) -> Result<(), String> {
        if fallback.is(self.me()) {
            self.keep_hint(owner, key.clone(), value);
            return Ok(());
        }
        let req = Request::Hint {
            owner: owner.to_string(),
            key: key.clone(),
            value: value.clone(),
        };
        match self.call(fallback, req, deadline, "hint").await? {
            Response::Merged(_) => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Keeps a write for `owner` in this node's hint store.
    pub(super) fn keep_hint(&self, owner: &str, key: Key, value: &Value) {
        let added = self.inner.hints.add(owner, key, value, self.now_ms());
        let m = &self.inner.metrics;
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

    /// Hints held and their bytes.
    pub fn pending_hints(&self) -> (usize, usize) {
        self.inner.hints.pending()
    }

    /// Delivers what can be delivered now: every hint whose owner is alive goes to it, and
    /// hints for owners that left go to the key's current replicas. Returns how many hints
    /// were delivered.
    pub async fn deliver_hints(&self) -> usize {
        let mut delivered = 0;
        for owner in self.inner.hints.owners() {
            let view = self.view();
            let member = view.member(&owner);
            let state = member.map(|m| m.state);
            let gone = matches!(state, None | Some(MemberState::Left))
                || view.ring.member(&owner).is_none();
            if state != Some(MemberState::Alive) && !gone {
                continue;
            }
            loop {
                let now = self.now_ms();
                let (batch, expired) = self.inner.hints.batch(&owner, BATCH_KEYS, BATCH_BYTES, now);
                if expired > 0 {
                    self.inner
                        .metrics
                        .hints_dropped
                        .with_label_values(&["expired"])
                        .inc_by(expired as u64);
                    tracing::warn!(owner, expired, "hints older than the maximum age dropped");
                }
                if batch.is_empty() {
                    break;
                }
                let acked: Vec<bool> = if gone {
                    self.deliver_to_replicas(&batch).await
                } else {
                    let Some(peer) = member.map(|m| Peer::new(&m.info.id, m.info.peer)) else {
                        break;
                    };
                    self.deliver_to(&peer, &batch).await
                };
                let mut progress = false;
                for (hint, ok) in batch.iter().zip(&acked) {
                    if *ok && self.inner.hints.delivered(&owner, &hint.key, hint.version) {
                        delivered += 1;
                        progress = true;
                    }
                }
                if !acked.iter().all(|ok| *ok) || !progress {
                    break;
                }
            }
        }
        self.inner.metrics.hints_delivered.inc_by(delivered as u64);
        if delivered > 0 {
            tracing::info!(delivered, "hints delivered");
        }
        delivered
    }

    /// Sends a batch of hints to their owner; which ones it acknowledged.
    async fn deliver_to(&self, peer: &Peer, batch: &[super::hints::Hint]) -> Vec<bool> {
        let items = batch
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        let timeout = Duration::from_millis(self.inner.defaults.timeout_ms);
        let result = self
            .inner
            .transport
            .call(peer, Request::MergeBatch { items }, timeout)
            .await;
        self.inner.metrics.rpc("hint_delivery", result.is_ok());
        match result {
            Ok(Response::MergedBatch { failed }) => {
                let mut acked = vec![true; batch.len()];
                for (i, why) in failed {
                    tracing::warn!(owner = %peer.id, "hint not merged: {why}");
                    if let Some(a) = acked.get_mut(i as usize) {
                        *a = false;
                    }
                }
                acked
            }
            Ok(other) => {
                tracing::debug!(owner = %peer.id, "unexpected answer to hints: {other:?}");
                vec![false; batch.len()]
            }
            Err(e) => {
                tracing::debug!(owner = %peer.id, "hint delivery failed: {e}");
                vec![false; batch.len()]
            }
        }
    }

    /// For an owner that is gone: merges each hint into the key's current replicas (the
    /// cluster's default N); a hint counts as delivered once one replica has it.
    async fn deliver_to_replicas(&self, batch: &[super::hints::Hint]) -> Vec<bool> {
        let view = self.view();
        let n = self.inner.defaults.n.min(view.ring.len() as u32);
        let deadline = Instant::now() + Duration::from_millis(self.inner.defaults.timeout_ms);
        let mut acked = Vec::with_capacity(batch.len());
        for hint in batch {
            let mut any = false;
            for t in &self.placement(&view, &hint.key, n).replicas {
                let req = Request::Merge {
                    key: hint.key.clone(),
                    value: hint.value.clone(),
                    reply_state: false,
                };
                any |= matches!(
                    self.call(t, req, deadline, "hint_delivery").await,
                    Ok(Response::Merged(_))
                );
            }
            acked.push(any);
        }
        acked
    }
}

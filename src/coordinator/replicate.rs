//! Write replication: how a write reaches every replica of its key, and what stands in for a
//! replica that cannot take it.
//!
//! A write goes to every replica of its preference list. When one is known to be down
//! (membership says dead, or suspect while a live fallback exists) or its call fails, the
//! write goes instead to the next live member after the preference list in ring order (the
//! *fallback*) as a hint naming the replica it was meant for (its *owner*). With `sloppy=true`
//! (the default) the fallback's acknowledgement counts toward W, as in Dynamo's sloppy quorum;
//! with `sloppy=false` no fallback is used. Either way, a write that no fallback took is kept
//! as a hint on the coordinator itself, without counting, so the owner still gets it. Hints
//! reach their owners later through [`super::handoff`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::gather::Tally;
use super::placement::{Placement, Target};
use super::{Coordinator, is_reachable};
use crate::membership::MemberState;
use crate::ops::Plan;
use crate::rpc::{Encoded, Hint, Merge};
use crate::storage::{Key, Value};

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
    /// reports each outcome to `tally`: the replica's merged state when `reply_state` asks for
    /// it, `None` for a hint on a fallback. `tally` expects an answer from each of those
    /// replicas.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replicate(
        &self,
        key: &Key,
        delta: Value,
        placement: &Placement,
        plan: &Plan,
        reply_state: bool,
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
        let merge = Encoded::new(Merge {
            key: key.clone(),
            value: delta.clone(),
            reply_state,
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
                    self.send(t, merge, deadline, "merge", move |result| match result {
                        Ok(state) => tally.answer(target.id, Ok(state)),
                        Err(error) => this.cover(target, write, None, error, tally),
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
                let replica = &self.inner.replica;
                replica.hold_hint(&target.id, write.key.clone(), &write.delta);
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
                this.inner.replica.hold_hint(&target.id, key.clone(), delta);
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
            self.inner.replica.hold_hint(owner, key.clone(), value);
            // It counts toward w: only once the durable log has it.
            if let Some(point) = self.store().sync_point() {
                tokio::time::timeout_at(deadline, point.reached())
                    .await
                    .map_err(|_| "the hint did not reach the durable log in time".to_string())?;
            }
            return Ok(());
        }
        let hint = Hint {
            owner: owner.to_string(),
            key: key.clone(),
            value: value.clone(),
        };
        self.call(fallback, hint, deadline, "hint").await
    }
}

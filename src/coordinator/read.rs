//! Quorum reads: ask every replica of the key, return the merge of the first R answers, and
//! repair the replicas found behind once every answer is in (read repair).

use std::sync::Arc;

use tokio::time::Instant;

use super::gather::{Gathered, Tally};
use super::placement::{Placement, needed};
use super::{Coordinator, NodeId, deadline, merge_all, unavailable};
use crate::ops::{Consistency, OpError, Plan, ReadResult, check_key};
use crate::rpc::{Encoded, Merge, Read};
use crate::storage::{Key, Kind, Value};

/// The merged answer of a quorum read.
pub(super) struct Merged {
    /// The join of the answers; `None` when no replica has the key.
    pub merged: Option<Value>,
    /// How many replicas answered in time.
    pub answers: u32,
}

impl Coordinator {
    /// Reads a key at R: the merge of at least R replicas' states. Stale replicas are repaired
    /// in the background.
    pub async fn read(
        &self,
        kind: Kind,
        name: impl AsRef<[u8]>,
        c: &Consistency,
    ) -> Result<ReadResult, OpError> {
        let name = name.as_ref();
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

    /// Reads `key` from its replicas until R answered, merges the answers, and leaves the
    /// rest of the replies to a background read repair. Also brings this node's own replica up
    /// to the merge at once, so that a write right after sees what the read saw.
    pub(super) async fn quorum_read(
        &self,
        key: &Key,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<Merged, OpError> {
        let view = self.view();
        let placement = self.placement(&view, key, plan.n);
        let needed = needed(&plan.r, &placement.replicas)?;
        let replica = &self.inner.replica;
        let me = &self.inner.me;
        let mut ready = Vec::with_capacity(1);
        let mut remote = Vec::new();
        for t in &placement.replicas {
            if t.is(me) {
                ready.push((t.id.clone(), replica.read(key).map_err(|e| e.to_string())));
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
            match Encoded::new(Read { key: key.clone() }) {
                Ok(read) => {
                    for t in remote {
                        let (tally, id) = (Arc::clone(tally), t.id.clone());
                        self.send(t, &read, deadline, "read", move |state| {
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
        let mut merged = merge_all(ok.iter().map(|(_, v)| v));
        // A replica that has not heard of the last FLUSHALL yet (it was cut off) must not
        // bring back what it cleared.
        if let Some(Value::Typed(t)) = &mut merged
            && let Some(before) = replica.store().flushed()
        {
            t.clear_before(&before);
        }
        if let Some(value) = &merged {
            replica.observe(value);
            let store = replica.store();
            let now = self.now_ms();
            if let Some((_, mine)) = ok.iter_mut().find(|(id, _)| id == me) {
                if mine.as_ref() != Some(value) && store.absorb(key, value, now).is_ok() {
                    self.inner.metrics.read_repairs.inc();
                    // What the background repair compares against: this replica holds it.
                    *mine = Some(value.clone());
                }
            } else if placement.has(me) {
                // This replica did not answer (it is bootstrapping): it still takes what the
                // read saw, so a write that follows (a set remove, a delete) builds on it.
                let _ = store.absorb(key, value, now);
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
        let stale: Vec<_> = answered
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
        let repair_deadline = Instant::now() + self.request_timeout();
        let calls: Vec<_> = stale
            .into_iter()
            .map(|t| {
                let merge = Merge {
                    key: key.clone(),
                    value: merged.clone(),
                    reply_state: false,
                };
                (t.id.clone(), self.call(t, merge, repair_deadline, "repair"))
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

//! The node's background work: the store's TTL expiry and tombstone reaping, forgetting old
//! forwarded-write ids, eviction past the memory limit, hint delivery, and anti-entropy rounds
//! (sooner after the ring's members change).

use std::time::Duration;

use super::Coordinator;

/// How often expired values turn into tombstones and old tombstones are forgotten.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the memory calibration is refreshed and the limit checked.
const MEMORY_INTERVAL: Duration = Duration::from_millis(100);

/// How long after a change of the ring's members anti-entropy runs.
const RING_CHANGE_SETTLE: Duration = Duration::from_secs(1);

impl Coordinator {
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
            let mut memory = ticker(MEMORY_INTERVAL);
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
                        let (now, flushed) = {
                            let current = view.borrow_and_update();
                            (ring_ids(&current), current.flushed.clone())
                        };
                        // A flush learned through gossip (this node was down or cut off when
                        // it was made) applies here too.
                        if let Some(before) = flushed {
                            this.inner.replica.flush(&before);
                        }
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
                    _ = memory.tick() => {
                        this.inner.memory.calibrate(this.store().memory_used());
                        this.evict_if_full();
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

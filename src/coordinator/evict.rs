//! Cache eviction: past the node's memory limit, the least recently used keys of the typed namespace go, as
//! Redis's allkeys-lru does, by sampling.
//!
//! An evicted key is deleted, not just dropped here: the node deletes it (a delete newer than
//! its value, on this node's hybrid clock) and sends it to the key's replicas at
//! W = 1 in the background. Dropping the key on this node alone would not free anything
//! for long: anti-entropy and read repair would bring it back from the other replicas. The
//! tombstone is marked as an eviction, so every replica forgets it after
//! `EVICTED_GRACE_MS` (10 s) instead of the tombstone grace period: a cache needs no
//! protection against an evicted value coming back. A node alone in its cluster drops the key
//! outright: no other node could bring it back.
//!
//! Eviction runs before the write that needs the room (`make_room`), as in Redis, and in a
//! background check ten times a second.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use super::gather::{Needed, Tally};
use crate::config::Eviction;
use crate::ops::{Need, Plan};
use crate::storage::{Key, Value};

/// Keys sampled per eviction; the least recently used of them goes.
const SAMPLE: usize = 16;

/// Most keys one write evicts before it runs; the rest, if any, go in the background.
const INLINE: usize = 64;

/// After an inline eviction found nothing to evict, writes skip eviction for this long.
const NOTHING_TO_EVICT_MS: u64 = 1_000;

/// Keys a write evicts before it runs while the resident memory is over its ceiling: two for
/// the one it may add, so the data shrinks slowly until the resident memory is back under
/// (one for one held the data but let fragmentation grow the resident memory on).
const OVER_CEILING: usize = 2;

impl Coordinator {
    /// Whether the node evicts at all (it has a limit and an eviction policy): what a caller
    /// checks before working out whether a request needs room.
    pub fn evicts(&self) -> bool {
        self.eviction_limit().is_some()
    }

    /// The limit eviction works to, when the node has one and evicts.
    fn eviction_limit(&self) -> Option<u64> {
        let d = &self.inner.defaults;
        (d.max_memory_bytes > 0 && d.eviction != Eviction::NoEviction).then_some(d.max_memory_bytes)
    }

    /// Before a write that may grow the data (a client's, or a peer's merge): past the limit,
    /// evicts here first, as Redis does before it runs a command. Left to a background task
    /// alone, eviction fell behind a client writing large values as fast as it could, and the
    /// resident memory went past its bound.
    pub fn make_room(&self) {
        let Some(limit) = self.eviction_limit() else {
            return;
        };
        let used = self.memory_used();
        if used <= limit {
            if self.ceiling_binds(used, limit) {
                self.evict_until(limit / 2, OVER_CEILING);
            }
            return;
        }
        // Nothing evictable a moment ago (the data is /kv or /counter): no sampling on every
        // write; the background check tries again.
        if self.now_ms() < self.inner.nothing_to_evict_until.load(Ordering::Relaxed) {
            return;
        }
        let evicted = self.evict_until(limit, INLINE);
        if evicted == INLINE {
            self.evict_if_full();
        } else if self.memory_used() > limit {
            self.inner
                .nothing_to_evict_until
                .store(self.now_ms() + NOTHING_TO_EVICT_MS, Ordering::Relaxed);
        }
    }

    /// Starts evicting in the background if the store is over the memory limit.
    pub fn evict_if_full(&self) {
        let Some(limit) = self.eviction_limit() else {
            return;
        };
        if self.memory_used() <= limit {
            return;
        }
        if self.inner.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let evicted = this.evict_until(limit, usize::MAX);
            this.inner.evicting.store(false, Ordering::Release);
            if evicted > 0 {
                tracing::debug!(evicted, "evicted least recently used keys");
            }
        });
    }

    /// Evicts until the store is within `limit`, at most `most` keys (or until no live key of
    /// the typed namespace is left to evict); returns how many keys went.
    fn evict_until(&self, limit: u64, most: usize) -> usize {
        let store = self.store();
        let mut evicted = 0;
        let mut seed = self.now_ms() ^ 0x9e37_79b9_7f4a_7c15;
        let volatile_only = self.inner.defaults.eviction == Eviction::VolatileLru;
        while evicted < most && self.memory_used() > limit {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let now = self.now_ms();
            let Some((key, _)) = store
                .lru_sample(SAMPLE, seed, now, volatile_only)
                .into_iter()
                .min_by_key(|(_, at)| *at)
            else {
                break;
            };
            if self.evict(key) {
                evicted += 1;
            } else {
                break;
            }
        }
        evicted
    }

    /// What the node's data costs in memory now: the store's estimate, calibrated against the
    /// process's resident memory (see [`super::memory`]).
    pub fn memory_used(&self) -> u64 {
        self.inner.memory.used(self.store().memory_used())
    }

    /// The node's memory calibration.
    pub fn memory_gauge(&self) -> &super::memory::MemoryGauge {
        &self.inner.memory
    }

    /// Whether the node is past its memory limit under `noeviction`, so that writes that
    /// would grow the data are refused.
    pub fn refuses_growth(&self) -> bool {
        let d = &self.inner.defaults;
        d.eviction == Eviction::NoEviction && d.max_memory_bytes > 0 && self.over_limit_or_ceiling()
    }

    /// Past the limit, or over the resident ceiling while the data is more than half the limit.
    fn over_limit_or_ceiling(&self) -> bool {
        let (used, limit) = (self.memory_used(), self.inner.defaults.max_memory_bytes);
        used > limit || self.ceiling_binds(used, limit)
    }

    /// Whether the resident ceiling holds the data back: over it while the data (`used`) is a
    /// real part of it, more than half of `limit`. What else the process holds (connections,
    /// buffers) is not the cache's to pay for.
    fn ceiling_binds(&self, used: u64, limit: u64) -> bool {
        self.inner.memory.over_ceiling() && used > limit / 2
    }

    /// Deletes `key` here at once and on its replicas in the background; on a node alone in
    /// its cluster the key is dropped outright (no other node could bring it back). Whether
    /// the key went.
    fn evict(&self, key: Key) -> bool {
        let view = self.view();
        if view.ring.len() == 1 && view.ring.member(self.me()).is_some() {
            let gone = self.store().discard(&key);
            if gone {
                self.inner.metrics.evictions.inc();
            }
            return gone;
        }
        let n = self.inner.defaults.n.min(view.ring.len() as u32);
        let placement = self.placement(&view, &key, n);
        let others = placement.others(self.me());
        let now = self.now_ms();
        let ts = self.inner.replica.timestamp(now);
        let made = self.store().update(&key, now, &mut |current, _| {
            Ok(match current {
                Some(Value::Typed(t)) => Some(Value::Typed(Box::new(t.delete(true, &ts, now)))),
                _ => None,
            })
        });
        let tombstone = match made {
            Ok(Some(applied)) => applied.delta,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(?key, "cannot evict: {e}");
                return false;
            }
        };
        self.inner.metrics.evictions.inc();
        let plan = Plan {
            n,
            w: Need::Count(1),
            r: Need::Count(1),
            timeout_ms: self.inner.defaults.timeout_ms,
            sloppy: true,
        };
        let deadline = Instant::now() + Duration::from_millis(plan.timeout_ms);
        // Nothing waits for the replicas: the calls run on (and leave hints if they fail).
        let tally = Tally::new(Needed::count(0), Vec::new(), others, false);
        self.replicate(&key, tombstone, &placement, &plan, false, deadline, &tally);
        true
    }
}

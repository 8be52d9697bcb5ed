//! What a node's data costs in memory, for the memory limit: the store's own estimate (keys,
//! encoded values, a fixed overhead each) scaled by how much the process really grew for it.
//!
//! The estimate alone undercounts several times over (a value's maps, the Merkle leaves, the
//! allocator's rounding), so a node limited by it grew to about four times its limit. A node
//! that runs as a process measures its resident memory ten times a second and, once its data
//! is large enough to tell (`CALIBRATE_FROM`), sets the factor to (resident − base) /
//! estimate, where the base is what the process held before it loaded any data. One case is
//! left out: when the data shrank a lot (an eviction burst, deletes) and the resident memory
//! did not follow, the allocator kept the freed memory for later writes; raising the factor
//! then would evict again and again for memory that is about to be reused, emptying the cache. Eviction and
//! `noeviction` then compare the calibrated figure with the limit, so the resident memory
//! follows the limit. In-process simulations (many nodes in one process) keep the factor 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Below this estimate the factor is not recalibrated: the process's own base dominates.
pub const CALIBRATE_FROM: usize = 4 * 1024 * 1024;

/// The factor never goes outside these bounds (a measurement right after a burst of frees can
/// be off).
const FACTOR_RANGE: (f64, f64) = (1.0, 32.0);

/// How to read the process's resident bytes, and what it held before any data.
type Process = (fn() -> u64, u64);

/// The calibration of one node.
#[derive(Debug, Default)]
pub struct MemoryGauge {
    /// The factor, as `f64` bits; 0 means 1.
    factor: AtomicU64,
    /// How to read the process's resident bytes, and what it held before any data.
    process: Mutex<Option<Process>>,
    /// The estimate and the resident bytes at the last calibration.
    last: Mutex<(usize, u64)>,
}

impl MemoryGauge {
    /// Calibrates against the process's resident memory from now on: `resident` reads it,
    /// `base` is what the process held before it loaded any data.
    pub fn track_process(&self, resident: fn() -> u64, base: u64) {
        *self.process.lock().unwrap_or_else(PoisonError::into_inner) = Some((resident, base));
    }

    /// The factor the estimate is scaled by.
    pub fn factor(&self) -> f64 {
        match f64::from_bits(self.factor.load(Ordering::Relaxed)) {
            f if f >= FACTOR_RANGE.0 => f,
            _ => 1.0,
        }
    }

    /// The bytes the data costs, from the store's `estimate`.
    pub fn used(&self, estimate: usize) -> u64 {
        (estimate as f64 * self.factor()) as u64
    }

    /// Recomputes the factor from the resident memory, if the process is tracked and the
    /// data is large enough to tell.
    pub fn calibrate(&self, estimate: usize) {
        let Some((resident, base)) = *self.process.lock().unwrap_or_else(PoisonError::into_inner)
        else {
            return;
        };
        if estimate < CALIBRATE_FROM {
            return;
        }
        let rss = resident();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_estimate, last_rss) = *last;
        *last = (estimate, rss);
        let grown = rss.saturating_sub(base) as f64;
        let factor = (grown / estimate as f64).clamp(FACTOR_RANGE.0, FACTOR_RANGE.1);
        let freed_but_kept =
            (estimate as f64) < 0.9 * last_estimate as f64 && (rss as f64) > 0.97 * last_rss as f64;
        if freed_but_kept && factor > self.factor() {
            return;
        }
        self.factor.store(factor.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factor_follows_the_process_and_stays_in_bounds() {
        let g = MemoryGauge::default();
        assert_eq!(g.used(1000), 1000);
        g.calibrate(10 * CALIBRATE_FROM);
        assert_eq!(g.factor(), 1.0, "not tracked: no calibration");
        g.track_process(|| 100 * 1024 * 1024 + 16 * 1024 * 1024, 16 * 1024 * 1024);
        g.calibrate(CALIBRATE_FROM / 2);
        assert_eq!(g.factor(), 1.0, "too little data to tell");
        g.calibrate(25 * 1024 * 1024);
        assert!((g.factor() - 4.0).abs() < 1e-9, "{}", g.factor());
        assert_eq!(g.used(1000), 4000);
        // Half the data freed and the resident memory kept: the factor does not rise.
        g.calibrate(12 * 1024 * 1024);
        assert!((g.factor() - 4.0).abs() < 1e-9, "{}", g.factor());
        g.track_process(|| 1, 16 * 1024 * 1024);
        g.calibrate(25 * 1024 * 1024);
        assert_eq!(g.factor(), 1.0, "never below 1");
    }
}

//! What a node's data costs in memory, for the memory limit: the store's own estimate (keys,
//! encoded values, a fixed overhead each) scaled by how much the process really grew for it.
//!
//! The estimate alone undercounts several times over (a value's maps, the Merkle leaves, the
//! allocator's rounding), so a node limited by it grew to about four times its limit. A node
//! that runs as a process measures what it holds ten times a second and, once its data is
//! large enough to tell (`CALIBRATE_FROM`), sets the factor to (held − base) / estimate, where
//! the base is what the process held before it loaded any data. "Held" is the bytes its
//! allocator has handed out (`crate::alloc`), as Redis's `used_memory`; a build whose
//! allocator does not count (heap profiling) falls back to resident memory. Eviction and
//! `noeviction` then compare the calibrated figure with the limit. In-process simulations
//! (many nodes in one process) keep the factor 1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Below this estimate the factor is not recalibrated: the process's own base dominates.
pub const CALIBRATE_FROM: usize = 4 * 1024 * 1024;

/// The factor never goes outside these bounds (a measurement right after a burst of frees can
/// be off).
const FACTOR_RANGE: (f64, f64) = (1.0, 32.0);

/// How to read a figure of the process (allocated or resident bytes), and the figure it is
/// compared with (what it held before any data, or a ceiling).
type Process = (fn() -> u64, u64);

/// The calibration of one node.
#[derive(Debug, Default)]
pub struct MemoryGauge {
    /// The factor, as `f64` bits; 0 means 1.
    factor: AtomicU64,
    /// How to read what the process holds, and what it held before any data.
    process: Mutex<Option<Process>>,
    /// How to read the resident memory, and the ceiling it must stay under.
    resident: Mutex<Option<Process>>,
    /// The resident memory was over its ceiling at the last measurement.
    over_ceiling: AtomicBool,
}

impl MemoryGauge {
    /// Calibrates against what the process holds from now on: `held` reads it,
    /// `base` is what the process held before it loaded any data.
    pub fn track_process(&self, held: fn() -> u64, base: u64) {
        *self.process.lock().unwrap_or_else(PoisonError::into_inner) = Some((held, base));
    }

    /// Measures the resident memory too, against `ceiling`: the allocated bytes leave out the
    /// allocator's fragmentation (half as much again for small values under eviction), and
    /// the resident memory must stay within its bound whatever the workload.
    pub fn guard_resident(&self, resident: fn() -> u64, ceiling: u64) {
        *self.resident.lock().unwrap_or_else(PoisonError::into_inner) = Some((resident, ceiling));
    }

    /// Whether the resident memory was over its ceiling at the last measurement: a write that
    /// grows the data then evicts two keys first, so the data shrinks at the pace of the writes
    /// (not at once: most freed memory is reused by the next writes rather than returned).
    pub fn over_ceiling(&self) -> bool {
        self.over_ceiling.load(Ordering::Relaxed)
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

    /// Recomputes the factor from what the process holds, if the process is tracked and the
    /// data is large enough to tell.
    pub fn calibrate(&self, estimate: usize) {
        if let Some((resident, ceiling)) =
            *self.resident.lock().unwrap_or_else(PoisonError::into_inner)
        {
            self.over_ceiling
                .store(resident() > ceiling, Ordering::Relaxed);
        }
        let Some((held, base)) = *self.process.lock().unwrap_or_else(PoisonError::into_inner)
        else {
            return;
        };
        if estimate < CALIBRATE_FROM {
            return;
        }
        let grown = held().saturating_sub(base) as f64;
        let factor = (grown / estimate as f64).clamp(FACTOR_RANGE.0, FACTOR_RANGE.1);
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
        assert!(!g.over_ceiling(), "no ceiling set");
        g.guard_resident(|| 300, 200);
        g.calibrate(25 * 1024 * 1024);
        assert!(g.over_ceiling());
        g.guard_resident(|| 100, 200);
        g.calibrate(0);
        assert!(!g.over_ceiling(), "measured even with little data");
        g.track_process(|| 1, 16 * 1024 * 1024);
        g.calibrate(25 * 1024 * 1024);
        assert_eq!(g.factor(), 1.0, "never below 1");
    }
}

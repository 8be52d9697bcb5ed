//! Wall-clock time behind a trait, so that TTLs, tombstones and last-write-wins timestamps can
//! be driven by a test (tokio's paused clock, with per-node skew) instead of the machine.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where a node reads the current time (Unix milliseconds) from.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The machine's clock: what a node process uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Time as tokio sees it, from a fixed epoch plus a skew: under `tokio::time::pause` a
/// simulated cluster's clocks advance only when the test lets time pass, and each node can
/// run fast or slow by its own offset.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
    epoch_ms: u64,
    skew_ms: i64,
}

impl TokioClock {
    /// A clock that reads `epoch_ms + skew_ms` now and advances with tokio time.
    pub fn new(epoch_ms: u64, skew_ms: i64) -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            epoch_ms,
            skew_ms,
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = self.start.elapsed().as_millis() as u64;
        (self.epoch_ms + elapsed).saturating_add_signed(self.skew_ms)
    }
}

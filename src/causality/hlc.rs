//! Hybrid logical clocks (Kulkarni et al.) for last-write-wins timestamps.
//!
//! A timestamp follows physical time when clocks agree and never goes backwards when they
//! do not; ties between nodes break deterministically on the node id, so every replica picks
//! the same winner. Physical time is passed in, never read here, so tests choose it.

use serde::{Deserialize, Serialize};

/// A point in hybrid logical time. Ordered by (millis, logical, node); the default is the
/// earliest.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the issuing node's clock saw it (or later).
    pub millis: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
    /// Issuing node; the final tie-break.
    pub node: String,
}

/// Why a remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp is {ahead_ms} ms ahead of this node's clock, more than the {max_ms} ms allowed")]
pub struct ClockDriftError {
    /// How far the remote timestamp is ahead of this node's physical clock.
    pub ahead_ms: u64,
    /// The drift this clock accepts.
    pub max_ms: u64,
}

/// One node's hybrid clock. Not thread-safe on its own; callers wrap it in a lock.
#[derive(Debug, Clone)]
pub struct HybridClock {
    node: String,
    millis: u64,
    logical: u32,
    max_drift_ms: u64,
}

impl HybridClock {
    /// A clock for `node` that refuses remote timestamps more than `max_drift_ms` ahead.
    pub fn new(node: impl Into<String>, max_drift_ms: u64) -> Self {
        HybridClock {
            node: node.into(),
            millis: 0,
            logical: 0,
            max_drift_ms,
        }
    }

    /// A timestamp for a local event, greater than every timestamp this clock has issued or
    /// observed.
    pub fn now(&mut self, physical_ms: u64) -> Timestamp {
        if physical_ms > self.millis {
            self.millis = physical_ms;
            self.logical = 0;
        } else {
            self.tick_logical();
        }
        self.stamp()
    }

    /// Takes in a timestamp from another node so that later local events order after it.
    pub fn observe(&mut self, remote: &Timestamp, physical_ms: u64) -> Result<(), ClockDriftError> {
        if remote.millis > physical_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockDriftError {
                ahead_ms: remote.millis - physical_ms,
                max_ms: self.max_drift_ms,
            });
        }
        if (remote.millis, remote.logical) > (self.millis, self.logical) {
            self.millis = remote.millis;
            self.logical = remote.logical;
        }
        Ok(())
    }

    /// Moves the clock to `millis` if it is behind it, whatever the physical clock says: the
    /// mark a restarted node recovered, past every timestamp it issued before.
    pub fn resume_at(&mut self, millis: u64) {
        if millis > self.millis {
            self.millis = millis;
            self.logical = 0;
        }
    }

    fn tick_logical(&mut self) {
        if self.logical == u32::MAX {
            // Four billion events in one millisecond: borrow the next millisecond.
            self.millis += 1;
            self.logical = 0;
        } else {
            self.logical += 1;
        }
    }

    fn stamp(&self) -> Timestamp {
        Timestamp {
            millis: self.millis,
            logical: self.logical,
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_the_wall_clock_goes_back() {
        let mut c = HybridClock::new("n1", 1000);
        let a = c.now(100);
        let b = c.now(50);
        let d = c.now(100);
        assert!(a < b && b < d);
        assert_eq!(c.now(200).millis, 200);
    }

    #[test]
    fn orders_after_observed_remote_events() {
        let mut c = HybridClock::new("n1", 1000);
        let remote = Timestamp {
            millis: 500,
            logical: 7,
            node: "n2".into(),
        };
        c.observe(&remote, 100).unwrap();
        let t = c.now(100);
        assert!(t > remote, "{t:?} should follow {remote:?}");
        assert_eq!(
            c.observe(
                &Timestamp {
                    millis: 10_000,
                    logical: 0,
                    node: "n3".into()
                },
                100
            ),
            Err(ClockDriftError {
                ahead_ms: 9_900,
                max_ms: 1000
            })
        );
    }

    #[test]
    fn ties_break_on_node_id() {
        let a = Timestamp {
            millis: 1,
            logical: 0,
            node: "n1".into(),
        };
        let b = Timestamp {
            node: "n2".into(),
            ..a.clone()
        };
        assert!(a < b);
    }
}

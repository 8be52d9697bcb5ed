//! The last-write-wins register behind `/lww`: a cache value, no siblings.
//!
//! The write with the greatest hybrid-logical timestamp wins. A delete, and a value whose TTL
//! ran out, leave a tombstone at the write's timestamp so an older value held by a lagging
//! replica cannot come back.

use std::cmp::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::causality::Timestamp;

/// A timestamped value or tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister {
    /// When the write happened; the greatest wins on every replica.
    pub ts: Timestamp,
    /// `None` is a tombstone: deleted, or expired.
    pub value: Option<Bytes>,
    /// Unix milliseconds after which the value reads as absent; `None` never expires.
    pub expires_at: Option<u64>,
    /// A tombstone left by cache eviction (a node over its memory limit), not by a client:
    /// replicas forget it after a short grace period (`EVICTED_GRACE_MS` in the store), since
    /// an evicted value coming back from a lagging replica harms no one.
    #[serde(default)]
    pub evicted: bool,
}

impl LwwRegister {
    /// The delta of a write.
    pub fn set(ts: Timestamp, value: impl Into<Bytes>, expires_at: Option<u64>) -> Self {
        LwwRegister {
            ts,
            value: Some(value.into()),
            expires_at,
            evicted: false,
        }
    }

    /// The delta of a delete.
    pub fn delete(ts: Timestamp) -> Self {
        LwwRegister {
            ts,
            value: None,
            expires_at: None,
            evicted: false,
        }
    }

    /// The delta of an eviction: a delete that replicas keep only briefly.
    pub fn evict(ts: Timestamp) -> Self {
        LwwRegister {
            evicted: true,
            ..LwwRegister::delete(ts)
        }
    }

    /// The value, unless deleted or expired at `now_ms`.
    pub fn get(&self, now_ms: u64) -> Option<&Bytes> {
        match self.expires_at {
            Some(t) if now_ms >= t => None,
            _ => self.value.as_ref(),
        }
    }

    /// Whether the key reads as absent at `now_ms`: deleted, or expired.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        self.get(now_ms).is_none()
    }

    /// Turns an expired value into a tombstone. Returns whether anything changed.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        if self.value.is_some() && self.expires_at.is_some_and(|t| now_ms >= t) {
            // The expiry stays: it is when the value died.
            self.value = None;
            true
        } else {
            false
        }
    }

    /// When the value died, if it is a tombstone at `now_ms`: its delete, or its expiry.
    pub fn death_time(&self, now_ms: u64) -> Option<u64> {
        self.is_tombstone(now_ms)
            .then(|| self.ts.millis.max(self.expires_at.unwrap_or(0)))
    }

    /// When a live value expires, so the store can turn it into a tombstone then; `None` for a
    /// tombstone or a value without a TTL.
    pub fn next_expiry(&self) -> Option<u64> {
        self.value.as_ref().and(self.expires_at)
    }

    /// A total order: newer timestamp first; for the same write, its tombstone beats its value
    /// (the expired form of a value is the later one); the rest only makes the order total.
    fn rank(&self, other: &Self) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| other.value.is_some().cmp(&self.value.is_some()))
            .then_with(|| self.value.cmp(&other.value))
            .then_with(|| self.expires_at.cmp(&other.expires_at))
            .then_with(|| self.evicted.cmp(&other.evicted))
    }
}

impl Crdt for LwwRegister {
    fn merge(&mut self, other: &Self) {
        if other.rank(self) == Ordering::Greater {
            *self = other.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: u64, node: &str) -> Timestamp {
        Timestamp {
            millis,
            logical: 0,
            node: node.into(),
        }
    }

    #[test]
    fn later_write_wins_and_tie_breaks_on_node() {
        let mut a = LwwRegister::set(ts(5, "n1"), "old", None);
        a.merge(&LwwRegister::set(ts(6, "n1"), "new", None));
        assert_eq!(a.get(0), Some(&Bytes::from("new")));
        a.merge(&LwwRegister::set(ts(6, "n2"), "n2", None));
        assert_eq!(a.get(0), Some(&Bytes::from("n2")));
        a.merge(&LwwRegister::set(ts(6, "n0"), "n0", None));
        assert_eq!(a.get(0), Some(&Bytes::from("n2")));
    }

    #[test]
    fn expired_value_becomes_a_tombstone_that_beats_older_values() {
        let mut a = LwwRegister::set(ts(10, "n1"), "v", Some(1000));
        assert!(a.get(999).is_some());
        assert!(a.get(1000).is_none());
        let live_copy = a.clone();
        assert!(a.expire(1000));
        a.merge(&live_copy);
        a.merge(&LwwRegister::set(ts(9, "n1"), "older", None));
        assert!(a.value.is_none());
    }
}

//! The PN-counter behind `/counter`: per-actor totals of increments and decrements.
//!
//! Each actor only ever raises its own two totals, so the merge is a per-actor maximum and a
//! delta carries the actor's new totals rather than the change: applying it twice, or after a
//! later delta, counts it once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::causality::Actor;

/// One actor's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnEntry {
    /// Everything the actor has added.
    pub inc: u64,
    /// Everything the actor has subtracted, as a positive total.
    pub dec: u64,
}

/// An actor's total would pass `u64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("increment or decrement would overflow the counter")]
pub struct CounterOverflow;

/// A positive-negative counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    entries: BTreeMap<Actor, PnEntry>,
}

impl PnCounter {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter's value: all increments minus all decrements.
    pub fn value(&self) -> i128 {
        self.entries
            .values()
            .map(|e| i128::from(e.inc) - i128::from(e.dec))
            .sum()
    }

    /// The delta of `actor` adding `delta` (negative to decrement). Only `actor` may call this,
    /// on its latest local state.
    pub fn add(&self, actor: &str, delta: i64) -> Result<PnCounter, CounterOverflow> {
        let mut entry = self.entries.get(actor).copied().unwrap_or_default();
        if delta >= 0 {
            entry.inc = entry
                .inc
                .checked_add(delta.unsigned_abs())
                .ok_or(CounterOverflow)?;
        } else {
            entry.dec = entry
                .dec
                .checked_add(delta.unsigned_abs())
                .ok_or(CounterOverflow)?;
        }
        Ok(PnCounter {
            entries: BTreeMap::from([(actor.to_string(), entry)]),
        })
    }

    /// Each actor's totals, whose `inc - dec` sum to [`PnCounter::value`].
    pub fn entries(&self) -> &BTreeMap<Actor, PnEntry> {
        &self.entries
    }
}

impl Crdt for PnCounter {
    fn merge(&mut self, other: &Self) {
        for (actor, theirs) in &other.entries {
            let mine = self.entries.entry(actor.clone()).or_default();
            mine.inc = mine.inc.max(theirs.inc);
            mine.dec = mine.dec.max(theirs.dec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicated_deltas_count_once() {
        let mut a = PnCounter::new();
        let d = a.add("n1", 5).unwrap();
        a.merge(&d);
        a.merge(&d);
        let d2 = a.add("n1", -7).unwrap();
        a.merge(&d2);
        a.merge(&d);
        assert_eq!(a.value(), -2);
        let mut b = PnCounter::new();
        let d3 = b.add("n2", 10).unwrap();
        b.merge(&d3);
        a.merge(&b);
        assert_eq!(a.value(), 8);
    }

    #[test]
    fn overflow_is_an_error() {
        let mut a = PnCounter::new();
        let d = a.add("n1", i64::MAX).unwrap();
        a.merge(&d);
        let d = a.add("n1", i64::MAX).unwrap();
        a.merge(&d);
        assert_eq!(a.add("n1", 2), Err(CounterOverflow));
        assert_eq!(a.value(), 2 * i128::from(i64::MAX));
    }
}

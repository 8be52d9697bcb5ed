//! `/counter` and Redis `INCRBY`: PN-counters, whose increments from any node under any
//! partition all count once the cluster heals.

use serde::{Deserialize, Serialize};

use super::{Base, Delta, Operation};
use crate::crdt::{Crdt, PnCounter};
use crate::ops::{OpError, ReadResult, Written};
use crate::storage::{Kind, Value};

/// `POST /counter?delta=N`, Redis `INCRBY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    /// The signed increment.
    pub delta: i64,
}

impl Operation for Add {
    fn kind(&self) -> Kind {
        Kind::Counter
    }

    fn name(&self) -> &'static str {
        "counter_add"
    }

    fn issues_dots(&self) -> bool {
        true
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let mut after = None;
        let applied = base.update(|current, actor| {
            let empty = PnCounter::new();
            let current = match current {
                Some(Value::Counter(c)) => c,
                _ => &empty,
            };
            let delta = current
                .add(actor, self.delta)
                .map_err(|e| format!("{e}; the counter is left as it was"))?;
            let mut merged = current.clone();
            merged.merge(&delta);
            after = Some(merged.value());
            Ok(Value::Counter(delta))
        })?;
        base.written.counter = after;
        Ok(Delta::Applied(applied.delta))
    }

    fn wants_states(&self) -> bool {
        true
    }

    /// The value as merged from the replicas that acknowledged the write.
    fn report(&self, written: &mut Written, states: &[&Value], _now_ms: u64) {
        let mut merged = PnCounter::new();
        for state in states {
            if let Value::Counter(c) = state {
                merged.merge(c);
            }
        }
        written.counter = Some(merged.value());
    }
}

/// A counter read's value: 0 for a key never written.
pub fn value(read: &ReadResult) -> i128 {
    match &read.value {
        Some(Value::Counter(c)) => c.value(),
        _ => 0,
    }
}

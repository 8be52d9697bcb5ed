//! `/lww` and Redis strings: last-write-wins registers for a cache. Conflicts resolve by
//! hybrid logical clock with a deterministic tie-break; no siblings, no context.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Base, Delta, Limits, Operation, check_ttl, check_value_size};
use crate::crdt::LwwRegister;
use crate::ops::{OpError, ReadResult};
use crate::storage::{Kind, Value};

/// `PUT /lww`, Redis `SET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The new value.
    pub value: Bytes,
    /// Time to live in milliseconds (HTTP's `ttl` is in seconds, Redis's `PX` in ms).
    pub ttl_ms: Option<u64>,
}

impl Operation for Put {
    fn kind(&self) -> Kind {
        Kind::Lww
    }

    fn name(&self) -> &'static str {
        "lww_put"
    }

    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        check_value_size(self.value.len(), limits)?;
        check_ttl(self.ttl_ms)
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let register = LwwRegister::set(
            base.timestamp(),
            self.value.clone(),
            base.expiry(self.ttl_ms),
        );
        Ok(Delta::New(Value::Lww(register)))
    }
}

/// `DELETE /lww`, Redis `DEL`: a tombstone newer than every value this node has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete;

impl Operation for Delete {
    fn kind(&self) -> Kind {
        Kind::Lww
    }

    fn name(&self) -> &'static str {
        "lww_delete"
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        Ok(Delta::New(Value::Lww(LwwRegister::delete(
            base.timestamp(),
        ))))
    }
}

/// The live value of a read and when it expires, if it does; `None` for a missing, deleted or
/// expired key.
pub fn live(read: &ReadResult) -> Option<(Bytes, Option<u64>)> {
    match &read.value {
        Some(Value::Lww(reg)) => {
            let value = reg.get(read.now_ms)?.clone();
            Some((value, reg.next_expiry()))
        }
        _ => None,
    }
}

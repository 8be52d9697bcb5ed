//! `/kv`: registers with causal context (Dynamo's semantics). Concurrent writes become
//! siblings; a write with the context of a read supersedes what that read saw.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Base, Delta, Limits, Operation, check_ttl, check_value_size};
use crate::causality::CausalContext;
use crate::crdt::{MvRegister, Version};
use crate::ops::{OpError, ReadResult};
use crate::storage::{Kind, Value};

/// `PUT /kv`: supersedes what `context` covers, a sibling of everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The new value.
    pub value: Bytes,
    /// The context of an earlier read, if the client sent one.
    pub context: Option<CausalContext>,
    /// Time to live in milliseconds (HTTP's `ttl` is in seconds).
    pub ttl_ms: Option<u64>,
}

impl Operation for Put {
    fn kind(&self) -> Kind {
        Kind::Kv
    }

    fn name(&self) -> &'static str {
        "kv_put"
    }

    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        check_value_size(self.value.len(), limits)?;
        check_ttl(self.ttl_ms)
    }

    fn issues_dots(&self) -> bool {
        true
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let seen = self.context.clone().unwrap_or_default();
        let version = Version::new(self.value.clone(), base.expiry(self.ttl_ms));
        let applied = base.update(|current, actor| {
            let delta = match current {
                Some(Value::Kv(reg)) => reg.write(actor, &seen, version.clone()),
                _ => MvRegister::new().write(actor, &seen, version.clone()),
            };
            delta
                .map(|r| Value::Kv(Box::new(r)))
                .map_err(|e| e.to_string())
        })?;
        if let Value::Kv(reg) = &applied.delta {
            base.written.context = Some(reg.context().clone());
        }
        Ok(Delta::Applied(applied.delta))
    }
}

/// `DELETE /kv`: removes what `context` covers, or what a read at R sees without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The context of an earlier read, if the client sent one.
    pub context: Option<CausalContext>,
}

impl Operation for Delete {
    fn kind(&self) -> Kind {
        Kind::Kv
    }

    fn name(&self) -> &'static str {
        "kv_delete"
    }

    fn may_grow(&self) -> bool {
        false
    }

    fn observes(&self) -> bool {
        self.context.is_none()
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let seen = match &self.context {
            Some(ctx) => ctx.clone(),
            None => match base.observed() {
                Some(Value::Kv(reg)) => reg.context().clone(),
                // Nothing seen, nothing to delete.
                _ => return Ok(Delta::Nothing),
            },
        };
        let tombstone = MvRegister::delete(&seen, base.now_ms());
        base.written.context = Some(seen);
        Ok(Delta::New(Value::Kv(Box::new(tombstone))))
    }
}

/// What a `/kv` read shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown<'a> {
    /// No replica that answered has seen the key.
    Unknown,
    /// The key is known (its context is to be sent back) with these live versions: none (a
    /// deleted or expired key), one, or several siblings.
    Known {
        /// The causal context the reader saw.
        context: &'a CausalContext,
        /// The live values, in dot order.
        live: Vec<&'a Bytes>,
    },
}

/// The live versions of a `/kv` read.
pub fn show(read: &ReadResult) -> Shown<'_> {
    match &read.value {
        Some(Value::Kv(reg)) => Shown::Known {
            context: reg.context(),
            live: reg.live(read.now_ms).map(|(_, v)| &v.value).collect(),
        },
        _ => Shown::Unknown,
    }
}

//! The multi-value register behind `/kv`: Dynamo's versions and siblings.
//!
//! The state is a dotted causal container: a causal context (every write this replica knows
//! of, including superseded ones) and the live versions, each tagged with the dot of the write
//! that made it. A write carries the context its client read; it supersedes exactly the
//! versions whose dots that context holds, and stays a sibling of everything else. This is the
//! same information as a DVVSet (Almeida et al.), kept as explicit dots because it makes the
//! merge a three-line rule: keep a version unless the other side has seen its dot and dropped
//! it.
//!
//! A delete is a write with no version: its context alone removes what it saw, and the
//! context that remains is the tombstone that stops a stale replica from bringing it back.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::causality::{CausalContext, Dot, DotsExhausted};

/// One value written to a `/kv` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The bytes the client wrote.
    pub value: Bytes,
    /// Unix milliseconds after which the version reads as absent; `None` never expires.
    pub expires_at: Option<u64>,
}

impl Version {
    /// A version of `value` that expires at `expires_at` (Unix milliseconds), if given.
    pub fn new(value: impl Into<Bytes>, expires_at: Option<u64>) -> Self {
        Version {
            value: value.into(),
            expires_at,
        }
    }

    fn live_at(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|t| now_ms < t)
    }
}

/// A dotted causal container of versions. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvRegister {
    ctx: CausalContext,
    versions: BTreeMap<Dot, Version>,
    /// Unix milliseconds of the latest delete or expiry seen (0 for none): when a tombstone
    /// died, the same on every replica, so they all forget it after the same grace period.
    deleted_at: u64,
}

impl MvRegister {
    /// A register no one has written: no versions, empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The delta of `actor` writing `version` after having seen `seen`. Only `actor` may call
    /// this for its own dots, on its latest local state, so the dot it picks is new.
    pub fn write(
        &self,
        actor: &str,
        seen: &CausalContext,
        version: Version,
    ) -> Result<MvRegister, DotsExhausted> {
        let mut known = self.ctx.clone();
        known.join(seen);
        let dot = known.next_dot(actor)?;
        let mut ctx = seen.clone();
        ctx.insert(dot.clone());
        Ok(MvRegister {
            ctx,
            versions: BTreeMap::from([(dot, version)]),
            deleted_at: 0,
        })
    }

    /// The delta of a delete at `now_ms` that removes every version `seen` holds. Needs no
    /// dot, so any node may make it.
    pub fn delete(seen: &CausalContext, now_ms: u64) -> MvRegister {
        MvRegister {
            ctx: seen.clone(),
            versions: BTreeMap::new(),
            deleted_at: now_ms,
        }
    }

    /// When the key died, if nothing is live at `now_ms`: the time of its latest delete or
    /// expiry.
    pub fn death_time(&self, now_ms: u64) -> Option<u64> {
        self.is_tombstone(now_ms).then_some(self.deleted_at)
    }

    /// The causal context to hand to a client that read this state.
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    /// Live versions (not superseded, not expired at `now_ms`), in dot order.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = (&Dot, &Version)> {
        self.versions.iter().filter(move |(_, v)| v.live_at(now_ms))
    }

    /// Every stored version, expired or not.
    pub fn versions(&self) -> &BTreeMap<Dot, Version> {
        &self.versions
    }

    /// True when nothing is live: a deleted or expired key, or an empty state.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        self.live(now_ms).next().is_none()
    }

    /// Drops versions expired at `now_ms`; their dots stay in the context, so a replica that
    /// has not expired them yet loses them on merge. Returns whether anything changed.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let before = self.versions.len();
        let mut latest = self.deleted_at;
        self.versions.retain(|_, v| {
            let live = v.live_at(now_ms);
            if !live {
                latest = latest.max(v.expires_at.unwrap_or(0));
            }
            live
        });
        self.deleted_at = latest;
        before != self.versions.len()
    }

    /// The earliest expiry among stored versions.
    pub fn next_expiry(&self) -> Option<u64> {
        self.versions.values().filter_map(|v| v.expires_at).min()
    }
}

impl Crdt for MvRegister {
    fn merge(&mut self, other: &Self) {
        let other_ctx = &other.ctx;
        self.versions
            .retain(|dot, _| other.versions.contains_key(dot) || !other_ctx.contains(dot));
        for (dot, version) in &other.versions {
            if !self.ctx.contains(dot) {
                self.versions.insert(dot.clone(), version.clone());
            }
        }
        self.ctx.join(other_ctx);
        self.deleted_at = self.deleted_at.max(other.deleted_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::new(s.as_bytes().to_vec(), None)
    }

    fn apply(state: &mut MvRegister, delta: &MvRegister) {
        state.merge(delta);
    }

    #[test]
    fn writes_without_context_become_siblings_and_a_read_context_resolves_them() {
        let mut s = MvRegister::new();
        let d1 = s.write("a", &CausalContext::new(), v("x")).unwrap();
        apply(&mut s, &d1);
        let d2 = s.write("a", &CausalContext::new(), v("y")).unwrap();
        apply(&mut s, &d2);
        assert_eq!(s.live(0).count(), 2);
        let seen = s.context().clone();
        let d3 = s.write("a", &seen, v("z")).unwrap();
        apply(&mut s, &d3);
        let live: Vec<_> = s.live(0).map(|(_, v)| v.value.clone()).collect();
        assert_eq!(live, vec![Bytes::from("z")]);
    }

    #[test]
    fn delete_keeps_a_tombstone_that_beats_the_stale_replica() {
        let mut a = MvRegister::new();
        let d1 = a.write("a", &CausalContext::new(), v("x")).unwrap();
        a.merge(&d1);
        let stale = a.clone();
        let del = MvRegister::delete(a.context(), 50);
        a.merge(&del);
        assert!(a.is_tombstone(0));
        assert_eq!(a.death_time(0), Some(50));
        let mut healed = stale.clone();
        healed.merge(&a);
        assert!(healed.is_tombstone(0));
        a.merge(&stale);
        assert!(a.is_tombstone(0));
    }

    #[test]
    fn expiry_is_a_delete_everywhere() {
        let mut a = MvRegister::new();
        let d = a
            .write("a", &CausalContext::new(), Version::new("x", Some(100)))
            .unwrap();
        a.merge(&d);
        assert!(!a.is_tombstone(99));
        assert!(a.is_tombstone(100));
        let unexpired = a.clone();
        assert!(a.expire(100));
        assert_eq!(a.next_expiry(), None);
        assert_eq!(a.death_time(100), Some(100));
        a.merge(&unexpired);
        assert!(a.versions().is_empty());
    }
}

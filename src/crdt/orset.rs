//! The add-wins observed-remove set behind `/set` (the "optimised OR-set" of Bieniusa et al.,
//! as Riak's ORSWOT, in delta form).
//!
//! Each present member carries the dots of the adds that put it there; a causal context
//! records every add the replica has seen. A remove deletes the member's dots and keeps them
//! in the context, so it removes exactly the adds it observed: an add it did not see (a
//! concurrent one) has a dot outside its context and survives the merge. Removed members
//! leave nothing behind but the context, whose size is per actor, not per member.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::causality::{CausalContext, Dot, DotsExhausted};

/// An add-wins OR-set of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    ctx: CausalContext,
    entries: BTreeMap<String, BTreeSet<Dot>>,
}

impl OrSet {
    /// An empty set that has seen no add.
    pub fn new() -> Self {
        Self::default()
    }

    /// Members in sorted order.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether `member` is present.
    pub fn contains(&self, member: &str) -> bool {
        self.entries.contains_key(member)
    }

    /// How many members are present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no member is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The context of every add this replica has seen.
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    /// The delta of `actor` adding `add` and removing `remove` in one step. Only `actor` may
    /// issue its dots, on its latest local state. Each add replaces the member's observed dots
    /// with one new dot; each remove drops the member's observed dots.
    pub fn update<'a>(
        &self,
        actor: &str,
        add: impl IntoIterator<Item = &'a str>,
        remove: impl IntoIterator<Item = &'a str>,
    ) -> Result<OrSet, DotsExhausted> {
        let mut delta = OrSet::new();
        let mut issued = self.ctx.clone();
        for member in add {
            self.observe_into(member, &mut delta.ctx);
            let dot = issued.next_dot(actor)?;
            issued.insert(dot.clone());
            delta.ctx.insert(dot.clone());
            delta
                .entries
                .entry(member.to_string())
                .or_default()
                .insert(dot);
        }
        for member in remove {
            self.observe_into(member, &mut delta.ctx);
        }
        Ok(delta)
    }

    fn observe_into(&self, member: &str, ctx: &mut CausalContext) {
        for dot in self.entries.get(member).into_iter().flatten() {
            ctx.insert(dot.clone());
        }
    }
}

impl Crdt for OrSet {
    fn merge(&mut self, other: &Self) {
        // One pass over both sorted member lists. Keep a dot of ours unless the other side has
        // seen it and dropped it; take a dot of theirs unless we have seen it (and so kept or
        // dropped it already).
        let ours_seen = &self.ctx;
        let mine = std::mem::take(&mut self.entries);
        let mut merged: Vec<(String, BTreeSet<Dot>)> = Vec::with_capacity(mine.len());
        let mut theirs = other.entries.iter().peekable();
        let take_theirs = |dots: &BTreeSet<Dot>| -> BTreeSet<Dot> {
            dots.iter()
                .filter(|d| !ours_seen.contains(d))
                .cloned()
                .collect()
        };
        for (member, mut dots) in mine {
            while let Some((m, d)) = theirs.next_if(|(m, _)| m.as_str() < member.as_str()) {
                merged.push((m.clone(), take_theirs(d)));
            }
            match theirs.next_if(|(m, _)| **m == member) {
                Some((_, their_dots)) => {
                    dots.retain(|d| their_dots.contains(d) || !other.ctx.contains(d));
                    dots.extend(
                        their_dots
                            .iter()
                            .filter(|d| !ours_seen.contains(d))
                            .cloned(),
                    );
                }
                None => dots.retain(|d| !other.ctx.contains(d)),
            }
            merged.push((member, dots));
        }
        merged.extend(theirs.map(|(m, d)| (m.clone(), take_theirs(d))));
        // Already sorted, so this builds the map in linear time.
        self.entries = merged.into_iter().filter(|(_, d)| !d.is_empty()).collect();
        self.ctx.join(&other.ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(s: &OrSet) -> Vec<&str> {
        s.members().collect()
    }

    #[test]
    fn concurrent_add_wins_over_remove() {
        let mut a = OrSet::new();
        let d = a.update("n1", ["x"], []).unwrap();
        a.merge(&d);
        let mut b = a.clone();
        // a removes x while b, concurrently, adds x again.
        let rm = a.update("n1", [], ["x"]).unwrap();
        a.merge(&rm);
        let add = b.update("n2", ["x"], []).unwrap();
        b.merge(&add);
        assert!(members(&a).is_empty());
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(members(&ab), vec!["x"]);
        assert_eq!(ab, ba);
    }

    #[test]
    fn remove_of_observed_add_sticks() {
        let mut a = OrSet::new();
        let d = a.update("n1", ["x", "y"], []).unwrap();
        a.merge(&d);
        let stale = a.clone();
        let rm = a.update("n1", [], ["x"]).unwrap();
        a.merge(&rm);
        a.merge(&stale);
        assert_eq!(members(&a), vec!["y"]);
        // The delta alone, applied to a replica that never saw the add, removes nothing new
        // and resurrects nothing later.
        let mut c = OrSet::new();
        c.merge(&rm);
        c.merge(&stale);
        assert_eq!(members(&c), vec!["y"]);
    }
}

//! Causality: who wrote what, and what each writer had seen.
//!
//! Every replicated update carries a [`Dot`], the pair (actor, n) naming the n-th event of
//! one actor. A [`CausalContext`] is the set of dots a replica (or a client) has seen, kept
//! compact as a version vector plus a small "cloud" of dots that arrived out of order. The
//! multi-value register behind `/kv` and the OR-set behind `/set` are both built from dots
//! and contexts (see `crate::crdt`), as in Almeida et al.'s delta-state CRDTs and the dotted
//! version vectors of Riak 2.
//!
//! Clients hold contexts as opaque tokens ([`CausalContext::to_token`]): a write that carries
//! the token of an earlier read supersedes exactly the versions that read saw.

pub mod hlc;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub use hlc::{ClockDriftError, HybridClock, Timestamp};

/// The name of a writer. One actor per node and per boot of a store that may have lost its
/// data, so that a counter never restarts below a dot it already handed out.
pub type Actor = String;

/// The `counter`-th event of `actor`. Dots are unique: only the actor itself makes its dots,
/// always one past the highest it has seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The writer that made the event.
    pub actor: Actor,
    /// The event's number among the actor's events, from 1.
    pub counter: u64,
}

impl Dot {
    /// The `counter`-th event of `actor`.
    pub fn new(actor: impl Into<Actor>, counter: u64) -> Self {
        Dot {
            actor: actor.into(),
            counter,
        }
    }
}

/// Longest context token a client may send; a real context is a few dozen bytes per actor.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Most out-of-order dots a client's context may carry; a real one has a handful at most.
pub const MAX_TOKEN_CLOUD: usize = 1024;

/// An actor's dot counter reached `u64::MAX`; only a forged context gets there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the causal context leaves no new dot for {0}; drop the context and write again")]
pub struct DotsExhausted(pub Actor);

/// Why a client's context token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error(
        "context token is longer than {MAX_TOKEN_LEN} bytes; send back the X-Context of a read unchanged"
    )]
    TooLong,
    /// The token is not URL-safe base64.
    #[error("context token is not URL-safe base64; send back the X-Context of a read unchanged")]
    NotBase64,
    /// The token's bytes do not decode to a context.
    #[error(
        "context token does not decode to a causal context; send back the X-Context of a read unchanged"
    )]
    Malformed,
    /// The token's cloud holds more than [`MAX_TOKEN_CLOUD`] dots.
    #[error(
        "context token holds more than {MAX_TOKEN_CLOUD} out-of-order dots; send back the X-Context of a read unchanged"
    )]
    TooManyDots,
    /// The token was not issued by this cluster for this key: forged, altered, or read from
    /// another key or key space.
    #[error(
        "context token was not issued by this cluster for this key; send back the X-Context of a read of the same key unchanged"
    )]
    Forged,
}

/// A set of dots: a version vector (all dots 1..=n of each actor) plus the dots seen beyond
/// a gap. Always kept compact, so equal sets have equal representations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalContext {
    vv: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// An empty context: what a first write carries.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding every dot of the version vector `entries`.
    pub fn from_vv(entries: impl IntoIterator<Item = (Actor, u64)>) -> Self {
        let mut ctx = CausalContext::new();
        for (actor, n) in entries {
            if n > 0 {
                let e = ctx.vv.entry(actor).or_insert(0);
                *e = (*e).max(n);
            }
        }
        ctx
    }

    /// Whether the set holds no dot.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.get(&dot.actor).is_some_and(|&n| dot.counter <= n) || self.cloud.contains(dot)
    }

    /// Adds one dot, folding the cloud into the vector where the dot closes a gap.
    pub fn insert(&mut self, dot: Dot) {
        let run = self.vv.get(&dot.actor).copied().unwrap_or(0);
        if dot.counter <= run || self.cloud.contains(&dot) {
            return;
        }
        if dot.counter != run + 1 {
            self.cloud.insert(dot);
            return;
        }
        let mut top = dot.counter;
        let mut probe = Dot::new(dot.actor, top.saturating_add(1));
        while top < u64::MAX && self.cloud.remove(&probe) {
            top += 1;
            probe.counter = top.saturating_add(1);
        }
        self.vv.insert(probe.actor, top);
    }

    /// The next dot `actor` may issue: one past every dot of `actor` in the set; an error when
    /// the actor's counter is exhausted (only a forged context gets there).
    pub fn next_dot(&self, actor: &str) -> Result<Dot, DotsExhausted> {
        let in_vv = self.vv.get(actor).copied().unwrap_or(0);
        let in_cloud = self
            .cloud
            .range(Dot::new(actor, 0)..)
            .take_while(|d| d.actor == actor)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        let next = in_vv
            .max(in_cloud)
            .checked_add(1)
            .ok_or_else(|| DotsExhausted(actor.to_string()))?;
        Ok(Dot::new(actor, next))
    }

    /// Set union.
    pub fn join(&mut self, other: &CausalContext) {
        for (actor, &n) in &other.vv {
            let e = self.vv.entry(actor.clone()).or_insert(0);
            *e = (*e).max(n);
        }
        for dot in &other.cloud {
            if !self.contains(dot) {
                self.cloud.insert(dot.clone());
            }
        }
        self.compact();
    }

    /// Whether every dot of `other` is in `self`. Because a compact context never holds the
    /// dot right after its actor's run in the cloud, a run 1..=n is covered only by the vector.
    pub fn covers(&self, other: &CausalContext) -> bool {
        other
            .vv
            .iter()
            .all(|(a, &n)| self.vv.get(a).copied().unwrap_or(0) >= n)
            && other.cloud.iter().all(|d| self.contains(d))
    }

    /// The version vector part: for each actor, the n such that all of its dots 1..=n are in
    /// the set.
    pub fn vv(&self) -> &BTreeMap<Actor, u64> {
        &self.vv
    }

    /// Dots beyond a gap in their actor's sequence.
    pub fn cloud(&self) -> &BTreeSet<Dot> {
        &self.cloud
    }

    /// Folds cloud dots that continue their actor's run into the version vector.
    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let n = self.vv.get(&dot.actor).copied().unwrap_or(0);
            if dot.counter == n + 1 {
                self.vv.insert(dot.actor, dot.counter);
            } else if dot.counter > n {
                self.cloud.insert(dot);
            }
        }
    }

    /// The opaque, URL-safe token handed to clients (base64url of the rmp-serde encoding).
    pub fn to_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// The context's rmp-serde encoding, what a token carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding plain maps and sets of strings and integers cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Parses a token made by [`CausalContext::to_token`]. Anything else is an error, never a
    /// panic: tokens come from clients.
    pub fn from_token(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| TokenError::NotBase64)?;
        CausalContext::from_bytes(&bytes)
    }

    /// Parses what [`CausalContext::to_bytes`] wrote, normalised and bounded as a client's
    /// context must be.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let raw: CausalContext = rmp_serde::from_slice(bytes).map_err(|_| TokenError::Malformed)?;
        if raw.cloud.len() > MAX_TOKEN_CLOUD {
            return Err(TokenError::TooManyDots);
        }
        // Re-normalise: a hand-made token must not smuggle in a non-compact form.
        let mut ctx = CausalContext::from_vv(raw.vv);
        ctx.cloud = raw.cloud.into_iter().filter(|d| d.counter > 0).collect();
        ctx.compact();
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_dots_fold_into_the_vector() {
        let mut c = CausalContext::new();
        c.insert(Dot::new("a", 2));
        assert_eq!(c.cloud().len(), 1);
        assert!(!c.contains(&Dot::new("a", 1)));
        c.insert(Dot::new("a", 1));
        assert!(c.cloud().is_empty());
        assert_eq!(c.vv().get("a"), Some(&2));
        assert_eq!(c.next_dot("a"), Ok(Dot::new("a", 3)));
        c.insert(Dot::new("a", 7));
        assert_eq!(c.next_dot("a"), Ok(Dot::new("a", 8)));
        c.insert(Dot::new("a", 4));
        c.insert(Dot::new("a", 6));
        c.insert(Dot::new("a", 3));
        assert_eq!(c.vv().get("a"), Some(&4));
        c.insert(Dot::new("a", 5));
        assert_eq!(c.vv().get("a"), Some(&7));
        assert!(c.cloud().is_empty());
        let full = CausalContext::from_vv([("b".to_string(), u64::MAX)]);
        assert_eq!(full.next_dot("b"), Err(DotsExhausted("b".into())));
    }

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let mut c = CausalContext::from_vv([("n1".to_string(), 4), ("n2".to_string(), 1)]);
        c.insert(Dot::new("n3", 9));
        let t = c.to_token();
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(CausalContext::from_token(&t), Ok(c));
        assert_eq!(CausalContext::from_token("!!!"), Err(TokenError::NotBase64));
        assert_eq!(
            CausalContext::from_token("AAAA"),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            CausalContext::from_token(&"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::TooLong)
        );
        let mut crowded = CausalContext::new();
        crowded.cloud = (0..=MAX_TOKEN_CLOUD as u64)
            .map(|i| Dot::new("x", 2 * i + 2))
            .collect();
        assert_eq!(
            CausalContext::from_token(&crowded.to_token()),
            Err(TokenError::TooManyDots)
        );
    }

    #[test]
    fn covers_sees_through_the_cloud() {
        let mut a = CausalContext::new();
        a.insert(Dot::new("x", 2));
        let b = CausalContext::from_vv([("x".to_string(), 2)]);
        assert!(b.covers(&a));
        assert!(!a.covers(&b));
        a.insert(Dot::new("x", 1));
        assert!(a.covers(&b));
    }
}

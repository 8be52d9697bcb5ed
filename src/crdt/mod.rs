//! Conflict-free replicated data types: the values replicas store and merge.
//!
//! Every type here is a state-based CRDT, and every update is expressed as a *delta*: a small
//! state of the same type that the coordinating replica computes from its own state and that
//! every replica (itself included) merges in. Because merging is idempotent, a retried or
//! duplicated replica message changes nothing, and because it is commutative and associative,
//! replicas that saw the same deltas in any order, any number of times, hold the same state.

pub mod counter;
pub mod digest;
pub mod mvreg;
pub mod typed;

pub use counter::{CounterOverflow, PnCounter};
pub use mvreg::{MvRegister, Version};
pub use typed::TypedValue;

/// A join-semilattice: the one operation replicas need to converge.
///
/// Laws, for all states `a`, `b`, `c` reachable through the type's operations:
/// - commutative: `a ⊔ b == b ⊔ a`
/// - associative: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`
/// - idempotent: `a ⊔ a == a`
///
/// where `a ⊔ b` is `a.merge(&b)`. Equality is on the normalised representation, so states
/// holding the same information compare equal (and hash equal in the Merkle tree).
pub trait Crdt: Clone + PartialEq {
    /// Replaces `self` with the least upper bound of `self` and `other`.
    fn merge(&mut self, other: &Self);
}

//! quorumkv: a leaderless, Dynamo-style key-value store with CRDTs.
//!
//! Layers, lowest first; each module uses only those before it in this list:
//! - [`causality`]: dots, causal contexts, hybrid logical clocks.
//! - [`crdt`]: the replicated values (multi-value register, LWW register, PN-counter, OR-set).
//! - [`ring`]: consistent hashing, preference lists, ownership shares.
//! - [`storage`]: the local replica store with TTLs and Merkle trees.
//! - [`config`]: the cluster file.

pub mod causality;
pub mod config;
pub mod crdt;
pub mod membership;
pub mod ring;
pub mod storage;

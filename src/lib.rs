//! quorumkv: a leaderless, Dynamo-style key-value store with CRDTs.
//!
//! Layers, lowest first; each module uses only those before it in this list:
//! - [`clock`]: wall-clock time behind a trait (the machine's, or a test's).
//! - [`causality`]: dots, causal contexts, hybrid logical clocks.
//! - [`crdt`]: the replicated values (multi-value register, LWW register, PN-counter, OR-set).
//! - [`ring`]: consistent hashing, preference lists, ownership shares.
//! - [`wal`]: the durable log: checksummed records, group commit, snapshots, recovery.
//! - [`storage`]: the local replica store with TTLs and Merkle trees.
//! - [`config`]: the cluster file.
//! - [`ops`]: what clients ask for (operations, consistency settings, errors).
//! - [`membership`]: SWIM gossip (foca, sans-io) and its discrete-event simulator.
//! - [`rpc`]: the node-to-node messages and their versioned frames.
//! - [`tls`]: the cluster CA, node certificates and mutual-TLS configs.
//! - [`transport`]: QUIC between processes, or an in-memory network, behind one trait.
//! - [`node`]: the runtime that drives membership over a transport.
//! - [`metrics`]: the node's Prometheus metrics.
//! - [`datatype`]: what each write means for its data type, and how reads are shown.
//! - [`replica`]: a node's replica store, hints and clock, and the requests it serves.
//! - [`coordinator`]: quorum reads and writes, forwarding, replication, read repair, hints,
//!   anti-entropy.
//! - [`http`]: the HTTP API.
//! - [`resp`]: the Redis protocol (RESP2) front end.
//! - [`process`]: running a node as a process (pid file, signals) and a local cluster.
//! - [`client`]: a Rust client of the HTTP API.
//! - [`cli`]: the data commands of the `quorumkv` binary (`get`, `put`, `incr`, ...).
//! - [`bench`]: `quorumkv bench`, a load generator with latency percentiles.

#![deny(missing_docs)]

pub mod alloc;
pub mod auth;
pub mod bench;
pub mod causality;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod crdt;
pub mod datatype;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod process;
pub mod replica;
pub mod resp;
pub mod ring;
pub mod rpc;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod wal;

pub use client::Client;

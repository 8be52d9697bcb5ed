//! What every connection of one node's Redis front end shares: the coordinator, the server's
//! figures for `INFO` (connections, commands, hits and misses), and client ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::auth::Users;
use crate::coordinator::Coordinator;

/// The front end's shared state.
pub struct Server {
    /// This node's coordinator.
    pub coordinator: Coordinator,
    /// The address the front end listens on.
    pub addr: Option<SocketAddr>,
    /// When it started.
    pub started: Instant,
    /// Its figures.
    pub stats: Stats,
    /// Who may connect; open when empty.
    pub users: Arc<Users>,
    next_client: AtomicU64,
}

/// Counters `INFO` reports, as Redis names them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connected_clients: AtomicU64,
    /// Connections accepted since the start.
    pub total_connections_received: AtomicU64,
    /// Commands run since the start (or `CONFIG RESETSTAT`).
    pub total_commands_processed: AtomicU64,
    /// Reads that found their key.
    pub keyspace_hits: AtomicU64,
    /// Reads that did not.
    pub keyspace_misses: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A read found its key (`hit`) or did not.
    pub fn lookup(&self, hit: bool) {
        Stats::bump(if hit {
            &self.keyspace_hits
        } else {
            &self.keyspace_misses
        });
    }

    /// `CONFIG RESETSTAT`: the counters since the start go back to 0.
    pub fn reset(&self) {
        for c in [
            &self.total_connections_received,
            &self.total_commands_processed,
            &self.keyspace_hits,
            &self.keyspace_misses,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

impl Server {
    /// The shared state of a front end on `addr` served by `coordinator`.
    pub fn new(coordinator: Coordinator, addr: Option<SocketAddr>, users: Arc<Users>) -> Self {
        Server {
            coordinator,
            addr,
            started: Instant::now(),
            stats: Stats::default(),
            users,
            next_client: AtomicU64::new(1),
        }
    }

    /// A new connection's id.
    pub fn client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }
}

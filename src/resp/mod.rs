//! The Redis protocol (RESP2) front end: `redis-cli`, `redis-benchmark` and Redis client
//! libraries talk to any node as to a Redis server.
//!
//! Strings (`GET`, `SET`, `DEL`, `EXPIRE`, ...) are the `/lww` key space, `INCR` and friends the
//! `/counter` key space, and `SADD` and friends the `/set` key space, so a value written over
//! RESP is read over HTTP and back. Every command goes through the same coordinator as HTTP,
//! with the connection's N/W/R (`QUORUM n w r`), or the cluster defaults.
//!
//! The parts: [`parse`] reads commands off the wire, [`connection`] runs a connection and its
//! pipelines, [`command`] is the command table's mechanics and [`cmd`] the table itself, one
//! type per command; [`reply`] writes the answers. Malformed input gets an error reply and
//! closes that connection only.

pub mod cmd;
pub mod command;
pub mod connection;
pub mod parse;
pub mod reply;

use tokio::net::TcpListener;

use crate::coordinator::Coordinator;
use connection::Session;

/// Accepts RESP connections until the task is aborted.
pub async fn serve(listener: TcpListener, coordinator: Coordinator) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("resp accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let session = Session::new(coordinator.clone());
        tokio::spawn(async move {
            if let Err(e) = session.run(stream).await {
                tracing::debug!(%peer, "resp connection closed: {e}");
            }
        });
    }
}

//! The Redis protocol front end (RESP2, and RESP3 after `HELLO 3`): `redis-cli`,
//! `redis-benchmark` and Redis client libraries with their default settings talk to any node as
//! to a Redis server.
//!
//! Strings, sets and hashes share the typed namespace that HTTP's `/lww`, `/set` and `/hash`
//! see, so a value written over RESP is read over HTTP and back; `COUNTER.INCRBY` and
//! `COUNTER.GET` address the separate `/counter` key space. Every command goes through the same
//! coordinator as HTTP, with the connection's N/W/R (`QUORUM n w r`), or the cluster defaults.
//!
//! The parts: [`parse`] reads commands off the wire, [`connection`] runs a connection and its
//! pipelines and transactions, [`command`] is the command table's mechanics and [`cmd`] the
//! table itself, one type per command; [`reply`] writes the answers, [`server`] holds what
//! every connection shares, [`glob`] matches patterns. Malformed input gets an error reply and
//! closes that connection only.

pub mod cmd;
pub mod command;
pub mod connection;
pub mod glob;
pub mod parse;
pub mod reply;
pub mod server;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::Users;
use crate::coordinator::Coordinator;
use connection::Session;
use server::Server;

/// Accepts RESP connections until the task is aborted: plain ones, or with `tls` only TLS
/// ones (`rediss://`).
pub async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    users: Arc<Users>,
    tls: Option<TlsAcceptor>,
) {
    let server = Arc::new(Server::new(coordinator, listener.local_addr().ok(), users));
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
        let session = Session::new(Arc::clone(&server), Some(peer));
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => session.run(stream).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => session.run(stream).await,
                    Err(e) => {
                        tracing::debug!(%peer, "resp TLS handshake failed: {e}");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "resp connection closed: {e}");
            }
        });
    }
}

//! What a node answers its peers: gossip goes to the membership runtime, a forwarded write to
//! the coordinator, everything else to the node's replica.

use std::sync::Arc;

use super::Coordinator;
use crate::rpc::{Coordinate, OneWay, ReplicaError, Request, Response, respond};
use crate::transport::{BoxFuture, Handler};

/// Everything a node serves to its peers.
pub struct PeerHandler {
    /// The membership runtime's handler (gossip, pings).
    pub gossip: Arc<dyn Handler>,
    /// The node's coordinator (forwarded writes) and, through it, its replica.
    pub coordinator: Coordinator,
}

impl Handler for PeerHandler {
    fn one_way(&self, from: &str, msg: OneWay) {
        self.gossip.one_way(from, msg);
    }

    fn request(&self, from: &str, req: Request) -> BoxFuture<Response> {
        self.make_room_for(&req);
        let req = match self.coordinator.replica().serve(req) {
            Ok(response) => return Box::pin(std::future::ready(response)),
            Err(req) => *req,
        };
        match req {
            Request::Ping => self.gossip.request(from, req),
            Request::Flush(flush) => {
                // Applied here at once; gossip spreads it to whoever the sender could not reach.
                self.coordinator.replica().flush(&flush.before);
                self.gossip.request(from, Request::Flush(flush))
            }
            Request::Coordinate(msg) => {
                let coordinator = self.coordinator.clone();
                Box::pin(
                    async move { respond::<Coordinate>(Ok(coordinator.run_forwarded(msg).await)) },
                )
            }
            other => Box::pin(std::future::ready(Response::Error(
                ReplicaError::NotServed(other.name().into()),
            ))),
        }
    }

    fn settled(&self) -> Option<BoxFuture<()>> {
        let point = self.coordinator.replica().store().sync_point()?;
        Some(Box::pin(point.reached()))
    }

    fn request_now(&self, _from: &str, req: Request) -> Result<Response, Box<Request>> {
        match req {
            Request::Merge(_) => {
                self.make_room_for(&req);
                self.coordinator.replica().serve(req)
            }
            Request::Read(_) => self.coordinator.replica().serve(req),
            other => Err(Box::new(other)),
        }
    }
}

impl PeerHandler {
    /// Evicts first, if the node evicts and `req` may grow its data.
    fn make_room_for(&self, req: &Request) {
        if self.coordinator.evicts() && may_grow(req, self.coordinator.now_ms()) {
            self.coordinator.make_room();
        }
    }
}

/// Whether a peer's request merges something that may grow this node's data: a state or delta
/// that reads as present. A tombstone (a delete, an eviction elsewhere, a removal) makes no
/// room first, or evictions would spread from node to node as each eviction's tombstone
/// reached the other replicas.
fn may_grow(req: &Request, now_ms: u64) -> bool {
    match req {
        Request::Merge(m) => !m.value.is_tombstone(now_ms),
        Request::Hint(h) => !h.value.is_tombstone(now_ms),
        Request::MergeBatch(b) => b.items.iter().any(|(_, v)| !v.is_tombstone(now_ms)),
        _ => false,
    }
}

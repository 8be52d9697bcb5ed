//! Who a member is, as gossip carries it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A member's identity and the metadata every other member needs about it. Gossiped with
/// every membership update, so kept small.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id, as in the cluster file and its certificate.
    pub id: String,
    /// The node's zone, for zone-aware replica placement and the zone quorums.
    pub zone: String,
    /// QUIC address, node to node.
    pub peer: SocketAddr,
    /// Client HTTP API.
    pub http: SocketAddr,
    /// Redis protocol.
    pub resp: SocketAddr,
    /// Ring positions (weight).
    pub vnodes: u32,
    /// Grows with every restart and every rejoin after being declared dead, so the newest
    /// life of a node wins over what others remember of an older one.
    pub generation: u64,
    /// Set on a graceful leave, so others can tell "left" from "dead".
    pub leaving: bool,
    /// The fingerprint (BLAKE3 of the DER) of the peer certificate this life presents: what a removal of it
    /// revokes on every member. `None` in simulations and for seeds not yet heard from.
    #[serde(default)]
    pub cert: Option<[u8; 32]>,
}

impl NodeInfo {
    /// A member of a simulated network (the simulators and tests): its peer, HTTP and Redis
    /// addresses are ports 7000, 8000 and 6000 of `ip`, and it is in its first life unless
    /// `generation` says otherwise.
    pub fn simulated(
        id: impl Into<String>,
        ip: std::net::Ipv4Addr,
        zone: impl Into<String>,
        vnodes: u32,
        generation: u64,
    ) -> NodeInfo {
        let at = |port| SocketAddr::new(ip.into(), port);
        NodeInfo {
            id: id.into(),
            zone: zone.into(),
            peer: at(7000),
            http: at(8000),
            resp: at(6000),
            vnodes,
            generation,
            leaving: false,
            cert: None,
        }
    }
}

impl foca::Identity for NodeInfo {
    type Addr = String;

    /// After being declared dead (a partition, a long pause), come back as a new generation.
    fn renew(&self) -> Option<Self> {
        (!self.leaving).then(|| NodeInfo {
            generation: self.generation.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.id.clone()
    }

    /// The newer generation wins; within one, the leaving identity (its last word) wins.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.leaving) > (adversary.generation, adversary.leaving)
    }
}

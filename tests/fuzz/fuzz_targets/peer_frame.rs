//! What a node does with the bytes of a frame a peer sent over QUIC: `rpc::decode` of a
//! `Request`, a `Response` and a `OneWay`, `rpc::batch_items` and the frames inside a batch;
//! a decoded request served by a fresh replica (`Replica::serve`: merges into its store, reads,
//! hints, Merkle queries, scans); a decoded Merkle answer taken in by an anti-entropy diff;
//! gossip handed to the membership (`Membership::handle_data`, foca's decoding).
//!
//! Input: one control byte (the depth of the replica's Merkle tree, 0 to 10: a node's is 16,
//! which costs 5 MB a store), then the frame.

#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use quorumkv::clock::Clock;
use quorumkv::membership::{GossipConfig, Membership, NodeInfo, RmpCodec};
use quorumkv::metrics::Metrics;
use quorumkv::replica::Replica;
use quorumkv::replica::hints::{HintLimits, HintStore};
use quorumkv::ring::RingArc;
use quorumkv::rpc::{self, OneWay, Request, Response};
use quorumkv::storage::merkle::MerkleDiff;
use quorumkv::storage::{MemStore, Store, StoreOptions};

/// The replica's time: fixed, so that a run is reproducible.
struct Fixed;

impl Clock for Fixed {
    fn now_ms(&self) -> u64 {
        1_790_000_000_000
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    let depth = (ctl & 0x0f).min(10);
    let replica = replica(depth);
    serve(&replica, frame, true);
    if let Ok(response) = rpc::decode::<Response>(frame) {
        answer(&replica, response, true);
    }
    if let Ok(OneWay::Gossip(packet)) = rpc::decode::<OneWay>(frame) {
        gossip(&packet);
    }
    // A gossip packet on its own: what foca reads out of the frame.
    gossip(frame);
});

/// A replica with nothing in it yet.
fn replica(depth: u8) -> Replica {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    let store: Arc<dyn Store> = Arc::new(MemStore::new(StoreOptions {
        node: "n1".into(),
        boot: 1,
        merkle_depth: depth,
        ..StoreOptions::default()
    }));
    Replica::new(
        "n1",
        store,
        Arc::new(HintStore::new(HintLimits::default())),
        Arc::new(Fixed),
        METRICS.get_or_init(Metrics::new).clone(),
    )
}

/// A request frame as the transport's handler takes it: a batch is split into its frames.
fn serve(replica: &Replica, frame: &[u8], outer: bool) {
    if let Some(items) = rpc::batch_items(frame) {
        assert!(items.len() <= frame.len(), "more batch items than bytes");
        if outer {
            for item in items {
                serve(replica, item, false);
            }
        }
        return;
    }
    let Ok(request) = rpc::decode::<Request>(frame) else {
        return;
    };
    let _ = request.name();
    let _ = request.changes_state();
    if let Ok(response) = replica.serve(request) {
        // What goes back must encode, and decode as what it was.
        let bytes = rpc::encode(&response).expect("an answer that does not encode");
        let back = rpc::decode::<Response>(&bytes).expect("an answer that does not decode");
        assert_eq!(back, response);
    }
}

/// An answer as the coordinator takes it.
fn answer(replica: &Replica, response: Response, outer: bool) {
    let _ = response.name();
    match response {
        Response::Merkle(answer) => {
            let local = replica.store().merkle();
            let mut diff = MerkleDiff::new(local, RingArc::FULL);
            if diff.query().is_some() && diff.absorb(local, answer).is_ok() {
                let _ = diff.query();
            }
        }
        Response::Batch(items) if outer => {
            for item in items {
                if let Ok(inner) = rpc::decode::<Response>(&item) {
                    answer(replica, inner, false);
                }
            }
        }
        _ => {}
    }
}

/// A gossip packet from the member its header names (the transport has checked that the
/// connection is that member's).
fn gossip(packet: &[u8]) {
    let mut peek = packet;
    let Ok(header) = foca::Codec::<NodeInfo>::decode_header(&mut RmpCodec, &mut peek) else {
        return;
    };
    let me = NodeInfo::simulated("n1", Ipv4Addr::new(10, 0, 0, 1), "zone-a", 128, 1);
    let seeds = [
        NodeInfo::simulated("n2", Ipv4Addr::new(10, 0, 0, 2), "zone-b", 128, 1),
        NodeInfo::simulated("n3", Ipv4Addr::new(10, 0, 0, 3), "zone-a", 128, 1),
    ];
    let mut membership = Membership::new(me, &seeds, GossipConfig::default(), 1);
    let _ = membership.handle_data(&header.src.id, packet);
    let _ = membership.members();
    let _ = membership.ring();
}

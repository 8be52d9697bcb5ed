//! Sloppy quorum bookkeeping across one write's replicas, over the in-memory network with a
//! hand-built cluster view: a replica that cannot be called claims its fallback at once, so a
//! suspect replica later in the preference list still sees whether a fallback is left for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quorumkv::clock::TokioClock;
use quorumkv::config::Quorum;
use quorumkv::coordinator::PeerHandler;
use quorumkv::coordinator::antientropy::AntiEntropySettings;
use quorumkv::coordinator::{Coordinator, CoordinatorSpec, Defaults};
use quorumkv::datatype::Write;
use quorumkv::datatype::typed::{Condition, Ttl, TypedWrite};
use quorumkv::membership::{MemberState, MemberView, NodeInfo, ring_of};
use quorumkv::metrics::Metrics;
use quorumkv::node::ClusterView;
use quorumkv::ops::Consistency;
use quorumkv::replica::hints::{HintLimits, HintStore};
use quorumkv::rpc::{OneWay, Request, Response};
use quorumkv::storage::{Key, Kind, MemStore, Store, StoreOptions};
use quorumkv::transport::memory::MemoryNetwork;
use quorumkv::transport::{BoxFuture, Handler, Transport};

/// Gossip goes nowhere here: the view is fixed.
struct NoGossip;

impl Handler for NoGossip {
    fn one_way(&self, _from: &str, _msg: OneWay) {}

    fn request(&self, _from: &str, _req: Request) -> BoxFuture<Response> {
        Box::pin(async {
            Response::Pong {
                node: String::new(),
            }
        })
    }
}

fn info(id: &str) -> NodeInfo {
    let i: u8 = id[1..].parse().expect("n<digit>");
    NodeInfo::simulated(id, [10, 0, 0, i].into(), "z", 32, 1)
}

#[tokio::test(start_paused = true)]
async fn a_suspect_is_written_directly_when_a_dead_replica_took_the_only_fallback() {
    let ids = ["n0", "n1", "n2", "n3"];
    let alive: Vec<MemberView> = ids
        .iter()
        .map(|id| MemberView {
            info: info(id),
            state: MemberState::Alive,
        })
        .collect();
    let ring = ring_of(&alive);
    let key = Key::new(Kind::Typed, "k");
    let replicas: Vec<String> = ring
        .preference_list(key.position(), 3)
        .replicas
        .iter()
        .map(|m| m.id.clone())
        .collect();
    // The last replica coordinates; before it in the list, a dead replica, then a suspect one
    // that is in fact up. The one member outside the list is the only fallback.
    let (dead, suspect, me) = (&replicas[0], &replicas[1], &replicas[2]);
    let spare = ids
        .iter()
        .find(|id| !replicas.iter().any(|r| r == *id))
        .expect("a fourth member");
    let members: Vec<MemberView> = alive
        .into_iter()
        .map(|mut m| {
            if m.info.id == *dead {
                m.state = MemberState::Dead;
            } else if m.info.id == *suspect {
                m.state = MemberState::Suspect;
            }
            m
        })
        .collect();
    let defaults = Defaults {
        hints: HintLimits {
            enabled: true,
            ..HintLimits::default()
        },
        anti_entropy: AntiEntropySettings {
            interval_ms: 0,
            keys_per_sec: 1000,
        },
        ..Defaults::default()
    };
    let net = MemoryNetwork::new(7);
    let mut views = Vec::new();
    let mut nodes = Vec::new();
    for id in [me, suspect, &spare.to_string()] {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(ClusterView {
            me: id.clone(),
            members: members.clone(),
            ring: Arc::new(ring_of(&members)),
            flushed: None,
            removed: Vec::new(),
        }));
        views.push(tx);
        let store = Arc::new(MemStore::new(StoreOptions {
            node: id.clone(),
            ..StoreOptions::default()
        }));
        let hints = Arc::new(HintStore::new(defaults.hints));
        let transport: Arc<dyn Transport> = Arc::new(net.transport(id));
        let coordinator = Coordinator::new(CoordinatorSpec {
            membership: None,
            me: id.clone(),
            view: rx,
            transport,
            store: Arc::clone(&store) as Arc<dyn Store>,
            clock: Arc::new(TokioClock::new(1_767_225_600_000, 0)),
            defaults,
            metrics: Metrics::new(),
            hints: Arc::clone(&hints),
        });
        net.attach(
            id,
            Arc::new(PeerHandler {
                gossip: Arc::new(NoGossip),
                coordinator: coordinator.clone(),
            }),
        );
        nodes.push((coordinator, store, hints));
    }
    let write = Write::Typed(TypedWrite::SetString {
        value: Bytes::from_static(b"v"),
        ttl: Ttl::Clear,
        condition: Condition::Always,
        any_type: true,
        get: false,
    });
    let all = Consistency {
        w: Some(Quorum::All),
        ..Consistency::default()
    };
    let written = nodes[0]
        .0
        .write("k", write, &all)
        .await
        .expect("write at w=all");
    assert_eq!(written.acks, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = nodes[1].0.now_ms();
    assert!(
        nodes[1].1.get(&key, now).is_some(),
        "the suspect replica {suspect} was not written to directly"
    );
    assert_eq!(
        nodes[2].2.owners(),
        std::slice::from_ref(dead),
        "the spare {spare} holds the dead replica's hint"
    );
    assert_eq!(
        nodes[0].2.pending().0,
        0,
        "no hint was left on the coordinator"
    );
}

//! The node runtime (the same code a process runs) over the in-memory network, on tokio's
//! paused clock: minutes of cluster life in milliseconds, seeded and reproducible.
//!
//! A failing test prints its seed; `QKV_SIM_SEED=<seed> cargo test --test node_runtime`
//! replays it.

use std::sync::Arc;
use std::time::Duration;

use quorumkv::membership::{GossipConfig, MemberState, NodeInfo};
use quorumkv::node::{Node, NodeSpec};
use quorumkv::transport::memory::MemoryNetwork;
use quorumkv::transport::{Faults, Peer, Transport};

fn seed() -> u64 {
    std::env::var("QKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42)
}

fn info(i: usize, generation: u64) -> NodeInfo {
    let zone = format!("zone-{}", i % 2);
    NodeInfo::simulated(
        format!("n{i}"),
        [10, 0, 0, i as u8].into(),
        zone,
        32,
        generation,
    )
}

struct Cluster {
    net: MemoryNetwork,
    nodes: Vec<Option<Node>>,
    size: usize,
    seed: u64,
}

impl Cluster {
    fn start(size: usize, seed: u64) -> Cluster {
        let net = MemoryNetwork::new(seed);
        let mut c = Cluster {
            net,
            nodes: (0..size).map(|_| None).collect(),
            size,
            seed,
        };
        for i in 0..size {
            c.boot(i, 1);
        }
        c
    }

    fn boot(&mut self, i: usize, generation: u64) {
        let seeds = (0..self.size)
            .filter(|&j| j != i)
            .map(|j| info(j, 0))
            .collect();
        let transport = self.net.transport(&format!("n{i}"));
        let node = Node::start(
            NodeSpec {
                me: info(i, generation),
                seeds,
                gossip: GossipConfig::default(),
                rng_seed: self.seed ^ (i as u64) << 32 ^ generation,
                removed: Vec::new(),
            },
            Arc::new(transport) as Arc<dyn Transport>,
        );
        self.net.attach(&format!("n{i}"), node.handler());
        self.nodes[i] = Some(node);
    }

    fn crash(&mut self, i: usize) {
        self.net.crash(&format!("n{i}"));
        if let Some(node) = self.nodes[i].take() {
            node.abort();
        }
    }

    fn state(&self, viewer: usize, member: usize) -> Option<MemberState> {
        let node = self.nodes[viewer].as_ref()?;
        node.view().member(&format!("n{member}")).map(|m| m.state)
    }

    /// Polls (in virtual time) until `done`; panics with the seed after `limit`.
    async fn until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Cluster) -> bool,
    ) -> Duration {
        let start = tokio::time::Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} (seed {}; re-run with QKV_SIM_SEED={})",
                self.seed,
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        start.elapsed()
    }

    fn all_see(&self, viewers: &[usize], members: &[usize], want: MemberState) -> bool {
        viewers
            .iter()
            .all(|&v| members.iter().all(|&m| self.state(v, m) == Some(want)))
    }
}

#[tokio::test(start_paused = true)]
async fn runtime_forms_a_cluster_detects_a_crash_and_a_restart() {
    let mut c = Cluster::start(8, seed());
    c.net.set_delay_ms(1, 20);
    let all: Vec<usize> = (0..8).collect();
    c.until(Duration::from_secs(30), "8 nodes all alive", |c| {
        c.all_see(&all, &all, MemberState::Alive)
    })
    .await;
    // Every node builds the same ring.
    let ring = c.nodes[0].as_ref().map(|n| n.view().ring.shares().len());
    assert_eq!(ring, Some(8));

    c.crash(3);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != 3).collect();
    let took = c
        .until(Duration::from_secs(15), "crash of n3 detected", |c| {
            c.all_see(&survivors, &[3], MemberState::Dead)
        })
        .await;
    eprintln!("crash detected by all 7 survivors after {took:?} (virtual)");

    c.boot(3, 2);
    c.until(
        Duration::from_secs(30),
        "restarted n3 alive everywhere",
        |c| c.all_see(&all, &all, MemberState::Alive),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn injected_drops_partition_the_cluster_and_healing_rejoins_it() {
    let c = Cluster::start(6, seed());
    let all: Vec<usize> = (0..6).collect();
    c.until(Duration::from_secs(30), "6 nodes all alive", |c| {
        c.all_see(&all, &all, MemberState::Alive)
    })
    .await;

    // {n0, n1, n2} | {n3, n4, n5}, through each node's fault table as /admin/faults does.
    let (left, right) = ([0usize, 1, 2], [3usize, 4, 5]);
    for (mine, theirs) in [(&left, &right), (&right, &left)] {
        for &i in mine {
            let drop = theirs.iter().map(|j| format!("n{j}")).collect();
            c.net.transport(&format!("n{i}")).faults().set(Faults {
                drop,
                ..Faults::default()
            });
        }
    }
    c.until(
        Duration::from_secs(30),
        "each side sees the other dead",
        |c| {
            c.all_see(&left, &right, MemberState::Dead)
                && c.all_see(&right, &left, MemberState::Dead)
        },
    )
    .await;
    assert!(c.all_see(&left, &left, MemberState::Alive));
    // A call across the partition fails at once.
    let t = c.net.transport("n0");
    let to = Peer {
        id: "n3".into(),
        addr: info(3, 0).peer,
    };
    assert!(
        t.call(&to, quorumkv::rpc::Request::Ping, Duration::from_secs(1))
            .await
            .is_err()
    );

    for i in 0..6 {
        c.net
            .transport(&format!("n{i}"))
            .faults()
            .set(Faults::default());
    }
    let took = c
        .until(Duration::from_secs(60), "one view after heal", |c| {
            c.all_see(&all, &all, MemberState::Alive)
        })
        .await;
    eprintln!("healed to one view after {took:?} (virtual)");
}

#[tokio::test(start_paused = true)]
async fn lossy_reordering_network_keeps_every_live_node_alive() {
    let c = Cluster::start(10, seed());
    let all: Vec<usize> = (0..10).collect();
    c.until(Duration::from_secs(30), "10 nodes all alive", |c| {
        c.all_see(&all, &all, MemberState::Alive)
    })
    .await;
    c.net.set_loss(0.2);
    c.net.set_delay_ms(1, 80);
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        for v in 0..10 {
            for m in 0..10 {
                let s = c.state(v, m);
                assert!(
                    matches!(s, Some(MemberState::Alive | MemberState::Suspect)),
                    "n{v} sees live n{m} as {s:?} at 20% loss (seed {}; QKV_SIM_SEED={})",
                    c.seed,
                    c.seed
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "2 minutes at 20% loss: {} messages lost, no live node declared dead",
        c.net.dropped()
    );
}

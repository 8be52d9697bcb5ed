//! A whole cluster's membership in one process: a deterministic discrete-event simulation.
//!
//! Every node runs the real [`Membership`]; the network between them is a priority queue of
//! deliveries under a virtual clock, with seeded random loss, delay (and so reordering),
//! partitions and crashes. The same seed replays the same run, event for event, so a failing
//! seed printed by a test can be re-run and debugged.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{
    GossipConfig, GossipTimer, MemberState, MemberView, Membership, NodeInfo, Output, RemoveError,
    Removed,
};

/// Settings of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes the cluster has.
    pub nodes: usize,
    /// How many zones the nodes are spread over, round robin.
    pub zones: usize,
    /// Seeds every random choice, so a run replays exactly.
    pub seed: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// One-way delay, drawn uniformly from this range in milliseconds.
    pub delay_ms: (u64, u64),
    /// How many seeds each node announces itself to at start.
    pub announce_to: usize,
    /// The protocol timing every node runs with.
    pub gossip: GossipConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            zones: 1,
            seed: 1,
            loss: 0.0,
            delay_ms: (1, 5),
            announce_to: 2,
            gossip: GossipConfig::default(),
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        data: Bytes,
    },
    Timer {
        node: usize,
        life: u64,
        timer: GossipTimer,
    },
}

struct SimNode {
    membership: Membership,
    up: bool,
    /// Bumped on every restart, so timers of an earlier life are dropped.
    life: u64,
}

/// A simulated cluster. See the module documentation.
pub struct Sim {
    config: SimConfig,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: Vec<SimNode>,
    index: BTreeMap<String, usize>,
    infos: Vec<NodeInfo>,
    /// Group of each node while partitioned; messages cross only within a group.
    groups: Option<Vec<usize>>,
    rng: StdRng,
    /// Messages delivered and dropped so far.
    pub delivered: u64,
    /// Messages lost at random, across a partition, or to or from a node that is down.
    pub dropped: u64,
}

/// The identity of simulated node `i`.
pub fn sim_node(i: usize, zones: usize) -> NodeInfo {
    let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1);
    NodeInfo::simulated(
        format!("n{i:03}"),
        ip,
        format!("zone-{}", i % zones.max(1)),
        16,
        1,
    )
}

impl Sim {
    /// Starts every node at time 0, each announcing itself to a few random others.
    pub fn new(config: SimConfig) -> Sim {
        let infos: Vec<NodeInfo> = (0..config.nodes)
            .map(|i| sim_node(i, config.zones))
            .collect();
        let index = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let mut sim = Sim {
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            index,
            infos,
            groups: None,
            rng: StdRng::seed_from_u64(config.seed),
            delivered: 0,
            dropped: 0,
            config,
        };
        for i in 0..sim.config.nodes {
            let m = sim.fresh_membership(i, 1);
            sim.nodes.push(SimNode {
                membership: m,
                up: true,
                life: 0,
            });
        }
        for i in 0..sim.config.nodes {
            sim.announce(i);
        }
        sim
    }

    fn fresh_membership(&mut self, i: usize, generation: u64) -> Membership {
        let mut me = self.infos[i].clone();
        me.generation = generation;
        let seeds: Vec<NodeInfo> = self.infos.clone();
        let rng_seed =
            self.config.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation;
        Membership::new(me, &seeds, self.config.gossip.clone(), rng_seed)
    }

    fn announce(&mut self, i: usize) {
        let n = self.config.nodes;
        if n < 2 {
            return;
        }
        for _ in 0..self.config.announce_to {
            let mut to = self.rng.random_range(0..n - 1);
            if to >= i {
                to += 1;
            }
            let target = self.infos[to].clone();
            let out = self.nodes[i].membership.announce(target);
            self.apply(i, out);
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn apply(&mut self, from: usize, out: Output) {
        let life = self.nodes[from].life;
        for (after, timer) in out.timers {
            let at = self.now_ms + after.as_millis() as u64;
            self.push(
                at,
                Event::Timer {
                    node: from,
                    life,
                    timer,
                },
            );
        }
        for (to, data) in out.sends {
            let Some(&to) = self.index.get(&to.id) else {
                continue;
            };
            let (lo, hi) = self.config.delay_ms;
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(1.0));
            if lost {
                self.dropped += 1;
                continue;
            }
            self.push(self.now_ms + delay, Event::Deliver { to, from, data });
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.groups.as_ref().is_none_or(|g| g[a] == g[b])
    }

    /// Runs until virtual time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            let _span = tracing::debug_span!("sim", t = at).entered();
            match event {
                Event::Deliver { to, from, data } => {
                    // Partitions and crashes apply at delivery time, to messages in flight too.
                    if !self.nodes[to].up || !self.nodes[from].up || !self.connected(from, to) {
                        self.dropped += 1;
                        continue;
                    }
                    self.delivered += 1;
                    let from_id = self.infos[from].id.clone();
                    match self.nodes[to].membership.handle_data(&from_id, &data) {
                        Ok(out) => self.apply(to, out),
                        Err(e) => tracing::debug!("sim: node {to}: {e}"),
                    }
                }
                Event::Timer { node, life, timer } => {
                    if !self.nodes[node].up || self.nodes[node].life != life {
                        continue;
                    }
                    let out = self.nodes[node].membership.handle_timer(timer);
                    self.apply(node, out);
                }
            }
        }
        self.now_ms = until_ms;
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now_ms + ms);
    }

    /// The virtual time, in milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Stops node `i` without a word, as `kill -9` does.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Restarts a crashed node as a new generation that has forgotten everything.
    pub fn restart(&mut self, i: usize) {
        let generation = self.nodes[i].membership.me().generation + 1;
        self.nodes[i].membership = self.fresh_membership(i, generation);
        self.nodes[i].life += 1;
        self.nodes[i].up = true;
        self.announce(i);
    }

    /// Node `i` leaves gracefully and stops.
    pub fn leave(&mut self, i: usize) {
        let out = self.nodes[i].membership.leave();
        self.apply(i, out);
        // Let the goodbye go out before the process stops.
        self.run_for(50);
        self.nodes[i].up = false;
    }

    /// An operator removes node `j` through node `via` (see [`Membership::remove`]).
    pub fn remove(&mut self, via: usize, j: usize) -> Result<Removed, RemoveError> {
        let id = self.infos[j].id.clone();
        let (removed, out) = self.nodes[via].membership.remove(&id)?;
        self.apply(via, out);
        Ok(removed)
    }

    /// Splits the network: messages cross only between nodes of the same group. Nodes not
    /// listed form one more group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut g = vec![groups.len(); self.config.nodes];
        for (gi, members) in groups.iter().enumerate() {
            for &m in members {
                g[m] = gi;
            }
        }
        self.groups = Some(g);
    }

    /// Ends the partition: every node reaches every other again.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Changes the probability that a message is lost, from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Whether node `i` is running (not crashed, not left).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// How many nodes the simulation has, up or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s view of the cluster.
    pub fn view(&self, i: usize) -> Vec<MemberView> {
        self.nodes[i].membership.members()
    }

    /// Node `i`'s opinion of node `j`.
    pub fn state_of(&self, i: usize, j: usize) -> MemberState {
        self.nodes[i]
            .membership
            .member(&self.infos[j].id)
            .map_or(MemberState::Dead, |m| m.state)
    }

    /// Node `i`'s membership, for what the `view` and `state_of` helpers do not show.
    pub fn membership(&self, i: usize) -> &Membership {
        &self.nodes[i].membership
    }

    /// The settings the simulation runs with (the loss as last set).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }
}

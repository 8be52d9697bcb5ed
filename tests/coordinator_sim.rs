//! The deterministic simulation: a cluster of real node runtimes and coordinators in one
//! process over the in-memory network, on tokio's paused clock, under a concurrent client
//! workload of all four kinds and seeded schedules of partitions, crashes with restart and (in
//! the chaos scenarios) message loss, duplication, delay and clock skew.
//!
//! Strict scenarios (`sloppy=false`, no loss): after healing, reads at R must show every write
//! acknowledged at W (W + R > N). Chaos scenarios (sloppy quorums, hinted handoff and
//! anti-entropy at work): after healing and quiescence every replica of every key must hold
//! the identical state. Both: no acknowledged `/kv` write is missing unless a later write
//! with its context covered it, no acknowledged delete comes back, counters lie between the
//! acknowledged and the attempted sums, sets hold every acknowledged add no remove was sent
//! for, and an LWW key holds one of the values written to it.
//!
//! A crash here stops the node's runtime and cuts it off the network but keeps its store and
//! its hints, as a durable engine would (a real process's memory is lost on restart, and it
//! bootstraps from the others; docs/architecture.md).
//!
//! A failing seed is printed; `QKV_SIM_SEED=<seed> cargo test --test coordinator_sim` replays
//! it, and `QKV_SIM_SEEDS=<count>` runs seeds 1..=count (`make simulate SEEDS=10000`). Each
//! seed has a runtime of its own, dropped with its cluster, and the seeds run one thread per
//! core (`QKV_SIM_THREADS`), so a sweep's memory does not grow with its length.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quorumkv::clock::TokioClock;
use quorumkv::config::Quorum;
use quorumkv::coordinator::PeerHandler;
use quorumkv::coordinator::antientropy::AntiEntropySettings;
use quorumkv::coordinator::{Coordinator, CoordinatorSpec, Defaults};
use quorumkv::crdt::MvRegister;
use quorumkv::datatype::typed::{Condition, Ttl, TypedWrite};
use quorumkv::datatype::{Write, counter, kv};
use quorumkv::membership::{GossipConfig, MemberState, NodeInfo};
use quorumkv::metrics::Metrics;
use quorumkv::node::{Node, NodeSpec};
use quorumkv::ops::Consistency;
use quorumkv::replica::hints::{HintLimits, HintStore};
use quorumkv::storage::{Kind, MemStore, Store, StoreOptions, Value};
use quorumkv::transport::Transport;
use quorumkv::transport::memory::MemoryNetwork;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinHandle;

/// A plain string write, as `SET` makes it.
fn string(value: Bytes) -> TypedWrite {
    TypedWrite::SetString {
        value,
        ttl: Ttl::Clear,
        condition: Condition::Always,
        any_type: true,
        get: false,
    }
}

/// The name the simulation's set operations use for key `key`.
fn set_name(key: &str) -> String {
    format!("set-{key}")
}

/// 2026-01-01 in Unix milliseconds: where the simulated clocks start.
const EPOCH_MS: u64 = 1_767_225_600_000;

fn info(i: usize, generation: u64) -> NodeInfo {
    NodeInfo::simulated(
        format!("n{i}"),
        [10, 0, 0, i as u8].into(),
        "z",
        32,
        generation,
    )
}

struct SimNode {
    node: Node,
    coordinator: Coordinator,
    maintenance: JoinHandle<()>,
}

struct Cluster {
    net: MemoryNetwork,
    nodes: Vec<Option<SimNode>>,
    /// Stores and hints outlive crashes (a durable engine's data survives a restart).
    stores: Vec<Arc<MemStore>>,
    hints: Vec<Arc<HintStore>>,
    /// Each node's clock, running fast or slow by its own offset, across restarts.
    clocks: Vec<Arc<TokioClock>>,
    generations: Vec<u64>,
    seed: u64,
    defaults: Defaults,
}

/// The coordinator settings of the simulated nodes: quick anti-entropy, and everything else
/// as configured by default.
fn sim_defaults(hinted_handoff: bool, anti_entropy: bool) -> Defaults {
    Defaults {
        n: 3,
        w: Quorum::Quorum,
        r: Quorum::Quorum,
        timeout_ms: 1000,
        max_value_bytes: 1 << 20,
        hints: HintLimits {
            enabled: hinted_handoff,
            ..HintLimits::default()
        },
        anti_entropy: AntiEntropySettings {
            interval_ms: if anti_entropy { 2_000 } else { 0 },
            keys_per_sec: 2_000,
        },
        max_memory_bytes: 0,
        eviction: quorumkv::config::Eviction::AllkeysLru,
    }
}

/// The network holds each node's handler, which holds its coordinator, which holds the
/// network: crashing every node breaks the cycle, so a finished cluster frees its memory.
impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.size() {
            self.crash(i);
        }
    }
}

impl Cluster {
    fn start(size: usize, seed: u64, defaults: Defaults, max_skew_ms: u64) -> Cluster {
        let mut c = Cluster {
            net: MemoryNetwork::new(seed),
            nodes: (0..size).map(|_| None).collect(),
            stores: (0..size)
                .map(|i| {
                    Arc::new(MemStore::new(StoreOptions {
                        node: format!("n{i}"),
                        boot: seed,
                        ..StoreOptions::default()
                    }))
                })
                .collect(),
            hints: (0..size)
                .map(|_| Arc::new(HintStore::new(defaults.hints)))
                .collect(),
            // Clocks disagree by up to ±max_skew_ms; LWW must still be deterministic.
            clocks: (0..size)
                .map(|i| {
                    let spread = 2 * max_skew_ms + 1;
                    let skew = (seed.wrapping_mul(31).wrapping_add(i as u64 * 17) % spread) as i64
                        - max_skew_ms as i64;
                    Arc::new(TokioClock::new(EPOCH_MS, skew))
                })
                .collect(),
            generations: vec![0; size],
            seed,
            defaults,
        };
        for i in 0..size {
            c.boot(i);
        }
        c
    }

    fn size(&self) -> usize {
        self.nodes.len()
    }

    fn boot(&mut self, i: usize) {
        self.generations[i] += 1;
        let generation = self.generations[i];
        let id = format!("n{i}");
        let seeds = (0..self.size())
            .filter(|&j| j != i)
            .map(|j| info(j, 0))
            .collect();
        let transport: Arc<dyn Transport> = Arc::new(self.net.transport(&id));
        let node = Node::start(
            NodeSpec {
                me: info(i, generation),
                seeds,
                gossip: GossipConfig::default(),
                rng_seed: self.seed ^ ((i as u64) << 32) ^ generation,
                removed: Vec::new(),
            },
            Arc::clone(&transport),
        );
        let coordinator = Coordinator::new(CoordinatorSpec {
            membership: None,
            me: id.clone(),
            view: node.subscribe(),
            transport,
            store: Arc::clone(&self.stores[i]) as Arc<dyn Store>,
            clock: Arc::clone(&self.clocks[i]) as Arc<dyn quorumkv::clock::Clock>,
            defaults: self.defaults,
            metrics: Metrics::new(),
            hints: Arc::clone(&self.hints[i]),
        });
        let maintenance = coordinator.spawn_maintenance();
        self.net.attach(
            &id,
            Arc::new(PeerHandler {
                gossip: node.handler(),
                coordinator: coordinator.clone(),
            }),
        );
        self.nodes[i] = Some(SimNode {
            node,
            coordinator,
            maintenance,
        });
    }

    fn crash(&mut self, i: usize) {
        self.net.crash(&format!("n{i}"));
        if let Some(n) = self.nodes[i].take() {
            n.maintenance.abort();
            n.node.abort();
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    fn coordinator(&self, i: usize) -> Option<Coordinator> {
        self.nodes[i].as_ref().map(|n| n.coordinator.clone())
    }

    fn all_alive(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.as_ref().is_some_and(|n| {
                let view = n.node.view();
                view.members.len() == self.size()
                    && view.members.iter().all(|m| m.state == MemberState::Alive)
            })
        })
    }

    /// Each node's view, for failure messages.
    fn describe(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                None => format!("n{i}: down"),
                Some(n) => {
                    let view = n.node.view();
                    let states: Vec<String> = view
                        .members
                        .iter()
                        .map(|m| {
                            format!("{}={}/g{}", m.info.id, m.state.as_str(), m.info.generation)
                        })
                        .collect();
                    format!("n{i} (g{}) sees {}", self.generations[i], states.join(" "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keys whose replicas (the first 3 of the ring) do not all hold the same state.
    fn divergent_replicas(&self) -> Vec<String> {
        let Some(view) = self.nodes.iter().flatten().next().map(|n| n.node.view()) else {
            return vec!["no live node".into()];
        };
        let now = EPOCH_MS + 10 * 24 * 3600 * 1000;
        let mut keys = BTreeSet::new();
        for store in &self.stores {
            keys.extend(store.keys_in(quorumkv::ring::RingArc::FULL));
        }
        let mut out = Vec::new();
        for key in keys {
            let replicas: Vec<usize> = view
                .ring
                .preference_list(key.position(), 3)
                .replicas
                .iter()
                .filter_map(|m| m.id.strip_prefix('n')?.parse().ok())
                .collect();
            let states: Vec<Option<Value>> = replicas
                .iter()
                .map(|&i| self.stores[i].get(&key, now))
                .collect();
            if states.windows(2).any(|w| w[0] != w[1]) {
                out.push(format!(
                    "{key:?}: replicas {replicas:?} differ after quiescence: {states:?}"
                ));
            }
        }
        out
    }

    async fn until_all_alive(&self, limit: Duration) {
        let start = tokio::time::Instant::now();
        while !self.all_alive() {
            assert!(
                start.elapsed() < limit,
                "cluster not all alive within {limit:?} (seed {}): {}",
                self.seed,
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What clients were told, and what they tried: the oracle for the invariants.
#[derive(Default)]
struct History {
    /// `/kv` values acknowledged at W.
    kv_acked: BTreeMap<String, BTreeSet<Bytes>>,
    /// `/kv` values a read saw before a write with its context was sent (acknowledged or
    /// not): that write may have superseded them, so they may be gone.
    kv_covered: BTreeMap<String, BTreeSet<Bytes>>,
    /// `/kv` values removed by an acknowledged delete: they must never be read again.
    kv_deleted: BTreeMap<String, BTreeSet<Bytes>>,
    counter_acked: BTreeMap<String, i128>,
    counter_attempted: BTreeMap<String, i128>,
    /// Set adds acknowledged, and members some remove was sent for (acknowledged or not).
    set_added: BTreeMap<String, BTreeSet<String>>,
    set_remove_sent: BTreeMap<String, BTreeSet<String>>,
    /// LWW values sent (acknowledged or not), whether a delete was sent, and whether a
    /// write was acknowledged.
    lww_sent: BTreeMap<String, BTreeSet<Bytes>>,
    lww_delete_sent: BTreeSet<String>,
    lww_acked: BTreeSet<String>,
    acked: usize,
    failed: usize,
}

/// What a schedule runs under.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    w: u32,
    r: u32,
    rounds: usize,
    /// Sloppy quorums (hints on fallbacks count toward W).
    sloppy: bool,
    /// Message loss, duplication, long delays and clock skew of up to 2 s.
    chaos: bool,
}

impl Scenario {
    /// Strict quorums: W + R > N promises a read sees every acknowledged write only when
    /// hinted writes on fallbacks do not count (a hint can be lost with its holder).
    fn strict(w: u32, r: u32) -> Self {
        Scenario {
            w,
            r,
            rounds: 25,
            sloppy: false,
            chaos: false,
        }
    }

    fn chaos(w: u32, r: u32) -> Self {
        Scenario {
            w,
            r,
            rounds: 25,
            sloppy: true,
            chaos: true,
        }
    }
}

fn settings(w: u32, r: u32) -> Consistency {
    Consistency {
        n: Some(3),
        w: Some(Quorum::Count(w)),
        r: Some(Quorum::Count(r)),
        timeout_ms: Some(500),
        sloppy: Some(false),
    }
}

fn live_versions(value: &Option<Value>, now: u64) -> (BTreeSet<Bytes>, Option<MvRegister>) {
    match value {
        Some(Value::Kv(reg)) => (
            reg.live(now).map(|(_, v)| v.value.clone()).collect(),
            Some((**reg).clone()),
        ),
        _ => (BTreeSet::new(), None),
    }
}

/// With `QKV_SIM_TRACE` set, what the clients did, for replaying a failing seed.
fn trace(line: &str) {
    if std::env::var_os("QKV_SIM_TRACE").is_some() {
        eprintln!("[{:?}] {line}", tokio::time::Instant::now());
    }
}

/// One client operation on a random key, through coordinator `c`, recorded in `h`.
async fn client_op(
    c: Coordinator,
    rng_seed: u64,
    op_id: u64,
    scenario: Scenario,
    h: Arc<Mutex<History>>,
) {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let cs = Consistency {
        sloppy: Some(scenario.sloppy),
        ..settings(scenario.w, scenario.r)
    };
    let key = format!("k{}", rng.random_range(0..6u32));
    let record = |ok: bool| {
        let mut h = h.lock().expect("history");
        if ok {
            h.acked += 1;
        } else {
            h.failed += 1;
        }
    };
    match rng.random_range(0..9u32) {
        // Last-write-wins: a put or (rarely) a delete.
        7 | 8 => {
            let delete = rng.random_bool(0.2);
            let value = Bytes::from(format!("l{op_id}"));
            {
                let mut h = h.lock().expect("history");
                if delete {
                    h.lww_delete_sent.insert(key.clone());
                } else {
                    h.lww_sent
                        .entry(key.clone())
                        .or_default()
                        .insert(value.clone());
                }
            }
            let write = if delete {
                Write::Typed(TypedWrite::Delete { get: false })
            } else {
                Write::Typed(string(value))
            };
            let ok = c.write(&key, write, &cs).await.is_ok();
            if ok && !delete {
                h.lock().expect("history").lww_acked.insert(key);
            }
            record(ok);
        }
        // A put without context: a new sibling.
        0 | 1 => {
            let value = Bytes::from(format!("v{op_id}"));
            let write = Write::KvPut(kv::Put {
                value: value.clone(),
                context: None,
                ttl_ms: None,
            });
            let result = c.write(&key, write, &cs).await;
            trace(&format!("{} put {key}={value:?}: {result:?}", c.me()));
            let ok = result.is_ok();
            if ok {
                h.lock()
                    .expect("history")
                    .kv_acked
                    .entry(key)
                    .or_default()
                    .insert(value);
            }
            record(ok);
        }
        // Read, then overwrite or delete what was read.
        2 => {
            let Ok(read) = c.read(Kind::Kv, &key, &cs).await else {
                record(false);
                return;
            };
            let (seen, reg) = live_versions(&read.value, read.now_ms);
            let Some(reg) = reg else { return };
            let context = Some(reg.context().clone());
            {
                // Whatever happens to the write, the values it saw may now be superseded.
                let mut h = h.lock().expect("history");
                h.kv_covered
                    .entry(key.clone())
                    .or_default()
                    .extend(seen.iter().cloned());
            }
            let delete = rng.random_bool(0.3);
            let value = Bytes::from(format!("v{op_id}"));
            let write = if delete {
                Write::KvDelete(kv::Delete { context })
            } else {
                Write::KvPut(kv::Put {
                    value: value.clone(),
                    context,
                    ttl_ms: None,
                })
            };
            let result = c.write(&key, write, &cs).await;
            trace(&format!(
                "{} {} {key} over {seen:?} (read at {}): {result:?}",
                c.me(),
                if delete { "delete" } else { "put" },
                read.now_ms
            ));
            let ok = result.is_ok();
            if ok {
                let mut h = h.lock().expect("history");
                if delete {
                    h.kv_deleted.entry(key).or_default().extend(seen);
                } else {
                    h.kv_acked.entry(key).or_default().insert(value);
                }
            }
            record(ok);
        }
        3 | 4 => {
            let delta = rng.random_range(1..=10i64);
            *h.lock()
                .expect("history")
                .counter_attempted
                .entry(key.clone())
                .or_default() += i128::from(delta);
            let ok = c
                .write(&key, Write::CounterAdd(counter::Add { delta }), &cs)
                .await
                .is_ok();
            if ok {
                *h.lock()
                    .expect("history")
                    .counter_acked
                    .entry(key)
                    .or_default() += i128::from(delta);
            }
            record(ok);
        }
        5 => {
            let member = format!("m{op_id}");
            let write = Write::Typed(TypedWrite::UpdateSet {
                add: vec![Bytes::from(member.clone())],
                remove: vec![],
            });
            // Sets have names of their own: the typed namespace gives a name one type.
            let ok = c.write(set_name(&key), write, &cs).await.is_ok();
            if ok {
                h.lock()
                    .expect("history")
                    .set_added
                    .entry(key)
                    .or_default()
                    .insert(member);
            }
            record(ok);
        }
        _ => {
            // Remove a member an earlier add put in (acknowledged or not).
            let target = {
                let mut h = h.lock().expect("history");
                let added: Vec<String> = h
                    .set_added
                    .get(&key)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                if added.is_empty() {
                    return;
                }
                let m = added[rng.random_range(0..added.len())].clone();
                h.set_remove_sent
                    .entry(key.clone())
                    .or_default()
                    .insert(m.clone());
                m
            };
            let write = Write::Typed(TypedWrite::UpdateSet {
                add: vec![],
                remove: vec![Bytes::from(target)],
            });
            let ok = c.write(set_name(&key), write, &cs).await.is_ok();
            record(ok);
        }
    }
}

/// Runs one seeded schedule and checks the invariants; returns a description of every
/// violation.
async fn run_schedule(seed: u64, sc: Scenario) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (defaults, skew) = if sc.chaos {
        (sim_defaults(true, true), 2_000)
    } else {
        (sim_defaults(true, false), 50)
    };
    let mut c = Cluster::start(5, seed, defaults, skew);
    c.net.set_delay_ms(1, 10);
    c.until_all_alive(Duration::from_secs(60)).await;
    let history = Arc::new(Mutex::new(History::default()));
    let mut op_id = 0u64;
    for _round in 0..sc.rounds {
        if sc.chaos {
            // The network's weather changes every round.
            c.net.set_loss(rng.random_range(0.0..0.05));
            c.net.set_duplicate(rng.random_range(0.0..0.1));
            let slow = rng.random_range(1..60);
            c.net.set_delay_ms(1, slow);
        }
        // A fault (or a repair of one) per round.
        match rng.random_range(0..6u32) {
            0 | 1 => {
                let mut ids: Vec<String> = (0..c.size()).map(|i| format!("n{i}")).collect();
                let cut = rng.random_range(1..c.size());
                // A seeded shuffle: pick `cut` nodes for the first side.
                for i in (1..ids.len()).rev() {
                    ids.swap(i, rng.random_range(0..=i));
                }
                let (a, b) = ids.split_at(cut);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let b: Vec<&str> = b.iter().map(String::as_str).collect();
                c.net.partition(&[&a, &b]);
            }
            2 => c.net.heal(),
            3 => {
                let live = c.live();
                if live.len() > 3 {
                    c.crash(live[rng.random_range(0..live.len())]);
                }
            }
            4 => {
                if let Some(i) = (0..c.size()).find(|&i| c.nodes[i].is_none()) {
                    c.boot(i);
                }
            }
            _ => {}
        }
        // A burst of concurrent clients, each on a live node.
        let live = c.live();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            op_id += 1;
            let i = live[rng.random_range(0..live.len())];
            let Some(coordinator) = c.coordinator(i) else {
                continue;
            };
            let op_seed: u64 = rng.random();
            tasks.push(tokio::spawn(client_op(
                coordinator,
                op_seed,
                op_id,
                sc,
                Arc::clone(&history),
            )));
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..2000))).await;
    }
    // Heal everything and let membership settle.
    c.net.heal();
    c.net.set_loss(0.0);
    c.net.set_duplicate(0.0);
    c.net.set_delay_ms(1, 10);
    for i in 0..c.size() {
        if c.nodes[i].is_none() {
            c.boot(i);
        }
    }
    c.until_all_alive(Duration::from_secs(120)).await;
    let mut violations = Vec::new();
    if sc.chaos {
        // Quiescence: hints delivered, anti-entropy rounds done; then every replica of every
        // key must hold the same state, without any read having helped.
        tokio::time::sleep(Duration::from_secs(30)).await;
        violations.extend(c.divergent_replicas());
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Every client task has ended: the history is complete.
    let h = std::mem::take(&mut *history.lock().expect("history"));
    assert!(h.acked > 0, "seed {seed}: no operation was acknowledged");
    let cs = settings(sc.w, sc.r);
    for key in (0..6).map(|k| format!("k{k}")) {
        for i in 0..c.size() {
            let Some(coord) = c.coordinator(i) else {
                continue;
            };
            let read = |kind, name: String| {
                let coord = coord.clone();
                let cs = cs.clone();
                async move { coord.read(kind, &name, &cs).await }
            };
            match read(Kind::Kv, key.clone()).await {
                Ok(r) => {
                    let (live, _) = live_versions(&r.value, r.now_ms);
                    let covered = h.kv_covered.get(&key);
                    for v in h.kv_acked.get(&key).into_iter().flatten() {
                        if !live.contains(v) && !covered.is_some_and(|c| c.contains(v)) {
                            violations.push(format!(
                                "n{i} /kv/{key}: acknowledged {v:?} missing (read {live:?})"
                            ));
                        }
                    }
                    for v in h.kv_deleted.get(&key).into_iter().flatten() {
                        if live.contains(v) {
                            violations.push(format!("n{i} /kv/{key}: deleted {v:?} came back"));
                        }
                    }
                }
                Err(e) => violations.push(format!("n{i} /kv/{key}: read failed after heal: {e}")),
            }
            match read(Kind::Counter, key.clone()).await {
                Ok(r) => {
                    let value = match r.value {
                        Some(Value::Counter(ctr)) => ctr.value(),
                        _ => 0,
                    };
                    let acked = h.counter_acked.get(&key).copied().unwrap_or(0);
                    let tried = h.counter_attempted.get(&key).copied().unwrap_or(0);
                    if value < acked || value > tried {
                        violations.push(format!(
                            "n{i} /counter/{key}: {value} outside [acknowledged {acked}, attempted {tried}]"
                        ));
                    }
                }
                Err(e) => violations.push(format!("n{i} /counter/{key}: read failed: {e}")),
            }
            match read(Kind::Typed, set_name(&key)).await {
                Ok(r) => {
                    let members: BTreeSet<String> = match &r.value {
                        Some(Value::Typed(t)) => t
                            .members(r.now_ms)
                            .into_iter()
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .collect(),
                        _ => BTreeSet::new(),
                    };
                    let removed = h.set_remove_sent.get(&key);
                    for m in h.set_added.get(&key).into_iter().flatten() {
                        if !members.contains(m) && !removed.is_some_and(|r| r.contains(m)) {
                            violations
                                .push(format!("n{i} /set/{key}: acknowledged add {m} missing"));
                        }
                    }
                }
                Err(e) => violations.push(format!("n{i} /set/{key}: read failed: {e}")),
            }
            match read(Kind::Typed, key.clone()).await {
                Ok(r) => {
                    let value = match &r.value {
                        Some(Value::Typed(t)) => t.string(r.now_ms),
                        _ => None,
                    };
                    let sent = h.lww_sent.get(&key);
                    match &value {
                        Some(v) if !sent.is_some_and(|s| s.contains(v)) => {
                            violations.push(format!("n{i} /lww/{key}: {v:?} was never written"))
                        }
                        None if h.lww_acked.contains(&key) && !h.lww_delete_sent.contains(&key) => {
                            violations.push(format!("n{i} /lww/{key}: acknowledged value missing"))
                        }
                        _ => {}
                    }
                }
                Err(e) => violations.push(format!("n{i} /lww/{key}: read failed: {e}")),
            }
        }
    }
    eprintln!(
        "seed {seed} {sc:?}: {} acknowledged, {} failed, {} violations",
        h.acked,
        h.failed,
        violations.len()
    );
    violations
}

fn seeds(default: &[u64]) -> Vec<u64> {
    if let Some(s) = std::env::var("QKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    if let Some(n) = std::env::var("QKV_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        return (1..=n).collect();
    }
    default.to_vec()
}

/// Runs one seed on a runtime of its own (one thread, tokio's paused clock), and drops the
/// runtime with everything the seed's cluster spawned: no task, loop or store outlives its
/// seed, so memory does not grow with the number of seeds and a seed runs the same alone
/// (`QKV_SIM_SEED`) as in a sweep.
fn run_seed(seed: u64, sc: Scenario) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime for the seed");
    let violations = rt.block_on(run_schedule(seed, sc));
    rt.shutdown_background();
    violations
}

/// How many seeds run side by side: one per core (`QKV_SIM_THREADS` overrides).
fn sim_threads() -> usize {
    std::env::var("QKV_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// Runs every seed, one runtime each, spread over [`sim_threads`] threads; then fails listing
/// each seed that broke an invariant (with what broke), so one run of many seeds reports them
/// all.
fn check(seeds: Vec<u64>, sc: Scenario) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..sim_threads().min(seeds.len()) {
            scope.spawn(|| {
                while let Some(&seed) =
                    seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    // A panic (an assertion inside the cluster) is this seed's failure, named
                    // with the others, not the end of the sweep.
                    let violations = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_seed(seed, sc)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        vec![format!("panicked: {what}")]
                    });
                    if !violations.is_empty() {
                        eprintln!("FAILING SEED {seed} ({sc:?}): replay with QKV_SIM_SEED={seed}");
                        failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((seed, violations.join("\n  ")));
                    }
                }
            });
        }
    });
    let mut failed = failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    failed.sort();
    assert!(
        failed.is_empty(),
        "{} seeds broke the invariants ({sc:?}); replay one with QKV_SIM_SEED=<seed>:\n{}",
        failed.len(),
        failed
            .iter()
            .map(|(seed, v)| format!("seed {seed}:\n  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn quorum_invariants_hold_under_partitions_and_crashes_w2_r2() {
    check(seeds(&[1, 2, 3]), Scenario::strict(2, 2));
}

#[test]
fn quorum_invariants_hold_under_partitions_and_crashes_w3_r1() {
    check(seeds(&[4, 5]), Scenario::strict(3, 1));
}

#[test]
fn quorum_invariants_hold_under_partitions_and_crashes_w1_r3() {
    check(seeds(&[6, 7]), Scenario::strict(1, 3));
}

#[test]
fn replicas_converge_under_loss_duplication_skew_and_crashes_w2_r2() {
    check(seeds(&[21, 22, 23]), Scenario::chaos(2, 2));
}

#[test]
fn replicas_converge_under_loss_duplication_skew_and_crashes_w1_r1() {
    check(seeds(&[24, 25]), Scenario::chaos(1, 1));
}

/// Without faults nothing is ambiguous: counters equal the acknowledged sum exactly, and
/// every replica that answered agrees after read repair.
#[tokio::test(start_paused = true)]
async fn without_faults_counters_are_exact_and_reads_repair_replicas() {
    let seed = seeds(&[11])[0];
    // No hints and no anti-entropy: only reads repair.
    let c = Cluster::start(4, seed, sim_defaults(false, false), 50);
    c.until_all_alive(Duration::from_secs(60)).await;
    let cs = settings(2, 2);
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let coord = c.coordinator((i % 4) as usize).expect("live");
        let cs = cs.clone();
        tasks.push(tokio::spawn(async move {
            coord
                .write(
                    "hits",
                    Write::CounterAdd(counter::Add { delta: i - 10 }),
                    &cs,
                )
                .await
        }));
    }
    for t in tasks {
        assert!(
            t.await.expect("task").is_ok(),
            "seed {seed}: a write failed without faults"
        );
    }
    let expected: i128 = (0..40).map(|i| i128::from(i - 10)).sum();
    for i in 0..4 {
        let r = c
            .coordinator(i)
            .expect("live")
            .read(Kind::Counter, "hits", &settings(2, 3))
            .await
            .expect("read");
        match r.value {
            Some(Value::Counter(ctr)) => assert_eq!(ctr.value(), expected, "seed {seed} n{i}"),
            other => panic!("seed {seed}: n{i} read {other:?}"),
        }
    }

    // A replica that missed writes (cut off while they happened) is repaired by a read at
    // R=all, without any other write.
    c.net.partition(&[&["n0", "n1", "n2"], &["n3"]]);
    for k in 0..20 {
        let w = Write::Typed(string(Bytes::from(format!("x{k}"))));
        // Two of the three replicas are always on n0's side.
        let res = c
            .coordinator(0)
            .expect("live")
            .write(&format!("l{k}"), w, &settings(2, 2))
            .await;
        assert!(res.is_ok(), "seed {seed}: {res:?}");
    }
    c.net.heal();
    c.until_all_alive(Duration::from_secs(60)).await;
    let stale_before = (0..20)
        .filter(|k| {
            c.stores[3]
                .get(
                    &quorumkv::storage::Key::new(Kind::Typed, format!("l{k}")),
                    u64::MAX / 2,
                )
                .is_none()
        })
        .count();
    let mut n3_replicas = 0;
    for k in 0..20 {
        let r = c
            .coordinator(1)
            .expect("live")
            .read(Kind::Typed, &format!("l{k}"), &settings(2, 3))
            .await;
        assert!(r.is_ok(), "seed {seed}: read at r=all {r:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for k in 0..20 {
        let key = quorumkv::storage::Key::new(Kind::Typed, format!("l{k}"));
        let on_n3 = c.nodes[3]
            .as_ref()
            .expect("live")
            .node
            .view()
            .ring
            .preference_list(key.position(), 3)
            .replicas
            .iter()
            .any(|m| m.id == "n3");
        if on_n3 {
            n3_replicas += 1;
            assert!(
                c.stores[3].get(&key, u64::MAX / 2).is_some(),
                "seed {seed}: n3 not repaired for {key:?}"
            );
        }
    }
    assert!(
        n3_replicas > 0 && stale_before >= n3_replicas,
        "seed {seed}: n3 held {n3_replicas} keys, {stale_before} missing before"
    );
    let repairs = c.coordinator(1).expect("live").metrics().read_repairs.get();
    assert!(
        repairs >= n3_replicas as u64,
        "seed {seed}: {repairs} read repairs counted"
    );
}

/// Anti-entropy repairs a key that drifted apart once it is quiet, and leaves a key that is
/// being written for a later round (repairing it under writes would move its whole value,
/// round after round, for writes already on their way).
#[tokio::test(start_paused = true)]
async fn anti_entropy_leaves_a_key_under_writes_for_later() {
    let seed = seeds(&[5])[0];
    // No hints and no background anti-entropy: only the syncs below repair.
    let c = Cluster::start(3, seed, sim_defaults(false, false), 0);
    c.until_all_alive(Duration::from_secs(60)).await;
    let n0 = c.coordinator(0).expect("live");
    // Each write adds a new member, so a replica that missed some stays behind whatever it
    // receives later.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let add = |coord: Coordinator, key: &'static str| {
        let member = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let write = Write::Typed(TypedWrite::UpdateSet {
                add: vec![Bytes::from(format!("m{member}"))],
                remove: vec![],
            });
            coord.write(key, write, &settings(2, 2)).await
        }
    };
    // n2 misses the first writes of both keys.
    c.net.partition(&[&["n0", "n1"], &["n2"]]);
    for _ in 0..5 {
        assert!(add(n0.clone(), "cold").await.is_ok());
        assert!(add(n0.clone(), "hot").await.is_ok());
    }
    c.net.heal();
    c.until_all_alive(Duration::from_secs(60)).await;
    let members_on = |i: usize, key: &str| match c.stores[i]
        .get(&quorumkv::storage::Key::new(Kind::Typed, key), u64::MAX / 2)
    {
        Some(Value::Typed(t)) => t.members(u64::MAX / 2).len(),
        _ => 0,
    };
    assert_eq!(members_on(2, "cold"), 0, "seed {seed}: n2 was cut off");

    // "hot" keeps being written while n0 syncs with n2.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (n0, writing, next) = (n0.clone(), Arc::clone(&writing), Arc::clone(&next));
        let add = move |coord: Coordinator| {
            let member = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let write = Write::Typed(TypedWrite::UpdateSet {
                    add: vec![Bytes::from(format!("m{member}"))],
                    remove: vec![],
                });
                coord.write("hot", write, &settings(2, 2)).await
            }
        };
        tokio::spawn(async move {
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = add(n0.clone()).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let view = c.nodes[0].as_ref().expect("live").node.view();
    let arcs = view
        .ring
        .shared_arcs("n0", 3)
        .remove("n2")
        .expect("n0 and n2 share arcs");
    let n2 = view.member("n2").expect("n2 is a member").info.peer;
    let peer = quorumkv::transport::Peer::new("n2", n2);
    let stats = n0.sync_with(&peer, &arcs).await.expect("sync");
    assert!(
        stats.busy >= 1,
        "seed {seed}: the key under writes was repaired: {stats:?}"
    );
    assert_eq!(
        members_on(2, "cold"),
        5,
        "seed {seed}: the quiet key was not repaired"
    );

    // Once the writes stop, the next sync repairs it.
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = n0.sync_with(&peer, &arcs).await.expect("sync");
    assert_eq!(stats.busy, 0, "seed {seed}: {stats:?}");
    assert_eq!(
        members_on(2, "hot"),
        members_on(0, "hot"),
        "seed {seed}: hot not repaired"
    );
}

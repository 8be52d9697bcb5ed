//! How long after a partition heals until every node sees every other alive again, in the
//! simulator, for tuning `announce_to_dead_every`: `cargo run --release --example
//! partition_heal -- [announce to dead every, ms] [seeds] [partition, ms] [loss] [rejoin every,
//! ms]`.
//!
//! Three layouts: 3 nodes split 2|1 (`make partition GROUPS="n1,n2|n3"`: the lone node sees
//! everyone dead and goes idle), 4 nodes split 2|2, 12 nodes split 6|6.

use std::time::Duration;

use quorumkv::membership::sim::{Sim, SimConfig};
use quorumkv::membership::{GossipConfig, MemberState};

fn agreeing(sim: &Sim) -> bool {
    (0..sim.len()).all(|i| (0..sim.len()).all(|j| sim.state_of(i, j) == MemberState::Alive))
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let defaults = GossipConfig::default();
    let announce_ms = args
        .first()
        .copied()
        .unwrap_or(defaults.announce_to_dead_every.as_millis() as f64) as u64;
    let seeds = args.get(1).copied().unwrap_or(40.0) as u64;
    let partition_ms = args.get(2).copied().unwrap_or(10_000.0) as u64;
    let loss = args.get(3).copied().unwrap_or(0.0);
    let rejoin_ms = args
        .get(4)
        .copied()
        .unwrap_or(defaults.rejoin_every.as_millis() as f64) as u64;
    for (nodes, split) in [(3usize, 2usize), (4, 2), (12, 6)] {
        let mut took = Vec::new();
        let mut never = 0;
        for seed in 0..seeds {
            let mut sim = Sim::new(SimConfig {
                nodes,
                seed,
                gossip: GossipConfig {
                    announce_to_dead_every: Duration::from_millis(announce_ms),
                    rejoin_every: Duration::from_millis(rejoin_ms),
                    ..GossipConfig::default()
                },
                ..SimConfig::default()
            });
            sim.run_for(20_000);
            assert!(agreeing(&sim), "seed {seed}: the cluster did not form");
            sim.set_loss(loss);
            // Start the partition at a different phase of the gossip timers each run.
            sim.run_for(seed * 137 % 5_000);
            sim.partition(&[(0..split).collect(), (split..nodes).collect()]);
            sim.run_for(partition_ms);
            sim.heal();
            let start = sim.now_ms();
            while !agreeing(&sim) && sim.now_ms() - start < 60_000 {
                sim.run_for(10);
            }
            if agreeing(&sim) {
                took.push(sim.now_ms() - start);
            } else {
                never += 1;
            }
        }
        took.sort_unstable();
        let n = took.len().max(1);
        let mean = took.iter().sum::<u64>() as f64 / n as f64;
        let p = |q: f64| {
            took.get(((n - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{nodes} nodes {split}|{}: announce to dead every {announce_ms} ms, rejoin every {rejoin_ms} ms, {partition_ms} ms partition, loss {loss}: heal to one view mean {mean:.0} ms, p50 {} ms, p90 {} ms, max {} ms ({never} of {seeds} never)",
            nodes - split,
            p(0.5),
            p(0.9),
            p(1.0)
        );
    }
}

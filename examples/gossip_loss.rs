//! False deaths under message loss, for tuning: `cargo run --release --example gossip_loss --
//! [loss] [suspicion multiplier] [indirect probes] [seeds] [retransmit multiplier]
//! [announce to dead every, ms]`.

use quorumkv::membership::sim::{Sim, SimConfig};
use quorumkv::membership::{GossipConfig, MemberState};

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let loss = args.first().copied().unwrap_or(0.2);
    let mult = args.get(1).copied().unwrap_or(4.0);
    let indirect = args.get(2).copied().unwrap_or(3.0) as usize;
    let seeds = args.get(3).copied().unwrap_or(10.0) as u64;
    let retransmit = args.get(4).copied().unwrap_or(4.0);
    let defaults = GossipConfig::default();
    let announce_ms = args
        .get(5)
        .copied()
        .unwrap_or(defaults.announce_to_dead_every.as_millis() as f64);
    let announce = std::time::Duration::from_millis(announce_ms as u64);
    let mut false_deaths = 0;
    let mut runs_with_death = 0;
    for seed in 0..seeds {
        let mut sim = Sim::new(SimConfig {
            nodes: 20,
            seed,
            gossip: GossipConfig {
                suspicion_multiplier: mult,
                indirect_probes: indirect,
                retransmit_multiplier: retransmit,
                announce_to_dead_every: announce,
                ..GossipConfig::default()
            },
            ..SimConfig::default()
        });
        sim.run_for(30_000);
        sim.set_loss(loss);
        let mut deaths = 0;
        for _ in 0..1200 {
            sim.run_for(100);
            for i in 0..20 {
                for m in sim.view(i) {
                    if m.state == MemberState::Dead {
                        deaths += 1;
                    }
                }
            }
        }
        false_deaths += deaths;
        if deaths > 0 {
            runs_with_death += 1;
        }
    }
    println!(
        "loss {loss} mult {mult} indirect {indirect} retransmit {retransmit} announce to dead every {announce_ms} ms: {runs_with_death}/{seeds} runs with a false death ({false_deaths} dead observations)"
    );
}

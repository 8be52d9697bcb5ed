//! How evenly the ring spreads keys: the largest node's share over the mean, for many random
//! member sets. `cargo run --release --example ring_balance -- [nodes] [vnodes] [sets]`.

use quorumkv::ring::{Ring, RingMember};

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(10);
    let vnodes = args.get(1).copied().unwrap_or(128);
    let sets = args.get(2).copied().unwrap_or(200);
    let mut ratios: Vec<f64> = (0..sets)
        .filter_map(|set| {
            let ring = Ring::new(
                (0..nodes).map(|i| RingMember::new(format!("node-{set}-{i}"), "z", vnodes)),
            )
            .ok()?;
            let max = ring.shares().values().copied().fold(0.0, f64::max);
            Some(max * f64::from(nodes))
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    if ratios.is_empty() {
        return;
    }
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q) as usize];
    let over = ratios.iter().filter(|r| **r > 1.15).count();
    println!(
        "{nodes} nodes x {vnodes} vnodes, {sets} member sets: largest share / mean: \
         median {:.3}, p90 {:.3}, worst {:.3}; above 1.15 in {over} sets",
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

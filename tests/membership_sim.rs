//! Membership over a simulated network: real protocol code, virtual time, seeded faults.
//!
//! Each test prints its seed when it fails; `QKV_SIM_SEED=<seed> cargo test --test
//! membership_sim <name>` re-runs exactly that run.

use quorumkv::membership::MemberState;
use quorumkv::membership::sim::{Sim, SimConfig};

fn seed(default: u64) -> u64 {
    std::env::var("QKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `check` with the seed, and says which seed failed.
fn with_seed(default: u64, check: impl FnOnce(u64)) {
    let seed = seed(default);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(seed)));
    if let Err(e) = result {
        eprintln!("failed with seed {seed}; re-run with QKV_SIM_SEED={seed}");
        std::panic::resume_unwind(e);
    }
}

/// Number of live nodes that see every live node as alive.
fn agreeing(sim: &Sim) -> usize {
    let live: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_up(i)).collect();
    live.iter()
        .filter(|&&i| {
            live.iter()
                .all(|&j| sim.state_of(i, j) == MemberState::Alive)
        })
        .count()
}

/// Polls every `step` ms until `done`, for at most `limit` ms; returns the time taken.
fn until(sim: &mut Sim, limit: u64, step: u64, mut done: impl FnMut(&Sim) -> bool) -> Option<u64> {
    let start = sim.now_ms();
    while sim.now_ms() - start <= limit {
        if done(sim) {
            return Some(sim.now_ms() - start);
        }
        sim.run_for(step);
    }
    None
}

#[test]
fn hundred_nodes_converge_to_one_member_list() {
    with_seed(100, |seed| {
        let mut sim = Sim::new(SimConfig {
            nodes: 100,
            zones: 3,
            seed,
            ..SimConfig::default()
        });
        let took = until(&mut sim, 60_000, 250, |s| agreeing(s) == 100)
            .unwrap_or_else(|| panic!("only {} of 100 nodes agree after 60 s", agreeing(&sim)));
        eprintln!("100 nodes converged in {took} ms of virtual time");
        // And every node builds the same ring.
        let shares = sim
            .membership(0)
            .ring()
            .shares()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Vec<_>>();
        for i in 1..100 {
            let other: Vec<(String, f64)> = sim
                .membership(i)
                .ring()
                .shares()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(other, shares, "node {i} builds another ring");
        }
    });
}

#[test]
fn crashed_node_is_declared_dead_by_all_within_a_bounded_number_of_periods() {
    with_seed(7, |seed| {
        let config = SimConfig {
            nodes: 30,
            seed,
            ..SimConfig::default()
        };
        let bound = config.gossip.detection_bound(30).as_millis() as u64;
        let period = config.gossip.probe_period.as_millis() as u64;
        let mut sim = Sim::new(config);
        until(&mut sim, 30_000, 250, |s| agreeing(s) == 30).expect("cluster forms");
        sim.crash(13);
        let took = until(&mut sim, bound, 50, |s| {
            (0..30)
                .filter(|&i| i != 13)
                .all(|i| s.state_of(i, 13) == MemberState::Dead)
        })
        .unwrap_or_else(|| panic!("node 13 not dead everywhere within {bound} ms"));
        eprintln!(
            "crash declared dead by all 29 in {took} ms = {:.1} probe periods (bound {bound} ms)",
            took as f64 / period as f64
        );
        // Restarted, it is alive again everywhere.
        sim.restart(13);
        until(&mut sim, 30_000, 250, |s| agreeing(s) == 30).expect("restarted node rejoins");
    });
}

#[test]
fn under_twenty_percent_loss_no_live_node_is_declared_dead() {
    with_seed(20, |seed| {
        let mut sim = Sim::new(SimConfig {
            nodes: 20,
            seed,
            ..SimConfig::default()
        });
        until(&mut sim, 30_000, 250, |s| agreeing(s) == 20).expect("cluster forms");
        sim.set_loss(0.2);
        let mut suspicions = 0;
        for _ in 0..(120_000 / 100) {
            sim.run_for(100);
            for i in 0..20 {
                for j in 0..20 {
                    match sim.state_of(i, j) {
                        MemberState::Dead | MemberState::Left => {
                            panic!(
                                "at {} ms node {i} declared live node {j} dead",
                                sim.now_ms()
                            )
                        }
                        MemberState::Suspect => suspicions += 1,
                        MemberState::Alive => {}
                    }
                }
            }
        }
        eprintln!(
            "2 minutes at 20% loss: {} messages dropped, {suspicions} suspect observations, none dead",
            sim.dropped
        );
    });
}

#[test]
fn partition_heals_back_to_one_view() {
    with_seed(3, |seed| {
        let mut sim = Sim::new(SimConfig {
            nodes: 12,
            zones: 2,
            seed,
            ..SimConfig::default()
        });
        until(&mut sim, 30_000, 250, |s| agreeing(s) == 12).expect("cluster forms");
        let left: Vec<usize> = (0..6).collect();
        let right: Vec<usize> = (6..12).collect();
        sim.partition(&[left, right]);
        until(&mut sim, 60_000, 250, |s| {
            (0..6).all(|i| (6..12).all(|j| s.state_of(i, j) == MemberState::Dead))
                && (6..12).all(|i| (0..6).all(|j| s.state_of(i, j) == MemberState::Dead))
        })
        .expect("each side declares the other dead");
        sim.heal();
        let took = until(&mut sim, 120_000, 250, |s| agreeing(s) == 12).unwrap_or_else(|| {
            panic!(
                "only {} of 12 agree 2 minutes after the heal",
                agreeing(&sim)
            )
        });
        eprintln!("partition healed to one view in {took} ms");
    });
}

#[test]
fn graceful_leave_is_left_not_dead() {
    with_seed(5, |seed| {
        let mut sim = Sim::new(SimConfig {
            nodes: 5,
            seed,
            ..SimConfig::default()
        });
        until(&mut sim, 30_000, 250, |s| agreeing(s) == 5).expect("cluster forms");
        sim.leave(2);
        until(&mut sim, 20_000, 100, |s| {
            (0..5)
                .filter(|&i| i != 2)
                .all(|i| s.state_of(i, 2) == MemberState::Left)
        })
        .expect("everyone sees the leave");
        // A node that left is out of the ring; the others keep theirs.
        let ring = sim.membership(0).ring();
        assert_eq!(ring.len(), 4);
        assert!(ring.member("n002").is_none());
    });
}

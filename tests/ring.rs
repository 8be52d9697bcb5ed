//! Ring placement, with figures computed over fixed member names and 100,000 fixed keys.

use std::collections::BTreeSet;

use quorumkv::ring::{Ring, RingMember};
use quorumkv::storage::{Key, Kind};

const KEYS: usize = 100_000;

fn positions() -> Vec<u64> {
    (0..KEYS)
        .map(|i| Key::new(Kind::Kv, format!("key-{i}")).position())
        .collect()
}

fn nodes(range: std::ops::RangeInclusive<u32>, zones: u32) -> Vec<RingMember> {
    range
        .map(|i| RingMember::new(format!("n{i}"), format!("zone-{}", i % zones), 128))
        .collect()
}

fn list(ring: &Ring, pos: u64, n: usize) -> Vec<String> {
    ring.preference_list(pos, n)
        .replicas
        .iter()
        .map(|m| m.id.clone())
        .collect()
}

#[test]
fn ten_nodes_share_the_ring_evenly() {
    let ring = Ring::new(nodes(1..=10, 1)).unwrap();
    let shares = ring.shares();
    let total: f64 = shares.values().sum();
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    let mean = 1.0 / 10.0;
    let max = shares.values().copied().fold(0.0, f64::max);
    let min = shares.values().copied().fold(1.0, f64::min);
    eprintln!(
        "10 x 128 vnodes: largest share {max:.4} = {:.3} x mean, smallest {min:.4}",
        max / mean
    );
    assert!(
        max <= 1.15 * mean,
        "largest share {max} is over 1.15 x the mean"
    );
    // Keys follow the shares.
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for pos in positions() {
        *counts
            .entry(ring.primary(pos).unwrap().id.clone())
            .or_default() += 1;
    }
    for (id, share) in &shares {
        let got = counts[*id] as f64 / KEYS as f64;
        assert!(
            (got - share).abs() < 0.01,
            "{id}: {got} of keys for a share of {share}"
        );
    }
}

#[test]
fn adding_an_eleventh_node_moves_few_keys_and_only_to_it() {
    let before = Ring::new(nodes(1..=10, 1)).unwrap();
    let after = Ring::new(nodes(1..=11, 1)).unwrap();
    let mut moved = 0;
    let mut lists_changed = 0;
    for pos in positions() {
        let (old, new) = (before.primary(pos).unwrap(), after.primary(pos).unwrap());
        if old.id != new.id {
            moved += 1;
            assert_eq!(new.id, "n11", "a key moved between two old nodes");
        }
        let (old, new) = (list(&before, pos, 3), list(&after, pos, 3));
        if old != new {
            lists_changed += 1;
            assert!(
                new.contains(&"n11".to_string()),
                "{old:?} -> {new:?} without n11"
            );
            let rest: Vec<String> = new.iter().filter(|id| *id != "n11").cloned().collect();
            assert_eq!(
                rest[..],
                old[..rest.len()],
                "{old:?} -> {new:?} reordered old nodes"
            );
        }
    }
    let bound = 1.1 * KEYS as f64 / 11.0;
    eprintln!(
        "adding n11: {moved} of {KEYS} primaries moved (bound {bound:.0}), {lists_changed} N=3 lists changed"
    );
    assert!(
        moved as f64 <= bound,
        "{moved} keys moved, more than {bound}"
    );
    assert!(moved > 0);
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let before = Ring::new(nodes(1..=10, 1)).unwrap();
    let after = Ring::new(nodes(1..=10, 1).into_iter().filter(|m| m.id != "n4")).unwrap();
    let mut moved = 0;
    for pos in positions() {
        let (old, new) = (before.primary(pos).unwrap(), after.primary(pos).unwrap());
        if old.id != new.id {
            assert_eq!(old.id, "n4", "a key of {} moved to {}", old.id, new.id);
            moved += 1;
        }
        let (old, new) = (list(&before, pos, 3), list(&after, pos, 3));
        let kept: Vec<String> = old.iter().filter(|id| *id != "n4").cloned().collect();
        assert_eq!(kept[..], new[..kept.len()], "{old:?} -> {new:?}");
    }
    let share = before.shares()["n4"];
    assert!((moved as f64 / KEYS as f64 - share).abs() < 0.01);
}

#[test]
fn three_zones_put_one_replica_in_each() {
    for (count, zones) in [(9, 3), (7, 3), (12, 3), (5, 2)] {
        let ring = Ring::new(nodes(1..=count, zones)).unwrap();
        for pos in positions() {
            let replicas = ring.preference_list(pos, 3).replicas;
            let spanned: BTreeSet<&str> = replicas.iter().map(|m| m.zone.as_str()).collect();
            assert_eq!(
                spanned.len(),
                zones.min(3) as usize,
                "{count} nodes: {replicas:?}"
            );
        }
    }
}

#[test]
fn preference_lists_are_the_first_distinct_nodes_clockwise_in_one_zone() {
    let ring = Ring::new(nodes(1..=6, 1)).unwrap();
    for pos in positions().into_iter().take(2_000) {
        // Reference: scan positions clockwise with a brute-force walk over the whole ring.
        let mut expected: Vec<String> = Vec::new();
        let mut p = pos;
        let mut guard = 0;
        while expected.len() < 3 && guard < 100_000 {
            let owner = ring.primary(p).unwrap().id.clone();
            if !expected.contains(&owner) {
                expected.push(owner);
            }
            // Jump just past the owning vnode: the next key position it does not own.
            let arcs = ring.primary_arcs(&ring.primary(p).unwrap().id);
            let arc = arcs.iter().find(|a| a.contains(p)).unwrap();
            p = arc.upto.wrapping_add(1);
            guard += 1;
        }
        assert_eq!(list(&ring, pos, 3), expected);
    }
}

#[test]
fn ring_is_deterministic_and_weights_count() {
    let mut members = nodes(1..=8, 2);
    let a = Ring::new(members.clone()).unwrap();
    members.reverse();
    let b = Ring::new(members.clone()).unwrap();
    for pos in positions().into_iter().take(5_000) {
        assert_eq!(list(&a, pos, 3), list(&b, pos, 3));
    }
    assert_eq!(a.shares(), b.shares());
    members[0].vnodes = 512;
    let heavy = members[0].id.clone();
    let c = Ring::new(members).unwrap();
    let share = c.shares()[heavy.as_str()];
    // 512 of 1408 vnodes.
    assert!(
        (share - 512.0 / 1408.0).abs() < 0.05,
        "weighted share {share}"
    );
}

#[test]
fn fallbacks_follow_the_preference_list() {
    let ring = Ring::new(nodes(1..=6, 3)).unwrap();
    for pos in positions().into_iter().take(1_000) {
        let pl = ring.preference_list(pos, 3);
        let mut all: Vec<String> = pl.replicas.iter().map(|m| m.id.clone()).collect();
        all.extend(pl.fallbacks.map(|m| m.id.clone()));
        let full: Vec<String> = ring.walk(pos).map(|m| m.id.clone()).collect();
        assert_eq!(all, full);
        assert_eq!(full.iter().collect::<BTreeSet<_>>().len(), 6);
    }
}

#[test]
fn shared_arcs_cover_exactly_the_positions_two_members_both_replicate() {
    for (members, zones) in [(5, 1), (7, 3), (3, 2)] {
        let ring = Ring::new(nodes(1..=members, zones)).unwrap();
        let shared = ring.shared_arcs("n1", 3);
        for pos in positions().into_iter().take(20_000) {
            let replicas = list(&ring, pos, 3);
            for other in (2..=members).map(|i| format!("n{i}")) {
                let both = replicas.contains(&"n1".to_string()) && replicas.contains(&other);
                let covered = shared
                    .get(&other)
                    .is_some_and(|arcs| arcs.iter().any(|a| a.contains(pos)));
                assert_eq!(both, covered, "{members} members, {other} at {pos:#x}");
            }
        }
    }
    // With N equal to the cluster size every pair shares the whole ring, as one arc.
    let ring = Ring::new(nodes(1..=3, 2)).unwrap();
    let shared = ring.shared_arcs("n2", 3);
    assert_eq!(shared.len(), 2);
    assert!(
        shared
            .values()
            .all(|arcs| arcs == &[quorumkv::ring::RingArc::FULL])
    );
    assert!(
        ring.shared_arcs("n9", 3).is_empty(),
        "a non-member shares nothing"
    );
}

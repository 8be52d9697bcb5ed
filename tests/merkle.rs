//! Two replica stores of 100,000 keys that differ in k keys find exactly those k, exchanging
//! hashes in proportion to the differences, not the keys.

use std::collections::BTreeSet;

use bytes::Bytes;
use quorumkv::causality::Timestamp;
use quorumkv::crdt::TypedValue;
use quorumkv::crdt::typed::TtlChange;
use quorumkv::ring::{Ring, RingArc, RingMember};
use quorumkv::storage::merkle::diff_local;
use quorumkv::storage::{Key, Kind, MemStore, Store, Value};

const KEYS: usize = 100_000;

fn write(store: &MemStore, key: &Key, value: &str, millis: u64) {
    let ts = Timestamp {
        millis,
        logical: 0,
        node: "n1".into(),
    };
    let string = TypedValue::new().set_string(
        Bytes::copy_from_slice(value.as_bytes()),
        TtlChange::Clear,
        &ts,
        millis,
    );
    store
        .merge(key, &Value::Typed(Box::new(string)), 0)
        .unwrap();
}

fn key(i: usize) -> Key {
    Key::new(Kind::Typed, format!("key-{i}"))
}

#[test]
fn stores_differing_in_k_keys_find_exactly_those_keys() {
    let a = MemStore::with(16, 60_000);
    let b = MemStore::with(16, 60_000);
    for i in 0..KEYS {
        write(&a, &key(i), "v", 1);
        write(&b, &key(i), "v", 1);
    }
    assert_eq!(a.merkle().root(), b.merkle().root());
    let (none, received) = diff_local(a.merkle(), b.merkle(), RingArc::FULL).unwrap();
    assert!(none.is_empty());
    assert_eq!(received, 1, "equal stores compare one root hash");

    let mut expected = BTreeSet::new();
    for k in [1usize, 10, 100] {
        // k differences of three sorts: a newer value, a key only on one side, and (for k >= 10)
        // a key only on the other side.
        let c = MemStore::with(16, 60_000);
        for i in 0..KEYS {
            write(&c, &key(i), "v", 1);
        }
        expected.clear();
        for j in 0..k {
            let i = (j * 7919) % KEYS;
            match j % 3 {
                0 => write(&c, &key(i), "newer", 2),
                1 => {
                    write(&c, &Key::new(Kind::Typed, format!("extra-{j}")), "x", 1);
                    expected.insert(Key::new(Kind::Typed, format!("extra-{j}")));
                    continue;
                }
                _ => write(&a, &key(i), "newer-on-a", 3),
            }
            expected.insert(key(i));
        }
        let (found, received) = diff_local(c.merkle(), a.merkle(), RingArc::FULL).unwrap();
        let found: BTreeSet<Key> = found.into_iter().collect();
        let expected_now: BTreeSet<Key> = expected
            .iter()
            .cloned()
            .chain(
                // Earlier rounds' changes to `a` also differ from `c`.
                (0..KEYS)
                    .map(key)
                    .filter(|kk| a.get(kk, 0) != c.get(kk, 0) && !expected.contains(kk)),
            )
            .collect();
        assert_eq!(found, expected_now, "k = {k}");
        // O(differences x depth): at most 2 hashes per level per difference, plus leaf items.
        let bound = expected_now.len() * (2 * 16 + 8) + 1;
        eprintln!(
            "k = {k}: {} differences found receiving {received} hashes and items (bound {bound})",
            found.len()
        );
        assert!(
            received <= bound,
            "received {received} for {} differences",
            found.len()
        );
    }
}

#[test]
fn diff_over_a_ring_arc_finds_only_keys_in_it() {
    let a = MemStore::with(12, 60_000);
    let b = MemStore::with(12, 60_000);
    for i in 0..20_000 {
        write(&a, &key(i), "v", 1);
        if i % 50 != 0 {
            write(&b, &key(i), "v", 1);
        }
    }
    let ring = Ring::new((1..=5).map(|i| RingMember::new(format!("n{i}"), "z", 16))).unwrap();
    let mut total = 0;
    for arc in ring.primary_arcs("n2") {
        let (found, _) = diff_local(a.merkle(), b.merkle(), arc).unwrap();
        for k in &found {
            assert!(arc.contains(k.position()));
        }
        let expected: BTreeSet<Key> = (0..20_000)
            .filter(|i| i % 50 == 0)
            .map(key)
            .filter(|k| arc.contains(k.position()))
            .collect();
        assert_eq!(found.into_iter().collect::<BTreeSet<_>>(), expected);
        total += expected.len();
        assert_eq!(
            a.keys_in(arc).len(),
            (0..20_000)
                .filter(|i| arc.contains(key(*i).position()))
                .count()
        );
    }
    assert!(total > 0);
}

#[test]
fn arc_hashes_match_exactly_when_the_arc_holds_the_same_items() {
    let a = MemStore::with(12, 60_000);
    let b = MemStore::with(12, 60_000);
    for i in 0..20_000 {
        write(&a, &key(i), "v", 1);
        write(&b, &key(i), "v", 1);
    }
    let ring = Ring::new((1..=5).map(|i| RingMember::new(format!("n{i}"), "z", 64))).unwrap();
    let arcs = ring
        .shared_arcs("n1", 3)
        .remove("n2")
        .expect("n1 and n2 share arcs");
    for arc in &arcs {
        assert_eq!(a.merkle().arc_hash(*arc), b.merkle().arc_hash(*arc));
    }
    // One key changed inside an arc changes that arc's hash only; one outside all arcs
    // changes none.
    let inside = (0..20_000)
        .find(|&i| arcs[0].contains(key(i).position()))
        .expect("a key in the first arc");
    let outside = (0..20_000)
        .find(|&i| !arcs.iter().any(|arc| arc.contains(key(i).position())))
        .expect("a key outside");
    write(&b, &key(inside), "changed", 2);
    write(&b, &key(outside), "changed", 2);
    let differing: Vec<usize> = (0..arcs.len())
        .filter(|&i| a.merkle().arc_hash(arcs[i]) != b.merkle().arc_hash(arcs[i]))
        .collect();
    assert_eq!(differing, vec![0]);
    assert_ne!(
        a.merkle().arc_hash(RingArc::FULL),
        b.merkle().arc_hash(RingArc::FULL)
    );
    assert_eq!(a.merkle().arc_hash(RingArc::FULL), {
        // The full-ring arc hash is the root.
        a.merkle().root()
    });
}

//! Benchmarks of the pure core. `make bench` runs them; figures are in docs/benchmarks.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use quorumkv::causality::{CausalContext, Timestamp};
use quorumkv::crdt::typed::TtlChange;
use quorumkv::crdt::{Crdt, MvRegister, TypedValue, Version};
use quorumkv::ring::{Ring, RingArc, RingMember};
use quorumkv::storage::merkle::diff_local;
use quorumkv::storage::{Key, Kind, MemStore, Store, Value};

fn ring_lookup(c: &mut Criterion) {
    let keys: Vec<u64> = (0..4096)
        .map(|i| Key::new(Kind::Kv, format!("key-{i}")).position())
        .collect();
    for zones in [1u32, 3] {
        let ring = Ring::new(
            (0..64).map(|i| RingMember::new(format!("n{i}"), format!("z{}", i % zones), 128)),
        )
        .expect("distinct ids");
        let mut i = 0;
        c.bench_function(
            &format!("preference_list n=3, 64 nodes x 128 vnodes, {zones} zone(s)"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    black_box(ring.preference_list(black_box(keys[i]), 3).replicas.len())
                })
            },
        );
    }
}

fn causal_merge(c: &mut Criterion) {
    // Two replicas that each hold the same three concurrent siblings plus one the other lacks.
    let mut base = MvRegister::new();
    for (i, actor) in ["n1", "n2", "n3"].iter().enumerate() {
        let d = base.write(
            actor,
            &CausalContext::new(),
            Version::new(vec![i as u8; 100], None),
        );
        base.merge(&d.expect("dots left"));
    }
    let mut a = base.clone();
    let d = a.write("n1", a.context(), Version::new(vec![9u8; 100], None));
    a.merge(&d.expect("dots left"));
    let mut b = base.clone();
    let d = b.write(
        "n2",
        &CausalContext::new(),
        Version::new(vec![8u8; 100], None),
    );
    b.merge(&d.expect("dots left"));
    c.bench_function("causal merge, 3 siblings", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut x| {
                x.merge(black_box(&b));
                x
            },
            BatchSize::SmallInput,
        )
    });
}

fn set_merge(c: &mut Criterion) {
    let ts = |millis, node: &str| Timestamp {
        millis,
        logical: 0,
        node: node.into(),
    };
    let mut a = TypedValue::new();
    let names: Vec<Bytes> = (0..1000)
        .map(|i| Bytes::from(format!("member-{i}")))
        .collect();
    let (d, _, _) = a
        .update_set("n1", &names, &[], &ts(1, "n1"), 1)
        .expect("dots left");
    a.merge(&d);
    let mut b = a.clone();
    let (d, _, _) = b
        .update_set(
            "n2",
            &[Bytes::from("member-1"), Bytes::from("new")],
            &[Bytes::from("member-2")],
            &ts(2, "n2"),
            2,
        )
        .expect("dots left");
    b.merge(&d);
    c.bench_function("set merge, 1,000 members", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut x| {
                x.merge(black_box(&b));
                x
            },
            BatchSize::LargeInput,
        )
    });
}

fn merkle_diff(c: &mut Criterion) {
    let a = MemStore::default();
    let b = MemStore::default();
    let ts = |millis| Timestamp {
        millis,
        logical: 0,
        node: "n1".into(),
    };
    for i in 0..100_000 {
        let key = Key::new(Kind::Typed, format!("key-{i}"));
        let string = |value: &'static str, t| {
            let delta =
                TypedValue::new().set_string(Bytes::from(value), TtlChange::Clear, &ts(t), t);
            Value::Typed(Box::new(delta))
        };
        let v = string("value", 1);
        a.merge(&key, &v, 0).expect("same kind");
        let v = if i % 10_000 == 0 {
            string("newer", 2)
        } else {
            v
        };
        b.merge(&key, &v, 0).expect("same kind");
    }
    c.bench_function("Merkle diff, 100,000 keys, 10 differences", |bench| {
        bench.iter(|| {
            let (found, _) = diff_local(a.merkle(), b.merkle(), RingArc::FULL).expect("same depth");
            assert_eq!(found.len(), 10);
            found
        })
    });
}

criterion_group!(benches, ring_lookup, causal_merge, set_merge, merkle_diff);
criterion_main!(benches);

//! Property tests of the typed namespace's value (`crdt::TypedValue`): the merge is
//! commutative, associative and idempotent on states reachable through its operations, deltas
//! in any order give the full merge, and what clients rely on holds: increments all count,
//! replicas agree on one type, a field updated concurrently with its removal survives, a
//! remove takes only what it saw.
//!
//! States come from simulated histories: three replicas, each with its own actor and hybrid
//! clock, apply random operations at advancing times, purge expired keys, and merge each other's
//! states (anti-entropy), as a real cluster does.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use quorumkv::causality::HybridClock;
use quorumkv::crdt::typed::{Number, TtlChange, Type};
use quorumkv::crdt::{Crdt, TypedValue};

const REPLICAS: usize = 3;

fn actor(i: usize) -> String {
    format!("r{i}")
}

fn merged(a: &TypedValue, b: &TypedValue) -> TypedValue {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// One step of a simulated history.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `at` applies an operation chosen by `op` and `arg`, `dt` ms after the last step.
    Op { at: usize, op: u8, arg: u8, dt: u8 },
    /// Replica `to` merges in replica `from`'s whole state.
    Sync { from: usize, to: usize },
    /// Replica `at` purges what expired.
    Purge { at: usize },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0..REPLICAS, any::<u8>(), any::<u8>(), 0u8..40)
                .prop_map(|(at, op, arg, dt)| Step::Op { at, op, arg, dt }),
            2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
            1 => (0..REPLICAS).prop_map(|at| Step::Purge { at }),
        ],
        0..50,
    )
}

struct Sim {
    replicas: Vec<TypedValue>,
    clocks: Vec<HybridClock>,
    now: u64,
    deltas: Vec<TypedValue>,
    /// Whether replicas keep their collection digest, so merges maintain it as a store's do.
    keep_digests: bool,
}

impl Sim {
    fn new() -> Self {
        Sim {
            replicas: vec![TypedValue::new(); REPLICAS],
            clocks: (0..REPLICAS)
                .map(|i| HybridClock::new(actor(i), 10_000))
                .collect(),
            now: 1_000,
            deltas: Vec::new(),
            keep_digests: false,
        }
    }

    /// Replica `at` makes a delta with `make` at the current time and merges it.
    fn apply(
        &mut self,
        at: usize,
        make: impl FnOnce(&TypedValue, &str, &quorumkv::causality::Timestamp, u64) -> Option<TypedValue>,
    ) {
        let ts = self.clocks[at].now(self.now);
        if let Some(delta) = make(&self.replicas[at], &actor(at), &ts, self.now) {
            if self.keep_digests {
                self.replicas[at].keep_digest();
            }
            self.replicas[at].merge(&delta);
            self.deltas.push(delta);
        }
    }

    fn run(&mut self, history: &[Step]) {
        for step in history {
            match *step {
                Step::Op { at, op, arg, dt } => {
                    self.now += u64::from(dt);
                    self.apply(at, |s, actor, ts, now| {
                        operation(s, actor, ts, now, op, arg)
                    });
                }
                Step::Sync { from, to } => {
                    let src = self.replicas[from].clone();
                    if self.keep_digests {
                        self.replicas[to].keep_digest();
                    }
                    self.replicas[to].merge(&src);
                }
                Step::Purge { at } => {
                    let now = self.now;
                    self.replicas[at].expire(now);
                }
            }
        }
    }

    fn all(&self) -> TypedValue {
        self.replicas
            .iter()
            .fold(TypedValue::new(), |acc, s| merged(&acc, s))
    }
}

/// One random operation; `None` when the state refuses it (a type error, a non-number).
fn operation(
    s: &TypedValue,
    actor: &str,
    ts: &quorumkv::causality::Timestamp,
    now: u64,
    op: u8,
    arg: u8,
) -> Option<TypedValue> {
    let member = Bytes::from(format!("m{}", arg % 4));
    match op % 10 {
        0 => Some(s.set_string(
            Bytes::from(format!("{}", arg % 7)),
            TtlChange::Clear,
            ts,
            now,
        )),
        1 => Some(s.delete(arg.is_multiple_of(5), ts, now)),
        2 => s
            .incr(actor, Number::Int(i64::from(arg % 9) - 4), ts, now)
            .ok()
            .map(|(d, _)| d),
        3 => s
            .incr(actor, Number::Float(f64::from(arg % 5) / 4.0), ts, now)
            .ok()
            .map(|(d, _)| d),
        4 => Some(s.set_expiry(
            if arg.is_multiple_of(3) {
                TtlChange::Clear
            } else {
                TtlChange::At(now + u64::from(arg % 60))
            },
            ts,
            now,
        )),
        5 => s
            .update_set(actor, &[member], &[], ts, now)
            .ok()
            .map(|(d, _, _)| d),
        6 => s
            .update_set(actor, &[], &[member], ts, now)
            .ok()
            .map(|(d, _, _)| d),
        7 => s
            .update_hash(
                actor,
                &[(member, Bytes::from(format!("{}", arg % 3)))],
                &[],
                &[],
                ts,
                now,
            )
            .ok()
            .map(|(d, ..)| d),
        8 => s
            .update_hash(
                actor,
                &[],
                &[(member, Number::Int(i64::from(arg % 5)))],
                &[],
                ts,
                now,
            )
            .ok()
            .map(|(d, ..)| d),
        _ => s
            .update_hash(actor, &[], &[], &[member], ts, now)
            .ok()
            .map(|(d, ..)| d),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_laws(history in steps()) {
        let mut sim = Sim::new();
        sim.run(&history);
        let [a, b, c] = [&sim.replicas[0], &sim.replicas[1], &sim.replicas[2]];
        prop_assert_eq!(merged(a, b), merged(b, a), "commutative");
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)), "associative");
        prop_assert_eq!(&merged(a, a), a, "idempotent");
        prop_assert_eq!(&merged(&merged(a, b), b), &merged(a, b), "idempotent after a merge");
    }

    /// Every delta, delivered in any order and more than once, gives the state of the full
    /// merge (before purges, which only drop what is gone).
    #[test]
    fn deltas_in_any_order_give_the_full_merge(history in steps()) {
        let history: Vec<Step> = history.into_iter().filter(|s| !matches!(s, Step::Purge { .. })).collect();
        let mut sim = Sim::new();
        sim.run(&history);
        let mut forward = TypedValue::new();
        for d in sim.deltas.iter().rev().chain(sim.deltas.iter()) {
            forward.merge(d);
        }
        let mut fresh = TypedValue::new();
        for d in &sim.deltas {
            fresh.merge(d);
        }
        prop_assert_eq!(&forward, &fresh);
        prop_assert_eq!(forward, sim.all());
    }

    /// The collection digest merges keep up to date member by member is the one worked out
    /// from the whole value (what the Merkle tree and memory accounting read).
    #[test]
    fn the_digest_merges_keep_is_the_digest_of_the_value(history in steps()) {
        let mut sim = Sim::new();
        sim.keep_digests = true;
        sim.run(&history);
        for r in &sim.replicas {
            // Decoding drops the kept digest: the copy works it out afresh.
            let copy: TypedValue = rmp_serde::from_slice(&rmp_serde::to_vec(r).unwrap()).unwrap();
            prop_assert_eq!(&copy, r);
            prop_assert_eq!(r.collection_digest(), copy.collection_digest());
        }
    }

    /// Once every replica has merged everything, they agree on the type and the value.
    #[test]
    fn replicas_converge_on_one_type_and_value(history in steps(), later in 0u64..100) {
        let mut sim = Sim::new();
        sim.run(&history);
        let all = sim.all();
        let now = sim.now + later;
        for r in &sim.replicas {
            let r = merged(r, &all);
            prop_assert_eq!(r.kind_at(now), all.kind_at(now));
            prop_assert_eq!(r.string(now), all.string(now));
            prop_assert_eq!(r.members(now), all.members(now));
            prop_assert_eq!(r.fields(now), all.fields(now));
        }
    }

    /// `SET k 10`, then increments on every replica without seeing each other: the sum of
    /// them all, whatever the order of merges.
    #[test]
    fn increments_from_every_replica_all_count(
        incrs in prop::collection::vec((0..REPLICAS, -50i64..50), 1..20),
        syncs in prop::collection::vec((0..REPLICAS, 0..REPLICAS), 0..10),
    ) {
        let mut sim = Sim::new();
        sim.apply(0, |s, _, ts, now| Some(s.set_string(b("10"), TtlChange::Clear, ts, now)));
        let start = sim.replicas[0].clone();
        for r in &mut sim.replicas { *r = start.clone(); }
        let mut expected: i128 = 10;
        for (i, (at, by)) in incrs.iter().enumerate() {
            sim.now += 1;
            sim.apply(*at, |s, actor, ts, now| s.incr(actor, Number::Int(*by), ts, now).ok().map(|(d, _)| d));
            expected += i128::from(*by);
            if let Some((from, to)) = syncs.get(i) {
                let src = sim.replicas[*from].clone();
                sim.replicas[*to].merge(&src);
            }
        }
        prop_assert_eq!(sim.all().string(sim.now), Some(Bytes::from(expected.to_string())));
    }

    /// A hash field updated concurrently with its removal survives; one removed after every
    /// update was seen is gone.
    #[test]
    fn hash_field_update_wins_over_concurrent_removal(history in steps(), a in 0..REPLICAS, c in 0..REPLICAS, incr in any::<bool>()) {
        let mut sim = Sim::new();
        sim.run(&history);
        let all = sim.all();
        if all.kind_at(sim.now + 1).is_some_and(|k| k != Type::Hash) {
            return Ok(());
        }
        // Both start from the merged state, then act without seeing each other.
        let (mut ra, mut rc) = (all.clone(), all.clone());
        sim.now += 1;
        let t1 = sim.clocks[a].now(sim.now);
        let (rm, ..) = ra.update_hash(&actor(a), &[], &[], &[b("f")], &t1, sim.now).unwrap();
        ra.merge(&rm);
        let t2 = sim.clocks[c].now(sim.now);
        let (up, ..) = if incr {
            rc.update_hash(&actor(c), &[], &[(b("f"), Number::Int(1))], &[], &t2, sim.now)
        } else {
            rc.update_hash(&actor(c), &[(b("f"), b("x"))], &[], &[], &t2, sim.now)
        }
        .unwrap();
        rc.merge(&up);
        let healed = merged(&ra, &rc);
        let fields: BTreeMap<Bytes, Bytes> = healed.fields(sim.now).into_iter().map(|(k, v)| (k.clone(), v)).collect();
        prop_assert!(fields.contains_key(&b("f")), "the update was lost: {:?}", fields);
        // A removal that saw the update removes the field for good.
        sim.now += 1;
        let t3 = sim.clocks[a].now(sim.now);
        let (rm2, ..) = healed.update_hash(&actor(a), &[], &[], &[b("f")], &t3, sim.now).unwrap();
        let mut gone = healed.clone();
        gone.merge(&rm2);
        gone.merge(&ra);
        gone.merge(&rc);
        prop_assert!(gone.fields(sim.now).iter().all(|(k, _)| **k != b("f")));
    }

    /// A set add concurrent with a remove of the same member survives it.
    #[test]
    fn set_add_wins_over_concurrent_remove(history in steps(), a in 0..REPLICAS, c in 0..REPLICAS) {
        let mut sim = Sim::new();
        sim.run(&history);
        let all = sim.all();
        if all.kind_at(sim.now + 1).is_some_and(|k| k != Type::Set) {
            return Ok(());
        }
        sim.now += 1;
        let t1 = sim.clocks[a].now(sim.now);
        let t2 = sim.clocks[c].now(sim.now);
        let (rm, ..) = all.update_set(&actor(a), &[], &[b("m0")], &t1, sim.now).unwrap();
        let (add, ..) = all.update_set(&actor(c), &[b("m0")], &[], &t2, sim.now).unwrap();
        let healed = merged(&merged(&all, &rm), &add);
        prop_assert!(healed.members(sim.now).contains(&&b("m0")));
    }

    /// What INCRBY and HINCRBY answer is what the replica reads once their delta is merged,
    /// whatever history the replica has seen.
    #[test]
    fn reported_values_are_the_state_after(history in steps(), at in 0..REPLICAS, by in -5i64..5) {
        let mut sim = Sim::new();
        sim.run(&history);
        let now = sim.now + 1;
        let ts = sim.clocks[at].now(now);
        let s = &sim.replicas[at];
        if let Ok((d, v)) = s.incr(&actor(at), Number::Int(by), &ts, now) {
            let after = merged(s, &d);
            prop_assert_eq!(after.string(now), Some(v));
        }
        let names = [b("m0"), b("m1")];
        let incr = [(names[0].clone(), Number::Int(by)), (names[1].clone(), Number::Float(0.5))];
        if let Ok((d, _, _, values)) = s.update_hash(&actor(at), &[], &incr, &[], &ts, now) {
            let after = merged(s, &d);
            let fields: std::collections::BTreeMap<Bytes, Bytes> =
                after.fields(now).into_iter().map(|(k, v)| (k.clone(), v)).collect();
            prop_assert_eq!(values, names.iter().map(|n| fields[n].clone()).collect::<Vec<_>>());
        }
        let all: Vec<Bytes> = (0..4).map(|i| b(&format!("m{i}"))).collect();
        if let Ok((d, _, removed, _)) = s.update_hash(&actor(at), &[], &[], &all, &ts, now) {
            let after = merged(s, &d);
            prop_assert!(after.fields(now).is_empty());
            prop_assert_eq!(removed as usize, s.fields(now).len());
        }
    }

    /// Applied one after another to one state, the operations behave as Redis's do on one
    /// server: strings, counters, deletes and type errors.
    #[test]
    fn one_replica_behaves_like_one_redis(ops in prop::collection::vec((any::<u8>(), any::<u8>()), 0..60)) {
        #[derive(Debug, Clone, PartialEq)]
        enum Model { Str(i64), Set(std::collections::BTreeSet<Bytes>) }
        let mut clock = HybridClock::new("r0", 10_000);
        let mut s = TypedValue::new();
        let mut model: Option<Model> = None;
        let mut now = 1_000;
        for (op, arg) in ops {
            now += 1;
            let ts = clock.now(now);
            let member = Bytes::from(format!("m{}", arg % 3));
            match op % 4 {
                0 => {
                    let v = i64::from(arg % 7);
                    let d = s.set_string(Bytes::from(v.to_string()), TtlChange::Clear, &ts, now);
                    s.merge(&d);
                    model = Some(Model::Str(v));
                }
                1 => {
                    let d = s.delete(false, &ts, now);
                    s.merge(&d);
                    model = None;
                }
                2 => {
                    let by = i64::from(arg % 5) - 2;
                    let result = s.incr("r0", Number::Int(by), &ts, now);
                    match &mut model {
                        Some(Model::Set(_)) => prop_assert!(result.is_err()),
                        m => {
                            let (d, v) = result.unwrap();
                            s.merge(&d);
                            let after = match m { Some(Model::Str(x)) => *x + by, _ => by };
                            *m = Some(Model::Str(after));
                            prop_assert_eq!(v, Bytes::from(after.to_string()));
                        }
                    }
                }
                _ => {
                    let result = s.update_set("r0", std::slice::from_ref(&member), &[], &ts, now);
                    match &mut model {
                        Some(Model::Str(_)) => prop_assert!(result.is_err()),
                        m => {
                            let (d, ..) = result.unwrap();
                            s.merge(&d);
                            let mut set = match m.take() { Some(Model::Set(set)) => set, _ => Default::default() };
                            set.insert(member);
                            *m = Some(Model::Set(set));
                        }
                    }
                }
            }
            match &model {
                None => prop_assert_eq!(s.kind_at(now), None),
                Some(Model::Str(v)) => prop_assert_eq!(s.string(now), Some(Bytes::from(v.to_string()))),
                Some(Model::Set(set)) => {
                    let got: std::collections::BTreeSet<Bytes> = s.members(now).into_iter().cloned().collect();
                    prop_assert_eq!(&got, set);
                }
            }
        }
    }
}

/// Fixed histories where a replica's partial view used to decide wrongly: each delta is made
/// on the replica named, and reaches only the replicas it is merged into.
mod partial_views {
    use super::*;
    use quorumkv::causality::Timestamp;

    /// Three replicas with their own clocks, at a shared time in ms.
    struct Three {
        r: Vec<TypedValue>,
        clocks: Vec<HybridClock>,
        now: u64,
    }

    impl Three {
        fn new() -> Self {
            Three {
                r: vec![TypedValue::new(); 3],
                clocks: (0..3).map(|i| HybridClock::new(actor(i), 10_000)).collect(),
                now: 1_000,
            }
        }

        /// Replica `at` makes a delta at the current time, merges it, and returns it.
        fn make(
            &mut self,
            at: usize,
            f: impl FnOnce(&TypedValue, &str, &Timestamp, u64) -> TypedValue,
        ) -> TypedValue {
            let ts = self.clocks[at].now(self.now);
            let d = f(&self.r[at], &actor(at), &ts, self.now);
            self.r[at].merge(&d);
            d
        }

        fn give(&mut self, to: usize, d: &TypedValue) {
            self.r[to].merge(d);
        }

        fn sync_all(&mut self) {
            let all = self
                .r
                .iter()
                .fold(TypedValue::new(), |acc, s| merged(&acc, s));
            for r in &mut self.r {
                r.merge(&all);
            }
        }
    }

    fn incr(s: &TypedValue, a: &str, ts: &Timestamp, now: u64, by: i64) -> TypedValue {
        s.incr(a, Number::Int(by), ts, now).expect("incr").0
    }

    #[test]
    fn an_increment_on_a_replica_that_missed_the_set_adds_to_it() {
        let mut c = Three::new();
        let set = c.make(0, |s, _, ts, now| {
            s.set_string(b("10"), TtlChange::Clear, ts, now)
        });
        c.give(1, &set);
        c.now += 5;
        // Replica 2 never saw the SET.
        let d = c.make(2, |s, a, ts, now| incr(s, a, ts, now, 1));
        c.give(0, &d);
        c.sync_all();
        for r in &c.r {
            assert_eq!(r.string(c.now), Some(b("11")));
        }
    }

    #[test]
    fn a_set_after_a_delete_replaces_the_increments_the_delete_replaced() {
        let mut c = Three::new();
        c.make(0, |s, _, ts, now| {
            s.set_string(b("1"), TtlChange::Clear, ts, now)
        });
        c.sync_all();
        c.now += 1;
        // Replica 0's increment reaches no one before its delete does.
        let inc = c.make(0, |s, a, ts, now| incr(s, a, ts, now, 5));
        c.now += 1;
        let del = c.make(0, |s, _, ts, now| s.delete(false, ts, now));
        c.give(1, &del);
        c.now += 1;
        c.make(1, |s, _, ts, now| {
            s.set_string(b("7"), TtlChange::Clear, ts, now)
        });
        c.give(1, &inc);
        c.sync_all();
        for r in &c.r {
            assert_eq!(r.string(c.now), Some(b("7")));
        }
    }

    #[test]
    fn an_hset_replaces_the_increments_an_earlier_hset_replaced() {
        let mut c = Three::new();
        let f = b("f");
        let inc = c.make(0, |s, a, ts, now| {
            s.update_hash(a, &[], &[(f.clone(), Number::Int(3))], &[], ts, now)
                .expect("hincrby")
                .0
        });
        c.now += 1;
        let first = c.make(0, |s, a, ts, now| {
            s.update_hash(a, &[(f.clone(), b("7"))], &[], &[], ts, now)
                .expect("hset")
                .0
        });
        c.give(1, &first);
        c.now += 1;
        c.make(1, |s, a, ts, now| {
            s.update_hash(a, &[(f.clone(), b("5"))], &[], &[], ts, now)
                .expect("hset")
                .0
        });
        c.give(1, &inc);
        c.sync_all();
        for r in &c.r {
            let fields: Vec<(Bytes, Bytes)> = r
                .fields(c.now)
                .into_iter()
                .map(|(k, v)| (k.clone(), v))
                .collect();
            assert_eq!(fields, vec![(f.clone(), b("5"))]);
        }
    }

    #[test]
    fn a_replica_that_purges_an_expiry_another_cancelled_loses_nothing() {
        for cancel in ["set", "persist"] {
            let mut c = Three::new();
            let until = c.now + 10_000;
            c.make(0, |s, _, ts, now| {
                s.set_string(b("v"), TtlChange::At(until), ts, now)
            });
            c.sync_all();
            c.now += 5_000;
            // Cut off from replica 1, replica 0 cancels the expiry.
            c.make(0, |s, _, ts, now| match cancel {
                "set" => s.set_string(b("w"), TtlChange::Clear, ts, now),
                _ => s.set_expiry(TtlChange::Clear, ts, now),
            });
            c.now += 6_000;
            // Replica 1 sees the expiry pass and purges.
            c.r[1].expire(c.now);
            assert_eq!(c.r[1].string(c.now), None);
            c.sync_all();
            let want = if cancel == "set" { b("w") } else { b("v") };
            for r in &c.r {
                assert_eq!(r.string(c.now), Some(want.clone()), "{cancel}");
                assert_eq!(r.expires_at(c.now), None, "{cancel}");
            }
        }
    }

    #[test]
    fn a_time_to_live_a_set_voided_stays_void() {
        // SET EX, SET, then DEL, INCR / FLUSH, INCR / DEL, SADD: the new key has no TTL.
        for then in ["del-incr", "flush-incr", "del-sadd"] {
            let mut c = Three::new();
            let until = c.now + 100_000;
            c.make(0, |s, _, ts, now| {
                s.set_string(b("v"), TtlChange::At(until), ts, now)
            });
            c.now += 1;
            c.make(0, |s, _, ts, now| {
                s.set_string(b("w"), TtlChange::Clear, ts, now)
            });
            c.now += 1;
            match then {
                "flush-incr" => {
                    let cut = c.clocks[0].now(c.now);
                    c.r[0].clear_before(&cut);
                }
                _ => {
                    c.make(0, |s, _, ts, now| s.delete(false, ts, now));
                }
            }
            c.now += 1;
            if then == "del-sadd" {
                c.make(0, |s, a, ts, now| {
                    s.update_set(a, &[b("m")], &[], ts, now).expect("sadd").0
                });
            } else {
                c.make(0, |s, a, ts, now| incr(s, a, ts, now, 1));
            }
            c.sync_all();
            c.now = until + 1;
            for r in &c.r {
                assert_eq!(r.expires_at(c.now - 2), None, "{then}: a TTL came back");
                assert!(r.kind_at(c.now).is_some(), "{then}: the key expired");
            }
        }
    }

    #[test]
    fn an_increment_after_an_expiry_starts_from_zero_and_a_later_set_elsewhere_wins() {
        let mut c = Three::new();
        let until = c.now + 1_000;
        c.make(0, |s, _, ts, now| {
            s.set_string(b("5"), TtlChange::At(until), ts, now)
        });
        c.make(0, |s, a, ts, now| incr(s, a, ts, now, 2));
        c.sync_all();
        // Replica 1 sets the key after the expiry; replica 0, not knowing, increments it
        // later: Redis, in that order, gives 41.
        c.now = until + 5;
        let set = c.make(1, |s, _, ts, now| {
            s.set_string(b("40"), TtlChange::Clear, ts, now)
        });
        c.now += 5;
        c.make(0, |s, a, ts, now| incr(s, a, ts, now, 1));
        assert_eq!(c.r[0].string(c.now), Some(b("1")));
        c.give(0, &set);
        c.sync_all();
        for r in &c.r {
            assert_eq!(r.string(c.now), Some(b("41")));
        }
    }
}

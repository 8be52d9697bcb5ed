//! Property tests: every merge is commutative, associative and idempotent on states reachable
//! through the types' own operations, and the causal guarantees of `/kv` hold. (The typed
//! namespace's value has its own: `tests/typed_laws.rs`.)
//!
//! States come from simulated histories: three replicas, each with its own actor, apply random
//! operations and random merges (anti-entropy) with each other, so dots are issued exactly as a
//! real cluster issues them.

use std::collections::BTreeSet;
use std::fmt::Debug;

use bytes::Bytes;
use proptest::prelude::*;
use quorumkv::causality::{CausalContext, Dot};
use quorumkv::crdt::{Crdt, MvRegister, PnCounter, Version};

const REPLICAS: usize = 3;

fn actor(i: usize) -> String {
    format!("r{i}")
}

fn merged<T: Crdt>(a: &T, b: &T) -> T {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn check_laws<T: Crdt + Debug>(a: &T, b: &T, c: &T) -> Result<(), TestCaseError> {
    prop_assert_eq!(merged(a, b), merged(b, a), "commutative");
    prop_assert_eq!(
        merged(&merged(a, b), c),
        merged(a, &merged(b, c)),
        "associative"
    );
    prop_assert_eq!(&merged(a, a), a, "idempotent");
    prop_assert_eq!(
        &merged(&merged(a, b), b),
        &merged(a, b),
        "idempotent after a merge"
    );
    Ok(())
}

/// One step of a simulated history.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `at` applies an update; `seed` picks its arguments.
    Update { at: usize, seed: u8 },
    /// Replica `to` merges in replica `from`'s whole state.
    Sync { from: usize, to: usize },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0..REPLICAS, any::<u8>()).prop_map(|(at, seed)| Step::Update { at, seed }),
            1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
        ],
        0..40,
    )
}

/// Runs a history; `update` makes a delta from a replica's state. Returns the replicas' final
/// states and every delta made, in order.
fn run<T: Crdt + Default>(
    history: &[Step],
    mut update: impl FnMut(usize, &T, u8) -> T,
) -> (Vec<T>, Vec<T>) {
    let mut replicas = vec![T::default(); REPLICAS];
    let mut deltas = Vec::new();
    for step in history {
        match *step {
            Step::Update { at, seed } => {
                let delta = update(at, &replicas[at], seed);
                replicas[at].merge(&delta);
                deltas.push(delta);
            }
            Step::Sync { from, to } => {
                let src = replicas[from].clone();
                replicas[to].merge(&src);
            }
        }
    }
    (replicas, deltas)
}

fn mv_update(at: usize, state: &MvRegister, seed: u8) -> MvRegister {
    let value = Version::new(vec![seed], None);
    match seed % 4 {
        // A blind write: no context.
        0 => state
            .write(&actor(at), &CausalContext::new(), value)
            .expect("dots left"),
        // A read-modify-write against this replica's state.
        1 | 2 => state
            .write(&actor(at), state.context(), value)
            .expect("dots left"),
        // A delete of what this replica sees.
        _ => MvRegister::delete(state.context(), u64::from(seed)),
    }
}

fn counter_update(at: usize, state: &PnCounter, seed: u8) -> PnCounter {
    state
        .add(&actor(at), i64::from(seed) - 128)
        .expect("small deltas never overflow")
}

fn all_merged<T: Crdt + Default>(states: &[T]) -> T {
    states.iter().fold(T::default(), |acc, s| merged(&acc, s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mvreg_merge_laws(history in steps()) {
        let (r, deltas) = run(&history, mv_update);
        check_laws(&r[0], &r[1], &r[2])?;
        // Deltas, delivered in any order and duplicated, give the state of the full merge.
        let mut from_deltas = MvRegister::new();
        for d in deltas.iter().rev().chain(deltas.iter()) {
            from_deltas.merge(d);
        }
        prop_assert_eq!(from_deltas, all_merged(&r));
    }

    #[test]
    fn counter_merge_laws_and_exact_sum(history in steps()) {
        let (r, deltas) = run(&history, counter_update);
        check_laws(&r[0], &r[1], &r[2])?;
        let expected: i128 = history
            .iter()
            .filter_map(|s| match s {
                Step::Update { seed, .. } => Some(i128::from(*seed) - 128),
                _ => None,
            })
            .sum();
        let mut from_deltas = PnCounter::new();
        for d in deltas.iter().chain(deltas.iter().rev()) {
            from_deltas.merge(d);
        }
        prop_assert_eq!(from_deltas.value(), expected);
        prop_assert_eq!(all_merged(&r).value(), expected);
    }

    #[test]
    fn context_join_laws_and_token_round_trip(
        sets in prop::collection::vec(
            prop::collection::vec((0usize..3, 1u64..12), 0..12), 3)
    ) {
        let ctx: Vec<CausalContext> = sets
            .iter()
            .map(|dots| {
                let mut c = CausalContext::new();
                for (a, n) in dots {
                    c.insert(Dot::new(actor(*a), *n));
                }
                c
            })
            .collect();
        let join = |a: &CausalContext, b: &CausalContext| { let mut x = a.clone(); x.join(b); x };
        prop_assert_eq!(join(&ctx[0], &ctx[1]), join(&ctx[1], &ctx[0]));
        prop_assert_eq!(join(&join(&ctx[0], &ctx[1]), &ctx[2]), join(&ctx[0], &join(&ctx[1], &ctx[2])));
        prop_assert_eq!(join(&ctx[0], &ctx[0]), ctx[0].clone());
        let j = join(&ctx[0], &ctx[1]);
        prop_assert!(j.covers(&ctx[0]) && j.covers(&ctx[1]));
        for (c, dots) in ctx.iter().zip(&sets) {
            prop_assert_eq!(&CausalContext::from_token(&c.to_token()).unwrap(), c);
            for (a, n) in dots {
                prop_assert!(c.contains(&Dot::new(actor(*a), *n)));
            }
        }
    }

    /// A write made with the context of a read supersedes exactly the versions that read saw:
    /// after everything is merged, none of them is left, the new value is, and every version
    /// the read did not see (a concurrent write) is still there unless a later write saw it.
    #[test]
    fn write_with_read_context_supersedes_exactly_what_was_read(
        history in steps(), reader in 0..REPLICAS, writer in 0..REPLICAS, concurrent in 0..REPLICAS
    ) {
        let (mut r, _) = run(&history, mv_update);
        let read = r[reader].clone();
        let seen: BTreeSet<Dot> = read.live(0).map(|(d, _)| d.clone()).collect();
        // A write the reader did not see, made after the read.
        let other = r[concurrent].write(&actor(concurrent), &CausalContext::new(), Version::new("c", None)).unwrap();
        r[concurrent].merge(&other);
        let live_before: BTreeSet<Dot> = all_merged(&r).live(0).map(|(d, _)| d.clone()).collect();
        let delta = r[writer].write(&actor(writer), read.context(), Version::new("new", None)).unwrap();
        r[writer].merge(&delta);
        let live: BTreeSet<Dot> = all_merged(&r).live(0).map(|(d, _)| d.clone()).collect();
        let new_dot = delta.versions().keys().next().unwrap().clone();
        let concurrent_dot = other.versions().keys().next().unwrap().clone();
        prop_assert!(live.contains(&concurrent_dot), "a concurrent write was lost");
        // Exactly: what was live, minus what the read saw, plus the new version.
        let mut expected: BTreeSet<Dot> = live_before.difference(&seen).cloned().collect();
        expected.insert(new_dot);
        prop_assert_eq!(live, expected);
    }

    #[test]
    fn two_writes_without_context_become_siblings(history in steps(), a in 0..REPLICAS, b in 0..REPLICAS) {
        let (mut r, _) = run(&history, mv_update);
        let d1 = r[a].write(&actor(a), &CausalContext::new(), Version::new("one", None)).unwrap();
        r[a].merge(&d1);
        let d2 = r[b].write(&actor(b), &CausalContext::new(), Version::new("two", None)).unwrap();
        r[b].merge(&d2);
        let all = all_merged(&r);
        let values: BTreeSet<Bytes> = all.live(0).map(|(_, v)| v.value.clone()).collect();
        prop_assert!(values.contains(&Bytes::from("one")) && values.contains(&Bytes::from("two")));
    }

    /// Merging a stale copy into a newer state of the same replica changes nothing: it can
    /// neither hide a newer version nor bring back a superseded one.
    #[test]
    fn stale_state_never_hides_a_newer_version(
        before in steps(), after in steps(), at in 0..REPLICAS
    ) {
        let (r, _) = run(&before, mv_update);
        let stale = r[at].clone();
        let mut newer = r.clone();
        for step in &after {
            match *step {
                Step::Update { at, seed } => {
                    let d = mv_update(at, &newer[at], seed);
                    newer[at].merge(&d);
                }
                Step::Sync { from, to } => {
                    let src = newer[from].clone();
                    newer[to].merge(&src);
                }
            }
        }
        for s in &newer {
            prop_assert_eq!(&merged(s, &stale), &merged(s, &r[at]));
        }
        let latest = newer[at].clone();
        prop_assert_eq!(merged(&latest, &stale), latest.clone());
    }

    /// A delete made with a read's context is never undone by replicas that still hold what
    /// was deleted.
    #[test]
    fn delete_with_context_does_not_resurrect(history in steps(), at in 0..REPLICAS) {
        let (mut r, _) = run(&history, mv_update);
        let stale = r.clone();
        let deleted: BTreeSet<Dot> = r[at].live(0).map(|(d, _)| d.clone()).collect();
        let del = MvRegister::delete(r[at].context(), 1_000);
        r[at].merge(&del);
        prop_assert!(r[at].is_tombstone(0));
        let mut healed = r[at].clone();
        for s in stale.iter().rev() {
            healed.merge(s);
        }
        let live: BTreeSet<Dot> = healed.live(0).map(|(d, _)| d.clone()).collect();
        prop_assert!(live.is_disjoint(&deleted), "deleted versions came back: {:?}", live);
    }
}

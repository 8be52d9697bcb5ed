//! Waiting for a quorum. A [`Tally`] collects the answers of one operation's replicas as
//! their calls report them (from whichever task receives each answer), wakes the waiting
//! request as soon as enough have succeeded (or enough have failed that success is
//! impossible), and hands the late answers to whoever asked for them (a read's repair) once
//! the last is in.
//!
//! Replica calls report into the tally instead of being futures the request polls: a quorum
//! write then costs no future, channel, timer or task per replica, and the answers that come
//! after the quorum need no task of their own to be received.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::time::Instant;

use super::NodeId;

/// One replica's answer: its id and the result of the call.
pub type Answer<T> = (NodeId, Result<T, String>);

/// What a tally waits for: answers in all, and, for zone-local consistency
/// (`local_quorum`, `each_quorum`), answers from the replicas of given zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// Answers needed in all.
    pub total: usize,
    /// Zones and the answers each must give.
    pub per_zone: Vec<(Arc<str>, usize)>,
    /// The zone of each replica, by id.
    pub zone_of: HashMap<NodeId, Arc<str>>,
}

impl Needed {
    /// `k` answers from anywhere.
    pub fn count(k: usize) -> Self {
        Needed {
            total: k,
            ..Needed::default()
        }
    }

    fn count_in_zone<'a>(&self, zone: &str, ids: impl Iterator<Item = &'a NodeId>) -> usize {
        ids.filter(|id| self.zone_of.get(*id).is_some_and(|z| **z == *zone))
            .count()
    }

    /// Whether these answers are enough.
    pub fn met<T>(&self, ok: &[(NodeId, T)]) -> bool {
        ok.len() >= self.total
            && self
                .per_zone
                .iter()
                .all(|(zone, k)| self.count_in_zone(zone, ok.iter().map(|(id, _)| id)) >= *k)
    }

    /// Whether the answers still to come could meet what is needed.
    fn possible<T>(&self, ok: &[(NodeId, T)], pending: &[NodeId]) -> bool {
        ok.len() + pending.len() >= self.total
            && self.per_zone.iter().all(|(zone, k)| {
                self.count_in_zone(zone, ok.iter().map(|(id, _)| id))
                    + self.count_in_zone(zone, pending.iter())
                    >= *k
            })
    }
}

/// What [`Tally::wait`] collected before it returned.
pub struct Gathered<T> {
    /// The successful answers, in the order they came.
    pub ok: Vec<(NodeId, T)>,
    /// The replicas that failed, and why.
    pub failed: Vec<(NodeId, String)>,
}

impl<T> Gathered<T> {
    /// The answers of an operation that asked no other node (a key whose only replica is
    /// this one): nothing to wait for, no tally needed.
    pub fn ready(ready: Vec<Answer<T>>) -> Self {
        let mut g = Gathered {
            ok: Vec::with_capacity(ready.len()),
            failed: Vec::new(),
        };
        for (id, result) in ready {
            match result {
                Ok(v) => g.ok.push((id, v)),
                Err(e) => g.failed.push((id, e)),
            }
        }
        g
    }
}

/// Successful answers, by replica.
type Answers<T> = Vec<(NodeId, T)>;

/// What to do with every successful answer once all replicas have answered.
type AllIn<T> = Box<dyn FnOnce(Answers<T>) + Send>;

/// The answers of one operation's replicas. Shared (in an `Arc`) by the request that waits
/// and the replica calls that report.
pub struct Tally<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    needed: Needed,
    ok: Vec<(NodeId, T)>,
    failed: Vec<(NodeId, String)>,
    /// Replicas that have not answered yet.
    pending: Vec<NodeId>,
    waker: Option<Waker>,
    /// The waiter has returned: what comes now is late.
    returned: bool,
    /// Late answers are kept (for [`Tally::when_all_in`]) rather than dropped.
    keep_late: bool,
    all_in: Option<AllIn<T>>,
}

impl<T> State<T> {
    fn decided(&self) -> bool {
        self.pending.is_empty()
            || self.needed.met(&self.ok)
            || !self.needed.possible(&self.ok, &self.pending)
    }

    /// The callback to run now, if every answer is in and one is waiting for that.
    fn all_in_now(&mut self) -> Option<(AllIn<T>, Answers<T>)> {
        if !self.pending.is_empty() {
            return None;
        }
        let f = self.all_in.take()?;
        Some((f, std::mem::take(&mut self.ok)))
    }
}

impl<T: Send + 'static> Tally<T> {
    /// A tally expecting answers from `pending`, with the `ready` ones (the coordinator's own
    /// replica) already in. `keep_late`: answers after the wait are kept for
    /// [`Tally::when_all_in`] (a read's repair) instead of dropped (a write needs none).
    pub fn new(
        needed: Needed,
        ready: Vec<Answer<T>>,
        pending: Vec<NodeId>,
        keep_late: bool,
    ) -> Arc<Self> {
        let Gathered { mut ok, failed } = Gathered::ready(ready);
        ok.reserve(pending.len());
        Arc::new(Tally {
            state: Mutex::new(State {
                needed,
                ok,
                failed,
                pending,
                waker: None,
                returned: false,
                keep_late,
                all_in: None,
            }),
        })
    }

    /// Answers are plain data, valid even if a reporter panicked: a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records replica `id`'s answer. Each replica reports once; a second report, or one from a
    /// replica that was not asked, is ignored.
    pub fn answer(&self, id: NodeId, result: Result<T, String>) {
        let mut state = self.lock();
        let Some(i) = state.pending.iter().position(|p| *p == id) else {
            return;
        };
        state.pending.swap_remove(i);
        let late = state.returned;
        if late && !state.keep_late {
            return;
        }
        match result {
            Ok(v) => state.ok.push((id, v)),
            Err(_) if late => {}
            Err(e) => state.failed.push((id, e)),
        }
        let wake = if late {
            None
        } else if state.decided() {
            state.waker.take()
        } else {
            None
        };
        let run = state.all_in_now();
        drop(state);
        if let Some(w) = wake {
            w.wake();
        }
        if let Some((f, all)) = run {
            f(all);
        }
    }

    /// Waits until what is needed has succeeded, success became impossible, or `deadline`
    /// passed, and takes the answers so far. Answers after it are late.
    pub async fn wait(&self, deadline: Instant) -> Gathered<T> {
        let take = |state: &mut State<T>| {
            state.returned = true;
            state.waker = None;
            Gathered {
                ok: std::mem::take(&mut state.ok),
                failed: std::mem::take(&mut state.failed),
            }
        };
        {
            let mut state = self.lock();
            if state.decided() {
                return take(&mut state);
            }
        }
        // One timer for the whole wait, registered only when there is something to wait for.
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if state.decided() || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(take(&mut state));
            }
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Hands `answered` (what [`Tally::wait`] returned, or part of it) together with every late
    /// success to `f` once every replica has answered: at once if all have. Only for a tally
    /// that keeps late answers.
    pub fn when_all_in(
        &self,
        answered: Vec<(NodeId, T)>,
        f: impl FnOnce(Vec<(NodeId, T)>) + Send + 'static,
    ) {
        let mut state = self.lock();
        let mut all = answered;
        all.append(&mut state.ok);
        state.ok = all;
        state.all_in = Some(Box::new(f));
        let run = state.all_in_now();
        drop(state);
        if let Some((f, all)) = run {
            f(all);
        }
    }

    /// Replicas that have not answered yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether answers came or are still to come after [`Tally::wait`] returned.
    pub fn has_late(&self) -> bool {
        let state = self.lock();
        !state.pending.is_empty() || !state.ok.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Reports `id`'s answer after `ms`.
    fn after(tally: &Arc<Tally<u32>>, id: &str, ms: u64, ok: bool) {
        let (tally, id) = (Arc::clone(tally), NodeId::from(id));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            tally.answer(
                id,
                if ok {
                    Ok(ms as u32)
                } else {
                    Err("down".into())
                },
            );
        });
    }

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::from(*n)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_quorum_and_hands_over_the_late_answers() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let tally = Tally::new(
            Needed::count(2),
            vec![("me".into(), Ok(0))],
            ids(&["a", "b"]),
            true,
        );
        after(&tally, "a", 10, true);
        after(&tally, "b", 500, true);
        let g = tally.wait(deadline).await;
        assert_eq!(g.ok.len(), 2);
        assert_eq!(&*g.ok[1].0, "a");
        assert_eq!(tally.pending(), 1);
        assert!(tally.has_late());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tally.when_all_in(g.ok, move |all| {
            let _ = tx.send(all);
        });
        let all = rx.await.expect("all answers");
        let names: Vec<&str> = all.iter().map(|(id, _)| &**id).collect();
        assert_eq!(names, ["me", "a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_in_runs_at_once_when_nothing_is_pending() {
        let tally = Tally::new(Needed::count(1), vec![("me".into(), Ok(0))], vec![], true);
        let g = tally.wait(Instant::now() + Duration::from_secs(1)).await;
        assert!(!tally.has_late());
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        tally.when_all_in(g.ok, move |all| {
            assert_eq!(all.len(), 1);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn late_answers_of_a_write_are_dropped_and_repeats_ignored() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let tally = Tally::new(Needed::count(1), vec![], ids(&["a", "b"]), false);
        after(&tally, "a", 10, true);
        after(&tally, "a", 20, false);
        after(&tally, "b", 30, true);
        let g = tally.wait(deadline).await;
        assert_eq!(g.ok.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tally.pending(), 0);
        assert!(tally.lock().ok.is_empty(), "a late write answer was kept");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_early_when_quorum_is_impossible() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let tally = Tally::new(Needed::count(2), vec![], ids(&["a", "b"]), false);
        after(&tally, "a", 10, false);
        after(&tally, "b", 5_000, true);
        let g = tally.wait(deadline).await;
        assert_eq!(g.ok.len(), 0);
        assert_eq!(g.failed.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let tally = Tally::new(Needed::count(1), vec![], ids(&["a"]), false);
        after(&tally, "a", 5_000, true);
        let g = tally.wait(deadline).await;
        assert!(g.ok.is_empty());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zone_quorum_waits_for_its_zone_and_fails_early_without_it() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let needed = Needed {
            total: 1,
            per_zone: vec![("eu".into(), 1)],
            zone_of: [("me", "us"), ("a", "eu"), ("b", "us")]
                .into_iter()
                .map(|(id, z)| (id.into(), z.into()))
                .collect(),
        };
        // Our own answer (us) and a fast one from us do not do: the one from eu does.
        let tally = Tally::new(
            needed.clone(),
            vec![("me".into(), Ok(0))],
            ids(&["b", "a"]),
            false,
        );
        after(&tally, "b", 5, true);
        after(&tally, "a", 50, true);
        let g = tally.wait(deadline).await;
        assert_eq!(g.ok.len(), 3);
        assert_eq!(&*g.ok[2].0, "a");
        // The eu replica fails: no point waiting for the rest.
        let tally = Tally::new(needed, vec![("me".into(), Ok(0))], ids(&["a", "b"]), false);
        after(&tally, "a", 5, false);
        after(&tally, "b", 500, true);
        let start = Instant::now();
        let g = tally.wait(deadline).await;
        assert_eq!(g.failed.len(), 1);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}

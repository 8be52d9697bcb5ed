//! Waiting for a quorum: run one call per replica at once, return as soon as enough have
//! succeeded (or enough have failed that success is impossible, or the deadline passed), and
//! hand back what is still in flight so the caller can keep listening in the background.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::NodeId;
use crate::transport::BoxFuture;

/// One replica's answer: its id and the result of the call.
pub type Answer<T> = (NodeId, Result<T, String>);

/// A call that answers with its replica's id. The calls run inside the task that gathers
/// them rather than in tasks of their own: a quorum write on the hot path then costs no
/// spawn, channel or cross-task wake-up per replica.
struct Tagged<T> {
    id: NodeId,
    call: BoxFuture<Result<T, String>>,
}

impl<T> Future for Tagged<T> {
    type Output = Answer<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<T>> {
        let result = std::task::ready!(self.call.as_mut().poll(cx));
        Poll::Ready((std::mem::take(&mut self.id), result))
    }
}

/// Calls still running after [`gather`] returned. Dropping it does not cancel them: what is
/// left runs to the end in a task of its own, so a write still reaches (or hints for) every
/// replica after its quorum answered.
pub struct InFlight<T: Send + 'static> {
    /// `None` when there never were any (a read or write of this node's replica alone):
    /// an empty `FuturesUnordered` still costs two allocations.
    calls: Option<FuturesUnordered<Tagged<T>>>,
}

impl<T: Send + 'static> InFlight<T> {
    /// Calls still running.
    pub fn pending(&self) -> usize {
        self.calls.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// The next late answer, or `None` once all are in or the deadline passed.
    pub async fn next(&mut self, deadline: Instant) -> Option<Answer<T>> {
        let calls = self.calls.as_mut().filter(|c| !c.is_empty())?;
        tokio::time::timeout_at(deadline, calls.next())
            .await
            .ok()
            .flatten()
    }
}

impl<T: Send + 'static> Drop for InFlight<T> {
    fn drop(&mut self) {
        let Some(mut calls) = self.calls.take().filter(|c| !c.is_empty()) else {
            return;
        };
        // Outside a runtime (a test tearing down) there is nothing left to run them on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { while calls.next().await.is_some() {} });
        }
    }
}

/// What a [`gather`] waits for: answers in all, and, for zone-local consistency
/// (`local_quorum`, `each_quorum`), answers from the replicas of given zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
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

/// What [`gather`] collected before it returned.
pub struct Gathered<T: Send + 'static> {
    pub ok: Vec<(NodeId, T)>,
    pub failed: Vec<(NodeId, String)>,
    pub rest: InFlight<T>,
}

/// Starts every call and waits until what is `needed` succeeded, success became impossible,
/// or `deadline` passed. Answers in `ready` (the coordinator's own replica) count first.
pub async fn gather<T: Send + 'static>(
    ready: Vec<Answer<T>>,
    calls: Vec<(NodeId, BoxFuture<Result<T, String>>)>,
    needed: &Needed,
    deadline: Instant,
) -> Gathered<T> {
    let mut waiting: Vec<NodeId> = calls.iter().map(|(id, _)| Arc::clone(id)).collect();
    let mut g = Gathered {
        ok: Vec::with_capacity(ready.len() + calls.len()),
        failed: Vec::new(),
        rest: InFlight {
            calls: (!calls.is_empty()).then(|| {
                calls
                    .into_iter()
                    .map(|(id, call)| Tagged { id, call })
                    .collect()
            }),
        },
    };
    for (id, result) in ready {
        match result {
            Ok(v) => g.ok.push((id, v)),
            Err(e) => g.failed.push((id, e)),
        }
    }
    // One timer for the whole wait, not one per answer (registered only if polled).
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    while !needed.met(&g.ok) && needed.possible(&g.ok, &waiting) {
        let Some(calls) = g.rest.calls.as_mut() else {
            break;
        };
        let next = tokio::select! {
            biased;
            next = calls.next() => next,
            () = &mut timer => None,
        };
        let Some((id, result)) = next else { break };
        if let Some(i) = waiting.iter().position(|w| *w == id) {
            waiting.swap_remove(i);
        }
        match result {
            Ok(v) => g.ok.push((id, v)),
            Err(e) => g.failed.push((id, e)),
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn after(ms: u64, ok: bool) -> BoxFuture<Result<u32, String>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if ok {
                Ok(ms as u32)
            } else {
                Err("down".into())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_quorum_and_keeps_the_rest() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let calls = vec![
            ("a".into(), after(10, true)),
            ("b".into(), after(500, true)),
        ];
        let mut g = gather(
            vec![("me".into(), Ok(0))],
            calls,
            &Needed::count(2),
            deadline,
        )
        .await;
        assert_eq!(g.ok.len(), 2);
        assert_eq!(&*g.ok[1].0, "a");
        let late = g.rest.next(deadline).await.expect("late answer");
        assert_eq!(&*late.0, "b");
        assert!(g.rest.next(deadline).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn calls_left_when_the_caller_is_done_still_run_to_the_end() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let deadline = Instant::now() + Duration::from_secs(1);
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let slow: BoxFuture<Result<u32, String>> = Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(500)
        });
        let calls = vec![("a".into(), after(10, true)), ("b".into(), slow)];
        let g = gather(vec![], calls, &Needed::count(1), deadline).await;
        assert_eq!(g.ok.len(), 1);
        assert_eq!(g.rest.pending(), 1);
        drop(g);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            finished.load(Ordering::SeqCst),
            "the dropped call was cancelled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_early_when_quorum_is_impossible() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let calls = vec![
            ("a".into(), after(10, false)),
            ("b".into(), after(5_000, true)),
        ];
        let g = gather(vec![], calls, &Needed::count(2), deadline).await;
        assert_eq!(g.ok.len(), 0);
        assert_eq!(g.failed.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let g = gather(
            vec![],
            vec![("a".into(), after(5_000, true))],
            &Needed::count(1),
            deadline,
        )
        .await;
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
        let calls = vec![("b".into(), after(5, true)), ("a".into(), after(50, true))];
        let g = gather(vec![("me".into(), Ok(0))], calls, &needed, deadline).await;
        assert_eq!(g.ok.len(), 3);
        assert_eq!(&*g.ok[2].0, "a");
        // The eu replica fails: no point waiting for the rest.
        let calls = vec![
            ("a".into(), after(5, false)),
            ("b".into(), after(500, true)),
        ];
        let start = Instant::now();
        let g = gather(vec![("me".into(), Ok(0))], calls, &needed, deadline).await;
        assert_eq!(g.failed.len(), 1);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}

//! Waiting for a quorum: run one call per replica at once, return as soon as enough have
//! succeeded (or enough have failed that success is impossible, or the deadline passed), and
//! hand back what is still in flight so the caller can keep listening in the background.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transport::BoxFuture;

/// One replica's answer: its id and the result of the call.
pub type Answer<T> = (String, Result<T, String>);

/// Calls still running after [`gather`] returned.
pub struct InFlight<T> {
    rx: mpsc::UnboundedReceiver<Answer<T>>,
    pending: usize,
}

impl<T> InFlight<T> {
    /// Calls still running.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The next late answer, or `None` once all are in or the deadline passed.
    pub async fn next(&mut self, deadline: Instant) -> Option<Answer<T>> {
        if self.pending == 0 {
            return None;
        }
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(answer)) => {
                self.pending -= 1;
                Some(answer)
            }
            _ => None,
        }
    }
}

/// What a [`gather`] waits for: answers in all, and, for zone-local consistency
/// (`local_quorum`, `each_quorum`), answers from the replicas of given zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    pub total: usize,
    /// Zones and the answers each must give.
    pub per_zone: Vec<(String, usize)>,
    /// The zone of each replica, by id.
    pub zone_of: HashMap<String, String>,
}

impl Needed {
    /// `k` answers from anywhere.
    pub fn count(k: usize) -> Self {
        Needed {
            total: k,
            ..Needed::default()
        }
    }

    fn count_in_zone<'a>(&self, zone: &str, ids: impl Iterator<Item = &'a String>) -> usize {
        ids.filter(|id| self.zone_of.get(*id).is_some_and(|z| z == zone))
            .count()
    }

    /// Whether these answers are enough.
    pub fn met<T>(&self, ok: &[(String, T)]) -> bool {
        ok.len() >= self.total
            && self
                .per_zone
                .iter()
                .all(|(zone, k)| self.count_in_zone(zone, ok.iter().map(|(id, _)| id)) >= *k)
    }

    /// Whether the answers still to come could meet what is needed.
    fn possible<T>(&self, ok: &[(String, T)], pending: &[String]) -> bool {
        ok.len() + pending.len() >= self.total
            && self.per_zone.iter().all(|(zone, k)| {
                self.count_in_zone(zone, ok.iter().map(|(id, _)| id))
                    + self.count_in_zone(zone, pending.iter())
                    >= *k
            })
    }
}

/// What [`gather`] collected before it returned.
pub struct Gathered<T> {
    pub ok: Vec<(String, T)>,
    pub failed: Vec<(String, String)>,
    pub rest: InFlight<T>,
}

/// Starts every call and waits until what is `needed` succeeded, success became impossible,
/// or `deadline` passed. Answers in `ready` (the coordinator's own replica) count first.
pub async fn gather<T: Send + 'static>(
    ready: Vec<Answer<T>>,
    calls: Vec<(String, BoxFuture<Result<T, String>>)>,
    needed: &Needed,
    deadline: Instant,
) -> Gathered<T> {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = calls.len();
    let mut waiting: Vec<String> = calls.iter().map(|(id, _)| id.clone()).collect();
    for (id, call) in calls {
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = call.await;
            let _ = tx.send((id, result));
        });
    }
    let mut g = Gathered {
        ok: Vec::new(),
        failed: Vec::new(),
        rest: InFlight { rx, pending },
    };
    for (id, result) in ready {
        match result {
            Ok(v) => g.ok.push((id, v)),
            Err(e) => g.failed.push((id, e)),
        }
    }
    while !needed.met(&g.ok) && needed.possible(&g.ok, &waiting) {
        let Some((id, result)) = g.rest.next(deadline).await else {
            break;
        };
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
            ("a".to_string(), after(10, true)),
            ("b".to_string(), after(500, true)),
        ];
        let mut g = gather(
            vec![("me".into(), Ok(0))],
            calls,
            &Needed::count(2),
            deadline,
        )
        .await;
        assert_eq!(g.ok.len(), 2);
        assert_eq!(g.ok[1].0, "a");
        let late = g.rest.next(deadline).await.expect("late answer");
        assert_eq!(late.0, "b");
        assert!(g.rest.next(deadline).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_early_when_quorum_is_impossible() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let calls = vec![
            ("a".to_string(), after(10, false)),
            ("b".to_string(), after(5_000, true)),
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
            vec![("a".to_string(), after(5_000, true))],
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
                .map(|(id, z)| (id.to_string(), z.to_string()))
                .collect(),
        };
        // Our own answer (us) and a fast one from us do not do: the one from eu does.
        let calls = vec![
            ("b".to_string(), after(5, true)),
            ("a".to_string(), after(50, true)),
        ];
        let g = gather(vec![("me".into(), Ok(0))], calls, &needed, deadline).await;
        assert_eq!(g.ok.len(), 3);
        assert_eq!(g.ok[2].0, "a");
        // The eu replica fails: no point waiting for the rest.
        let calls = vec![
            ("a".to_string(), after(5, false)),
            ("b".to_string(), after(500, true)),
        ];
        let start = Instant::now();
        let g = gather(vec![("me".into(), Ok(0))], calls, &needed, deadline).await;
        assert_eq!(g.failed.len(), 1);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}

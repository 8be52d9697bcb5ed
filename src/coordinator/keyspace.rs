//! The whole keyspace of a key space, across the cluster: scanning every key (`SCAN`, `KEYS`,
//! `DBSIZE`) and flushing the typed namespace (`FLUSHALL`).
//!
//! A scan walks ring positions upwards, arc by arc, and asks every replica of each arc for its
//! keys there; the union of at least R answers holds every key acknowledged at W before the
//! scan reached it (W + R > N), also while a replica is down or the ring changes, since the
//! cursor is a ring position rather than a place in any one node's store.
//!
//! A flush takes a cutoff after every timestamp any live member has issued, applies it on every
//! live member, and spreads it through gossip, so members that were down or cut off apply it
//! once they are back: every write acknowledged before the flush is older than the cutoff and
//! gone, every write after it is newer and kept.

use std::time::Duration;

use tokio::time::Instant;

use super::placement::needed;
use super::{Coordinator, deadline, is_reachable, unavailable};
use crate::causality::Timestamp;
use crate::membership::MemberState;
use crate::ops::{Consistency, OpError};
use crate::rpc::{ClockNow, Flush, ScanKeys};
use crate::storage::{Kind, ScannedKey};
use crate::transport::{Ask, Peer};

/// One page of a cluster-wide scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The cursor to go on with; 0 when the whole ring has been walked.
    pub next: u64,
    /// The keys found, in ring order.
    pub keys: Vec<ScannedKey>,
}

impl Coordinator {
    /// About `count` of the cluster's live keys of `kind` from `cursor` on (0 starts a scan).
    pub async fn scan(
        &self,
        kind: Kind,
        cursor: u64,
        count: usize,
        c: &Consistency,
    ) -> Result<ScanPage, OpError> {
        let plan = self.plan(c)?;
        let deadline = deadline(plan.timeout_ms);
        let view = self.view();
        let count = count.max(1);
        let mut pos = cursor.saturating_sub(1);
        let mut keys: Vec<ScannedKey> = Vec::new();
        loop {
            let upto = view.ring.arc_end(pos);
            let placement = self.placement(&view, &crate::storage::Key::from_position(pos), plan.n);
            let needed = needed(&plan.r, &placement.replicas)?;
            let want = count.saturating_sub(keys.len()).max(1);
            let calls = placement.replicas.iter().map(|t| {
                let msg = ScanKeys {
                    kind,
                    from: pos,
                    upto,
                    limit: want,
                };
                let id = t.id.clone();
                let call = self.call(t, msg, deadline, "scan");
                async move { (id, call.await) }
            });
            let answers = futures_util::future::join_all(calls).await;
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for (id, answer) in answers {
                match answer {
                    Ok(page) => ok.push((id, page)),
                    Err(e) => failed.push((id, e)),
                }
            }
            if !needed.met(&ok) {
                return Err(unavailable(&needed, ok.len() as u32, &failed, "scan"));
            }
            // Complete up to the last position of the shortest truncated answer.
            let complete = ok
                .iter()
                .filter(|(_, (_, more))| *more)
                .filter_map(|(_, (page, _))| page.last().map(|k| k.position))
                .min()
                .unwrap_or(upto);
            let mut found: Vec<ScannedKey> = ok
                .into_iter()
                .flat_map(|(_, (page, _))| page)
                .filter(|k| k.position <= complete)
                .collect();
            found.sort_by(|a, b| (a.position, &a.name).cmp(&(b.position, &b.name)));
            found.dedup_by(|a, b| a.position == b.position && a.name == b.name);
            keys.extend(found);
            if complete < upto {
                return Ok(ScanPage {
                    next: complete.saturating_add(2).max(1),
                    keys,
                });
            }
            if upto == u64::MAX {
                return Ok(ScanPage { next: 0, keys });
            }
            pos = upto + 1;
            if keys.len() >= count {
                return Ok(ScanPage {
                    next: pos.saturating_add(1),
                    keys,
                });
            }
        }
    }

    /// Empties the typed namespace of the whole cluster: once this returns, every live member
    /// has applied it; members down or cut off apply it when gossip reaches them.
    pub async fn flush_all(&self, c: &Consistency) -> Result<(), OpError> {
        let plan = self.plan(c)?;
        let deadline = deadline(plan.timeout_ms);
        let view = self.view();
        let others: Vec<Peer> = view
            .members
            .iter()
            .filter(|m| m.info.id != *self.inner.me && is_reachable(m.state))
            .map(|m| Peer::new(&m.info.id, m.info.peer))
            .collect();
        let must_answer = |p: &Peer| {
            view.member(&p.id)
                .is_some_and(|m| m.state == MemberState::Alive)
        };
        let left = || deadline.saturating_duration_since(Instant::now());
        // A cutoff after every timestamp a live member has issued.
        let transport = &self.inner.transport;
        let clocks = futures_util::future::join_all(
            others.iter().map(|p| transport.ask(p, ClockNow, left())),
        )
        .await;
        let replica = &self.inner.replica;
        let mut failed = Vec::new();
        for (peer, clock) in others.iter().zip(clocks) {
            match clock {
                Ok(ts) => replica.observe_clock(&ts),
                Err(e) if must_answer(peer) => failed.push((peer.id.clone(), e.to_string())),
                Err(_) => {}
            }
        }
        if !failed.is_empty() {
            return Err(flush_unavailable(others.len(), &failed));
        }
        let cutoff: Timestamp = replica.timestamp(self.now_ms());
        replica.flush(&cutoff);
        let flushes = futures_util::future::join_all(others.iter().map(|p| {
            transport.ask(
                p,
                Flush {
                    before: cutoff.clone(),
                },
                left().max(Duration::from_millis(1)),
            )
        }))
        .await;
        for (peer, done) in others.iter().zip(flushes) {
            if let Err(e) = done
                && must_answer(peer)
            {
                failed.push((peer.id.clone(), e.to_string()));
            }
        }
        if let Some(membership) = &self.inner.membership {
            membership.flush(cutoff).await;
        }
        if !failed.is_empty() {
            return Err(flush_unavailable(others.len(), &failed));
        }
        Ok(())
    }
}

/// The error of a flush that live members did not confirm.
fn flush_unavailable(others: usize, failed: &[(std::sync::Arc<str>, String)]) -> OpError {
    let why: Vec<String> = failed.iter().map(|(id, e)| format!("{id}: {e}")).collect();
    OpError::Unavailable {
        needed: others as u32 + 1,
        acks: (others + 1 - failed.len()) as u32,
        message: format!(
            "the flush needs every live member and {} did not confirm it ({}); it reaches \
             them through gossip, but retry to be sure",
            failed.len(),
            why.join("; ")
        ),
    }
}

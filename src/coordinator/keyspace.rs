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

use std::sync::Arc;

use super::gather::{Gathered, Tally};
use super::placement::needed;
use super::{Coordinator, deadline, is_reachable, unavailable};
use crate::causality::Timestamp;
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
        // A page may hold fewer than `count` keys (Redis's SCAN may answer none): past half
        // the timeout the page ends where it got to, so a sparse keyspace over slow links
        // (each arc is a round trip) answers with a cursor instead of timing out.
        let budget = Instant::now() + Duration::from_millis(plan.timeout_ms / 2);
        let view = self.view();
        let count = count.max(1);
        let flushed = self.inner.replica.flushed();
        let mut pos = cursor.saturating_sub(1);
        let mut keys: Vec<ScannedKey> = Vec::new();
        loop {
            let upto = view.ring.arc_end(pos);
            let placement = self.placement(&view, &crate::storage::Key::from_position(pos), plan.n);
            let needed = needed(&plan.r, &placement.replicas)?;
            let want = count.saturating_sub(keys.len()).max(1);
            // Every replica is asked; the page is built as soon as R have answered (a dead
            // replica that gossip has not declared yet only answers at the deadline).
            let ids = placement.replicas.iter().map(|t| t.id.clone()).collect();
            let tally = Tally::new(needed.clone(), Vec::new(), ids, false);
            for t in &placement.replicas {
                let msg = ScanKeys {
                    kind,
                    from: pos,
                    upto,
                    limit: want,
                    flushed: flushed.clone(),
                };
                let (id, tally) = (t.id.clone(), Arc::clone(&tally));
                let call = self.call(t, msg, deadline, "scan");
                tokio::spawn(async move { tally.answer(id, call.await) });
            }
            let Gathered { ok, failed } = tally.wait(deadline).await;
            if !needed.met(&ok) {
                return Err(unavailable(&needed, ok.len() as u32, &failed, "scan"));
            }
            // Complete up to where the shortest truncated answer stopped looking.
            let complete = ok
                .iter()
                .filter_map(|(_, (_, looked))| *looked)
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
            if keys.len() >= count || Instant::now() >= budget {
                return Ok(ScanPage {
                    next: pos.saturating_add(1),
                    keys,
                });
            }
        }
    }

    /// Empties the typed namespace of the whole cluster: once this returns, every member that
    /// answered within the request's timeout has applied it; members down, cut off or too slow
    /// apply it when gossip reaches them (and until then, reads through a node that applied it
    /// clear what their answers bring back).
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
        let left = || deadline.saturating_duration_since(Instant::now());
        // A cutoff after every timestamp a member that answers has issued (one that does not
        // answer spent the whole timeout on this node's clock meanwhile).
        let transport = &self.inner.transport;
        let clocks = futures_util::future::join_all(
            others.iter().map(|p| transport.ask(p, ClockNow, left())),
        )
        .await;
        let replica = &self.inner.replica;
        let mut missed = Vec::new();
        for (peer, clock) in others.iter().zip(clocks) {
            match clock {
                Ok(ts) => replica.observe_clock(&ts),
                Err(e) => missed.push(format!("{}: {e}", peer.id)),
            }
        }
        let cutoff: Timestamp = replica.timestamp(self.now_ms());
        replica.flush(&cutoff);
        if let Some(membership) = &self.inner.membership {
            membership.flush(cutoff.clone()).await;
        }
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
            if let Err(e) = done {
                missed.push(format!("{}: {e}", peer.id));
            }
        }
        if !missed.is_empty() {
            tracing::warn!(
                missed = %missed.join("; "),
                "FLUSHALL: members that did not confirm it apply it when gossip reaches them"
            );
        }
        Ok(())
    }
}

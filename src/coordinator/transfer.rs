//! Ownership transfers, when the ring changes under a node.
//!
//! *Bootstrap.* A node that starts (new, or restarted with its in-memory store empty) first
//! waits to hear of its cluster, then pulls every key it replicates from the other replicas:
//! an anti-entropy sync with every live peer it shares arcs with, unthrottled. Until that is
//! done it takes writes but answers no reads, so a read at R is answered by the key's other
//! replicas, which are the old owners: a write acknowledged at W on the old preference list
//! still meets every read at R with W + R > N while the new node fills up.
//!
//! *Hand-off.* A node that leaves gracefully first pushes each of its keys to the nodes that
//! become replicas of it once it is gone, and again whatever changed while it left.
//!
//! Either way the progress (keys and bytes to move, moved) shows in `/admin/status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Coordinator;
use super::antientropy::{REPAIR_BATCH, RoundStats};
use crate::membership::{MemberState, ring_of};
use crate::node::ClusterView;
use crate::replica::Replica;
use crate::ring::RingArc;
use crate::rpc::MergeBatch;
use crate::storage::{Hash, Key, Value};
use crate::transport::{Ask, Peer};

/// Where a node is in its life, as far as its data is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting to hear of the members of its cluster file.
    Joining,
    /// Pulling its keys from the other replicas; reads are not answered yet.
    Bootstrap,
    /// Serving reads and writes.
    #[default]
    Serving,
    /// Pushing its keys to the nodes that take its place.
    Leaving,
}

/// Progress of the current (or last) transfer, as `/admin/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransferStatus {
    /// Where the node is in its life.
    pub phase: Phase,
    /// Members of the cluster file not heard of yet (while joining).
    pub waiting_for: Vec<String>,
    /// Keys found to move.
    pub keys_to_move: u64,
    /// During a bootstrap, estimated from the bytes per key moved so far.
    pub bytes_to_move: u64,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Bytes moved so far.
    pub bytes_moved: u64,
}

/// The transfer state a coordinator keeps.
#[derive(Debug, Default)]
pub struct Transfers {
    status: Mutex<TransferStatus>,
    /// Item hashes of what a hand-off has pushed, so a second pass sends only changes.
    handed_off: Mutex<HashMap<Key, Hash>>,
}

impl Transfers {
    /// Changes the status, and with its phase (under the same lock, so the two never
    /// disagree) whether `replica` answers reads.
    fn update(&self, replica: &Replica, f: impl FnOnce(&mut TransferStatus)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut status);
        replica.set_serving_reads(!matches!(status.phase, Phase::Joining | Phase::Bootstrap));
    }

    fn get(&self) -> TransferStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// How long the member list must stay the same before a bootstrap starts.
const SETTLE: Duration = Duration::from_millis(500);

/// What a starting node waits for before it bootstraps.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// The other nodes of its cluster file: heard of (in any state) before bootstrapping.
    pub expected: Vec<String>,
    /// `--join`: at least one other member must be alive first.
    pub needs_a_peer: bool,
    /// Bootstrap anyway after this long (some nodes of the file may be down for good).
    pub grace: Duration,
}

/// Members of `plan.expected` the view has no real process life for yet (the cluster file's
/// placeholders have generation 0).
fn unheard(view: &ClusterView, plan: &JoinPlan) -> Vec<String> {
    let mut missing: Vec<String> = plan
        .expected
        .iter()
        .filter(|id| view.member(id).is_none_or(|m| m.info.generation == 0))
        .cloned()
        .collect();
    if plan.needs_a_peer
        && !view
            .members
            .iter()
            .any(|m| m.info.id != view.me && m.state == MemberState::Alive)
    {
        missing.push("any member (--join)".into());
    }
    missing
}

impl Coordinator {
    /// The current transfer's progress.
    pub fn transfer_status(&self) -> TransferStatus {
        self.inner.transfers.get()
    }

    /// Whether this node answers reads: not while it is joining or bootstrapping.
    pub fn serves_reads(&self) -> bool {
        self.inner.replica.serves_reads()
    }

    /// Changes the transfer status, and with its phase whether the replica answers reads.
    fn update_transfer(&self, f: impl FnOnce(&mut TransferStatus)) {
        self.inner.transfers.update(&self.inner.replica, f);
    }

    /// Marks the node as joining: it answers no reads until [`Coordinator::bootstrap`] is
    /// done. Call before the node is reachable.
    pub fn begin_joining(&self, plan: &JoinPlan) {
        let waiting_for = plan.expected.clone();
        self.update_transfer(|s| {
            *s = TransferStatus {
                phase: Phase::Joining,
                waiting_for,
                ..TransferStatus::default()
            }
        });
    }

    /// Waits to hear of the cluster (see [`JoinPlan`]), then pulls every key this node
    /// replicates from the other live replicas, and starts serving reads.
    pub async fn bootstrap(&self, plan: JoinPlan) {
        let start = Instant::now();
        // Ready once every expected member is heard of and the member list has stopped
        // changing for a moment (gossip brings the rest of the cluster right after the first
        // member), so the keys pulled are those of the ring this node will serve in.
        let mut members = Vec::new();
        let mut stable_since = start;
        loop {
            let view = self.view();
            let now: Vec<(String, u64)> = view
                .members
                .iter()
                .map(|m| (m.info.id.clone(), m.info.generation))
                .collect();
            if now != members {
                members = now;
                stable_since = Instant::now();
            }
            let missing = unheard(&view, &plan);
            let settled = stable_since.elapsed() >= SETTLE;
            let done = (missing.is_empty() && settled) || start.elapsed() >= plan.grace;
            self.update_transfer(|s| s.waiting_for = missing);
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.update_transfer(|s| {
            s.phase = Phase::Bootstrap;
            s.waiting_for.clear();
        });
        let view = self.view();
        let n = self.inner.defaults.n.min(view.ring.len() as u32) as usize;
        let mut stats = RoundStats::default();
        // Every replica's differences first, so the total is known; a key that differs from
        // several replicas is pulled from each (the join of all of them is what it must hold)
        // but counts once.
        let mut work: Vec<(Peer, Vec<Key>)> = Vec::new();
        let mut to_move = std::collections::HashSet::new();
        for (peer_id, arcs) in view.ring.shared_arcs(self.me(), n) {
            let Some(peer) = alive_peer(&view, &peer_id) else {
                continue;
            };
            match self.differing_keys(&peer, &arcs, &mut stats).await {
                Ok(keys) => {
                    to_move.extend(keys.iter().cloned());
                    let total = to_move.len() as u64;
                    self.update_transfer(|s| s.keys_to_move = total);
                    work.push((peer, keys));
                }
                Err(e) => tracing::warn!(peer = %peer_id, "bootstrap: cannot diff: {e}"),
            }
        }
        let mut moved = std::collections::HashSet::new();
        for (peer, keys) in work {
            for batch in keys.chunks(REPAIR_BATCH) {
                let before = stats.bytes;
                if let Err(e) = self.repair_batch(&peer, batch, &mut stats).await {
                    tracing::warn!(peer = %peer.id, "bootstrap: batch failed: {e}");
                    continue;
                }
                moved.extend(batch.iter().cloned());
                let (count, bytes) = (moved.len() as u64, (stats.bytes - before) as u64);
                self.update_transfer(|s| {
                    s.keys_moved = count;
                    s.bytes_moved += bytes;
                    s.bytes_to_move = s.bytes_moved * s.keys_to_move / count.max(1);
                });
            }
        }
        self.update_transfer(|s| s.phase = Phase::Serving);
        let status = self.transfer_status();
        tracing::info!(
            keys = status.keys_moved,
            bytes = status.bytes_moved,
            took_ms = start.elapsed().as_millis() as u64,
            "bootstrap done, serving reads"
        );
    }

    /// Pushes every key to the nodes that become its replicas once this node is gone (and,
    /// called again, only what changed since), until `deadline`. Returns the keys pushed.
    pub async fn hand_off(&self, deadline: Instant) -> usize {
        let view = self.view();
        let me = self.me().to_string();
        let others: Vec<_> = view
            .members
            .iter()
            .filter(|m| m.info.id != me)
            .cloned()
            .collect();
        if others.is_empty() {
            // No one to hand anything to (and no copy of every key to make for it).
            self.update_transfer(|s| s.phase = Phase::Leaving);
            return 0;
        }
        let future = ring_of(&others);
        let n_now = self.inner.defaults.n.min(view.ring.len() as u32) as usize;
        let n_next = self.inner.defaults.n.min(future.len() as u32) as usize;
        let now = self.now_ms();
        let store = self.store();
        let mut outgoing: BTreeMap<String, Vec<(Key, Value)>> = BTreeMap::new();
        let mut hashes = Vec::new();
        let mut bytes_total = 0u64;
        {
            let sent = self
                .inner
                .transfers
                .handed_off
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for key in store.keys_in(RingArc::FULL) {
                let Some(value) = store.get(&key, now) else {
                    continue;
                };
                let hash = value.item_hash(&key);
                if sent.get(&key) == Some(&hash) {
                    continue;
                }
                let pos = key.position();
                let current = view.ring.preference_list(pos, n_now).replicas;
                for m in future.preference_list(pos, n_next).replicas {
                    if current.iter().any(|c| c.id == m.id) || alive_peer(&view, &m.id).is_none() {
                        continue;
                    }
                    bytes_total += crate::rpc::encode(&value).map_or(0, |b| b.len() as u64);
                    outgoing
                        .entry(m.id.clone())
                        .or_default()
                        .push((key.clone(), value.clone()));
                }
                hashes.push((key, hash));
            }
        }
        let keys_total: usize = outgoing.values().map(Vec::len).sum();
        self.update_transfer(|s| {
            *s = TransferStatus {
                phase: Phase::Leaving,
                keys_to_move: s.keys_to_move + keys_total as u64,
                bytes_to_move: s.bytes_to_move + bytes_total,
                keys_moved: s.keys_moved,
                bytes_moved: s.bytes_moved,
                waiting_for: Vec::new(),
            }
        });
        let mut pushed = 0;
        for (target, items) in outgoing {
            let Some(peer) = alive_peer(&view, &target) else {
                continue;
            };
            for batch in items.chunks(REPAIR_BATCH) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!("hand-off stopped at its deadline; anti-entropy will finish");
                    return pushed;
                }
                let bytes: u64 = batch
                    .iter()
                    .map(|(_, v)| crate::rpc::encode(v).map_or(0, |b| b.len() as u64))
                    .sum();
                let req = MergeBatch {
                    items: batch.to_vec(),
                };
                match self.inner.transport.ask(&peer, req, left).await {
                    Ok(_) => {
                        pushed += batch.len();
                        self.update_transfer(|s| {
                            s.keys_moved += batch.len() as u64;
                            s.bytes_moved += bytes;
                        });
                    }
                    Err(e) => tracing::warn!(peer = %target, "hand-off batch failed: {e}"),
                }
            }
        }
        self.inner
            .transfers
            .handed_off
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(hashes);
        pushed
    }
}

/// The peer address of `id` if the view has it alive.
fn alive_peer(view: &ClusterView, id: &str) -> Option<Peer> {
    view.member(id)
        .filter(|m| m.state == MemberState::Alive && m.info.id != view.me)
        .map(|m| Peer::new(&m.info.id, m.info.peer))
}

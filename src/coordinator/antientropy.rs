//! Active anti-entropy: replicas that drifted apart (a lost hint, a write that reached too
//! few replicas, a node restarted empty) are found and repaired without any read touching
//! them.
//!
//! Every round, each node takes the arcs of the ring it shares with each other member (both
//! among the key's first N replicas, N the cluster's `replicas`) and, for the members whose
//! id sorts after its own (so each pair syncs once per round), compares one Merkle hash per
//! arc. Only arcs whose hashes differ are diffed further, level by level down the tree, and
//! only the keys found different are read from the peer, merged with the local state, and
//! written back to whichever side was behind: both sides end with the join. In-sync replicas
//! cost one small request per pair and round.
//!
//! Repairs are throttled to a budget of keys per second, so a large divergence (a node
//! restarted empty) is worked off in the background without starving client requests.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Coordinator;
use crate::membership::MemberState;
use crate::ring::RingArc;
use crate::rpc::{ArcHashes, Call, Encoded, MergeBatch, MerkleStep, ReadBatch};
use crate::storage::merkle::MerkleDiff;
use crate::storage::{Key, Value};
use crate::transport::{Ask, Peer};

/// Keys read and written back per request while repairing.
pub(super) const REPAIR_BATCH: usize = 256;

/// How long a round waits between finding the keys that differ and repairing them, to tell
/// the keys being written (which change meanwhile) from the ones that drifted apart.
pub(super) const SETTLE: Duration = Duration::from_millis(250);

/// How often and how fast anti-entropy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiEntropySettings {
    /// Time between rounds; zero turns anti-entropy off.
    pub interval_ms: u64,
    /// Most keys repaired per second.
    pub keys_per_sec: u64,
}

impl Default for AntiEntropySettings {
    fn default() -> Self {
        AntiEntropySettings {
            interval_ms: 10_000,
            keys_per_sec: 2_000,
        }
    }
}

/// What one round (or one pair's sync) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Peers compared with.
    pub peers: usize,
    /// Arcs whose hashes differed.
    pub arcs_differing: usize,
    /// Keys found different.
    pub keys_differing: usize,
    /// Keys changed on this node or the peer.
    pub repaired: usize,
    /// Keys left for a later round because they were being written: their writes are on
    /// their way to the replicas, and repairing a key under writes (a large hash) would move
    /// its whole value for nothing, round after round.
    pub busy: usize,
    /// Request and answer payload bytes (the messages' encoding, without QUIC and TLS).
    pub bytes: usize,
}

impl RoundStats {
    fn add(&mut self, other: RoundStats) {
        self.peers += other.peers;
        self.arcs_differing += other.arcs_differing;
        self.keys_differing += other.keys_differing;
        self.repaired += other.repaired;
        self.busy += other.busy;
        self.bytes += other.bytes;
    }
}

/// Encoded size of a message, for the byte count.
fn wire_len<T: Serialize>(msg: &T) -> usize {
    crate::rpc::encode(msg).map_or(0, |b| b.len())
}

/// A token bucket: repairs wait until the budget allows them.
#[derive(Debug)]
pub struct Budget {
    per_sec: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Budget {
    /// A bucket of `per_sec` keys a second, full at the start.
    pub fn new(per_sec: u64) -> Self {
        Budget {
            per_sec: per_sec.max(1) as f64,
            state: std::sync::Mutex::new((per_sec.max(1) as f64, Instant::now())),
        }
    }

    /// Waits until `n` keys may be repaired, and spends them.
    pub async fn spend(&self, n: usize) {
        let wait = {
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let (tokens, last) = *st;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.per_sec).min(self.per_sec);
            let left = tokens - n as f64;
            *st = (left, now);
            if left >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-left / self.per_sec)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Coordinator {
    /// One anti-entropy round: syncs with every live member this node shares arcs with (and
    /// whose id sorts after its own).
    pub async fn anti_entropy_round(&self) -> RoundStats {
        let view = self.view();
        let n = self.inner.defaults.n.min(view.ring.len() as u32) as usize;
        let me = self.me().to_string();
        let mut total = RoundStats::default();
        for (peer_id, arcs) in view.ring.shared_arcs(&me, n) {
            if peer_id <= me {
                continue;
            }
            let Some(member) = view.member(&peer_id) else {
                continue;
            };
            if member.state != MemberState::Alive {
                continue;
            }
            let peer = Peer::new(&peer_id, member.info.peer);
            match self.sync_with(&peer, &arcs).await {
                Ok(stats) => {
                    if stats.repaired > 0 {
                        tracing::info!(
                            peer = %peer_id,
                            arcs = stats.arcs_differing,
                            keys = stats.keys_differing,
                            repaired = stats.repaired,
                            busy = stats.busy,
                            "anti-entropy repaired keys"
                        );
                    }
                    total.add(stats);
                }
                Err(e) => tracing::debug!(peer = %peer_id, "anti-entropy sync failed: {e}"),
            }
        }
        let m = &self.inner.metrics;
        m.anti_entropy_rounds.inc();
        m.anti_entropy_bytes.inc_by(total.bytes as u64);
        total
    }

    /// Compares and repairs the keys in `arcs` with `peer`, within the repair budget.
    pub async fn sync_with(&self, peer: &Peer, arcs: &[RingArc]) -> Result<RoundStats, String> {
        let mut stats = RoundStats {
            peers: 1,
            ..RoundStats::default()
        };
        let keys = self.differing_keys(peer, arcs, &mut stats).await?;
        if keys.is_empty() {
            return Ok(stats);
        }
        let before: Vec<_> = keys.iter().map(|k| self.local_item_hash(k)).collect();
        tokio::time::sleep(SETTLE).await;
        for (batch, seen) in keys.chunks(REPAIR_BATCH).zip(before.chunks(REPAIR_BATCH)) {
            let settled: Vec<Key> = batch
                .iter()
                .zip(seen)
                .filter(|(key, seen)| self.local_item_hash(key) == **seen)
                .map(|(key, _)| key.clone())
                .collect();
            stats.busy += batch.len() - settled.len();
            if settled.is_empty() {
                continue;
            }
            self.inner.anti_entropy_budget.spend(settled.len()).await;
            stats.repaired += self.repair_batch(peer, &settled, &mut stats).await?;
        }
        self.inner
            .metrics
            .anti_entropy_repairs
            .inc_by(stats.repaired as u64);
        Ok(stats)
    }

    /// What this node's Merkle tree holds for `key` now: it changes with every write.
    fn local_item_hash(&self, key: &Key) -> Option<crate::storage::merkle::Hash> {
        let store = self.store();
        store.get(key, self.now_ms()).map(|v| v.item_hash(key))
    }

    /// The keys in `arcs` whose states differ between this node and `peer`: one hash per
    /// arc, then a Merkle diff of the arcs whose hashes differ.
    pub(super) async fn differing_keys(
        &self,
        peer: &Peer,
        arcs: &[RingArc],
        stats: &mut RoundStats,
    ) -> Result<Vec<Key>, String> {
        let merkle = self.store().merkle();
        let mut differing = Vec::new();
        for chunk in arcs.chunks(crate::rpc::MAX_ARCS) {
            let req = ArcHashes {
                arcs: chunk.to_vec(),
            };
            let theirs = self.exchange(peer, req, stats).await?;
            if theirs.len() != chunk.len() {
                return Err(format!(
                    "{} arc hashes for {} arcs",
                    theirs.len(),
                    chunk.len()
                ));
            }
            differing.extend(
                chunk
                    .iter()
                    .zip(&theirs)
                    .filter(|(arc, h)| merkle.arc_hash(**arc) != **h)
                    .map(|(arc, _)| *arc),
            );
        }
        stats.arcs_differing += differing.len();
        let mut keys = Vec::new();
        for arc in differing {
            let mut diff = MerkleDiff::new(merkle, arc);
            while let Some(query) = diff.query() {
                let req = MerkleStep {
                    query: query.clone(),
                };
                let answer = self.exchange(peer, req, stats).await?;
                diff.absorb(merkle, answer).map_err(|e| e.to_string())?;
            }
            keys.extend(diff.into_differences());
        }
        stats.keys_differing += keys.len();
        Ok(keys)
    }

    /// Brings `keys` to the join of this node's and `peer`'s states on both sides; returns
    /// how many keys changed anywhere.
    pub(super) async fn repair_batch(
        &self,
        peer: &Peer,
        keys: &[Key],
        stats: &mut RoundStats,
    ) -> Result<usize, String> {
        let req = ReadBatch {
            keys: keys.to_vec(),
        };
        let theirs = self.exchange(peer, req, stats).await?;
        if theirs.len() != keys.len() {
            return Err(format!("{} states for {} keys", theirs.len(), keys.len()));
        }
        let now = self.now_ms();
        let replica = &self.inner.replica;
        let store = replica.store();
        let mut push: Vec<(Key, Value)> = Vec::new();
        let mut repaired = 0;
        for (key, remote) in keys.iter().zip(theirs) {
            let local = store.get(key, now);
            let mut changed = false;
            if let Some(remote) = &remote {
                replica.observe(remote);
                if local.as_ref() != Some(remote) {
                    match store.merge(key, remote, now) {
                        Ok(merged) => {
                            changed |= local.as_ref() != Some(&merged);
                        }
                        Err(e) => {
                            tracing::warn!(?key, "anti-entropy cannot merge: {e}");
                            continue;
                        }
                    }
                }
            }
            // Whatever this node now holds is at least the join; send it if the peer lacks it.
            if let Some(joined) = store.get(key, now)
                && remote.as_ref() != Some(&joined)
            {
                push.push((key.clone(), joined));
                changed = true;
            }
            repaired += usize::from(changed);
        }
        if !push.is_empty() {
            let failed = self
                .exchange(peer, MergeBatch { items: push }, stats)
                .await?;
            for (_, why) in failed {
                tracing::warn!(peer = %peer.id, "anti-entropy write refused: {why}");
            }
        }
        Ok(repaired)
    }

    /// One anti-entropy request to `peer`, counting its bytes both ways (the frames as they
    /// travel, envelopes included).
    async fn exchange<C: Call>(
        &self,
        peer: &Peer,
        req: C,
        stats: &mut RoundStats,
    ) -> Result<C::Answer, String> {
        let req = Encoded::new(req).map_err(|e| e.to_string())?;
        stats.bytes += req.request().bytes().len();
        let result = self
            .inner
            .transport
            .ask_encoded(peer, &req, self.request_timeout())
            .await;
        self.inner.metrics.rpc("anti_entropy", result.is_ok());
        let response = C::respond(result.map_err(|e| e.to_string())?);
        stats.bytes += wire_len(&response);
        C::answer(response).map_err(|other| format!("{} answered {}", peer.id, other.name()))
    }
}

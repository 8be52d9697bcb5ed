//! Hint delivery: every node delivers the hints it holds once their owner is alive again, in
//! batches, and forgets each one only when the owner acknowledged it. Hints for an owner that
//! has left the cluster (or was removed) go to the key's current replicas instead. How hints
//! come to be held is [`super::replicate`].

use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use crate::membership::MemberState;
use crate::replica::hints::Hint;
use crate::rpc::{Merge, MergeBatch};
use crate::transport::{Ask, Peer};

/// How often a node looks for hints it can deliver.
pub const HINT_DELIVERY_INTERVAL: Duration = Duration::from_millis(500);
/// Most hints (keys) in one delivery batch.
const BATCH_KEYS: usize = 512;
/// Stop adding hints to a batch past this many bytes.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

impl Coordinator {
    /// Delivers what can be delivered now: every hint whose owner is alive goes to it, and
    /// hints for owners that left go to the key's current replicas. Returns how many hints
    /// were delivered.
    pub async fn deliver_hints(&self) -> usize {
        let mut delivered = 0;
        for owner in self.inner.replica.hints().owners() {
            let view = self.view();
            let member = view.member(&owner);
            let state = member.map(|m| m.state);
            let gone = matches!(state, None | Some(MemberState::Left))
                || view.ring.member(&owner).is_none();
            if state != Some(MemberState::Alive) && !gone {
                continue;
            }
            loop {
                let now = self.now_ms();
                let (batch, expired) =
                    self.inner
                        .replica
                        .hints()
                        .batch(&owner, BATCH_KEYS, BATCH_BYTES, now);
                if expired > 0 {
                    self.inner
                        .metrics
                        .hints_dropped
                        .with_label_values(&["expired"])
                        .inc_by(expired as u64);
                    tracing::warn!(owner, expired, "hints older than the maximum age dropped");
                }
                if batch.is_empty() {
                    break;
                }
                let acked: Vec<bool> = if gone {
                    self.deliver_to_replicas(&batch).await
                } else {
                    let Some(peer) = member.map(|m| Peer::new(&m.info.id, m.info.peer)) else {
                        break;
                    };
                    self.deliver_to(&peer, &batch).await
                };
                let mut progress = false;
                for (hint, ok) in batch.iter().zip(&acked) {
                    if *ok
                        && self
                            .inner
                            .replica
                            .hints()
                            .delivered(&owner, &hint.key, hint.version)
                    {
                        delivered += 1;
                        progress = true;
                    }
                }
                if !acked.iter().all(|ok| *ok) || !progress {
                    break;
                }
            }
        }
        self.inner.metrics.hints_delivered.inc_by(delivered as u64);
        if delivered > 0 {
            tracing::info!(delivered, "hints delivered");
        }
        delivered
    }

    /// Sends a batch of hints to their owner; which ones it acknowledged.
    async fn deliver_to(&self, peer: &Peer, batch: &[Hint]) -> Vec<bool> {
        let items = batch
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        let timeout = self.request_timeout();
        let result = self
            .inner
            .transport
            .ask(peer, MergeBatch { items }, timeout)
            .await;
        self.inner.metrics.rpc("hint_delivery", result.is_ok());
        match result {
            Ok(failed) => {
                let mut acked = vec![true; batch.len()];
                for (i, why) in failed {
                    tracing::warn!(owner = %peer.id, "hint not merged: {why}");
                    if let Some(a) = acked.get_mut(i as usize) {
                        *a = false;
                    }
                }
                acked
            }
            Err(e) => {
                tracing::debug!(owner = %peer.id, "hint delivery failed: {e}");
                vec![false; batch.len()]
            }
        }
    }

    /// For an owner that is gone: merges each hint into the key's current replicas (the
    /// cluster's default N); a hint counts as delivered once one replica has it.
    async fn deliver_to_replicas(&self, batch: &[Hint]) -> Vec<bool> {
        let view = self.view();
        let n = self.inner.defaults.n.min(view.ring.len() as u32);
        let deadline = Instant::now() + self.request_timeout();
        let mut acked = Vec::with_capacity(batch.len());
        for hint in batch {
            let mut any = false;
            for t in &self.placement(&view, &hint.key, n).replicas {
                let merge = Merge {
                    key: hint.key.clone(),
                    value: hint.value.clone(),
                    reply_state: false,
                };
                any |= self.call(t, merge, deadline, "hint_delivery").await.is_ok();
            }
            acked.push(any);
        }
        acked
    }
}

//! Where a key lives: its replicas in preference order and the fallbacks that stand in for
//! unreachable ones, as the coordinator will reach them; and what a W or R asks of those
//! replicas ([`needed`]).

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use super::gather::Needed;
use super::{Coordinator, NodeId};
use crate::membership::MemberState;
use crate::node::ClusterView;
use crate::ops::{Need, OpError};
use crate::storage::Key;
use crate::transport::Peer;

/// One replica of a key, as the coordinator will reach it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub id: NodeId,
    pub zone: Arc<str>,
    pub peer: Option<Peer>,
    pub state: MemberState,
}

impl Target {
    /// Whether this is node `id`.
    pub fn is(&self, id: &str) -> bool {
        *self.id == *id
    }
}

/// Where the keys of one vnode arc live for one N: the replicas in preference order, then the
/// live members after them in the ring's order (the fallbacks that take hints for unreachable
/// replicas).
pub(super) struct Placement {
    pub replicas: Vec<Target>,
    pub fallbacks: Vec<Target>,
}

impl Placement {
    /// The replicas other than node `me`: those a coordinator on `me` calls.
    pub fn others(&self, me: &str) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|t| !t.is(me))
            .map(|t| t.id.clone())
            .collect()
    }

    /// Whether node `me` is one of the replicas.
    pub fn has(&self, me: &str) -> bool {
        self.replicas.iter().any(|t| t.is(me))
    }
}

/// The placements of one view for one N, by vnode, each worked out the first time a key of its
/// arc is asked for: every request needs its key's placement, and all keys of an arc share it.
struct PlacementCache {
    view: Arc<ClusterView>,
    n: u32,
    by_vnode: Vec<OnceLock<Arc<Placement>>>,
}

/// The placement cache of the current view, started afresh when the view changes.
#[derive(Default)]
pub(super) struct Placements {
    current: RwLock<Option<Arc<PlacementCache>>>,
}

impl Placements {
    /// The cache of `view` for `n`.
    fn cache(&self, view: &Arc<ClusterView>, n: u32) -> Arc<PlacementCache> {
        let current = |slot: &Option<Arc<PlacementCache>>| {
            slot.as_ref()
                .filter(|c| Arc::ptr_eq(&c.view, view) && c.n == n)
                .map(Arc::clone)
        };
        let read = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(cache) = current(&read) {
            return cache;
        }
        drop(read);
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cache) = current(&slot) {
            return cache;
        }
        let cache = Arc::new(PlacementCache {
            view: Arc::clone(view),
            n,
            by_vnode: (0..view.ring.vnode_count())
                .map(|_| OnceLock::new())
                .collect(),
        });
        *slot = Some(Arc::clone(&cache));
        cache
    }
}

impl Coordinator {
    /// Where `key` lives in `view` for `n`: from the cache when `n` is the cluster's.
    pub(super) fn placement(&self, view: &Arc<ClusterView>, key: &Key, n: u32) -> Arc<Placement> {
        let pos = key.position();
        let cached = self.inner.defaults.n.min(view.ring.len() as u32) == n;
        match view.ring.vnode_of(pos).filter(|_| cached) {
            Some(vnode) => Arc::clone(
                self.inner.placements.cache(view, n).by_vnode[vnode]
                    .get_or_init(|| Arc::new(place(view, pos, n))),
            ),
            None => Arc::new(place(view, pos, n)),
        }
    }
}

/// Works out the placement of ring position `pos` in `view` for `n`.
fn place(view: &ClusterView, pos: u64, n: u32) -> Placement {
    let target = |m: &crate::ring::RingMember| {
        let member = view.member(&m.id);
        let id: NodeId = m.id.as_str().into();
        Target {
            peer: member.map(|v| Peer {
                id: Arc::clone(&id),
                addr: v.info.peer,
            }),
            id,
            zone: m.zone.as_str().into(),
            state: member.map_or(MemberState::Dead, |v| v.state),
        }
    };
    let list = view.ring.preference_list(pos, n as usize);
    let replicas = list.replicas.into_iter().map(target).collect();
    // Each unreachable replica needs one fallback, and a fallback may fail in turn: twice `n`
    // is plenty, and the walk round a large ring stops there.
    let fallbacks = list
        .fallbacks
        .map(target)
        .filter(|t| t.state == MemberState::Alive)
        .take(2 * n as usize)
        .collect();
    Placement {
        replicas,
        fallbacks,
    }
}

/// What a plan's `need` asks of the replicas in `targets`.
pub(super) fn needed(need: &Need, targets: &[Target]) -> Result<Needed, OpError> {
    let zone_of = || {
        targets
            .iter()
            .map(|t| (t.id.clone(), t.zone.clone()))
            .collect()
    };
    let majority_in = |zone: &str| targets.iter().filter(|t| *t.zone == *zone).count() / 2 + 1;
    Ok(match need {
        Need::Count(k) => Needed::count(*k as usize),
        Need::ZoneQuorum(zone) => {
            if !targets.iter().any(|t| *t.zone == **zone) {
                return Err(OpError::Unavailable {
                    needed: 1,
                    acks: 0,
                    message: format!(
                        "local_quorum: this key has no replica in zone {zone:?} (the zone of \
                         the node asked); ask a node in a zone that holds it, raise n, or use \
                         quorum"
                    ),
                });
            }
            let k = majority_in(zone);
            Needed {
                total: k,
                per_zone: vec![(zone.as_str().into(), k)],
                zone_of: zone_of(),
            }
        }
        Need::EachZone => {
            let mut zones: Vec<&Arc<str>> = targets.iter().map(|t| &t.zone).collect();
            zones.sort_unstable();
            zones.dedup();
            let per_zone: Vec<(Arc<str>, usize)> = zones
                .into_iter()
                .map(|z| (Arc::clone(z), majority_in(z)))
                .collect();
            Needed {
                total: per_zone.iter().map(|(_, k)| k).sum(),
                per_zone,
                zone_of: zone_of(),
            }
        }
    })
}

//! The coordinator: quorum reads and writes for any key, from any node.
//!
//! For a key and N, the preference list comes from the ring; the operation goes to all N
//! replicas at once (this node's own replica without a network hop), and the client gets its
//! answer as soon as W acks (or R answers) are in. Late read answers are still collected in
//! the background, merged with the rest, and every replica found older than the merge is
//! repaired (read repair).
//!
//! The mechanics are generic over the write: what a write means for its data type (its delta,
//! its checks, what it reports) is the [`crate::datatype::Operation`] it carries. Writes that
//! issue dots are made by a replica of the key, whose store knows the highest dot it has
//! handed out for the key: a node outside the preference list forwards them to the first live
//! replica ([`write`]). Everything else any node coordinates itself. The replicas' side is
//! [`crate::replica::Replica`]; a write reaches the replicas, or their stand-ins, through
//! [`replicate`].
//!
//! The files, one concept each: [`placement`] (where a key lives, and what W or R asks of
//! those replicas), [`calls`] (typed calls to replicas), [`gather`] (waiting for a quorum),
//! [`read`], [`write`], [`replicate`], [`handoff`] (delivering hints), [`antientropy`],
//! [`transfer`] (bootstrap and hand-off), [`evict`], [`maintenance`] (the background loop) and
//! [`serve`] (what a node answers its peers).
//!
//! Time comes from a [`Clock`] and the network from a [`Transport`], so the same code runs in
//! a process over QUIC and in a simulated cluster on tokio's paused clock.

pub mod antientropy;
mod calls;
pub mod evict;
pub mod gather;
pub mod handoff;
pub mod keyspace;
mod maintenance;
pub mod memory;
mod placement;
mod read;
mod replicate;
mod serve;
pub mod transfer;
mod write;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Quorum;
use crate::membership::MemberState;
use crate::metrics::Metrics;
use crate::node::ClusterView;
use crate::ops::{Consistency, Need, OpError, Plan};
use crate::replica::Replica;
use crate::replica::hints::{HintLimits, HintStore};
use crate::storage::{Store, Value};
use crate::transport::Transport;

use antientropy::{AntiEntropySettings, Budget};
use gather::Needed;

pub use crate::replica::NodeId;
pub use serve::PeerHandler;

/// The cluster's defaults for what a request leaves out, and the coordinator's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Replicas per key when a request does not say.
    pub n: u32,
    /// Acknowledgements a write waits for when a request does not say.
    pub w: Quorum,
    /// Answers a read waits for when a request does not say.
    pub r: Quorum,
    /// How long a request waits for its replicas when it does not say.
    pub timeout_ms: u64,
    /// Largest value a write may carry.
    pub max_value_bytes: usize,
    /// Bounds on the hints this node holds for others.
    pub hints: HintLimits,
    /// How often and how fast anti-entropy runs.
    pub anti_entropy: AntiEntropySettings,
    /// The memory limit for the node's data (0: none).
    pub max_memory_bytes: u64,
    /// What happens past it.
    pub eviction: crate::config::Eviction,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults::from(&crate::config::ClusterSettings::default())
    }
}

impl From<&crate::config::ClusterSettings> for Defaults {
    fn from(c: &crate::config::ClusterSettings) -> Self {
        Defaults {
            n: c.replicas,
            w: c.write_quorum,
            r: c.read_quorum,
            timeout_ms: c.request_timeout_ms,
            max_value_bytes: c.max_value_bytes,
            hints: HintLimits {
                enabled: c.hinted_handoff,
                max_keys_per_owner: c.hint_max_keys,
                max_bytes_per_owner: c.hint_max_bytes,
                max_age_ms: c.hint_max_age_s.saturating_mul(1000),
            },
            anti_entropy: AntiEntropySettings {
                interval_ms: c.anti_entropy_interval_ms,
                keys_per_sec: c.anti_entropy_keys_per_sec,
            },
            max_memory_bytes: c.max_memory_bytes,
            eviction: c.eviction,
        }
    }
}

/// What a coordinator is built from.
pub struct CoordinatorSpec {
    /// This node's id.
    pub me: String,
    /// The membership's view of the cluster, as it changes.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// How this node reaches the others.
    pub transport: Arc<dyn Transport>,
    /// This node's replica store; kept outside so it can outlive the coordinator.
    pub store: Arc<dyn Store>,
    /// Wall-clock time (the machine's, or a test's).
    pub clock: Arc<dyn Clock>,
    /// The cluster's defaults and bounds.
    pub defaults: Defaults,
    /// Where the node's metrics go.
    pub metrics: Metrics,
    /// The node's membership, to spread a flush through gossip (`None` in tests that run
    /// without one).
    pub membership: Option<crate::node::MembershipControl>,
    /// The hints this node holds for others: kept apart from the coordinator so that they
    /// can outlive it as the store does (a simulated crash keeps both, as a durable engine
    /// would).
    pub hints: Arc<HintStore>,
}

/// Coordinates client operations on one node. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    view: watch::Receiver<Arc<ClusterView>>,
    transport: Arc<dyn Transport>,
    /// This node's own replica: its store, hints and clock.
    replica: Arc<Replica>,
    defaults: Defaults,
    metrics: Metrics,
    /// Keys anti-entropy may still repair this second.
    anti_entropy_budget: Budget,
    /// Bootstrap and hand-off progress.
    transfers: transfer::Transfers,
    /// When this coordinator started, and its next forwarded write's number: together with
    /// the node id, a forwarded write's id.
    started_ms: u64,
    forward_seq: std::sync::atomic::AtomicU64,
    /// Forwarded writes this node ran for others.
    forwarded: write::ForwardedWrites,
    /// An eviction task is running.
    evicting: std::sync::atomic::AtomicBool,
    /// Until when (node clock, ms) writes skip inline eviction: the last one found nothing.
    nothing_to_evict_until: std::sync::atomic::AtomicU64,
    /// What the node's data costs in memory (the store's estimate, calibrated).
    memory: memory::MemoryGauge,
    /// Placements worked out for the current view and the cluster's N.
    placements: placement::Placements,
    /// The node's membership, to spread a flush.
    membership: Option<crate::node::MembershipControl>,
}

impl Coordinator {
    /// A coordinator for node `spec.me`, with its replica over `spec.store`.
    pub fn new(spec: CoordinatorSpec) -> Self {
        let replica = Replica::new(
            &spec.me,
            spec.store,
            spec.hints,
            spec.clock,
            spec.metrics.clone(),
        );
        Coordinator {
            inner: Arc::new(Inner {
                anti_entropy_budget: Budget::new(spec.defaults.anti_entropy.keys_per_sec),
                transfers: transfer::Transfers::default(),
                started_ms: replica.now_ms(),
                forward_seq: std::sync::atomic::AtomicU64::new(0),
                forwarded: write::ForwardedWrites::default(),
                evicting: std::sync::atomic::AtomicBool::new(false),
                nothing_to_evict_until: std::sync::atomic::AtomicU64::new(0),
                memory: memory::MemoryGauge::default(),
                placements: placement::Placements::default(),
                membership: spec.membership,
                me: spec.me.as_str().into(),
                replica: Arc::new(replica),
                view: spec.view,
                transport: spec.transport,
                defaults: spec.defaults,
                metrics: spec.metrics,
            }),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.inner.me
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// This node's own replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.inner.replica
    }

    /// This node's replica store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.replica.store()
    }

    /// The cluster's defaults and bounds.
    pub fn defaults(&self) -> Defaults {
        self.inner.defaults
    }

    /// The node's wall clock, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.inner.replica.now_ms()
    }

    /// Hints held and their bytes.
    pub fn pending_hints(&self) -> (usize, usize) {
        self.inner.replica.pending_hints()
    }

    /// The cluster as this node sees it now.
    pub fn cluster_view(&self) -> Arc<ClusterView> {
        self.view()
    }

    fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.inner.view.borrow())
    }

    /// Checks a request's N/W/R and deadline against the cluster, before anything is done.
    /// Defaults are clamped to the cluster's size; explicit values are not.
    pub fn plan(&self, c: &Consistency) -> Result<Plan, OpError> {
        let d = self.inner.defaults;
        let view = self.view();
        let members = view.ring.len() as u32;
        if members == 0 {
            return Err(OpError::Unavailable {
                needed: 1,
                acks: 0,
                message: "this node knows no ring members yet; retry in a moment".into(),
            });
        }
        let n = match c.n {
            Some(n) if n > members => {
                return Err(OpError::bad(format!(
                    "n={n} but the cluster has {members} members; use n from 1 to {members}"
                )));
            }
            Some(n) => n,
            None => d.n.min(members),
        };
        let quorum =
            |name: &str, given: Option<Quorum>, default: Quorum| match given.unwrap_or(default) {
                Quorum::LocalQuorum => {
                    let zone = view
                        .member(&self.inner.me)
                        .map(|m| m.info.zone.clone())
                        .unwrap_or_default();
                    Ok(Need::ZoneQuorum(zone))
                }
                Quorum::EachQuorum => Ok(Need::EachZone),
                q => {
                    let k = q.resolve(n);
                    if given.is_some() && k > n {
                        Err(OpError::bad(format!(
                            "{name}={k} is more than n={n}; use {name} from 1 to {n}, or one, \
                         quorum, all, local_quorum or each_quorum"
                        )))
                    } else {
                        Ok(Need::Count(k.min(n)))
                    }
                }
            };
        Ok(Plan {
            n,
            w: quorum("w", c.w, d.w)?,
            r: quorum("r", c.r, d.r)?,
            timeout_ms: c.timeout_ms.unwrap_or(d.timeout_ms),
            sloppy: c.sloppy.unwrap_or(true),
        })
    }
}

fn deadline(timeout_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms)
}

/// Whether calling a member can succeed: dead and departed members are not called at all.
fn is_reachable(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

/// The join of replica states; `None` when no replica has the key.
fn merge_all<'a>(states: impl Iterator<Item = &'a Option<Value>>) -> Option<Value> {
    let mut acc: Option<Value> = None;
    for state in states.flatten() {
        match &mut acc {
            None => acc = Some(state.clone()),
            Some(a) => {
                if let Err(e) = a.merge(state) {
                    tracing::warn!("replica answered a value of another kind: {e}");
                }
            }
        }
    }
    acc
}

fn unavailable(needed: &Needed, acks: u32, failed: &[(NodeId, String)], what: &str) -> OpError {
    let zones: Vec<String> = needed
        .per_zone
        .iter()
        .map(|(zone, k)| format!("{k} in zone {zone}"))
        .collect();
    let needed_text = if zones.is_empty() {
        String::new()
    } else {
        format!(", of them {}", zones.join(" and "))
    };
    let needed_count = needed.total as u32;
    let why = if failed.is_empty() {
        "the others did not answer in time".to_string()
    } else {
        failed
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    OpError::Unavailable {
        needed: needed_count,
        acks,
        message: format!(
            "the {what} needed {needed_count} replica answers{needed_text} and got {acks} \
             ({why}); retry, or lower {}",
            if what == "read" { "r" } else { "w" }
        ),
    }
}

//! The node runtime: drives the membership protocol over a [`Transport`], keeps timers, and
//! publishes the node's view of the cluster (members, states, ring) for the rest of the
//! process to read.
//!
//! Everything here is transport-agnostic and uses only tokio time, so the same code runs in
//! a real process over QUIC and in tests over the in-memory network with a paused clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::causality::Timestamp;
use crate::membership::{
    GossipConfig, GossipTimer, MemberState, MemberView, Membership, NodeInfo, Output, RemoveError,
    Removed, ring_of,
};
use crate::ring::Ring;
use crate::rpc::{OneWay, ReplicaError, Request, Response};
use crate::transport::{BoxFuture, Handler, Peer, Transport};

/// Gossip packets waiting to be processed; beyond this, new ones are dropped (SWIM copes).
const INBOX_CAPACITY: usize = 4096;

/// How long a leaving node keeps running so its goodbye reaches the others.
const LEAVE_LINGER: Duration = Duration::from_millis(500);

/// A snapshot of what this node believes about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This node's id.
    pub me: String,
    /// Every known member, this node included, sorted by id.
    pub members: Vec<MemberView>,
    /// The ring of every member that has not left.
    pub ring: Arc<Ring>,
    /// The latest flush of the typed namespace (`FLUSHALL`) this node has learned: its cutoff.
    pub flushed: Option<Timestamp>,
    /// The removed life of every member removed (what the durable log keeps).
    pub removed: Vec<NodeInfo>,
}

impl ClusterView {
    /// The member with this id, as this node sees it.
    pub fn member(&self, id: &str) -> Option<&MemberView> {
        // Members come sorted by id (a binary search on the hot path); a view built unsorted
        // (by hand, in a test) is still searched in full before answering no.
        match self
            .members
            .binary_search_by(|m| m.info.id.as_str().cmp(id))
        {
            Ok(i) => Some(&self.members[i]),
            Err(_) => self.members.iter().find(|m| m.info.id == id),
        }
    }

    /// Number of members in each state, for logs and metrics.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

/// How to start a node's runtime.
pub struct NodeSpec {
    /// This node's identity and addresses, as it gossips them.
    pub me: NodeInfo,
    /// Members known from the config file; announced to at start.
    pub seeds: Vec<NodeInfo>,
    /// Protocol timing.
    pub gossip: GossipConfig,
    /// Seeds the protocol's random choices.
    pub rng_seed: u64,
    /// Members removed, as an earlier life of this node knew them.
    pub removed: Vec<NodeInfo>,
}

enum Event {
    Gossip(String, Bytes),
    Timer(GossipTimer),
    Announce(NodeInfo),
    Remove(String, oneshot::Sender<Result<Removed, RemoveError>>),
    Flush(Timestamp),
    Leave(oneshot::Sender<()>),
}

/// A running node. Dropping it does not stop it; call [`Node::leave`] or abort.
pub struct Node {
    events: mpsc::Sender<Event>,
    view: watch::Receiver<Arc<ClusterView>>,
    handler: Arc<NodeHandler>,
    task: JoinHandle<()>,
}

/// Operator actions on a running node's membership, for the HTTP API. Cheap to clone.
#[derive(Clone)]
pub struct MembershipControl {
    events: mpsc::Sender<Event>,
}

/// Why a [`MembershipControl`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The membership refused the removal; the error says why.
    #[error(transparent)]
    Refused(#[from] RemoveError),
    /// The node's membership runtime has stopped (the node is shutting down).
    #[error("the node's membership runtime has stopped (the node is shutting down)")]
    Stopped,
}

impl MembershipControl {
    /// Spreads a flush of the typed namespace through gossip (see [`Membership::flush`]).
    pub async fn flush(&self, before: Timestamp) {
        if self.events.send(Event::Flush(before)).await.is_err() {
            tracing::debug!("flush not gossiped: the membership runtime has stopped");
        }
    }

    /// Removes a dead member from the cluster (see [`Membership::remove`]); the new view,
    /// without it on the ring, is published before this returns.
    pub async fn remove(&self, id: &str) -> Result<Removed, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Remove(id.to_string(), tx))
            .await
            .map_err(|_| ControlError::Stopped)?;
        Ok(rx.await.map_err(|_| ControlError::Stopped)??)
    }
}

/// What peers' messages are handed to.
pub struct NodeHandler {
    me: String,
    events: mpsc::Sender<Event>,
}

impl Handler for NodeHandler {
    fn one_way(&self, from: &str, msg: OneWay) {
        match msg {
            OneWay::Gossip(data) => {
                if self
                    .events
                    .try_send(Event::Gossip(from.to_string(), data))
                    .is_err()
                {
                    tracing::debug!(peer = from, "gossip inbox full, packet dropped");
                }
            }
        }
    }

    fn request(&self, _from: &str, req: Request) -> BoxFuture<Response> {
        let me = self.me.clone();
        let events = self.events.clone();
        Box::pin(async move {
            match req {
                Request::Ping => Response::Pong { node: me },
                // Spread a flush through gossip, so members this node can reach and the
                // coordinator could not learn it too.
                Request::Flush(flush) => match events.send(Event::Flush(flush.before)).await {
                    Ok(()) => Response::Flushed,
                    Err(_) => Response::Error(ReplicaError::NotServed("Flush".into())),
                },
                other => Response::Error(ReplicaError::NotServed(other.name().into())),
            }
        })
    }
}

impl Node {
    /// Starts the runtime: announces to the seeds and runs until [`Node::leave`].
    pub fn start(spec: NodeSpec, transport: Arc<dyn Transport>) -> Node {
        let (events_tx, events_rx) = mpsc::channel(INBOX_CAPACITY);
        let mut membership =
            Membership::new(spec.me.clone(), &spec.seeds, spec.gossip, spec.rng_seed);
        let restored = membership.restore_removed(spec.removed);
        let initial = Arc::new(snapshot(&membership));
        let (view_tx, view_rx) = watch::channel(initial);
        let handler = Arc::new(NodeHandler {
            me: spec.me.id.clone(),
            events: events_tx.clone(),
        });
        let driver = Driver {
            membership,
            transport,
            events: events_tx.clone(),
            view: view_tx,
        };
        let seeds = spec.seeds;
        let task = tokio::spawn(driver.run(events_rx, seeds, restored));
        Node {
            events: events_tx,
            view: view_rx,
            handler,
            task,
        }
    }

    /// The handler to attach to the transport.
    pub fn handler(&self) -> Arc<dyn Handler> {
        Arc::clone(&self.handler) as Arc<dyn Handler>
    }

    /// The latest view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// A handle for operator actions (removing a dead member).
    pub fn control(&self) -> MembershipControl {
        MembershipControl {
            events: self.events.clone(),
        }
    }

    /// Announces this node to another (how `--join` works).
    pub async fn announce(&self, to: NodeInfo) {
        let _ = self.events.send(Event::Announce(to)).await;
    }

    /// Leaves the cluster gracefully (others see `left`) and stops the runtime.
    pub async fn leave(self) {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Driver {
    membership: Membership,
    transport: Arc<dyn Transport>,
    events: mpsc::Sender<Event>,
    view: watch::Sender<Arc<ClusterView>>,
}

impl Driver {
    async fn run(mut self, mut events: mpsc::Receiver<Event>, seeds: Vec<NodeInfo>, first: Output) {
        self.apply(first);
        for seed in seeds {
            let out = self.membership.announce(seed);
            self.apply(out);
        }
        self.publish();
        while let Some(event) = events.recv().await {
            let out = match event {
                Event::Gossip(from, data) => match self.membership.handle_data(&from, &data) {
                    Ok(out) => out,
                    Err(e) => {
                        tracing::debug!(peer = %from, "gossip refused: {e}");
                        Output::default()
                    }
                },
                Event::Timer(timer) => self.membership.handle_timer(timer),
                Event::Announce(to) => self.membership.announce(to),
                Event::Flush(before) => self.membership.flush(before),
                Event::Remove(id, done) => match self.membership.remove(&id) {
                    Ok((removed, out)) => {
                        self.apply(out);
                        self.publish();
                        let _ = done.send(Ok(removed));
                        continue;
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                        continue;
                    }
                },
                Event::Leave(done) => {
                    let out = self.membership.leave();
                    self.apply(out);
                    self.publish();
                    tracing::info!("leaving the cluster");
                    tokio::time::sleep(LEAVE_LINGER).await;
                    let _ = done.send(());
                    return;
                }
            };
            self.apply(out);
            self.publish();
        }
    }

    fn apply(&mut self, out: Output) {
        for (to, data) in out.sends {
            let peer = Peer::new(&to.id, to.peer);
            self.transport.send(&peer, OneWay::Gossip(data));
        }
        for (after, timer) in out.timers {
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = events.send(Event::Timer(timer)).await;
            });
        }
    }

    /// Publishes a new view if anything a reader can see changed.
    fn publish(&mut self) {
        let members = self.membership.members();
        let flushed = self.membership.flushed();
        let removed = self.membership.removed_lives();
        let current = self.view.borrow().clone();
        if current.members == members && current.flushed == flushed && current.removed == removed {
            return;
        }
        let ring_changed = ring_inputs(&current.members).ne(ring_inputs(&members));
        for m in &members {
            let before = current.member(&m.info.id).map(|c| c.state);
            if before != Some(m.state) {
                tracing::info!(member = %m.info.id, state = m.state.as_str(), "membership change");
            }
        }
        let ring = if ring_changed {
            Arc::new(ring_of(&members))
        } else {
            Arc::clone(&current.ring)
        };
        self.view.send_replace(Arc::new(ClusterView {
            me: self.membership.me().id.clone(),
            members,
            ring,
            flushed,
            removed,
        }));
    }
}

/// What [`ring_of`] builds the ring from: members not left, with zone and weight.
fn ring_inputs(members: &[MemberView]) -> impl Iterator<Item = (&str, &str, u32)> {
    members
        .iter()
        .filter(|m| m.state != MemberState::Left)
        .map(|m| (m.info.id.as_str(), m.info.zone.as_str(), m.info.vnodes))
}

fn snapshot(m: &Membership) -> ClusterView {
    let members = m.members();
    ClusterView {
        me: m.me().id.clone(),
        ring: Arc::new(ring_of(&members)),
        members,
        flushed: m.flushed(),
        removed: m.removed_lives(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::MemoryNetwork;

    fn info(i: usize) -> NodeInfo {
        NodeInfo::simulated(format!("n{i}"), [10, 0, 0, i as u8].into(), "z", 16, 1)
    }

    fn state(node: &Node, of: usize) -> Option<MemberState> {
        node.view().member(&format!("n{of}")).map(|m| m.state)
    }

    async fn until(nodes: &[&Node], of: usize, want: MemberState, limit: Duration) {
        let start = tokio::time::Instant::now();
        while !nodes.iter().all(|n| state(n, of) == Some(want)) {
            assert!(
                start.elapsed() < limit,
                "n{of} not {want:?} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The runtime carries an operator's removal to the membership and publishes the view
    /// without the removed member on the ring before it answers.
    #[tokio::test(start_paused = true)]
    async fn removal_through_the_runtime_publishes_the_new_ring_before_answering() {
        let net = MemoryNetwork::new(7);
        let mut nodes: Vec<Node> = (0..4)
            .map(|i| {
                let node = Node::start(
                    NodeSpec {
                        me: info(i),
                        seeds: (0..4).filter(|&j| j != i).map(info).collect(),
                        gossip: GossipConfig::default(),
                        rng_seed: i as u64,
                        removed: Vec::new(),
                    },
                    Arc::new(net.transport(&format!("n{i}"))) as Arc<dyn Transport>,
                );
                net.attach(&format!("n{i}"), node.handler());
                node
            })
            .collect();
        for of in 0..4 {
            until(
                &nodes.iter().collect::<Vec<_>>(),
                of,
                MemberState::Alive,
                SETTLE,
            )
            .await;
        }
        net.crash("n3");
        nodes.pop().expect("n3").abort();
        let live: Vec<&Node> = nodes.iter().collect();
        until(&live, 3, MemberState::Dead, SETTLE).await;

        let control = nodes[1].control();
        assert!(matches!(
            control.remove("n1").await,
            Err(ControlError::Refused(RemoveError::Myself(_)))
        ));
        assert!(matches!(
            control.remove("n2").await,
            Err(ControlError::Refused(RemoveError::NotDead { .. }))
        ));
        assert!(matches!(
            control.remove("n9").await,
            Err(ControlError::Refused(RemoveError::Unknown { .. }))
        ));
        assert_eq!(control.remove("n3").await, Ok(Removed::Now));
        let view = nodes[1].view();
        assert_eq!(state(&nodes[1], 3), Some(MemberState::Left));
        assert!(view.ring.member("n3").is_none());
        until(&live, 3, MemberState::Left, Duration::from_secs(3)).await;
        for node in &live {
            let view = node.view();
            let shares = view.ring.shares();
            assert_eq!(shares.len(), 3);
            assert!((shares.values().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        assert_eq!(control.remove("n3").await, Ok(Removed::Already));
    }

    const SETTLE: Duration = Duration::from_secs(30);
}

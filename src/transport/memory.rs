//! A simulated network inside one process: every node's runtime runs as tokio tasks and
//! messages travel through this hub, with seeded loss, duplication, random delay (hence
//! reordering), partitions and crashes. Under tokio's paused clock a test of many seconds of cluster life
//! runs in milliseconds and, for a given seed and schedule, the same way every time.
//!
//! Messages are encoded and decoded on the way, as on the wire, so the codec is exercised too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{BoxFuture, FaultTable, Handler, Peer, Transport, TransportError};
use crate::rpc::{self, EncodedRequest, OneWay, Response};

struct NodeSlot {
    handler: Option<Arc<dyn Handler>>,
    faults: FaultTable,
    up: bool,
}

struct NetState {
    rng: StdRng,
    nodes: BTreeMap<String, NodeSlot>,
    loss: f64,
    /// Probability that a message is delivered twice (a request is then served twice; the
    /// caller sees one answer).
    duplicate: f64,
    delay_ms: (u64, u64),
    /// Partition group of each node; nodes not listed share one extra group.
    groups: Option<BTreeMap<String, usize>>,
    dropped: u64,
}

/// The shared network. Cheap to clone.
#[derive(Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetState>>,
}

impl MemoryNetwork {
    /// A network with no loss and 1-5 ms of delay; `seed` drives every random choice.
    pub fn new(seed: u64) -> Self {
        MemoryNetwork {
            state: Arc::new(Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                nodes: BTreeMap::new(),
                loss: 0.0,
                duplicate: 0.0,
                delay_ms: (1, 5),
                groups: None,
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The transport of node `id` (created on first use).
    pub fn transport(&self, id: &str) -> MemoryTransport {
        let mut st = self.lock();
        let slot = st.nodes.entry(id.to_string()).or_insert_with(|| NodeSlot {
            handler: None,
            faults: FaultTable::default(),
            up: true,
        });
        MemoryTransport {
            id: id.to_string(),
            faults: slot.faults.clone(),
            net: self.clone(),
        }
    }

    /// Delivers what peers send to `id` to `handler`, and marks the node up.
    pub fn attach(&self, id: &str, handler: Arc<dyn Handler>) {
        let mut st = self.lock();
        if let Some(slot) = st.nodes.get_mut(id) {
            slot.handler = Some(handler);
            slot.up = true;
        }
    }

    /// The node stops receiving and sending, as if its process died.
    pub fn crash(&self, id: &str) {
        if let Some(slot) = self.lock().nodes.get_mut(id) {
            slot.up = false;
            slot.handler = None;
        }
    }

    /// Probability that any one message is lost.
    pub fn set_loss(&self, p: f64) {
        self.lock().loss = p.clamp(0.0, 1.0);
    }

    /// Probability that any one message is delivered twice.
    pub fn set_duplicate(&self, p: f64) {
        self.lock().duplicate = p.clamp(0.0, 1.0);
    }

    /// Each message is delayed uniformly within this range (so messages reorder).
    pub fn set_delay_ms(&self, min: u64, max: u64) {
        self.lock().delay_ms = (min, max.max(min));
    }

    /// Only nodes of the same group can talk; nodes not listed form one more group.
    pub fn partition(&self, groups: &[&[&str]]) {
        let map = groups
            .iter()
            .enumerate()
            .flat_map(|(g, ids)| ids.iter().map(move |id| (id.to_string(), g)))
            .collect();
        self.lock().groups = Some(map);
    }

    /// Ends the partition; loss, delay and crashes stay as they are.
    pub fn heal(&self) {
        self.lock().groups = None;
    }

    /// Messages lost so far (loss, partitions, crashed nodes, injected drops).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Decides the fate of one message from `from` to `to`: `None` if it is lost, else the
    /// recipient's handler, the delay before delivery, and the delay of a duplicate if the
    /// message is to arrive twice.
    fn route(
        &self,
        from: &str,
        to: &str,
    ) -> Option<(Arc<dyn Handler>, Duration, Option<Duration>)> {
        let mut st = self.lock();
        let st = &mut *st;
        let sender_up = st.nodes.get(from).is_some_and(|s| s.up);
        let group = |id: &str| st.groups.as_ref().map(|g| g.get(id).copied());
        let split = st.groups.is_some() && group(from) != group(to);
        let lost = st.loss > 0.0 && st.rng.random_bool(st.loss);
        let delay = Duration::from_millis(st.rng.random_range(st.delay_ms.0..=st.delay_ms.1));
        let twice = (st.duplicate > 0.0 && st.rng.random_bool(st.duplicate))
            .then(|| Duration::from_millis(st.rng.random_range(st.delay_ms.0..=st.delay_ms.1 * 2)));
        let target = st.nodes.get(to).filter(|s| s.up);
        let refused = target.is_none_or(|t| t.faults.drops(from));
        match target.and_then(|t| t.handler.clone()) {
            Some(handler) if sender_up && !split && !lost && !refused => {
                Some((handler, delay, twice))
            }
            _ => {
                st.dropped += 1;
                None
            }
        }
    }

    /// Ids of every node on the network.
    pub fn ids(&self) -> BTreeSet<String> {
        self.lock().nodes.keys().cloned().collect()
    }
}

/// One node's end of the [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    id: String,
    faults: FaultTable,
    net: MemoryNetwork,
}

impl Transport for MemoryTransport {
    fn local_id(&self) -> &str {
        &self.id
    }

    fn send(&self, to: &Peer, msg: OneWay) {
        if self.faults.drops(&to.id) {
            return;
        }
        let Ok(bytes) = rpc::encode(&msg) else {
            return;
        };
        let injected = self.faults.delay(&to.id);
        let (net, from, to) = (self.net.clone(), self.id.clone(), to.id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(injected).await;
            if let Some((handler, delay, twice)) = net.route(&from, &to) {
                let deliver = move |handler: Arc<dyn Handler>| match rpc::decode::<OneWay>(&bytes) {
                    Ok(msg) => handler.one_way(&from, msg),
                    Err(e) => tracing::warn!(peer = %from, "dropping malformed message: {e}"),
                };
                if let Some(again) = twice {
                    let (handler, deliver) = (Arc::clone(&handler), deliver.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(again).await;
                        deliver(handler);
                    });
                }
                tokio::time::sleep(delay).await;
                deliver(handler);
            }
        });
    }

    fn call_encoded(
        &self,
        to: &Peer,
        req: EncodedRequest,
        timeout: Duration,
    ) -> BoxFuture<Result<Response, TransportError>> {
        let (net, from, to) = (self.net.clone(), self.id.clone(), to.id.to_string());
        let dropped = self.faults.drops(&to);
        let injected = self.faults.delay(&to);
        // The peer's injected delay towards us holds its answer back.
        let answer_delay = self
            .net
            .lock()
            .nodes
            .get(&to)
            .map_or(Duration::ZERO, |slot| slot.faults.delay(&from));
        Box::pin(async move {
            if dropped {
                return Err(TransportError::Dropped(to));
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let exchange = async {
                tokio::time::sleep(injected).await;
                let (handler, delay, twice) = net.route(&from, &to)?;
                let req = req.decode().ok()?;
                if let Some(again) = twice {
                    // The duplicate is served too; its answer goes nowhere.
                    let (handler, from, req) = (Arc::clone(&handler), from.clone(), req.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(again).await;
                        handler.request(&from, req).await;
                    });
                }
                tokio::time::sleep(delay).await;
                let changes = req.changes_state();
                let resp = handler.request(&from, req).await;
                if changes && let Some(settled) = handler.settled() {
                    settled.await;
                }
                tokio::time::sleep(answer_delay).await;
                let (_, back, _) = net.route(&to, &from)?;
                tokio::time::sleep(back).await;
                Some(resp)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Some(resp)) => Ok(resp),
                // A lost message looks like silence: the caller waits out its deadline.
                Ok(None) => {
                    tokio::time::sleep_until(deadline).await;
                    Err(TransportError::Timeout(to, timeout))
                }
                Err(_) => Err(TransportError::Timeout(to, timeout)),
            }
        })
    }

    fn faults(&self) -> &FaultTable {
        &self.faults
    }
}

//! How messages get from one node to another.
//!
//! The node runtime talks to peers through [`Transport`] and hears from them through a
//! [`Handler`]; two implementations exist: [`quic`] (mutual-TLS QUIC between processes) and
//! [`memory`] (a simulated network inside one process, with seeded drop, delay, reorder,
//! partitions and crashes, for tests of the runtime under tokio's paused clock).
//!
//! Both apply the operator's injected faults ([`Faults`], set through `/admin/faults`) at the
//! same place: a message to or from a dropped peer is discarded, a message to a delayed peer
//! waits first.

pub mod memory;
pub mod quic;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::rpc::{Call, Encoded, EncodedRequest, OneWay, ReplicaError, Request, Response};

/// A boxed future, so the traits below stay object safe.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who to talk to: a node id and where it listens. Cheap to clone (the id is shared), since
/// every replica call carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The peer's node id, which its certificate must carry.
    pub id: Arc<str>,
    /// The peer's node-to-node address.
    pub addr: SocketAddr,
}

impl Peer {
    /// The peer `id` listening at `addr`.
    pub fn new(id: &str, addr: SocketAddr) -> Self {
        Peer {
            id: id.into(),
            addr,
        }
    }
}

/// Why a call failed. The coordinator treats all of them as "no answer from this replica".
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// No connection to the peer (id, reason), or it broke before the answer came.
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    /// The peer (id) did not answer within the timeout.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// Fault injection discards traffic with the peer (id).
    #[error("traffic with {0} is dropped by fault injection")]
    Dropped(String),
    /// The peer's answer could not be decoded (peer id, reason).
    #[error("{0} answered with a malformed frame: {1}")]
    Protocol(String, String),
    /// The request could not be encoded, so it was not sent (peer id, reason).
    #[error("a request to {0} could not be encoded: {1}")]
    Unencodable(String, String),
}

/// Why a typed call ([`Ask::ask`]) got no answer of its kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The message did not get there, or its answer did not get back.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer answered that it could not serve the request.
    #[error("{peer}: {error}")]
    Refused {
        /// Who refused.
        peer: Arc<str>,
        /// Why.
        error: ReplicaError,
    },
    /// The peer answered with an answer to another kind of request.
    #[error("{peer} answered {call} with {got}")]
    Mismatched {
        /// Who answered.
        peer: Arc<str>,
        /// What was asked.
        call: &'static str,
        /// What came back.
        got: &'static str,
    },
}

/// The typed answer of call `C` out of what came back from `peer`.
pub fn answer_of<C: Call>(
    peer: &Arc<str>,
    result: Result<Response, TransportError>,
) -> Result<C::Answer, CallError> {
    match C::answer(result?) {
        Ok(answer) => Ok(answer),
        Err(Response::Error(error)) => Err(CallError::Refused {
            peer: Arc::clone(peer),
            error,
        }),
        Err(other) => Err(CallError::Mismatched {
            peer: Arc::clone(peer),
            call: C::NAME,
            got: other.name(),
        }),
    }
}

/// Typed calls on any transport: the message names its answer ([`Call`]).
pub trait Ask {
    /// Sends `msg` to `to` and waits at most `timeout` for its answer.
    fn ask<C: Call>(
        &self,
        to: &Peer,
        msg: C,
        timeout: Duration,
    ) -> impl Future<Output = Result<C::Answer, CallError>> + Send + 'static;

    /// [`Ask::ask`] with the message encoded beforehand.
    fn ask_encoded<C: Call>(
        &self,
        to: &Peer,
        msg: &Encoded<C>,
        timeout: Duration,
    ) -> impl Future<Output = Result<C::Answer, CallError>> + Send + 'static;

    /// [`Ask::ask`] with the message encoded beforehand; the answer goes to `done` from
    /// whichever task receives it (see [`Transport::call_then`]).
    fn ask_then<C: Call>(
        &self,
        to: &Peer,
        msg: &Encoded<C>,
        timeout: Duration,
        done: impl FnOnce(Result<C::Answer, CallError>) + Send + 'static,
    );
}

impl<T: Transport + ?Sized> Ask for T {
    fn ask<C: Call>(
        &self,
        to: &Peer,
        msg: C,
        timeout: Duration,
    ) -> impl Future<Output = Result<C::Answer, CallError>> + Send + 'static {
        let call = self.call(to, msg.into(), timeout);
        let peer = Arc::clone(&to.id);
        async move { answer_of::<C>(&peer, call.await) }
    }

    fn ask_encoded<C: Call>(
        &self,
        to: &Peer,
        msg: &Encoded<C>,
        timeout: Duration,
    ) -> impl Future<Output = Result<C::Answer, CallError>> + Send + 'static {
        let call = self.call_encoded(to, msg.request().clone(), timeout);
        let peer = Arc::clone(&to.id);
        async move { answer_of::<C>(&peer, call.await) }
    }

    fn ask_then<C: Call>(
        &self,
        to: &Peer,
        msg: &Encoded<C>,
        timeout: Duration,
        done: impl FnOnce(Result<C::Answer, CallError>) + Send + 'static,
    ) {
        let peer = Arc::clone(&to.id);
        let reply = AnswerTo::new(Arc::clone(&to.id), move |result| {
            done(answer_of::<C>(&peer, result))
        });
        self.call_then(to, msg.request().clone(), timeout, reply);
    }
}

/// Where the answer to a call goes: called once, by whichever task receives the answer. Dropped
/// without an answer (a transport shutting down), it reports the call as unanswered, so no
/// caller waits for an answer that will never come.
pub struct AnswerTo {
    peer: Arc<str>,
    to: Option<ReplyFn>,
}

/// What an [`AnswerTo`] calls.
type ReplyFn = Box<dyn FnOnce(Result<Response, TransportError>) + Send>;

impl AnswerTo {
    /// An answer slot that calls `to` with the result of a call to `peer`.
    pub fn new(
        peer: Arc<str>,
        to: impl FnOnce(Result<Response, TransportError>) + Send + 'static,
    ) -> Self {
        AnswerTo {
            peer,
            to: Some(Box::new(to)),
        }
    }

    /// Hands over the answer.
    pub fn send(mut self, result: Result<Response, TransportError>) {
        if let Some(to) = self.to.take() {
            to(result);
        }
    }
}

impl Drop for AnswerTo {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to(Err(TransportError::Unreachable(
                self.peer.to_string(),
                "the request was dropped unsent".into(),
            )));
        }
    }
}

/// The node side of a transport: what to do with what peers send.
pub trait Handler: Send + Sync + 'static {
    /// A one-way message from `from`, an id the transport authenticated.
    fn one_way(&self, from: &str, msg: OneWay);
    /// A request from `from`; the answer goes back on the same exchange.
    fn request(&self, from: &str, req: Request) -> BoxFuture<Response>;
    /// Answers `req` at once when that needs no waiting (a replica's read or merge of one
    /// key), else gives it back for [`Handler::request`]: a batch of such requests is then
    /// served in one pass, without a future for each.
    fn request_now(&self, from: &str, req: Request) -> Result<Response, Box<Request>> {
        let _ = from;
        Err(Box::new(req))
    }
    /// What to wait for before answers leave: the durable log reaching what the requests
    /// served so far changed (`None`: nothing). Awaited once per batch, so the requests of a
    /// batch share one wait (group commit).
    fn settled(&self) -> Option<BoxFuture<()>> {
        None
    }
}

/// Sending side of a transport.
pub trait Transport: Send + Sync + 'static {
    /// This node's id.
    fn local_id(&self) -> &str;
    /// Sends without waiting or confirmation (gossip: SWIM tolerates loss).
    fn send(&self, to: &Peer, msg: OneWay);
    /// Sends a request and waits at most `timeout` for its answer.
    fn call(
        &self,
        to: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Response, TransportError>> {
        match EncodedRequest::new(&req) {
            Ok(req) => self.call_encoded(to, req, timeout),
            Err(e) => {
                let error = TransportError::Unencodable(to.id.to_string(), e.to_string());
                Box::pin(std::future::ready(Err(error)))
            }
        }
    }
    /// [`Transport::call`] with a request encoded beforehand: a write to several replicas
    /// is encoded once.
    fn call_encoded(
        &self,
        to: &Peer,
        req: EncodedRequest,
        timeout: Duration,
    ) -> BoxFuture<Result<Response, TransportError>>;
    /// [`Transport::call_encoded`] with the answer handed to `reply` instead of awaited: the
    /// coordinator's replica calls, by the thousand, need no future of their own. By default
    /// a task awaits the call.
    fn call_then(&self, to: &Peer, req: EncodedRequest, timeout: Duration, reply: AnswerTo) {
        let call = self.call_encoded(to, req, timeout);
        tokio::spawn(async move { reply.send(call.await) });
    }
    /// The fault table this transport applies.
    fn faults(&self) -> &FaultTable;
}

/// Injected faults, as `/admin/faults` sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Peers whose traffic (both ways) is discarded.
    pub drop: BTreeSet<String>,
    /// Peers whose outgoing traffic waits this long first.
    pub delay: BTreeMap<String, Duration>,
}

/// Faults currently in force; shared between the transport and the admin API.
#[derive(Debug, Default, Clone)]
pub struct FaultTable {
    inner: Arc<RwLock<Faults>>,
    /// Delays that are part of the setup rather than faults (`zone_delay_ms`, a local
    /// stand-in for the distance between zones): `/admin/faults` neither shows nor clears
    /// them, and an injected delay to a peer replaces its base delay.
    base_delay: Arc<RwLock<BTreeMap<String, Duration>>>,
}

impl FaultTable {
    /// Faults are plain data, valid even if a writer panicked: a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Faults> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces all faults (each `/admin/faults` POST replaces the previous ones).
    pub fn set(&self, faults: Faults) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = faults;
    }

    /// A copy of the current faults, as `/admin/faults` shows them.
    pub fn get(&self) -> Faults {
        self.read().clone()
    }

    /// Whether traffic with `peer` is discarded.
    pub fn drops(&self, peer: &str) -> bool {
        self.read().drop.contains(peer)
    }

    /// How long traffic to `peer` waits before leaving.
    pub fn delay(&self, peer: &str) -> Duration {
        if let Some(d) = self.read().delay.get(peer) {
            return *d;
        }
        self.base_delay
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(peer)
            .copied()
            .unwrap_or_default()
    }

    /// Sets the base delay of traffic to `peer` (zero removes it).
    pub fn set_base_delay(&self, peer: &str, delay: Duration) {
        let mut base = self
            .base_delay
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if delay.is_zero() {
            base.remove(peer);
        } else {
            base.insert(peer.to_string(), delay);
        }
    }

    /// Waits out the delay to `peer`. Without one it returns at once: even a zero-length
    /// tokio sleep waits for the timer's next tick (up to 1 ms), which every message would pay.
    pub async fn wait_delay(&self, peer: &str) {
        let delay = self.delay(peer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

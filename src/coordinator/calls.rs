//! Calls from a coordinator to the replicas of a key, typed by the message ([`Call`]): this
//! node's own replica is served in place, the others through the transport. Failures come back
//! as text for the coordinator's 503 message, naming the replica.

use std::time::Duration;

use tokio::time::Instant;

use super::placement::Target;
use super::{Coordinator, is_reachable};
use crate::rpc::{Call, Encoded};
use crate::transport::{Ask, BoxFuture, answer_of};

impl Coordinator {
    /// Sends `msg` to one replica (this node's own without the network) until `deadline`.
    pub(super) fn call<C: Call>(
        &self,
        target: &Target,
        msg: C,
        deadline: Instant,
        rpc: &'static str,
    ) -> BoxFuture<Result<C::Answer, String>> {
        if target.is(&self.inner.me) {
            return Box::pin(std::future::ready(self.serve_here(msg)));
        }
        let msg = match Encoded::new(msg) {
            Ok(msg) => msg,
            Err(e) => {
                let why = format!("{}: the request could not be encoded: {e}", target.id);
                return Box::pin(std::future::ready(Err(why)));
            }
        };
        let (tx, answer) = tokio::sync::oneshot::channel();
        self.send(target, &msg, deadline, rpc, move |result| {
            let _ = tx.send(result);
        });
        let id = target.id.clone();
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(format!("{id}: the call ended without an answer")))
        })
    }

    /// Serves `msg` from this node's own replica.
    pub(super) fn serve_here<C: Call>(&self, msg: C) -> Result<C::Answer, String> {
        let me = &self.inner.me;
        match self.inner.replica.serve(msg.into()) {
            Ok(response) => answer_of::<C>(me, Ok(response)).map_err(|e| e.to_string()),
            Err(other) => Err(format!("{me}: {} is not a replica request", other.name())),
        }
    }

    /// Sends an encoded message to another node's replica until `deadline` and hands the
    /// answer (an error if the replica is down, refused, or silent) to `done`, from whichever
    /// task receives it: the hot path's replica calls are not futures of their own.
    pub(super) fn send<C: Call>(
        &self,
        target: &Target,
        msg: &Encoded<C>,
        deadline: Instant,
        rpc: &'static str,
        done: impl FnOnce(Result<C::Answer, String>) + Send + 'static,
    ) {
        let peer = match &target.peer {
            Some(peer) if is_reachable(target.state) => peer,
            _ => return done(Err(format!("{} is {}", target.id, target.state.as_str()))),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let this = self.clone();
        self.inner
            .transport
            .ask_then(peer, msg, remaining, move |result| {
                this.inner.metrics.rpc(rpc, result.is_ok());
                done(result.map_err(|e| e.to_string()));
            });
    }

    /// The cluster's request timeout, for calls that outlive the request that caused them
    /// (repairs, hint deliveries, anti-entropy).
    pub(super) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.defaults.timeout_ms)
    }
}

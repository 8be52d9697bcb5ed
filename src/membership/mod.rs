//! Membership: who is in the cluster and who is alive, by SWIM gossip.
//!
//! The protocol itself is foca's (probe, indirect probe through k members, suspicion with
//! incarnation numbers so a live member can refute it, dead after a suspicion timeout,
//! updates piggybacked on every message). This module wraps it sans-io: bytes and timer
//! events go in, bytes to send, timers to set and membership changes come out, and time is
//! whatever the driver says it is. The node runtime drives it over QUIC; the simulator drives
//! a hundred of them in one process.
//!
//! On top of foca it keeps what the rest of quorumkv needs: every member ever known (the
//! config's nodes from the start), its state as `alive`, `suspect`, `dead` or `left`, and the
//! ring built from every member that has not left. A dead member leaves the ring only when an
//! operator removes it ([`Membership::remove`]; how removals spread is in [`removal`]).

pub mod codec;
pub mod identity;
pub mod removal;
pub mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, Incarnation, Member, OwnedNotification, State, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

pub use codec::RmpCodec;
pub use identity::NodeInfo;

use crate::causality::Timestamp;
use crate::ring::{Ring, RingMember};

/// A member's state as the rest of the system (and `/admin/status`) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers probes (directly or through other members).
    Alive,
    /// Missed its probes; it can still refute the suspicion before it times out.
    Suspect,
    /// Declared dead, or not heard from at all; it keeps its ring share until an operator
    /// removes it.
    Dead,
    /// Left the cluster or was removed by an operator; it holds no ring share.
    Left,
}

impl MemberState {
    /// The lowercase name `/admin/status` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// A member and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's identity and addresses.
    pub info: NodeInfo,
    /// What this member currently believes of it.
    pub state: MemberState,
}

/// A timer event to feed back to [`Membership::handle_timer`] after the delay it came with.
/// Opaque: the driver only keeps it and hands it back.
#[derive(Debug, Clone)]
pub struct GossipTimer(TimerKind);

#[derive(Debug, Clone)]
enum TimerKind {
    /// One foca asked for.
    Foca(Timer<NodeInfo>),
    /// The backstop for a suspicion this member learned from others (see
    /// [`Membership::time_suspicions`]).
    Suspicion {
        member: NodeInfo,
        incarnation: Incarnation,
    },
    /// Time for a member that knows no live member to announce itself again (see
    /// [`GossipConfig::rejoin_every`]).
    Rejoin,
}

/// What a step of the protocol asks the driver to do.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send: to whom, what.
    pub sends: Vec<(NodeInfo, Bytes)>,
    /// Timer events to feed back after a delay.
    pub timers: Vec<(Duration, GossipTimer)>,
}

/// Protocol timing. Defaults follow memberlist's LAN settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Time between probes of one member by this member.
    pub probe_period: Duration,
    /// How long a direct probe waits for its answer before probing indirectly.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly when a direct probe gets no answer.
    pub indirect_probes: usize,
    /// Suspicion lasts `suspicion_multiplier * log10(max(cluster size, 10)) * probe_period`.
    pub suspicion_multiplier: f64,
    /// Largest gossip message; must fit one QUIC datagram.
    pub max_packet_size: usize,
    /// How long a dead member stays known (foca then forgets it; we keep it listed as dead).
    pub remove_down_after: Duration,
    /// How often to announce to a couple of members believed dead, so that two sides of a
    /// healed partition find each other again. 1 s: in the simulator (`examples/
    /// partition_heal`, 40 seeds, a 10 s partition) the heal to one view took on average
    /// 4.2 s at 5 s (2|2 split of 4 nodes; 4.5 s for 6|6 of 12), 2.8 s at 2 s, 1.4 s at 1 s;
    /// and the false deaths at 20% loss (`examples/gossip_loss -- 0.2 4 3 100 8 MS`) were the
    /// same at 5, 2 and 1 s (6 runs of 100, 41 dead observations). The cost: one small
    /// packet per second from each member to a dead one, until it is back or removed.
    pub announce_to_dead_every: Duration,
    /// How often to ask one random member for its member list (memberlist's push/pull), so
    /// a member that (re)joined learns everyone, not only who happened to talk to it.
    pub sync_every: Duration,
    /// Each update is piggybacked `retransmit_multiplier * log10(cluster size + 1)` times.
    /// memberlist uses 4; under message loss a refutation must reach every member that
    /// suspects, so quorumkv sends more.
    pub retransmit_multiplier: f64,
    /// A suspicion a member learned from others (rather than raised by its own failed probe)
    /// is ended by that member after this many suspicion timeouts, if neither the suspect's
    /// refutation nor the raiser's verdict has ended it first. A backstop: the raiser's timer
    /// can be lost (it crashed, or it rejoined under a new identity), and a suspect that never
    /// heard the rumour cannot refute it.
    pub learned_suspicion_multiplier: f64,
    /// How often a member that is not connected announces itself again to members it knows
    /// of (two at a time, in turn), until one answers. foca alone never would: once every
    /// member it knew is down it goes idle, and after taking a new identity (declared dead,
    /// it rejoins as a new generation) it waits to be spoken to; either way it has no timers
    /// and sends nothing, relying on the others announcing to it. But members that restarted
    /// or rejoined meanwhile never knew it: after a 10 s 2|2 partition of 4 nodes every
    /// member had rejoined under a new identity, each waiting for the others, and 4 of 40
    /// simulated heals never happened. 1 s, like `announce_to_dead_every`.
    pub rejoin_every: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_multiplier: 4.0,
            max_packet_size: 1200,
            remove_down_after: Duration::from_secs(24 * 3600),
            announce_to_dead_every: Duration::from_secs(1),
            retransmit_multiplier: 8.0,
            sync_every: Duration::from_secs(5),
            learned_suspicion_multiplier: 2.0,
            rejoin_every: Duration::from_secs(1),
        }
    }
}

impl GossipConfig {
    fn foca_config(&self, cluster_size: usize) -> foca::Config {
        let size = NonZeroU32::new(u32::try_from(cluster_size.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let mut c = foca::Config::new_lan(size);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes = std::num::NonZeroUsize::new(self.indirect_probes.max(1))
            .unwrap_or(c.num_indirect_probes);
        let scale = (cluster_size.max(10) as f64).log10();
        c.suspect_to_down_after = self.probe_period.mul_f64(self.suspicion_multiplier * scale);
        c.max_packet_size =
            std::num::NonZeroUsize::new(self.max_packet_size).unwrap_or(c.max_packet_size);
        c.remove_down_after = Some(self.remove_down_after);
        // Tell a member we declared dead so it rejoins (how partitions heal). See
        // `handle_timer` for the case where foca would say it wrongly.
        c.notify_down_members = true;
        let tx =
            (self.retransmit_multiplier * ((cluster_size + 1) as f64).log10()).clamp(1.0, 255.0);
        c.max_transmissions = std::num::NonZeroU8::new(tx as u8).unwrap_or(c.max_transmissions);
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.sync_every,
            num_members: std::num::NonZeroUsize::MIN,
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_to_dead_every,
            num_members: std::num::NonZeroUsize::MIN.saturating_add(1),
        });
        c
    }

    /// Time after which a silent member is surely declared dead: a full round of probes, the
    /// suspicion, and slack for dissemination.
    pub fn detection_bound(&self, cluster_size: usize) -> Duration {
        let c = self.foca_config(cluster_size);
        c.probe_period * 3 + c.suspect_to_down_after + c.probe_period * 2
    }
}

/// Why gossip input was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// foca refused the message: it does not decode, or it does not fit the protocol.
    #[error("gossip: {0}")]
    Protocol(#[from] foca::Error),
    /// The message names a sender other than the authenticated peer that sent it.
    #[error("gossip message claims to come from {claimed} but the connection belongs to {actual}")]
    Impersonation {
        /// The id the message names as its sender.
        claimed: String,
        /// The id the connection it arrived on was authenticated as.
        actual: String,
    },
}

/// Why [`Membership::remove`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No member has this id.
    #[error("no member has the id {id:?}; known members are {known:?}")]
    Unknown {
        /// The id asked for.
        id: String,
        /// The ids this member knows, to show what was meant.
        known: Vec<String>,
    },
    /// The id is this member's own: a node cannot remove itself.
    #[error(
        "{0:?} is this node itself; a node cannot remove itself: stop it, then ask another \
         node to remove it once it is dead"
    )]
    Myself(String),
    /// The member is alive or suspect here; removing it would take a share from a live node.
    #[error(
        "{id} is {} here: only a dead member can be removed; stop it or let it leave first",
        state.as_str()
    )]
    NotDead {
        /// The member asked for.
        id: String,
        /// Its state as this member sees it.
        state: MemberState,
    },
}

/// What [`Membership::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The member was dead and is removed now.
    Now,
    /// The member had left, or was removed already: nothing to do.
    Already,
}

/// How many members an idle member announces itself to every [`GossipConfig::rejoin_every`].
const REJOIN_FANOUT: usize = 2;

/// One member's view of the cluster. See the module documentation.
pub struct Membership {
    foca: Foca<NodeInfo, RmpCodec, StdRng, removal::Handler>,
    runtime: AccumulatingRuntime<NodeInfo>,
    /// Latest known identity of every member, self included, by id.
    known: BTreeMap<String, NodeInfo>,
    config: GossipConfig,
    /// Suspicion timers handed to the driver and not yet back, by suspicion (member and
    /// incarnation): foca's own and our backstops. Every suspicion foca holds has at least
    /// one (see [`Membership::time_suspicions`]).
    suspicion_timers: HashMap<(NodeInfo, Incarnation), usize>,
    /// How long a learned suspicion lasts here (see [`Membership::time_suspicions`]).
    learned_suspicion: Duration,
    /// Every removal learned, shared with foca's broadcast handler.
    book: removal::SharedBook,
    /// The removals this wrapper has acted on: the latest removed life of each member.
    removed: BTreeMap<String, NodeInfo>,
    /// Whether foca knows a live member (between its `Active` and `Idle` notifications).
    connected: bool,
    /// Whether a [`TimerKind::Rejoin`] is with the driver.
    rejoin_pending: bool,
    /// Where the next round of rejoin announcements starts in the list of candidates.
    rejoin_cursor: usize,
}

impl Membership {
    /// A member `me` that knows of `seeds` (typically the config's other nodes) but has not
    /// heard from them yet. `rng_seed` makes the protocol's random choices reproducible.
    pub fn new(me: NodeInfo, seeds: &[NodeInfo], config: GossipConfig, rng_seed: u64) -> Self {
        let mut known: BTreeMap<String, NodeInfo> =
            seeds.iter().map(|s| (s.id.clone(), s.clone())).collect();
        known.insert(me.id.clone(), me.clone());
        let foca_config = config.foca_config(known.len());
        let learned_suspicion = foca_config
            .suspect_to_down_after
            .mul_f64(config.learned_suspicion_multiplier.max(1.0));
        let book = removal::SharedBook::default();
        let foca = Foca::with_custom_broadcast(
            me,
            foca_config,
            StdRng::seed_from_u64(rng_seed),
            RmpCodec,
            removal::Handler { book: book.clone() },
        );
        Membership {
            foca,
            runtime: AccumulatingRuntime::new(),
            known,
            config,
            suspicion_timers: HashMap::new(),
            learned_suspicion,
            book,
            removed: BTreeMap::new(),
            connected: false,
            rejoin_pending: false,
            rejoin_cursor: 0,
        }
    }

    /// This member's current identity.
    pub fn me(&self) -> &NodeInfo {
        self.foca.identity()
    }

    /// Announces this member to `to` (a seed); repeat for several to join faster.
    pub fn announce(&mut self, to: NodeInfo) -> Output {
        if let Err(e) = self.foca.announce(to, &mut self.runtime) {
            tracing::debug!("announce failed: {e}");
        }
        self.drain()
    }

    /// Takes in a gossip message that arrived over a connection authenticated as `from`.
    /// A message whose sender is someone else is refused: members cannot speak for others.
    pub fn handle_data(&mut self, from: &str, data: &[u8]) -> Result<Output, MembershipError> {
        let mut peek = data;
        let header: foca::Header<NodeInfo> =
            foca::Codec::decode_header(&mut RmpCodec, &mut peek)
                .map_err(|e| MembershipError::Protocol(foca::Error::Decode(Box::new(e))))?;
        if header.src.id != from {
            return Err(MembershipError::Impersonation {
                claimed: header.src.id,
                actual: from.to_string(),
            });
        }
        if header.message == foca::Message::Announce {
            // A member (re)joining or syncing may have missed removals: our answer and our
            // next messages carry them.
            self.hand_out_removals();
        }
        let result = self.foca.handle_data(data, &mut self.runtime);
        let out = self.drain();
        result?;
        Ok(out)
    }

    /// Takes in a timer event handed out earlier, once its delay has passed.
    pub fn handle_timer(&mut self, timer: GossipTimer) -> Output {
        let (member, incarnation, token) = match timer.0 {
            TimerKind::Foca(Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            }) => (member_id, incarnation, Some(token)),
            TimerKind::Foca(timer) => {
                if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!("gossip timer: {e}");
                }
                return self.drain();
            }
            TimerKind::Suspicion {
                member,
                incarnation,
            } => (member, incarnation, None),
            TimerKind::Rejoin => {
                self.rejoin_pending = false;
                self.rejoin();
                return self.drain();
            }
        };
        let key = (member, incarnation);
        if let Some(n) = self.suspicion_timers.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.suspicion_timers.remove(&key);
            }
        }
        let (member, incarnation) = key;
        // foca 2.0 sends its "you are down" courtesy message when a suspicion timer fires even
        // if the suspect refuted in the meantime (its incarnation check only guards the state
        // change). The suspect then has to rejoin under a new generation, and under 20% loss
        // that churn made live members look dead. A timer for a suspicion that no longer
        // stands is dropped here instead.
        if !self.suspects(&member, incarnation) {
            return self.drain();
        }
        if let Some(token) = token {
            let timer = Timer::ChangeSuspectToDown {
                member_id: member.clone(),
                incarnation,
                token,
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!("gossip timer: {e}");
            }
        }
        // Still suspect: foca ignored its own timer, or this is our backstop. foca drops every
        // timer set before its token changed (a new identity after being declared dead, or
        // going idle) but keeps the suspicions, and nobody else times them out: a suspect that
        // missed the rumour, and so never refuted, stayed suspect everywhere for good. Its
        // time is up: it is dead (it hears so from the next member it talks to, and rejoins).
        if self.suspects(&member, incarnation) {
            tracing::debug!(member = %member.id, incarnation, "suspicion timed out");
            let down = Member::new(member, incarnation, State::Down);
            if let Err(e) = self
                .foca
                .apply_many(std::iter::once(down), true, &mut self.runtime)
            {
                tracing::debug!("suspicion timeout: {e}");
            }
        }
        self.drain()
    }

    /// Whether foca holds `member` (this very identity) as suspect at `incarnation`.
    fn suspects(&self, member: &NodeInfo, incarnation: Incarnation) -> bool {
        self.foca.iter_membership_state().any(|m| {
            m.id() == member && m.state() == State::Suspect && m.incarnation() == incarnation
        })
    }

    /// Gives every suspicion foca holds a timer. foca times out only the suspicions it raised
    /// itself (a failed probe); one learned from gossip or a member list is left to its
    /// raiser's timer, which dies with the raiser, so a suspect that never heard of it would
    /// stay suspect. As in memberlist, every member that holds a suspicion times it out, but
    /// later than the raiser would (`learned_suspicion_multiplier`): a learned suspicion is
    /// often stale, and the suspect's next message to us (a newer incarnation) ends it first.
    /// At 1× the 20%-loss run of `examples/gossip_loss` saw five times as many false-dead
    /// observations; at 2×, the same as without the backstop.
    fn time_suspicions(&mut self, out: &mut Output) {
        let after = self.learned_suspicion;
        for m in self.foca.iter_membership_state() {
            if m.state() != State::Suspect {
                continue;
            }
            let key = (m.id().clone(), m.incarnation());
            if self.suspicion_timers.contains_key(&key) {
                continue;
            }
            self.suspicion_timers.insert(key.clone(), 1);
            let (member, incarnation) = key;
            out.timers.push((
                after,
                GossipTimer(TimerKind::Suspicion {
                    member,
                    incarnation,
                }),
            ));
        }
    }

    /// Leaves the cluster gracefully: others mark this member `left`, not `dead`.
    pub fn leave(&mut self) -> Output {
        let mut leaving = self.me().clone();
        leaving.leaving = true;
        if let Err(e) = self
            .foca
            .change_identity(leaving.clone(), &mut self.runtime)
        {
            tracing::debug!("leave: {e}");
        }
        self.known.insert(leaving.id.clone(), leaving);
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!("leave: {e}");
        }
        self.drain()
    }

    /// Collects what foca asked for. Notifications and removals go first: a rejoin they
    /// trigger queues more sends and timers, which the same drain then picks up.
    fn drain(&mut self) -> Output {
        loop {
            let mut busy = false;
            while let Some(n) = self.runtime.to_notify() {
                busy = true;
                self.notified(n);
            }
            let fresh = std::mem::take(&mut self.book.lock().fresh);
            for removal in fresh {
                busy = true;
                self.apply_removal(removal);
            }
            if !busy {
                break;
            }
        }
        self.forget_removed();
        let mut out = Output::default();
        while let Some((to, data)) = self.runtime.to_send() {
            out.sends.push((to, data));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if let Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } = &timer
            {
                *self
                    .suspicion_timers
                    .entry((member_id.clone(), *incarnation))
                    .or_default() += 1;
            }
            out.timers
                .push((after, GossipTimer(TimerKind::Foca(timer))));
        }
        self.time_suspicions(&mut out);
        if !self.connected && !self.rejoin_pending && !self.me().leaving {
            self.rejoin_pending = true;
            out.timers
                .push((self.config.rejoin_every, GossipTimer(TimerKind::Rejoin)));
        }
        out
    }

    fn notified(&mut self, n: OwnedNotification<NodeInfo>) {
        match n {
            OwnedNotification::MemberUp(m) => {
                // A new life of a member, or one back from the other side of a partition:
                // it may have missed removals.
                self.learn(m);
                self.hand_out_removals();
            }
            OwnedNotification::MemberDown(m) | OwnedNotification::Rename(_, m) => self.learn(m),
            OwnedNotification::Rejoin(me) => {
                // foca renewed our identity after we were declared dead; it starts over
                // disconnected, until a member answers the new identity.
                self.connected = false;
                self.learn(me);
            }
            OwnedNotification::Active => self.connected = true,
            OwnedNotification::Idle => {
                // Every member foca knew is down: it stops probing and sets no timers.
                // `drain` schedules our rejoin announcements instead.
                tracing::debug!("no live member known: announcing again until one answers");
                self.connected = false;
            }
            OwnedNotification::Defunct => {
                // Declared dead while alive (a partition that outlasted the suspicion):
                // come back as a new generation.
                self.connected = false;
                if let Some(next) = foca::Identity::renew(self.me()) {
                    self.take_identity(next);
                }
            }
        }
    }

    /// Takes a new identity (a new generation of this member).
    fn take_identity(&mut self, next: NodeInfo) {
        if let Err(e) = self.foca.change_identity(next.clone(), &mut self.runtime) {
            tracing::debug!("rejoin: {e}");
        }
        // foca starts over disconnected, until a member answers the new identity.
        self.connected = false;
        self.learn(next);
    }

    /// Acts on a removal just learned (from the operator's call or from gossip).
    fn apply_removal(&mut self, removed: NodeInfo) {
        if self
            .removed
            .get(&removed.id)
            .is_some_and(|known| known.generation >= removed.generation)
        {
            return;
        }
        tracing::info!(member = %removed.id, generation = removed.generation, "member removed");
        self.learn(removed.clone());
        self.removed.insert(removed.id.clone(), removed.clone());
        let me = self.me().clone();
        if me.id == removed.id && me.generation <= removed.generation && !me.leaving {
            // This very life was removed, so it was dead somewhere (a partition): come back
            // as a new member, as after being declared dead.
            tracing::warn!(
                "this node was removed while it was alive: rejoining as a new generation"
            );
            self.take_identity(NodeInfo {
                generation: removed.generation.saturating_add(1),
                ..me
            });
        }
    }

    /// Whether `info` is a removed life of its member.
    fn is_removed(&self, info: &NodeInfo) -> bool {
        self.removed
            .get(&info.id)
            .is_some_and(|r| info.generation <= r.generation)
    }

    /// Makes foca forget removed members it holds as down, so that it stops announcing to
    /// them (its announcements to dead members are how partitions heal; a removed member
    /// would only take a dead member's turn).
    fn forget_removed(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        let gone: Vec<NodeInfo> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Down && self.is_removed(m.id()))
            .map(|m| m.id().clone())
            .collect();
        for member in gone {
            if let Err(e) = self
                .foca
                .handle_timer(Timer::RemoveDown(member), &mut self.runtime)
            {
                tracing::debug!("forgetting a removed member: {e}");
            }
        }
    }

    /// Queues every removal this member knows, and the latest flush, for dissemination
    /// again.
    fn hand_out_removals(&mut self) {
        let flushed = self.book.lock().flushed.clone();
        let items: Vec<Vec<u8>> = self
            .removed
            .values()
            .map(|r| removal::Item::Removed(r.clone()).encode())
            .chain(flushed.map(|f| removal::Item::Flushed(f).encode()))
            .collect();
        for item in items {
            if let Err(e) = self.foca.add_broadcast(&item) {
                tracing::debug!("removal broadcast: {e}");
            }
        }
    }

    /// Spreads a flush of the typed namespace (`FLUSHALL`) with cutoff `before` to every
    /// member, those down or cut off now included once they are back.
    pub fn flush(&mut self, before: Timestamp) -> Output {
        let item = removal::Item::Flushed(before);
        if let Err(e) = self.foca.add_broadcast(&item.encode()) {
            tracing::warn!("flush broadcast: {e}");
        }
        if let Err(e) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!("flush broadcast: {e}");
        }
        self.drain()
    }

    /// The latest flush of the typed namespace this member has learned.
    pub fn flushed(&self) -> Option<Timestamp> {
        self.book.lock().flushed.clone()
    }

    /// Removes a dead member, as an operator decides (`DELETE /admin/members/{id}`): on
    /// every member that learns of it, this life of it (and any older one) is `left` and
    /// owns nothing on the ring. A later life (the process started again) joins as a new
    /// member. Only a member this node sees `dead` can be removed; one that `left`, or was
    /// removed already, is [`Removed::Already`].
    pub fn remove(&mut self, id: &str) -> Result<(Removed, Output), RemoveError> {
        if id == self.me().id {
            return Err(RemoveError::Myself(id.to_string()));
        }
        let Some(view) = self.member(id) else {
            return Err(RemoveError::Unknown {
                id: id.to_string(),
                known: self.known.keys().cloned().collect(),
            });
        };
        match view.state {
            MemberState::Alive | MemberState::Suspect => Err(RemoveError::NotDead {
                id: id.to_string(),
                state: view.state,
            }),
            MemberState::Left => Ok((Removed::Already, self.drain())),
            MemberState::Dead => {
                let item = removal::Item::Removed(NodeInfo {
                    leaving: false,
                    ..view.info
                });
                if let Err(e) = self.foca.add_broadcast(&item.encode()) {
                    tracing::warn!("removal broadcast: {e}");
                }
                // Tell a few members now rather than on the next probe.
                if let Err(e) = self.foca.broadcast(&mut self.runtime) {
                    tracing::debug!("removal broadcast: {e}");
                }
                Ok((Removed::Now, self.drain()))
            }
        }
    }

    /// Removals this member remembers from an earlier life (its durable log): acted on and
    /// gossiped again, as an operator's removal is, so a whole cluster that restarted keeps
    /// them removed.
    pub fn restore_removed(&mut self, lives: Vec<NodeInfo>) -> Output {
        for info in lives {
            let item = removal::Item::Removed(NodeInfo {
                leaving: false,
                ..info
            });
            if let Err(e) = self.foca.add_broadcast(&item.encode()) {
                tracing::warn!("removal broadcast: {e}");
            }
        }
        self.drain()
    }

    /// The removed life of every member removed, as this member knows them.
    pub fn removed_lives(&self) -> Vec<NodeInfo> {
        self.removed.values().cloned().collect()
    }

    /// Announces this member to the next few members it knows of, in turn, while foca knows
    /// no live member (see [`GossipConfig::rejoin_every`]).
    fn rejoin(&mut self) {
        if self.connected || self.me().leaving {
            return;
        }
        let me = self.me().id.clone();
        let candidates: Vec<NodeInfo> = self
            .known
            .values()
            .filter(|m| m.id != me && !m.leaving && !self.is_removed(m))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let n = candidates.len();
        for k in 0..REJOIN_FANOUT.min(n) {
            let to = candidates[(self.rejoin_cursor + k) % n].clone();
            if let Err(e) = self.foca.announce(to, &mut self.runtime) {
                tracing::debug!("rejoin announce: {e}");
            }
        }
        self.rejoin_cursor = (self.rejoin_cursor + REJOIN_FANOUT) % n;
    }

    fn learn(&mut self, info: NodeInfo) {
        let newer = self
            .known
            .get(&info.id)
            .is_none_or(|old| (info.generation, info.leaving) >= (old.generation, old.leaving));
        if newer {
            self.known.insert(info.id.clone(), info);
        }
    }

    /// Every known member with its state, by id.
    pub fn members(&self) -> Vec<MemberView> {
        let foca_states: BTreeMap<&str, (&NodeInfo, State)> = self
            .foca
            .iter_membership_state()
            .map(|m| (m.id().id.as_str(), (m.id(), m.state())))
            .collect();
        self.known
            .values()
            .map(|info| self.view_of(info, foca_states.get(info.id.as_str()).copied()))
            .collect()
    }

    /// One member's view, without building the whole list.
    pub fn member(&self, id: &str) -> Option<MemberView> {
        let info = self.known.get(id)?;
        let in_foca = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().id == id)
            .map(|m| (m.id(), m.state()));
        Some(self.view_of(info, in_foca))
    }

    /// Combines what we know of a member with foca's current opinion of it. A member foca
    /// does not know (yet, or any more) is dead: nobody has heard from it.
    fn view_of(&self, known: &NodeInfo, in_foca: Option<(&NodeInfo, State)>) -> MemberView {
        let me = self.me();
        if known.id == me.id {
            let state = if me.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            };
            return MemberView {
                info: me.clone(),
                state,
            };
        }
        let (info, state) = match in_foca {
            // foca may know a newer identity than the last notification told us.
            Some((current, state)) if current.generation >= known.generation => {
                (current.clone(), state)
            }
            Some(_) | None => (known.clone(), State::Down),
        };
        if let Some(removed) = self.removed.get(&info.id)
            && info.generation <= removed.generation
        {
            return MemberView {
                info: removed.clone(),
                state: MemberState::Left,
            };
        }
        let state = match (state, info.leaving) {
            (_, true) => MemberState::Left,
            (State::Alive, _) => MemberState::Alive,
            (State::Suspect, _) => MemberState::Suspect,
            (State::Down, _) => MemberState::Dead,
        };
        MemberView { info, state }
    }

    /// The ring of every member that has not left (see [`ring_of`]).
    pub fn ring(&self) -> Ring {
        ring_of(&self.members())
    }

    /// The timing this member runs with.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }
}

/// The ring of every member in `members` that has not left. A dead member keeps its share
/// until an operator removes it: its keys go to fallbacks by hinted handoff meanwhile.
pub fn ring_of(members: &[MemberView]) -> Ring {
    let members = members
        .iter()
        .filter(|m| m.state != MemberState::Left)
        .map(|m| RingMember::new(m.info.id.clone(), m.info.zone.clone(), m.info.vnodes.max(1)));
    // Ids come from a map, so they are distinct; vnodes are at least 1.
    Ring::new(members).unwrap_or_else(|_| Ring::new([]).unwrap_or_else(|_| unreachable!()))
}

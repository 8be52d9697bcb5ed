//! Scenarios on real members over an instant network driven by hand.
//!
//! A suspicion must end even when the member that raised it cannot end it any more: three
//! members, with a filter that keeps every "you are suspect" rumour from reaching the suspect
//! (as when it was cut off while the rumour's retransmissions ran out), so the suspect never
//! refutes. foca times out only the suspicions it raised itself by a failed probe; these
//! scenarios take that timer away.
//!
//! An operator's removal of a dead member reaches every member, including those down at the
//! time and those that join later, and a new life of the removed member joins again; a member
//! that knows no live member keeps announcing itself.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes};
use foca::{Codec, Header, Incarnation, Member, Message, State};

use super::*;

const A: usize = 0;
const B: usize = 1;
const X: usize = 2;

fn info(i: usize) -> NodeInfo {
    NodeInfo::simulated(format!("n{i}"), [10, 0, 0, i as u8 + 1].into(), "z", 8, 1)
}

/// Whether a packet from one member to another is delivered.
type Cut = fn(from: usize, to: usize, message: &Message<NodeInfo>) -> bool;

struct Net {
    now: Duration,
    members: Vec<Membership>,
    up: Vec<bool>,
    /// Due time, member, timer; run in due order, then in the order they were set.
    timers: Vec<(Duration, usize, GossipTimer)>,
    inbox: VecDeque<(usize, usize, Bytes)>,
    cut: Cut,
    /// Whether updates saying X is suspect are kept from X.
    hide_suspicion_from_x: bool,
}

impl Net {
    /// Three members that have formed a cluster; X never hears it is suspected.
    fn formed() -> Net {
        let mut net = Net::of(3);
        net.hide_suspicion_from_x = true;
        net
    }

    /// `n` members that have formed a cluster.
    fn of(n: usize) -> Net {
        let infos: Vec<NodeInfo> = (0..n).map(info).collect();
        let members = (0..n)
            .map(|i| Membership::new(infos[i].clone(), &infos, GossipConfig::default(), i as u64))
            .collect();
        let mut net = Net {
            now: Duration::ZERO,
            members,
            up: vec![true; n],
            timers: Vec::new(),
            inbox: VecDeque::new(),
            cut: |_, _, _| false,
            hide_suspicion_from_x: false,
        };
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                let out = net.members[i].announce(infos[j].clone());
                net.apply(i, out);
            }
        }
        net.run_for(Duration::from_secs(10));
        for i in 0..n {
            for j in 0..n {
                assert_eq!(net.state(i, j), MemberState::Alive, "n{i} on n{j}");
            }
        }
        net
    }

    /// Starts member `i` again as a new life (`generation`) that has forgotten everything
    /// and knows `seeds`; it announces itself to each.
    fn restart(&mut self, i: usize, generation: u64, seeds: &[usize]) {
        self.timers.retain(|(_, owner, _)| *owner != i);
        let me = NodeInfo {
            generation,
            ..info(i)
        };
        let seeds: Vec<NodeInfo> = seeds.iter().map(|&j| info(j)).collect();
        self.members[i] = Membership::new(me, &seeds, GossipConfig::default(), generation);
        self.up[i] = true;
        for seed in seeds {
            let out = self.members[i].announce(seed);
            self.apply(i, out);
        }
        self.deliver();
    }

    /// Runs until every member in `viewers` sees every member in `of` as `want`.
    fn until(&mut self, viewers: &[usize], of: &[usize], want: MemberState, limit: Duration) {
        let start = self.now;
        while !viewers
            .iter()
            .all(|&v| of.iter().all(|&m| self.state(v, m) == want))
        {
            let seen: Vec<String> = viewers
                .iter()
                .flat_map(|&v| of.iter().map(move |&m| (v, m)))
                .map(|(v, m)| format!("n{v} sees n{m} {:?}", self.state(v, m)))
                .collect();
            assert!(
                self.now - start < limit,
                "not all {want:?} within {limit:?}: {seen:?}"
            );
            self.run_for(Duration::from_millis(100));
        }
    }

    /// Member `i`'s ring shares, by id.
    fn shares(&self, i: usize) -> BTreeMap<String, f64> {
        self.members[i]
            .ring()
            .shares()
            .into_iter()
            .map(|(id, share)| (id.to_string(), share))
            .collect()
    }

    fn state(&self, i: usize, j: usize) -> MemberState {
        self.members[i]
            .member(&format!("n{j}"))
            .map_or(MemberState::Dead, |m| m.state)
    }

    /// `i`'s view of `j` as foca holds it: identity and incarnation.
    fn foca_view(&self, i: usize, j: usize) -> (NodeInfo, Incarnation) {
        let id = format!("n{j}");
        self.members[i]
            .foca
            .iter_membership_state()
            .find(|m| m.id().id == id)
            .map(|m| (m.id().clone(), m.incarnation()))
            .expect("a known member")
    }

    fn apply(&mut self, from: usize, out: Output) {
        for (after, timer) in out.timers {
            self.timers.push((self.now + after, from, timer));
        }
        for (to, data) in out.sends {
            let to: usize = to.id[1..].parse().expect("node index");
            self.inbox.push_back((to, from, data));
        }
    }

    /// Delivers everything in flight, at once.
    fn deliver(&mut self) {
        while let Some((to, from, data)) = self.inbox.pop_front() {
            if !self.up[to] || !self.up[from] {
                continue;
            }
            let Some(data) = self.filter(from, to, data) else {
                continue;
            };
            if let Ok(out) = self.members[to].handle_data(&format!("n{from}"), &data) {
                self.apply(to, out);
            }
        }
    }

    /// Applies the cut, and drops from a packet to X every update that says X is suspect.
    fn filter(&self, from: usize, to: usize, data: Bytes) -> Option<Bytes> {
        let mut rest = &data[..];
        let header: Header<NodeInfo> = RmpCodec.decode_header(&mut rest).expect("header");
        if (self.cut)(from, to, &header.message) {
            return None;
        }
        if !self.hide_suspicion_from_x
            || to != X
            || rest.remaining() < 2
            || header.message == Message::Broadcast
        {
            return Some(data);
        }
        let count = rest.get_u16();
        let mut kept = Vec::new();
        for _ in 0..count {
            let update: Member<NodeInfo> = RmpCodec.decode_member(&mut rest).expect("update");
            if !(update.id().id == info(X).id && update.state() == State::Suspect) {
                kept.push(update);
            }
        }
        let mut out = Vec::new();
        RmpCodec.encode_header(&header, &mut out).expect("encode");
        out.put_u16(u16::try_from(kept.len()).expect("count"));
        for update in &kept {
            RmpCodec.encode_member(update, &mut out).expect("encode");
        }
        out.put_slice(rest);
        Some(Bytes::from(out))
    }

    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        self.deliver();
        loop {
            let next = (0..self.timers.len())
                .filter(|&k| self.timers[k].0 <= until)
                .min_by_key(|&k| (self.timers[k].0, k));
            let Some(k) = next else { break };
            let (due, i, timer) = self.timers.remove(k);
            self.now = due;
            if self.up[i] {
                let out = self.members[i].handle_timer(timer);
                self.apply(i, out);
                self.deliver();
            }
        }
        self.now = until;
    }

    /// Hands `to` a gossip packet from `from` carrying `updates`.
    fn gossip(&mut self, from: usize, to: usize, updates: &[Member<NodeInfo>]) {
        let (_, incarnation) = self.foca_view(to, from);
        let header = Header {
            src: self.members[from].me().clone(),
            src_incarnation: incarnation,
            dst: self.members[to].me().clone(),
            message: Message::Gossip,
        };
        let mut data = Vec::new();
        RmpCodec.encode_header(&header, &mut data).expect("encode");
        data.put_u16(u16::try_from(updates.len()).expect("count"));
        for update in updates {
            RmpCodec.encode_member(update, &mut data).expect("encode");
        }
        let out = self.members[to]
            .handle_data(&format!("n{from}"), &data)
            .expect("gossip accepted");
        self.apply(to, out);
        self.deliver();
    }

    fn suspicion(&self) -> Duration {
        GossipConfig::default().foca_config(3).suspect_to_down_after
    }
}

/// B's probe of X failed; B told A, then crashed, and its suspicion timer with it. X never
/// heard, so it never refuted. A must still end the suspicion: X dead, and then back alive
/// as a new generation once told.
#[test]
fn a_learned_suspicion_ends_when_its_raiser_crashed() {
    let mut net = Net::formed();
    let (x, incarnation) = net.foca_view(A, X);
    net.gossip(B, A, &[Member::new(x, incarnation, State::Suspect)]);
    net.up[B] = false;
    assert_eq!(net.state(A, X), MemberState::Suspect);

    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.state(A, X),
        MemberState::Alive,
        "A still holds X suspect a minute after the suspicion's raiser crashed"
    );
    assert_eq!(net.state(X, A), MemberState::Alive);
    assert!(net.members[X].me().generation > 1, "X rejoined");
}

/// A's own probe of X failed (A's packets to X are lost for a while); then A was declared
/// dead and rejoined under a new identity before its suspicion timer fired. foca ignores
/// timers set before an identity change, but keeps the suspicions. A must still end its own
/// suspicion on time, and B the one it learned from A.
#[test]
fn a_suspicion_ends_when_its_raiser_rejoined_before_the_timeout() {
    let mut net = Net::formed();
    net.cut = |from, to, message| {
        from == A
            && (to == X || matches!(message, Message::PingReq { target, .. } if target.id == "n2"))
    };
    let start = net.now;
    while net.state(A, X) != MemberState::Suspect {
        assert!(net.now - start < Duration::from_secs(10), "A suspects X");
        net.run_for(Duration::from_millis(10));
    }
    let suspected_at = net.now;
    net.cut = |_, _, _| false;
    let a = net.members[A].me().clone();
    net.gossip(B, A, &[Member::new(a, 0, State::Down)]);
    assert!(net.members[A].me().generation > 1, "A rejoined");
    assert_eq!(net.state(A, X), MemberState::Suspect);

    // A's own timer is due `suspicion` after its probe failed.
    net.run_for(suspected_at + net.suspicion() + Duration::from_millis(100) - net.now);
    assert_ne!(
        net.state(A, X),
        MemberState::Suspect,
        "A's suspicion of X outlived its timeout because A changed identity"
    );
    net.run_for(Duration::from_secs(30));
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(net.state(i, j), MemberState::Alive, "n{i} on n{j}");
        }
    }
}

const SETTLE: Duration = Duration::from_secs(30);

/// Removes `n{id}` through member `via`, and hands what that sends to the network.
fn remove(net: &mut Net, via: usize, id: usize) -> Result<Removed, RemoveError> {
    let (removed, out) = net.members[via].remove(&format!("n{id}"))?;
    net.apply(via, out);
    net.deliver();
    Ok(removed)
}

fn assert_shares_sum_to_one(net: &Net, i: usize) {
    let total: f64 = net.shares(i).values().sum();
    assert!((total - 1.0).abs() < 1e-9, "n{i}: shares sum to {total}");
}

/// Four members; n3 crashes and is declared dead; the operator removes it through n0. Every
/// member shows it `left`, quickly, and builds the ring without it.
#[test]
fn a_removed_dead_member_is_left_everywhere_and_owns_nothing() {
    let mut net = Net::of(4);
    assert!(net.shares(1).get("n3").is_some_and(|s| *s > 0.0));
    net.up[3] = false;
    net.until(&[0, 1, 2], &[3], MemberState::Dead, SETTLE);
    // Dead, it keeps its share.
    assert!(net.shares(1).get("n3").is_some_and(|s| *s > 0.0));

    assert_eq!(remove(&mut net, 0, 3), Ok(Removed::Now));
    assert_eq!(net.state(0, 3), MemberState::Left, "at once on n0");
    net.until(&[0, 1, 2], &[3], MemberState::Left, Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(
            net.shares(i).get("n3"),
            None,
            "n{i} still has n3 on its ring"
        );
        assert_shares_sum_to_one(&net, i);
        let listed = net.members[i].members();
        assert!(
            listed
                .iter()
                .any(|m| m.info.id == "n3" && m.state == MemberState::Left),
            "n{i} still lists n3, as left"
        );
    }
    // Idempotent, from any member.
    assert_eq!(remove(&mut net, 0, 3), Ok(Removed::Already));
    assert_eq!(remove(&mut net, 2, 3), Ok(Removed::Already));
    // And it stays so.
    net.run_for(SETTLE);
    net.until(&[0, 1, 2], &[3], MemberState::Left, Duration::ZERO);
    net.until(&[0, 1, 2], &[0, 1, 2], MemberState::Alive, Duration::ZERO);
}

#[test]
fn only_a_dead_member_other_than_oneself_can_be_removed() {
    let mut net = Net::of(3);
    match remove(&mut net, 0, 7) {
        Err(RemoveError::Unknown { id, known }) => {
            assert_eq!(id, "n7");
            assert_eq!(known, ["n0", "n1", "n2"]);
        }
        other => panic!("removing an unknown id: {other:?}"),
    }
    assert_eq!(
        remove(&mut net, 0, 0),
        Err(RemoveError::Myself("n0".into()))
    );
    let alive = remove(&mut net, 0, 1).expect_err("n1 is alive");
    assert_eq!(
        alive,
        RemoveError::NotDead {
            id: "n1".into(),
            state: MemberState::Alive
        }
    );
    assert!(
        alive
            .to_string()
            .contains("only a dead member can be removed; stop it or let it leave first"),
        "{alive}"
    );
    // A suspect is not dead yet either.
    let (x, incarnation) = net.foca_view(0, 2);
    net.gossip(1, 0, &[Member::new(x, incarnation, State::Suspect)]);
    assert_eq!(net.state(0, 2), MemberState::Suspect);
    assert!(matches!(
        remove(&mut net, 0, 2),
        Err(RemoveError::NotDead {
            state: MemberState::Suspect,
            ..
        })
    ));
    // A member that left is removed already.
    let out = net.members[2].leave();
    net.apply(2, out);
    net.deliver();
    net.up[2] = false;
    net.until(&[0, 1], &[2], MemberState::Left, SETTLE);
    assert_eq!(remove(&mut net, 0, 2), Ok(Removed::Already));
}

/// n2 is down while n3 is removed; it comes back as a new life that has forgotten everything
/// (its config still lists n3), and a new member n4 joins through n1 knowing nobody else.
/// Both learn the removal from the others.
#[test]
fn members_down_during_a_removal_and_later_joiners_learn_of_it() {
    let mut net = Net::of(5);
    // n4 is not part of the story until it joins.
    net.up[4] = false;
    net.up[3] = false;
    net.up[2] = false;
    net.until(&[0, 1], &[2, 3, 4], MemberState::Dead, SETTLE);
    assert_eq!(remove(&mut net, 1, 3), Ok(Removed::Now));
    net.until(&[0, 1], &[3], MemberState::Left, Duration::from_secs(3));
    // Long after the removal's own retransmissions ran out.
    net.run_for(SETTLE);

    net.restart(2, 2, &[0, 1, 3, 4]);
    net.until(&[2], &[3], MemberState::Left, Duration::from_secs(3));
    net.until(&[0, 1, 2], &[0, 1, 2], MemberState::Alive, SETTLE);

    net.restart(4, 2, &[1]);
    net.until(&[4], &[3], MemberState::Left, Duration::from_secs(3));
    net.until(&[0, 1, 2, 4], &[0, 1, 2, 4], MemberState::Alive, SETTLE);
    for i in [0, 1, 2, 4] {
        assert_eq!(net.shares(i).get("n3"), None, "n{i} has n3 on its ring");
        assert_eq!(net.shares(i).len(), 4, "n{i}: {:?}", net.shares(i));
        assert_shares_sum_to_one(&net, i);
    }
}

/// The removal is of one life: the removed member's process starting again (a new
/// generation) joins as a new member, alive with a share, everywhere.
#[test]
fn a_new_life_of_a_removed_member_joins_again() {
    let mut net = Net::of(4);
    net.up[3] = false;
    net.until(&[0, 1, 2], &[3], MemberState::Dead, SETTLE);
    assert_eq!(remove(&mut net, 2, 3), Ok(Removed::Now));
    net.until(&[0, 1, 2], &[3], MemberState::Left, Duration::from_secs(3));

    net.restart(3, 2, &[0, 1, 2]);
    net.until(&[0, 1, 2, 3], &[0, 1, 2, 3], MemberState::Alive, SETTLE);
    for i in 0..4 {
        assert!(net.shares(i).get("n3").is_some_and(|s| *s > 0.0), "n{i}");
        assert_shares_sum_to_one(&net, i);
    }
    // The removal still stands for the old life, and is still handed out, but changes
    // nothing for the new one.
    net.run_for(SETTLE);
    net.until(
        &[0, 1, 2, 3],
        &[0, 1, 2, 3],
        MemberState::Alive,
        Duration::ZERO,
    );
}

/// n0 was told n2 is dead while n2 still runs (as one side of a partition sees it), and the
/// operator removes it there. n2 hears of its own removal and comes back as a new life: in
/// the end everyone sees it alive, with a share.
#[test]
fn a_removed_life_that_was_alive_after_all_comes_back_as_a_new_one() {
    let mut net = Net::of(3);
    let (x, incarnation) = net.foca_view(0, 2);
    net.gossip(1, 0, &[Member::new(x, incarnation, State::Down)]);
    assert_eq!(net.state(0, 2), MemberState::Dead);
    assert_eq!(remove(&mut net, 0, 2), Ok(Removed::Now));
    net.until(&[0, 1, 2], &[0, 1, 2], MemberState::Alive, SETTLE);
    assert!(
        net.members[2].me().generation > 1,
        "n2 rejoined as a new life"
    );
    for i in 0..3 {
        assert!(net.shares(i).get("n2").is_some_and(|s| *s > 0.0), "n{i}");
    }
}

/// A member whose every peer is down goes idle in foca (no timers, nothing sent). The
/// wrapper keeps announcing it, to two known members at a time, in turn, on a timer it hands
/// the driver, and stops once a member answers.
#[test]
fn a_member_that_knows_no_live_member_keeps_announcing_itself() {
    let infos: Vec<NodeInfo> = (0..4).map(info).collect();
    let config = GossipConfig::default();
    let mut m = Membership::new(infos[0].clone(), &infos, config.clone(), 1);
    let out = m.announce(infos[1].clone());
    assert_eq!(out.sends.len(), 1);
    let rejoin = |out: &Output| {
        out.timers
            .iter()
            .filter(|(_, t)| matches!(t.0, TimerKind::Rejoin))
            .map(|(after, t)| (*after, t.clone()))
            .collect::<Vec<_>>()
    };
    let timers = rejoin(&out);
    assert_eq!(timers.len(), 1, "one rejoin timer");
    assert_eq!(timers[0].0, config.rejoin_every);
    // Nobody answers: each round announces to the next two known members and sets the
    // timer again; never to itself.
    let mut timer = timers[0].1.clone();
    let mut told = Vec::new();
    for _ in 0..3 {
        let out = m.handle_timer(timer);
        let to: Vec<String> = out.sends.iter().map(|(to, _)| to.id.clone()).collect();
        assert_eq!(to.len(), 2, "{to:?}");
        told.extend(to);
        let again = rejoin(&out);
        assert_eq!(again.len(), 1);
        timer = again[0].1.clone();
    }
    assert_eq!(told, ["n1", "n2", "n3", "n1", "n2", "n3"]);
    for (_, data) in &m.handle_timer(timer.clone()).sends {
        let header: Header<NodeInfo> = RmpCodec.decode_header(&mut &data[..]).expect("header");
        assert_eq!(header.message, Message::Announce);
    }

    // n1 answers: connected, the pending timer sends nothing and is not set again.
    let mut n1 = Membership::new(infos[1].clone(), &infos, config, 2);
    let mut feed = None;
    for (to, data) in m.announce(infos[1].clone()).sends {
        assert_eq!(to.id, "n1");
        let out = n1.handle_data("n0", &data).expect("announce accepted");
        feed = out.sends.into_iter().find(|(to, _)| to.id == "n0");
    }
    let (_, feed) = feed.expect("n1 answers");
    m.handle_data("n1", &feed).expect("feed accepted");
    assert_eq!(m.member("n1").map(|v| v.state), Some(MemberState::Alive));
    let out = m.handle_timer(timer);
    assert!(
        out.sends.is_empty(),
        "connected, yet announced: {:?}",
        out.sends
    );
    assert!(rejoin(&out).is_empty());
}

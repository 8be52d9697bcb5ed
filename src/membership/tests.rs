//! A suspicion must end even when the member that raised it cannot end it any more.
//!
//! Three real members on an instant network driven by hand, with a filter that keeps every
//! "you are suspect" rumour from reaching the suspect (as when it was cut off while the
//! rumour's retransmissions ran out), so the suspect never refutes. foca times out only the
//! suspicions it raised itself by a failed probe; these scenarios take that timer away.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes};
use foca::{Codec, Header, Incarnation, Member, Message, State};

use super::*;

const A: usize = 0;
const B: usize = 1;
const X: usize = 2;

fn info(i: usize) -> NodeInfo {
    NodeInfo {
        id: format!("n{i}"),
        zone: "z".into(),
        peer: format!("10.0.0.{}:7000", i + 1).parse().expect("addr"),
        http: format!("10.0.0.{}:8000", i + 1).parse().expect("addr"),
        resp: format!("10.0.0.{}:6000", i + 1).parse().expect("addr"),
        vnodes: 8,
        generation: 1,
        leaving: false,
    }
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
}

impl Net {
    /// Three members that have formed a cluster.
    fn formed() -> Net {
        let infos: Vec<NodeInfo> = (0..3).map(info).collect();
        let members = (0..3)
            .map(|i| Membership::new(infos[i].clone(), &infos, GossipConfig::default(), i as u64))
            .collect();
        let mut net = Net {
            now: Duration::ZERO,
            members,
            up: vec![true; 3],
            timers: Vec::new(),
            inbox: VecDeque::new(),
            cut: |_, _, _| false,
        };
        for i in 0..3 {
            for j in (0..3).filter(|&j| j != i) {
                let out = net.members[i].announce(infos[j].clone());
                net.apply(i, out);
            }
        }
        net.run_for(Duration::from_secs(10));
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(net.state(i, j), MemberState::Alive, "n{i} on n{j}");
            }
        }
        net
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
        if to != X || rest.remaining() < 2 || header.message == Message::Broadcast {
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

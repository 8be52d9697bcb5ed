//! The consistent-hash ring: which nodes hold which keys.
//!
//! Each member owns `vnodes` positions on a 64-bit ring, placed by blake3 of its id and the
//! vnode's index, so every node that knows the same members builds the same ring. A key lives
//! at blake3 of its bytes; its preference list is the first N distinct members met walking
//! clockwise from there. When members span several zones the walk takes, at each step, the
//! first member whose zone holds the fewest replicas so far (one per zone before any zone gets
//! a second, as Cassandra's NetworkTopologyStrategy does). The members after the first N, in
//! the same order, are the fallbacks that hinted handoff writes to.
//!
//! A member's position depends on nothing but its own id, so adding a member moves only the
//! keys it takes over, and removing one moves only the keys it held.
//!
//! Pure functions of the member list: no I/O, no clocks.

use std::collections::BTreeMap;

/// A member as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    /// The node's id; also what its vnode positions are hashed from.
    pub id: String,
    /// The node's zone: a key gets one replica per zone before any zone gets a second.
    pub zone: String,
    /// Number of ring positions; proportional to the member's expected share of keys.
    pub vnodes: u32,
}

impl RingMember {
    /// A member with `vnodes` ring positions.
    pub fn new(id: impl Into<String>, zone: impl Into<String>, vnodes: u32) -> Self {
        RingMember {
            id: id.into(),
            zone: zone.into(),
            vnodes,
        }
    }
}

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Two members have this id.
    #[error("member id {0:?} appears twice")]
    DuplicateMember(String),
    /// This member has no ring position.
    #[error("member {0:?} has 0 vnodes; give it at least 1")]
    NoVnodes(String),
}

/// Position of a key on the ring: the first 8 bytes of the blake3 hash of its bytes (given
/// in parts, hashed as if joined, so a caller need not copy them into one buffer),
/// little-endian.
pub fn key_position(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for part in parts {
        h.update(part);
    }
    first_u64(h.finalize().as_bytes())
}

/// Position of a member's `index`-th vnode.
fn vnode_position(id: &str, index: u32) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"quorumkv-vnode\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(&index.to_le_bytes());
    first_u64(h.finalize().as_bytes())
}

fn first_u64(bytes: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

/// An arc of the ring: the positions in `(after, upto]`, wrapping past `u64::MAX`; when
/// `after == upto` it is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RingArc {
    /// The arc starts just past this position.
    pub after: u64,
    /// The last position in the arc.
    pub upto: u64,
}

impl RingArc {
    /// The whole ring.
    pub const FULL: RingArc = RingArc { after: 0, upto: 0 };

    /// Whether `pos` lies in the arc.
    pub fn contains(&self, pos: u64) -> bool {
        if self.after < self.upto {
            pos > self.after && pos <= self.upto
        } else {
            // Wraps (or is the full ring when equal).
            pos > self.after || pos <= self.upto
        }
    }

    /// Number of positions in the arc, as a fraction of the ring.
    pub fn fraction(&self) -> f64 {
        let len = self.upto.wrapping_sub(self.after);
        if len == 0 {
            1.0
        } else {
            len as f64 / 2f64.powi(64)
        }
    }
}

/// A consistent-hash ring built from a member list.
#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<RingMember>,
    /// Vnode positions, sorted.
    positions: Vec<u64>,
    /// Member index owning each position.
    owners: Vec<u32>,
    /// Zone index of each member.
    zone_of: Vec<u32>,
    /// Members per zone.
    zone_sizes: Vec<u32>,
}

impl Ring {
    /// Builds the ring. The order of `members` does not matter.
    pub fn new(members: impl IntoIterator<Item = RingMember>) -> Result<Ring, RingError> {
        let mut members: Vec<RingMember> = members.into_iter().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in members.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(RingError::DuplicateMember(pair[0].id.clone()));
            }
        }
        if let Some(m) = members.iter().find(|m| m.vnodes == 0) {
            return Err(RingError::NoVnodes(m.id.clone()));
        }
        let mut zones: BTreeMap<&str, u32> = BTreeMap::new();
        for m in &members {
            let next = zones.len() as u32;
            zones.entry(m.zone.as_str()).or_insert(next);
        }
        let zone_of: Vec<u32> = members.iter().map(|m| zones[m.zone.as_str()]).collect();
        let mut zone_sizes = vec![0u32; zones.len()];
        for &z in &zone_of {
            zone_sizes[z as usize] += 1;
        }
        // Ties between equal positions (practically never) break on member id, which is the
        // member index order: still deterministic.
        let mut vnodes: Vec<(u64, u32)> = members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| (0..m.vnodes).map(move |v| (vnode_position(&m.id, v), i as u32)))
            .collect();
        vnodes.sort_unstable();
        let (positions, owners) = vnodes.into_iter().unzip();
        Ok(Ring {
            members,
            positions,
            owners,
            zone_of,
            zone_sizes,
        })
    }

    /// Members sorted by id.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// Whether the ring has no member, so no key has a replica.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The member with this id, if it is on the ring.
    pub fn member(&self, id: &str) -> Option<&RingMember> {
        self.index_of(id).map(|i| &self.members[i])
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
    }

    /// Number of vnodes on the ring.
    pub fn vnode_count(&self) -> usize {
        self.positions.len()
    }

    /// The vnode whose arc holds `pos` (`None` on an empty ring). Keys of one arc share their
    /// whole placement: [`Ring::walk`] depends on nothing else.
    pub fn vnode_of(&self, pos: u64) -> Option<usize> {
        (!self.positions.is_empty()).then(|| self.first_vnode(pos))
    }

    /// The last position of the arc that holds `pos`, counting up from 0: the first vnode at
    /// or after `pos`, or `u64::MAX` past the last vnode (where the arc wraps round to the
    /// first). Walking positions upwards arc by arc visits the whole ring once.
    pub fn arc_end(&self, pos: u64) -> u64 {
        let i = self.positions.partition_point(|&p| p < pos);
        self.positions.get(i).copied().unwrap_or(u64::MAX)
    }

    /// Index into `positions` of the first vnode at or after `pos`, wrapping.
    fn first_vnode(&self, pos: u64) -> usize {
        let i = self.positions.partition_point(|&p| p < pos);
        if i == self.positions.len() { 0 } else { i }
    }

    /// The member that owns `pos` as primary, or `None` for an empty ring.
    pub fn primary(&self, pos: u64) -> Option<&RingMember> {
        if self.positions.is_empty() {
            return None;
        }
        Some(&self.members[self.owners[self.first_vnode(pos)] as usize])
    }

    /// Every member in placement order for `pos`: the first N are the preference list for N,
    /// the rest the fallbacks for hinted handoff. Lazy: taking a few is cheap.
    pub fn walk(&self, pos: u64) -> Walk<'_> {
        Walk {
            ring: self,
            next_vnode: if self.positions.is_empty() {
                0
            } else {
                self.first_vnode(pos)
            },
            steps: 0,
            seen: vec![false; self.members.len()],
            deferred: Vec::new(),
            per_zone: vec![0; self.zone_sizes.len()],
            left_in_zone: self.zone_sizes.clone(),
            emitted: 0,
        }
    }

    /// The preference list for a key position and replication factor `n` (fewer when the
    /// ring has fewer members), plus every other member in fallback order.
    pub fn preference_list(&self, pos: u64, n: usize) -> PreferenceList<'_> {
        let mut walk = self.walk(pos);
        let replicas = walk.by_ref().take(n).collect();
        PreferenceList {
            replicas,
            fallbacks: walk,
        }
    }

    /// Each member's share of the ring as primary owner, by member id; the shares sum to 1.
    pub fn shares(&self) -> BTreeMap<&str, f64> {
        let mut owned = vec![0u128; self.members.len()];
        let n = self.positions.len();
        for i in 0..n {
            let prev = if i == 0 {
                self.positions[n - 1]
            } else {
                self.positions[i - 1]
            };
            let len = self.positions[i].wrapping_sub(prev);
            // A single vnode owns the whole ring.
            let len = if n == 1 { 1u128 << 64 } else { u128::from(len) };
            owned[self.owners[i] as usize] += len;
        }
        self.members
            .iter()
            .zip(owned)
            .map(|(m, o)| (m.id.as_str(), o as f64 / 2f64.powi(64)))
            .collect()
    }

    /// For each other member, the arcs of the ring where both it and `me` are among the first
    /// `n` replicas: what the two must hold alike, and so compare in anti-entropy. Adjacent
    /// arcs are joined; a member that shares the whole ring gets [`RingArc::FULL`].
    pub fn shared_arcs(&self, me: &str, n: usize) -> BTreeMap<String, Vec<RingArc>> {
        let mut shared: BTreeMap<String, Vec<RingArc>> = BTreeMap::new();
        if self.index_of(me).is_none() {
            return shared;
        }
        let count = self.positions.len();
        // Every position in a vnode's arc has the same preference list.
        let mut per_vnode: Vec<Vec<&str>> = Vec::with_capacity(count);
        for i in 0..count {
            let list = self.preference_list(self.positions[i], n);
            let ids: Vec<&str> = list.replicas.iter().map(|m| m.id.as_str()).collect();
            per_vnode.push(if ids.contains(&me) { ids } else { Vec::new() });
        }
        for other in self.members.iter().filter(|m| m.id != me) {
            let with: Vec<bool> = per_vnode
                .iter()
                .map(|ids| ids.contains(&other.id.as_str()))
                .collect();
            let arcs = join_arcs(&self.positions, &with);
            if !arcs.is_empty() {
                shared.insert(other.id.clone(), arcs);
            }
        }
        shared
    }

    /// The arcs for which `id` is the primary owner, in ring order.
    pub fn primary_arcs(&self, id: &str) -> Vec<RingArc> {
        let Some(idx) = self.index_of(id) else {
            return Vec::new();
        };
        let n = self.positions.len();
        (0..n)
            .filter(|&i| self.owners[i] as usize == idx)
            .map(|i| RingArc {
                after: self.positions[(i + n - 1) % n],
                upto: self.positions[i],
            })
            .collect()
    }
}

/// A preference list: the replicas, then the fallbacks as a lazy walk.
pub struct PreferenceList<'a> {
    /// The key's N replicas, in placement order.
    pub replicas: Vec<&'a RingMember>,
    /// The members after the replicas, for hinted handoff to write to in turn.
    pub fallbacks: Walk<'a>,
}

/// Members in placement order from a position; see [`Ring::walk`].
pub struct Walk<'a> {
    ring: &'a Ring,
    next_vnode: usize,
    steps: usize,
    seen: Vec<bool>,
    /// Members met on the ring but passed over because their zone had more replicas.
    deferred: Vec<usize>,
    per_zone: Vec<u32>,
    left_in_zone: Vec<u32>,
    emitted: usize,
}

impl Walk<'_> {
    /// The lowest replica count among zones that still have members to place.
    fn target_level(&self) -> u32 {
        self.per_zone
            .iter()
            .zip(&self.left_in_zone)
            .filter(|(_, left)| **left > 0)
            .map(|(count, _)| *count)
            .min()
            .unwrap_or(0)
    }

    fn place(&mut self, member: usize) -> &RingMember {
        let zone = self.ring.zone_of[member] as usize;
        self.per_zone[zone] += 1;
        self.left_in_zone[zone] -= 1;
        self.emitted += 1;
        &self.ring.members[member]
    }

    /// The next distinct member met on the ring, or `None` once the circle is done.
    fn next_distinct(&mut self) -> Option<usize> {
        let total = self.ring.positions.len();
        while self.steps < total {
            let member = self.ring.owners[self.next_vnode] as usize;
            self.next_vnode = (self.next_vnode + 1) % total;
            self.steps += 1;
            if !self.seen[member] {
                self.seen[member] = true;
                return Some(member);
            }
        }
        None
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a RingMember;

    fn next(&mut self) -> Option<&'a RingMember> {
        if self.emitted == self.ring.members.len() {
            return None;
        }
        let level = self.target_level();
        let zone_of = &self.ring.zone_of;
        let per_zone = &self.per_zone;
        if let Some(pos) = self
            .deferred
            .iter()
            .position(|&m| per_zone[zone_of[m] as usize] == level)
        {
            let member = self.deferred.remove(pos);
            let ring = self.ring;
            self.place(member);
            return Some(&ring.members[member]);
        }
        while let Some(member) = self.next_distinct() {
            if self.per_zone[self.ring.zone_of[member] as usize] == level {
                let ring = self.ring;
                self.place(member);
                return Some(&ring.members[member]);
            }
            self.deferred.push(member);
        }
        None
    }
}

/// The arcs `(positions[i-1], positions[i]]` for which `pick[i]` holds, with neighbours
/// joined (also across the wrap); all of them is the full ring.
fn join_arcs(positions: &[u64], pick: &[bool]) -> Vec<RingArc> {
    let n = positions.len();
    if n == 0 || !pick.iter().any(|p| *p) {
        return Vec::new();
    }
    if pick.iter().all(|p| *p) {
        return vec![RingArc::FULL];
    }
    // Start right after an unpicked vnode so no run is cut by the wrap.
    let start = (0..n).find(|&i| !pick[i]).map_or(0, |i| (i + 1) % n);
    let mut arcs = Vec::new();
    let mut run: Option<RingArc> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let arc = RingArc {
            after: positions[(i + n - 1) % n],
            upto: positions[i],
        };
        match (pick[i], run.as_mut()) {
            (true, Some(r)) => r.upto = arc.upto,
            (true, None) => run = Some(arc),
            (false, _) => arcs.extend(run.take()),
        }
    }
    arcs.extend(run);
    arcs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &[(&str, &str)]) -> Ring {
        Ring::new(spec.iter().map(|(id, z)| RingMember::new(*id, *z, 16))).unwrap()
    }

    fn ids(list: &[&RingMember]) -> Vec<String> {
        list.iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn keys_of_one_vnode_arc_share_their_walk() {
        let r = ring(&[("a", "z1"), ("b", "z1"), ("c", "z2"), ("d", "z3")]);
        let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for k in 0..2000u32 {
            let pos = key_position(&[&k.to_le_bytes()]);
            let walk = ids(&r.walk(pos).collect::<Vec<_>>());
            let vnode = r.vnode_of(pos).expect("vnode");
            assert!(vnode < r.vnode_count());
            assert_eq!(seen.entry(vnode).or_insert_with(|| walk.clone()), &walk);
        }
        assert!(seen.len() > 30, "keys spread over many arcs");
        assert_eq!(Ring::new(Vec::new()).expect("empty").vnode_of(7), None);
    }

    #[test]
    fn walk_lists_every_member_once() {
        let r = ring(&[
            ("a", "z1"),
            ("b", "z1"),
            ("c", "z2"),
            ("d", "z3"),
            ("e", "z3"),
        ]);
        for k in 0..200u32 {
            let all: Vec<_> = r.walk(key_position(&[&k.to_le_bytes()])).collect();
            let mut names = ids(&all);
            names.sort();
            assert_eq!(names, ["a", "b", "c", "d", "e"]);
            let zones: std::collections::BTreeSet<_> = all[..3].iter().map(|m| &m.zone).collect();
            assert_eq!(zones.len(), 3);
        }
    }

    #[test]
    fn rejects_duplicates_and_empty_weights() {
        assert_eq!(
            Ring::new([RingMember::new("a", "z", 1), RingMember::new("a", "z", 2)]).unwrap_err(),
            RingError::DuplicateMember("a".into())
        );
        assert_eq!(
            Ring::new([RingMember::new("a", "z", 0)]).unwrap_err(),
            RingError::NoVnodes("a".into())
        );
    }

    #[test]
    fn empty_and_single_member_rings() {
        let empty = Ring::new([]).unwrap();
        assert!(empty.primary(5).is_none());
        assert_eq!(empty.walk(5).count(), 0);
        let one = Ring::new([RingMember::new("a", "z", 1)]).unwrap();
        assert_eq!(one.shares()["a"], 1.0);
        assert_eq!(one.preference_list(9, 3).replicas.len(), 1);
    }

    #[test]
    fn arcs_wrap() {
        let a = RingArc { after: 10, upto: 2 };
        assert!(a.contains(11) && a.contains(0) && a.contains(2));
        assert!(!a.contains(10) && !a.contains(5));
        assert!(RingArc::FULL.contains(0) && RingArc::FULL.contains(u64::MAX));
    }
}

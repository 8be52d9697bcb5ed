//! Merkle trees over key-hash ranges, and the sans-io protocol that diffs two of them.
//!
//! The tree is a complete binary tree of fixed depth over the 64-bit ring: the node at level
//! `l`, index `i` covers the positions whose top `l` bits are `i`. A node's hash is the XOR of
//! the hashes of the items below it (each item hash already covers its key), so it does not
//! depend on how the tree is shaped or in which order updates arrive: an update XORs the
//! change into the `depth + 1` nodes on its path without locks, and any prefix of the key
//! space has one well-defined hash on every replica.
//!
//! Two replicas find their differences inside an arc by walking down only where hashes differ:
//! `O(differences x depth)` hashes cross the wire, then the items of the differing leaves.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::ring::RingArc;

/// A blake3 hash.
pub type Hash = [u8; 32];

const ZERO: Hash = [0; 32];

/// Levels above this one (the root and its first descendants) are not kept but computed:
/// the XOR of at most 2^TOP_LEVELS kept nodes.
const TOP_LEVELS: u8 = 8;

/// Below [`TOP_LEVELS`], only every `KEPT_STRIDE`-th level up from the leaves is kept up to
/// date; a node in between is the XOR of the at most 2^(KEPT_STRIDE-1) kept nodes under it.
/// A write then touches three cache lines at depth 16 instead of nine, and a diff still reads
/// only a handful of words per node it asks about.
const KEPT_STRIDE: u8 = 4;

/// Up to this many items a leaf grows one item at a time.
const SMALL_LEAF: usize = 8;

/// Deepest tree allowed: 2^20 leaves.
pub const MAX_DEPTH: u8 = 20;

/// A node of the tree: `level` 0 is the root, `level == depth` are the leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// Distance from the root: 0 is the root, the tree's depth the leaves.
    pub level: u8,
    /// Position among the nodes of its level, from 0 on the left.
    pub index: u64,
}

impl NodeRef {
    const ROOT: NodeRef = NodeRef { level: 0, index: 0 };

    /// Lowest and highest position covered.
    fn span(self) -> (u64, u64) {
        if self.level == 0 {
            return (0, u64::MAX);
        }
        let shift = 64 - u32::from(self.level);
        let lo = self.index << shift;
        (lo, lo | (u64::MAX >> self.level))
    }

    fn children(self) -> [NodeRef; 2] {
        let level = self.level + 1;
        [
            NodeRef {
                level,
                index: self.index * 2,
            },
            NodeRef {
                level,
                index: self.index * 2 + 1,
            },
        ]
    }
}

/// One item in a leaf: its ring position, its key and the hash of key and value.
pub type LeafItem<K> = (u64, K, Hash);

/// Most nodes plus leaves one query may ask for; a differ never needs more than the width of
/// two tree levels' worth of differences at once.
pub const MAX_QUERY_ITEMS: usize = 1 << 16;

/// A request from a differ to the remote replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Depth of the asking tree; a tree of another depth cannot answer.
    pub depth: u8,
    /// Nodes whose hashes are wanted.
    pub hashes: Vec<NodeRef>,
    /// Leaves (by index at the leaf level) whose items are wanted.
    pub leaves: Vec<u64>,
}

/// The remote replica's answer to a [`Query`], in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer<K> {
    /// The hashes of the query's `hashes`, one each.
    pub hashes: Vec<Hash>,
    /// The items of the query's `leaves`, one list each.
    pub leaves: Vec<Vec<LeafItem<K>>>,
}

/// Why a diff could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// The answer has a different number of hashes or leaves than the query asked for.
    #[error("answer has {got} entries where {expected} were asked for")]
    WrongLength {
        /// How many the query asked for.
        expected: usize,
        /// How many the answer holds.
        got: usize,
    },
    /// An answer arrived while no query was outstanding.
    #[error("answer came with no query outstanding")]
    Unexpected,
    /// The query names a node or leaf that the answering tree does not have.
    #[error("query names node level {level} outside a tree of depth {depth}")]
    BadNode {
        /// The level of the node asked for; one past the depth for a leaf out of range.
        level: u8,
        /// The answering tree's depth.
        depth: u8,
    },
    /// The two trees have different depths, so their nodes cover different ranges.
    #[error("query is for a tree of depth {asked}, this one has depth {depth}")]
    DepthMismatch {
        /// The asking tree's depth.
        asked: u8,
        /// The answering tree's depth.
        depth: u8,
    },
    /// The query asks for more than [`MAX_QUERY_ITEMS`] nodes and leaves.
    #[error("query asks for {0} items, more than {MAX_QUERY_ITEMS}")]
    TooLarge(usize),
}

/// A Merkle tree over keys of type `K`.
pub struct MerkleTree<K> {
    depth: u8,
    /// Hashes of the kept inner nodes in heap order (root at 1), each as four atomic words.
    nodes: Vec<[AtomicU64; 4]>,
    /// The leaves: each one's hash next to its items, so that a write touches one lock, one
    /// hash and one item list.
    leaves: Vec<Mutex<Leaf<K>>>,
}

/// One leaf: its hash and its items, sorted by position and key. A leaf holds a handful, so
/// a sorted vector is found by binary search without cloning the key, unlike a map keyed by
/// it.
struct Leaf<K> {
    hash: Hash,
    items: Vec<LeafItem<K>>,
}

impl<K: Ord + Clone> MerkleTree<K> {
    /// A tree with `2^depth` leaves (clamped to [`MAX_DEPTH`]). Pick the depth so a leaf holds
    /// a handful of keys: 16 suits about a hundred thousand.
    pub fn new(depth: u8) -> Self {
        let depth = depth.min(MAX_DEPTH);
        MerkleTree {
            depth,
            nodes: (0..1usize << depth).map(|_| Default::default()).collect(),
            leaves: (0..1usize << depth)
                .map(|_| {
                    Mutex::new(Leaf {
                        hash: ZERO,
                        items: Vec::new(),
                    })
                })
                .collect(),
        }
    }

    /// The tree's depth: its leaves are at this level.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    fn leaf_index(&self, pos: u64) -> usize {
        if self.depth == 0 {
            0
        } else {
            (pos >> (64 - u32::from(self.depth))) as usize
        }
    }

    fn lock_leaf(&self, index: usize) -> std::sync::MutexGuard<'_, Leaf<K>> {
        // A panic while holding a leaf lock cannot leave the map half-updated (each update is
        // one insert or remove), so a poisoned lock is still safe to use.
        self.leaves[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets (or with `None`, removes) the item hash of `key` at ring position `pos`.
    pub fn set(&self, pos: u64, key: &K, item: Option<Hash>) {
        let index = self.leaf_index(pos);
        let mut leaf = self.lock_leaf(index);
        let found = leaf
            .items
            .binary_search_by(|(p, k, _)| (*p, k).cmp(&(pos, key)));
        let old = match (found, item) {
            (Ok(i), Some(h)) => Some(std::mem::replace(&mut leaf.items[i].2, h)),
            (Ok(i), None) => Some(leaf.items.remove(i).2),
            (Err(i), Some(h)) => {
                // A leaf holds a handful of items: growing it one at a time up to a few (a
                // vector's first growth is to four) keeps a sparse tree from paying for
                // empty places, and a fuller leaf grows as vectors do.
                if leaf.items.len() == leaf.items.capacity() && leaf.items.len() < SMALL_LEAF {
                    leaf.items.reserve_exact(1);
                }
                leaf.items.insert(i, (pos, key.clone(), h));
                None
            }
            (Err(_), None) => None,
        };
        let delta = xor(&old.unwrap_or(ZERO), &item.unwrap_or(ZERO));
        if delta == ZERO {
            return;
        }
        leaf.hash = xor(&leaf.hash, &delta);
        drop(leaf);
        // Only some inner levels are kept up to date (see `KEPT_STRIDE`): every write would
        // otherwise XOR into the same few top nodes, and writers on different cores would
        // fight over those cache lines. The others are XORed together when asked for.
        let mut level = self.depth;
        while let Some(up) = level.checked_sub(KEPT_STRIDE).filter(|&l| l >= TOP_LEVELS) {
            level = up;
            let heap = (1usize << level) + (index >> (self.depth - level));
            for (word, d) in self.nodes[heap].iter().zip(delta.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(d);
                word.fetch_xor(u64::from_le_bytes(b), Ordering::Relaxed);
            }
        }
    }

    /// Whether the nodes of `level` are kept up to date by [`MerkleTree::set`].
    fn kept(&self, level: u8) -> bool {
        level == self.depth
            || (level >= TOP_LEVELS && (self.depth - level).is_multiple_of(KEPT_STRIDE))
    }

    /// The nearest kept level below `level` (towards the leaves).
    fn kept_below(&self, level: u8) -> u8 {
        (level + 1..=self.depth)
            .find(|&l| self.kept(l))
            .unwrap_or(self.depth)
    }

    /// The hash of a node: XOR of the item hashes below it.
    pub fn hash(&self, node: NodeRef) -> Hash {
        if self.kept(node.level) {
            return self.stored(node);
        }
        // The XOR of its descendants on the nearest kept level (2^TOP_LEVELS of them for
        // the root of a tree of depth 16).
        let below = self.kept_below(node.level);
        let span = u32::from(below - node.level);
        let first = node.index << span;
        let mut out = ZERO;
        for index in first..first + (1 << span) {
            out = xor(
                &out,
                &self.stored(NodeRef {
                    level: below,
                    index,
                }),
            );
        }
        out
    }

    /// A node hash as kept in the tree.
    fn stored(&self, node: NodeRef) -> Hash {
        if node.level == self.depth {
            return self.lock_leaf(node.index as usize).hash;
        }
        let heap = (1usize << node.level) + node.index as usize;
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(8).zip(&self.nodes[heap]) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out
    }

    /// The root hash: equal on two replicas exactly when they hold the same items (barring a
    /// 2^-256 accident).
    pub fn root(&self) -> Hash {
        self.hash(NodeRef::ROOT)
    }

    /// Items of a leaf.
    pub fn leaf_items(&self, leaf: u64) -> Vec<LeafItem<K>> {
        self.lock_leaf(leaf as usize).items.clone()
    }

    /// Keys with positions from `from` to `upto` (both included), in position order: the first
    /// `limit` of them, and every other key at the last position taken, so a caller that goes
    /// on after that position skips none. Whether keys were left out past the limit.
    pub fn keys_from(&self, from: u64, upto: u64, limit: usize) -> (Vec<(u64, K)>, bool) {
        let mut out: Vec<(u64, K)> = Vec::new();
        if from > upto {
            return (out, false);
        }
        for leaf in self.leaf_index(from)..=self.leaf_index(upto) {
            let items = self.lock_leaf(leaf);
            for (pos, key, _) in items.items.iter() {
                if *pos < from || *pos > upto {
                    continue;
                }
                if out.len() >= limit && out.last().is_some_and(|(last, _)| last != pos) {
                    return (out, true);
                }
                out.push((*pos, key.clone()));
            }
        }
        (out, false)
    }

    /// Keys whose positions lie in `arc`, in position order (from 0 for an arc that wraps).
    pub fn keys_in(&self, arc: RingArc) -> Vec<K> {
        let mut out = Vec::new();
        let mut leaves = Vec::new();
        collect_frontier(
            self.depth,
            arc,
            NodeRef::ROOT,
            &mut leaves,
            &mut Vec::new(),
            true,
        );
        for leaf in leaves {
            out.extend(
                self.lock_leaf(leaf as usize)
                    .items
                    .iter()
                    .filter(|(pos, _, _)| arc.contains(*pos))
                    .map(|(_, k, _)| k.clone()),
            );
        }
        out
    }

    /// The hash of the items in `arc`: the XOR of the nodes wholly inside it and of the
    /// items of the leaves it cuts. Two replicas agree on an arc exactly when these are equal,
    /// so in-sync arcs cost one hash each to check.
    pub fn arc_hash(&self, arc: RingArc) -> Hash {
        let (mut partial, mut whole) = (Vec::new(), Vec::new());
        collect_frontier(
            self.depth,
            arc,
            NodeRef::ROOT,
            &mut partial,
            &mut whole,
            false,
        );
        let mut acc = ZERO;
        for node in whole {
            acc = xor(&acc, &self.hash(node));
        }
        for leaf in partial {
            for (pos, _, h) in self.lock_leaf(leaf as usize).items.iter() {
                if arc.contains(*pos) {
                    acc = xor(&acc, h);
                }
            }
        }
        acc
    }

    /// Answers a remote differ's query.
    pub fn answer(&self, query: &Query) -> Result<Answer<K>, DiffError> {
        if query.depth != self.depth {
            return Err(DiffError::DepthMismatch {
                asked: query.depth,
                depth: self.depth,
            });
        }
        let asked = query.hashes.len() + query.leaves.len();
        if asked > MAX_QUERY_ITEMS {
            return Err(DiffError::TooLarge(asked));
        }
        if let Some(bad) = query
            .hashes
            .iter()
            .find(|n| n.level > self.depth || n.index >> n.level != 0)
        {
            return Err(DiffError::BadNode {
                level: bad.level,
                depth: self.depth,
            });
        }
        let leaf_count = 1u64 << self.depth;
        if query.leaves.iter().any(|&l| l >= leaf_count) {
            return Err(DiffError::BadNode {
                level: self.depth + 1,
                depth: self.depth,
            });
        }
        Ok(Answer {
            hashes: query.hashes.iter().map(|&n| self.hash(n)).collect(),
            leaves: query.leaves.iter().map(|&l| self.leaf_items(l)).collect(),
        })
    }
}

fn xor(a: &Hash, b: &Hash) -> Hash {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

fn inside(arc: RingArc, (lo, hi): (u64, u64)) -> bool {
    if arc.after == arc.upto {
        true
    } else if arc.after < arc.upto {
        lo > arc.after && hi <= arc.upto
    } else {
        lo > arc.after || hi <= arc.upto
    }
}

fn overlaps(arc: RingArc, (lo, hi): (u64, u64)) -> bool {
    if arc.after == arc.upto {
        true
    } else if arc.after < arc.upto {
        hi > arc.after && lo <= arc.upto
    } else {
        hi > arc.after || lo <= arc.upto
    }
}

/// Splits the part of the tree under `node` that overlaps `arc` into nodes wholly inside it
/// (`whole`) and leaves only partly inside it (`partial`). With `leaves_only`, whole nodes are
/// expanded down to their leaves too.
fn collect_frontier(
    depth: u8,
    arc: RingArc,
    node: NodeRef,
    partial: &mut Vec<u64>,
    whole: &mut Vec<NodeRef>,
    leaves_only: bool,
) {
    let span = node.span();
    if !overlaps(arc, span) {
        return;
    }
    if node.level == depth {
        if inside(arc, span) && !leaves_only {
            whole.push(node);
        } else {
            partial.push(node.index);
        }
        return;
    }
    if inside(arc, span) && !leaves_only {
        whole.push(node);
        return;
    }
    for child in node.children() {
        collect_frontier(depth, arc, child, partial, whole, leaves_only);
    }
}

/// One side of a diff: asks the remote for hashes level by level, descending only where they
/// differ from the local tree, then compares the items of the differing leaves. Sans-io: the
/// caller carries each [`Query`] to the remote and brings back its [`Answer`].
pub struct MerkleDiff<K> {
    arc: RingArc,
    depth: u8,
    outstanding: Option<Query>,
    found: Vec<K>,
    /// Hashes and leaf items received so far: a measure of the bandwidth used.
    pub received: usize,
}

impl<K: Ord + Clone> MerkleDiff<K> {
    /// Starts diffing `local` against a remote tree of the same depth, over the keys in `arc`.
    pub fn new(local: &MerkleTree<K>, arc: RingArc) -> Self {
        let mut leaves = Vec::new();
        let mut hashes = Vec::new();
        collect_frontier(
            local.depth,
            arc,
            NodeRef::ROOT,
            &mut leaves,
            &mut hashes,
            false,
        );
        MerkleDiff {
            arc,
            depth: local.depth,
            outstanding: Some(Query {
                depth: local.depth,
                hashes,
                leaves,
            })
            .filter(|q| !q.hashes.is_empty() || !q.leaves.is_empty()),
            found: Vec::new(),
            received: 0,
        }
    }

    /// What to ask the remote next; `None` when the diff is complete.
    pub fn query(&self) -> Option<&Query> {
        self.outstanding.as_ref()
    }

    /// Takes in the remote's answer to the outstanding query.
    pub fn absorb(&mut self, local: &MerkleTree<K>, answer: Answer<K>) -> Result<(), DiffError> {
        let query = self.outstanding.take().ok_or(DiffError::Unexpected)?;
        if answer.hashes.len() != query.hashes.len() {
            return Err(DiffError::WrongLength {
                expected: query.hashes.len(),
                got: answer.hashes.len(),
            });
        }
        if answer.leaves.len() != query.leaves.len() {
            return Err(DiffError::WrongLength {
                expected: query.leaves.len(),
                got: answer.leaves.len(),
            });
        }
        self.received += answer.hashes.len();
        let mut next = Query {
            depth: self.depth,
            hashes: Vec::new(),
            leaves: Vec::new(),
        };
        for (node, remote) in query.hashes.iter().zip(&answer.hashes) {
            if local.hash(*node) == *remote {
                continue;
            }
            if node.level >= self.depth {
                next.leaves.push(node.index);
            } else {
                next.hashes.extend(node.children());
            }
        }
        for (leaf, remote_items) in query.leaves.iter().zip(answer.leaves) {
            self.received += remote_items.len();
            self.compare_leaf(local.leaf_items(*leaf), remote_items);
        }
        if !next.hashes.is_empty() || !next.leaves.is_empty() {
            self.outstanding = Some(next);
        }
        Ok(())
    }

    fn compare_leaf(&mut self, local: Vec<LeafItem<K>>, remote: Vec<LeafItem<K>>) {
        let arc = self.arc;
        let mut merged: BTreeMap<(u64, K), (Option<Hash>, Option<Hash>)> = BTreeMap::new();
        for (pos, key, h) in local.into_iter().filter(|i| arc.contains(i.0)) {
            merged.entry((pos, key)).or_default().0 = Some(h);
        }
        for (pos, key, h) in remote.into_iter().filter(|i| arc.contains(i.0)) {
            merged.entry((pos, key)).or_default().1 = Some(h);
        }
        self.found.extend(
            merged
                .into_iter()
                .filter(|(_, (a, b))| a != b)
                .map(|((_, k), _)| k),
        );
    }

    /// Whether the diff needs no more answers, so `into_differences` is complete.
    pub fn is_done(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Keys that differ (present on one side only, or with different values), once done.
    pub fn into_differences(self) -> Vec<K> {
        self.found
    }
}

/// Diffs two trees held in the same process (tests, benchmarks, and a local sanity check).
pub fn diff_local<K: Ord + Clone>(
    local: &MerkleTree<K>,
    remote: &MerkleTree<K>,
    arc: RingArc,
) -> Result<(Vec<K>, usize), DiffError> {
    let mut diff = MerkleDiff::new(local, arc);
    while let Some(q) = diff.query() {
        let answer = remote.answer(q)?;
        diff.absorb(local, answer)?;
    }
    let received = diff.received;
    Ok((diff.into_differences(), received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> Hash {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn hash_is_order_independent_and_removal_restores_it() {
        let a = MerkleTree::<u64>::new(4);
        let b = MerkleTree::<u64>::new(4);
        for i in 0..50u64 {
            a.set(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), &i, Some(h(i)));
        }
        for i in (0..50u64).rev() {
            b.set(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), &i, Some(h(i)));
        }
        assert_eq!(a.root(), b.root());
        b.set(7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15), &7, Some(h(1000)));
        assert_ne!(a.root(), b.root());
        b.set(7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15), &7, Some(h(7)));
        assert_eq!(a.root(), b.root());
        a.set(1, &999, Some(h(999)));
        a.set(1, &999, None);
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn every_node_is_the_xor_of_the_items_below_it_kept_level_or_not() {
        for depth in [0u8, 3, 9, 13, 16] {
            let t = MerkleTree::<u64>::new(depth);
            let items: Vec<(u64, u64)> = (0..3_000u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7), i))
                .collect();
            for (pos, k) in &items {
                t.set(*pos, k, Some(h(*k)));
            }
            // A few removals and replacements on the way.
            for (pos, k) in items.iter().step_by(7) {
                t.set(*pos, k, None);
            }
            for (pos, k) in items.iter().step_by(11) {
                t.set(*pos, k, Some(h(k + 1)));
            }
            let expected_item = |k: u64| {
                if k.is_multiple_of(11) {
                    Some(h(k + 1))
                } else if k.is_multiple_of(7) {
                    None
                } else {
                    Some(h(k))
                }
            };
            for level in 0..=depth {
                for index in [0u64, (1u64 << level) / 3, (1u64 << level) - 1] {
                    let node = NodeRef { level, index };
                    let (lo, hi) = node.span();
                    let mut want = ZERO;
                    for (pos, k) in &items {
                        if *pos >= lo
                            && (*pos <= hi)
                            && let Some(item) = expected_item(*k)
                        {
                            want = xor(&want, &item);
                        }
                    }
                    assert_eq!(
                        t.hash(node),
                        want,
                        "depth {depth} level {level} index {index}"
                    );
                }
            }
        }
    }

    #[test]
    fn diff_respects_arcs_including_wrapping_ones() {
        let a = MerkleTree::<u64>::new(6);
        let b = MerkleTree::<u64>::new(6);
        let positions = [5u64, 1 << 40, 1 << 62, u64::MAX - 3, u64::MAX / 2];
        for (i, p) in positions.iter().enumerate() {
            a.set(*p, &(i as u64), Some(h(i as u64)));
        }
        let arc = RingArc {
            after: u64::MAX - 10,
            upto: 1 << 50,
        };
        let (mut d, _) = diff_local(&a, &b, arc).unwrap();
        d.sort();
        assert_eq!(d, vec![0, 1, 3]);
        let (mut d, _) = diff_local(&b, &a, RingArc::FULL).unwrap();
        d.sort();
        assert_eq!(d, vec![0, 1, 2, 3, 4]);
        assert_eq!(a.keys_in(arc).len(), 3);
    }

    #[test]
    fn bad_queries_are_errors() {
        let a = MerkleTree::<u64>::new(3);
        let q = Query {
            depth: 3,
            hashes: vec![NodeRef { level: 9, index: 0 }],
            leaves: vec![],
        };
        assert!(a.answer(&q).is_err());
        let q = Query {
            depth: 3,
            hashes: vec![NodeRef { level: 2, index: 4 }],
            leaves: vec![],
        };
        assert!(a.answer(&q).is_err());
        let q = Query {
            depth: 3,
            hashes: vec![],
            leaves: vec![8],
        };
        assert!(a.answer(&q).is_err());
        let deeper = MerkleTree::<u64>::new(5);
        deeper.set(1, &1, Some(h(1)));
        assert_eq!(
            diff_local(&a, &deeper, RingArc::FULL).unwrap_err(),
            DiffError::DepthMismatch { asked: 3, depth: 5 }
        );
        let mut d = MerkleDiff::new(&a, RingArc::FULL);
        assert!(
            d.absorb(
                &a,
                Answer {
                    hashes: vec![],
                    leaves: vec![]
                }
            )
            .is_err()
        );
    }
}

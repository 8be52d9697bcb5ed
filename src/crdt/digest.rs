//! Order-independent digests of large collections, kept up to date one member at a time.
//!
//! The Merkle tree needs a hash of every key's state, and memory accounting its size. For a
//! set or a hash of many members, encoding the whole value on every write would make each
//! write cost time in proportion to the collection. Instead the collection's digest is the XOR
//! of one digest per member (so it does not depend on order), and a write that touches a few
//! members swaps out their old digests for their new ones.

use serde::Serialize;

/// A 256-bit digest.
pub type Hash = [u8; 32];

/// The digest of a collection: the XOR of its members' digests, and the sum of their encoded
/// sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    /// XOR of the members' digests.
    pub hash: Hash,
    /// Sum of the members' encoded sizes, in bytes.
    pub size: usize,
}

impl Digest {
    /// Adds a member's digest, or takes it out again (XOR is its own inverse).
    pub fn toggle(&mut self, member: &Digest, adding: bool) {
        for (h, m) in self.hash.iter_mut().zip(member.hash) {
            *h ^= m;
        }
        if adding {
            self.size += member.size;
        } else {
            self.size = self.size.saturating_sub(member.size);
        }
    }
}

/// The digest of one member: `tag` (which collection), its name, and its encoded state.
pub fn member(tag: u8, name: &[u8], state: &impl Serialize) -> Digest {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut b = buffer.borrow_mut();
        b.clear();
        b.push(tag);
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        let start = b.len();
        // Encoding in-memory maps of strings, integers and bytes cannot fail.
        let _ = rmp_serde::encode::write(&mut *b, state);
        let size = name.len() + (b.len() - start);
        let mut hash = [0; 32];
        hash[..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(&b).to_le_bytes());
        hash[16..].copy_from_slice(
            &xxhash_rust::xxh3::xxh3_128_with_seed(&b, 0x51_7c_c1_b7_27_22_0a_95).to_le_bytes(),
        );
        Digest { hash, size }
    })
}

/// A digest kept beside a value and maintained by its merges; unknown until first computed.
/// Not part of the value: never encoded, and equal whatever it holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cached(pub Option<Digest>);

impl PartialEq for Cached {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cached {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_a_member_twice_leaves_nothing_and_order_does_not_matter() {
        let a = member(1, b"a", &(1u8, "x"));
        let b = member(1, b"b", &(2u8, "y"));
        let mut ab = Digest::default();
        ab.toggle(&a, true);
        ab.toggle(&b, true);
        let mut ba = Digest::default();
        ba.toggle(&b, true);
        ba.toggle(&a, true);
        assert_eq!(ab, ba);
        ab.toggle(&a, false);
        ab.toggle(&b, false);
        assert_eq!(ab, Digest::default());
        assert_ne!(member(1, b"a", &1u8).hash, member(2, b"a", &1u8).hash);
    }
}

//! The bytes the process holds allocated, counted at the allocator as Redis's zmalloc counts
//! `used_memory`: what the memory limit is calibrated against.
//!
//! Resident memory was the first choice and failed as a cache: after evictions the allocator
//! keeps partly used pages resident, so the resident figure stayed while the data shrank, the
//! factor rose, and eviction went on until the cache was nearly empty (a 128 MiB node ended
//! with 3,000 values of 4 KiB). Allocated bytes fall as soon as a value is freed. Each block
//! is counted at its usable size (the allocator's size class), so rounding is included.
//!
//! The count is spread over a few cache-line-sized shards, one per thread in turn, so that
//! threads allocating at once do not contend on one counter; the sum over shards is exact
//! whichever thread frees a block.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use mimalloc::MiMalloc;

/// Shards of the count.
const SHARDS: usize = 8;

/// One shard, alone on its cache line.
#[repr(align(128))]
struct Shard(AtomicIsize);

static COUNTS: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];

/// The shard the next thread counts in.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard (`usize::MAX` until its first allocation). No destructor and a
    /// constant initialiser: reading it never allocates.
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(delta: isize) {
    let shard = MY_SHARD
        .try_with(|mine| {
            let mut shard = mine.get();
            if shard == usize::MAX {
                shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                mine.set(shard);
            }
            shard
        })
        .unwrap_or(0);
    COUNTS[shard].0.fetch_add(delta, Ordering::Relaxed);
}

/// The count over every shard.
fn total() -> isize {
    COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

/// Counts a block just handed out (if any) and passes it on.
///
/// # Safety
/// `ptr` is null or a live block from mimalloc.
unsafe fn counted(ptr: *mut u8) -> *mut u8 {
    if !ptr.is_null() {
        // SAFETY: a live mimalloc block (the caller's contract).
        count(unsafe { MiMalloc.usable_size(ptr) } as isize);
    }
    ptr
}

/// mimalloc, with every block counted: the node's global allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingMiMalloc;

// SAFETY: every call is passed to mimalloc unchanged; the count only reads the usable size
// of blocks mimalloc returned.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on; mimalloc returns null or a live block.
        unsafe { counted(MiMalloc.alloc(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on; mimalloc returns null or a live block.
        unsafe { counted(MiMalloc.alloc_zeroed(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe {
            count(-(MiMalloc.usable_size(ptr) as isize));
            MiMalloc.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe {
            let old = MiMalloc.usable_size(ptr) as isize;
            let moved = MiMalloc.realloc(ptr, layout, new_size);
            if !moved.is_null() {
                count(MiMalloc.usable_size(moved) as isize - old);
            }
            moved
        }
    }
}

/// The bytes allocated now, when [`CountingMiMalloc`] is the process's allocator; `None`
/// otherwise (a test binary, a heap-profiling build).
pub fn allocated() -> Option<u64> {
    let sum = total();
    (sum > 0).then_some(sum as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_counted_at_their_usable_size_and_uncounted_when_freed() {
        let before = total();
        let layout = Layout::from_size_align(5000, 8).expect("layout");
        // SAFETY: a fresh block of a valid layout, freed once with the same layout.
        unsafe {
            let p = CountingMiMalloc.alloc(layout);
            assert!(!p.is_null());
            let usable = MiMalloc.usable_size(p) as isize;
            assert!(usable >= 5000);
            let mid = total();
            assert_eq!(mid - before, usable);
            let p = CountingMiMalloc.realloc(p, layout, 20_000);
            assert!(!p.is_null());
            let grown = MiMalloc.usable_size(p) as isize;
            let after_grow = total();
            assert_eq!(after_grow - before, grown);
            CountingMiMalloc.dealloc(p, Layout::from_size_align(20_000, 8).expect("layout"));
        }
        let after = total();
        assert_eq!(after, before);
    }
}

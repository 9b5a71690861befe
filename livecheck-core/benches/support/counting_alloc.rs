//! The benches' global allocator: an allocator (the system's, or the `livecheck` binaries'
//! mimalloc in the live bench), counting the allocations made and the
//! bytes live on the Rust heap, and, while switched on, the live allocations by size.
//!
//! Each thread adds to counters of its own (one of [`STRIPES`] sets, each on a cache line of
//! its own) and a reading sums them all. With one counter shared by every thread, each
//! allocation and free on one core took that counter's cache line away from the others: in
//! the live bench's throughput section it made the process use 1.6 cores instead of 1.1 for
//! fewer records a second with 2 worker threads than with 1 (perf: the counting allocator's
//! own functions went from 6 % to 11 % of the workers' samples, and every other function
//! slowed down too). Threads get the sets in turn; beyond [`STRIPES`] threads they share.
//! Memory freed by another thread than the one that allocated it is counted on the freeing
//! thread's set, which may go negative: the sum is exact once the threads are quiet (read
//! while they allocate, it is not one snapshot and may be off by what moves meanwhile).
#![allow(
    dead_code,
    reason = "each bench reads the counters it reports, not all of them"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

/// Sets of counters; threads beyond this many share them (still exact, a little slower).
const STRIPES: usize = 64;

/// Live allocations by size class: 16-byte classes up to 4 KiB, then one for the rest.
const SIZE_CLASSES: usize = 257;

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
struct Stripe {
    allocations: AtomicI64,
    bytes: AtomicI64,
}

static COUNTERS: [Stripe; STRIPES] = [const {
    Stripe {
        allocations: AtomicI64::new(0),
        bytes: AtomicI64::new(0),
    }
}; STRIPES];

/// The next stripe handed to a thread that allocates for the first time.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

/// By size class, counted only while [`BY_SIZE_ON`] is set (shared counters: the figure is
/// taken with the runs idle).
static BY_SIZE: [AtomicI64; SIZE_CLASSES] = [const { AtomicI64::new(0) }; SIZE_CLASSES];
static BY_SIZE_ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates, and it can be
    // read while the thread ends.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's counters.
fn stripe() -> &'static Stripe {
    let index = STRIPE
        .try_with(|mine| {
            if mine.get() == usize::MAX {
                mine.set(NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES);
            }
            mine.get()
        })
        .unwrap_or(0);
    &COUNTERS[index]
}

fn counted(allocations: i64, bytes: i64) {
    let stripe = stripe();
    if allocations != 0 {
        stripe.allocations.fetch_add(allocations, Ordering::Relaxed);
    }
    stripe.bytes.fetch_add(bytes, Ordering::Relaxed);
}

fn count_by_size(size: usize, delta: i64) {
    if BY_SIZE_ON.load(Ordering::Relaxed) {
        BY_SIZE[size_class(size)].fetch_add(delta, Ordering::Relaxed);
    }
}

/// `ptr`, counted as an allocation of `size` bytes unless it is null.
fn allocated(ptr: *mut u8, size: usize) -> *mut u8 {
    if !ptr.is_null() {
        counted(1, size as i64);
        count_by_size(size, 1);
    }
    ptr
}

/// An allocator (the system's by default), counting.
pub(crate) struct CountingAlloc<A = System>(pub(crate) A);

// SAFETY: every call is forwarded unchanged to `A`, which upholds the contract; the
// counters have no effect on the memory handed out.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        allocated(unsafe { self.0.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        allocated(unsafe { self.0.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above; `ptr` came from this allocator, hence from `A`.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            counted(1, new_size as i64 - layout.size() as i64);
            count_by_size(layout.size(), -1);
            count_by_size(new_size, 1);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) };
        counted(0, -(layout.size() as i64));
        count_by_size(layout.size(), -1);
    }
}

/// Allocations (and reallocations) made so far, by every thread.
pub(crate) fn allocations() -> u64 {
    COUNTERS
        .iter()
        .map(|s| s.allocations.load(Ordering::Relaxed))
        .sum::<i64>()
        .max(0) as u64
}

/// Bytes live on the Rust heap now.
pub(crate) fn live_bytes() -> i64 {
    COUNTERS
        .iter()
        .map(|s| s.bytes.load(Ordering::Relaxed))
        .sum()
}

/// Starts or stops counting the live allocations by size.
pub(crate) fn count_by_size_class(on: bool) {
    BY_SIZE_ON.store(on, Ordering::Relaxed);
}

/// Live allocations by size class (16-byte classes), counted while switched on.
pub(crate) fn by_size() -> Vec<i64> {
    BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// The size class of an allocation of `size` bytes, as [`by_size`] indexes them.
pub(crate) fn size_class(size: usize) -> usize {
    size.div_ceil(16).min(SIZE_CLASSES - 1)
}

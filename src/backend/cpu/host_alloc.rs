//! A caching host allocator for tensor-sized blocks.
//!
//! A training step frees and re-allocates the same activation and gradient
//! sizes thousands of times. Through the system allocator every block above
//! glibc's mmap threshold is a fresh `mmap` (page faults, the kernel zeroing
//! each page) and a `munmap` (a TLB shootdown interrupting the other cores):
//! 4–5 % of a demo-UNet training step in profiles. [`CachingAllocator`] keeps
//! freed large blocks in size-class bins and hands them back on the next
//! request of that class, the way a GPU runtime's caching allocator does; small
//! blocks go straight to the system allocator, which serves them from its
//! arenas without system calls.
//!
//! It is a `GlobalAlloc`, installed by the binary and the benchmarks:
//!
//! ```ignore
//! use privdistill::backend::cpu::host_alloc::{CachingAllocator, DEFAULT_CAPACITY};
//! #[global_allocator]
//! static ALLOCATOR: CachingAllocator = CachingAllocator::new(DEFAULT_CAPACITY);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The free bytes the binary and the benchmarks let the cache hold: a
/// demo-UNet training step ran as fast with this as with 512 MiB, and it
/// bounds what the cache adds to a run's resident memory.
pub const DEFAULT_CAPACITY: usize = 256 << 20;
/// Blocks smaller than this go to the system allocator untouched.
pub const MIN_CACHED_BYTES: usize = 1 << 16;
/// Every cached block is aligned to a cache line (and to what was asked, up to this).
const BLOCK_ALIGN: usize = 64;
/// Size classes per power of two: a block is at most 25 % larger than asked.
const CLASSES_PER_OCTAVE: usize = 4;
/// log2 of the largest cached class; larger blocks bypass the cache.
const MAX_OCTAVE: usize = 40;
const MIN_OCTAVE: usize = MIN_CACHED_BYTES.trailing_zeros() as usize;
const BINS: usize = (MAX_OCTAVE - MIN_OCTAVE) * CLASSES_PER_OCTAVE;

/// The size class of a request: its bin and the block size every block in
/// that bin has. `None` for sizes the cache does not keep.
fn size_class(size: usize) -> Option<(usize, usize)> {
    if !(MIN_CACHED_BYTES..=1 << MAX_OCTAVE).contains(&size) {
        return None;
    }
    let octave = (usize::BITS - 1 - size.leading_zeros()) as usize;
    let step = (1usize << octave) / CLASSES_PER_OCTAVE;
    let block = size.div_ceil(step) * step;
    let bin = (octave - MIN_OCTAVE) * CLASSES_PER_OCTAVE + block / step - CLASSES_PER_OCTAVE;
    // `block` may round up to the next power of two, which is that octave's first class.
    (bin < BINS).then_some((bin, block))
}

/// The free blocks of each size class, as intrusive lists (each free block
/// holds the address of the next in its first word), and when each class was
/// last asked for.
struct Bins {
    heads: [*mut u8; BINS],
    last_use: [u64; BINS],
    clock: u64,
}

impl Bins {
    /// Note a request of class `bin` now.
    fn touch(&mut self, bin: usize) {
        self.clock += 1;
        self.last_use[bin] = self.clock;
    }

    /// Unlink one free block of `bin`, if it has one.
    fn pop(&mut self, bin: usize) -> Option<NonNull<u8>> {
        let free = NonNull::new(self.heads[bin])?;
        // SAFETY: a free block in the list starts with the next block's address.
        self.heads[bin] = unsafe { free.as_ptr().cast::<*mut u8>().read() };
        Some(free)
    }

    /// The class with free blocks that was asked for least recently, if that
    /// was before the last request of class `than`.
    fn staler_than(&self, than: usize) -> Option<usize> {
        (0..BINS).filter(|&b| !self.heads[b].is_null() && self.last_use[b] < self.last_use[than]).min_by_key(|&b| self.last_use[b])
    }
}

// SAFETY: the raw pointers are free blocks owned by the allocator, only
// touched under the mutex.
unsafe impl Send for Bins {}

/// A global allocator that caches freed blocks of at least
/// [`MIN_CACHED_BYTES`] in size classes (at most 25 % over the request), up
/// to a total of `capacity` bytes held free, making room by releasing the
/// classes asked for least recently. Everything else is the system allocator.
pub struct CachingAllocator {
    bins: Mutex<Bins>,
    cached_bytes: AtomicUsize,
    capacity: usize,
}

impl CachingAllocator {
    /// An allocator holding at most `capacity` bytes of freed blocks for reuse.
    pub const fn new(capacity: usize) -> Self {
        let bins = Bins { heads: [null_mut(); BINS], last_use: [0; BINS], clock: 0 };
        CachingAllocator { bins: Mutex::new(bins), cached_bytes: AtomicUsize::new(0), capacity }
    }

    /// Bytes currently held free in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes.load(Ordering::Relaxed)
    }

    /// Return every cached block to the system.
    pub fn release_cached(&self) {
        let mut bins = self.lock();
        for bin in 0..BINS {
            while let Some(free) = bins.pop(bin) {
                // SAFETY: a cached block of this class, no longer in any list.
                unsafe { self.release(free, bin) };
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bins> {
        // A panic while holding the lock cannot leave the lists inconsistent
        // (every update is one pointer write), so a poisoned lock is still usable.
        self.bins.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Give a cached block of class `bin` back to the system.
    ///
    /// # Safety
    /// `free` must be a block of that class that no list holds any more.
    unsafe fn release(&self, free: NonNull<u8>, bin: usize) {
        let block = block_size_of_bin(bin);
        // SAFETY: the block was allocated by System with this layout (see `alloc_block`).
        unsafe { System.dealloc(free.as_ptr(), block_layout(block)) };
        self.cached_bytes.fetch_sub(block, Ordering::Relaxed);
    }

    /// A block of the class `(bin, block)`: a cached one, or a new one from the system.
    fn alloc_block(&self, bin: usize, block: usize) -> *mut u8 {
        {
            let mut bins = self.lock();
            bins.touch(bin);
            if let Some(free) = bins.pop(bin) {
                self.cached_bytes.fetch_sub(block, Ordering::Relaxed);
                return free.as_ptr();
            }
        }
        // SAFETY: the layout has a non-zero size (block ≥ MIN_CACHED_BYTES).
        unsafe { System.alloc(block_layout(block)) }
    }

    /// Keep a block of the class `(bin, block)` for reuse. When that would
    /// pass the capacity, cached blocks of classes asked for less recently
    /// than this one (another model's sizes, a finished phase's) go back to
    /// the system, least recent first; if that cannot make room, this block does.
    ///
    /// # Safety
    /// `ptr` must be a block of that class from `alloc_block`, no longer used.
    unsafe fn free_block(&self, ptr: *mut u8, bin: usize, block: usize) {
        {
            let mut bins = self.lock();
            while self.cached_bytes.load(Ordering::Relaxed) + block > self.capacity {
                let Some(stale) = bins.staler_than(bin) else { break };
                let free = bins.pop(stale).unwrap_or_else(|| unreachable!("the class has free blocks"));
                // SAFETY: a cached block of class `stale`, just unlinked.
                unsafe { self.release(free, stale) };
            }
            if self.cached_bytes.load(Ordering::Relaxed) + block <= self.capacity {
                // SAFETY: the block is ours now and at least a word long and aligned.
                unsafe { ptr.cast::<*mut u8>().write(bins.heads[bin]) };
                bins.heads[bin] = ptr;
                self.cached_bytes.fetch_add(block, Ordering::Relaxed);
                return;
            }
        }
        // SAFETY: allocated by System with this layout (see `alloc_block`).
        unsafe { System.dealloc(ptr, block_layout(block)) };
    }
}

fn block_size_of_bin(bin: usize) -> usize {
    let octave = MIN_OCTAVE + bin / CLASSES_PER_OCTAVE;
    let step = (1usize << octave) / CLASSES_PER_OCTAVE;
    (1 << octave) + (bin % CLASSES_PER_OCTAVE) * step
}

fn block_layout(block: usize) -> Layout {
    // Cannot fail: the alignment is a power of two and the size is below isize::MAX.
    Layout::from_size_align(block, BLOCK_ALIGN).unwrap_or_else(|_| unreachable!("block layouts are valid"))
}

/// The class a layout is cached in, if it is cached at all.
fn cached_class(layout: Layout) -> Option<(usize, usize)> {
    if layout.align() > BLOCK_ALIGN {
        return None;
    }
    size_class(layout.size())
}

// SAFETY: blocks handed out are either System's own (for layouts the cache
// does not keep, freed by System with the same layout) or System blocks of the
// layout's class size, aligned to BLOCK_ALIGN ≥ layout.align(), which no two
// callers hold at once (the bins are under a mutex).
unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some((bin, block)) => self.alloc_block(bin, block),
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some((bin, block)) => {
                let ptr = self.alloc_block(bin, block);
                if !ptr.is_null() {
                    // SAFETY: the block holds at least layout.size() bytes.
                    unsafe { ptr.write_bytes(0, layout.size()) };
                }
                ptr
            }
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match cached_class(layout) {
            // SAFETY: a layout of this class was served by `alloc_block` of the same class.
            Some((bin, block)) => unsafe { self.free_block(ptr, bin, block) },
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size > 0 and a valid layout with it.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (cached_class(layout), cached_class(new_layout)) {
            // SAFETY: a System block, forwarded with the caller's guarantees.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            // The block already has room: a class holds every size up to its block size.
            (Some((old_bin, _)), Some((new_bin, _))) if old_bin == new_bin => ptr,
            _ => {
                // SAFETY: as `alloc`, with the caller's guarantees for the new layout.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and are distinct.
                    unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
                    // SAFETY: `ptr` was allocated by this allocator with `layout`.
                    unsafe { self.dealloc(ptr, layout) };
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_cover_every_size_with_at_most_a_quarter_spare() {
        assert_eq!(size_class(MIN_CACHED_BYTES - 1), None);
        let mut last_bin = 0;
        for size in (MIN_CACHED_BYTES..1 << 24).step_by(4093) {
            let (bin, block) = size_class(size).unwrap();
            assert!(block >= size && (block - size) * 4 <= size, "size {size} → block {block}");
            assert_eq!(block_size_of_bin(bin), block, "size {size}");
            assert!(bin >= last_bin, "classes grow with size");
            last_bin = bin;
        }
        assert_eq!(size_class(1 << 20), Some((16, 1 << 20)));
        assert_eq!(size_class((1 << 20) + 1).map(|c| c.1), Some((1 << 20) + (1 << 18)));
    }

    #[test]
    fn freed_blocks_are_reused_by_their_class_and_released_past_capacity() {
        let cache = CachingAllocator::new(3 << 20);
        let layout = Layout::from_size_align(1 << 20, 4).unwrap();
        let same_class = Layout::from_size_align((1 << 20) - 100, 8).unwrap();
        // SAFETY: non-zero layouts; every block is freed with the layout it was allocated with.
        unsafe {
            let a = cache.alloc(layout);
            assert_eq!(a as usize % BLOCK_ALIGN, 0);
            a.write_bytes(7, layout.size());
            cache.dealloc(a, layout);
            assert_eq!(cache.cached_bytes(), 1 << 20);
            let b = cache.alloc_zeroed(same_class);
            assert_eq!(b, a, "the freed block serves the next request of its class");
            assert!(std::slice::from_raw_parts(b, same_class.size()).iter().all(|&x| x == 0));
            assert_eq!(cache.cached_bytes(), 0);
            let grown = cache.realloc(b, same_class, (1 << 20) - 8);
            assert_eq!(grown, b, "growing within the class keeps the block");
            let moved = cache.realloc(grown, Layout::from_size_align((1 << 20) - 8, 8).unwrap(), 3 << 20);
            assert_ne!(moved, grown);
            let blocks: Vec<*mut u8> = (0..4).map(|_| cache.alloc(layout)).collect();
            for &p in &blocks {
                cache.dealloc(p, layout);
            }
            assert_eq!(cache.cached_bytes(), 3 << 20, "the fourth block went back to the system");
            // The 3 MiB class was last asked for before the 1 MiB blocks: they stay.
            let big = Layout::from_size_align(3 << 20, 8).unwrap();
            cache.dealloc(moved, big);
            assert_eq!(cache.cached_bytes(), 3 << 20);
            assert_eq!(cache.alloc(layout), blocks[2], "the 1 MiB blocks are still cached");
            cache.dealloc(blocks[2], layout);
            // Asked for again, the 3 MiB class is the recent one: freeing its block evicts them.
            let fresh = cache.alloc(big);
            cache.dealloc(fresh, big);
            assert_eq!(cache.cached_bytes(), 3 << 20);
            assert_eq!(cache.alloc(big), fresh, "the 3 MiB block was kept, the stale 1 MiB ones released");
            cache.dealloc(fresh, big);
            cache.release_cached();
            assert_eq!(cache.cached_bytes(), 0);
        }
    }
}

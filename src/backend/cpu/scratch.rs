//! Per-thread scratch buffers that outlive the call that uses them.
//!
//! Kernels that need a temporary (GEMM's packed panels, a convolution's output
//! block) take one from here instead of allocating: a fresh `Vec` per call
//! costs a zero-fill, and page faults once it is large, on every call (6 % of
//! a ResNet-50 forward in profiles, as memset). A buffer is only zero-filled
//! where it grows, so callers must write every element they later read.

use std::cell::Cell;
use std::thread::LocalKey;

/// One cache line of scratch space; buffers are made of these so every
/// buffer starts 64-byte aligned.
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

thread_local! {
    static GEMM_PACK_A: Cell<Vec<CacheLine>> = const { Cell::new(Vec::new()) };
    static GEMM_PACK_B: Cell<Vec<CacheLine>> = const { Cell::new(Vec::new()) };
    static CONV_BLOCK_OUT: Cell<Vec<CacheLine>> = const { Cell::new(Vec::new()) };
}

/// Which per-thread buffer to use: one per distinct temporary that may be
/// live at the same time on one thread.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    /// GEMM: the packed block of A.
    GemmPackA,
    /// GEMM: the packed block of B.
    GemmPackB,
    /// Convolution: a block of output computed before it is scattered.
    ConvBlockOut,
}

/// Run `f` with a 64-byte aligned buffer of `len` elements of `T`, reused
/// across calls on this thread; its contents on entry are whatever the last
/// user left (zeros where it grew). The buffer is taken out of its slot for
/// the duration, so a nested call on the same thread (rayon may run another
/// task here while this one waits) simply gets a fresh one instead of
/// aliasing it.
pub fn with_buffer<T: bytemuck::Pod, R>(slot: Slot, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let key: &'static LocalKey<Cell<Vec<CacheLine>>> = match slot {
        Slot::GemmPackA => &GEMM_PACK_A,
        Slot::GemmPackB => &GEMM_PACK_B,
        Slot::ConvBlockOut => &CONV_BLOCK_OUT,
    };
    let mut lines = key.take();
    let needed = (len * size_of::<T>()).div_ceil(size_of::<CacheLine>());
    if lines.len() < needed {
        lines.resize(needed, CacheLine([0; 64]));
    }
    let out = f(&mut bytemuck::cast_slice_mut::<CacheLine, T>(&mut lines[..needed])[..len]);
    key.set(lines);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_nested_calls_get_their_own() {
        let first = with_buffer::<f32, _>(Slot::ConvBlockOut, 100, |b| {
            b.fill(7.0);
            // A nested call on the same slot must not see (or alias) the outer buffer.
            with_buffer::<f32, _>(Slot::ConvBlockOut, 10, |inner| assert!(inner.iter().all(|&v| v == 0.0)));
            b.as_ptr() as usize
        });
        with_buffer::<f32, _>(Slot::ConvBlockOut, 50, |b| {
            assert_eq!(b.as_ptr() as usize % 64, 0, "64-byte aligned");
            assert!(b.iter().all(|&v| v == 7.0), "the last user's values are still there");
            assert_eq!(b.as_ptr() as usize, first, "the same allocation is reused");
        });
    }
}

//! Micro-kernels: the register-blocked inner loop of the GEMM, its blocking
//! parameters, and the choice of kernel for this CPU.

use super::SgemmKernel;
use crate::tensor::Float;
use std::sync::OnceLock;

/// Computes one MR×NR tile: C = alpha·Ã·B̃ + beta·C, where Ã is an MR×kc
/// sliver of A with element (r, p) at `a + r·rsa + p·csa` — a packed A
/// micro-panel (kc steps of MR values) has strides (1, MR), a row-major A read
/// in place (lda, 1) — and B̃ a packed B micro-panel (kc steps of NR values). C has row stride `rsc` and unit column stride; with beta == 0
/// it is written without being read. The update is round(beta·C) +
/// round(alpha·acc), unfused, exactly as the driver merges edge tiles, so a
/// result never depends on where the tile boundaries fell (serial and parallel
/// runs agree bit for bit).
///
/// # Safety
/// `a` must be valid for reads of every (r, p) element with r < MR, p < kc, `b` for kc·NR reads, `c` for the MR×NR
/// tile with row stride `rsc` (initialised unless `beta` is zero: then it is
/// only written, through the pointer), and the CPU must have the kernel's features.
pub(super) type KernelFn<T> =
    unsafe fn(kc: usize, alpha: T, a: *const T, rsa: usize, csa: usize, b: *const T, beta: T, c: *mut T, rsc: usize);

/// A micro-kernel with the tile shape it computes and the cache blocking that suits it.
pub(super) struct MicroKernel<T> {
    /// Rows of the register tile (height of an A micro-panel).
    pub mr: usize,
    /// Columns of the register tile (width of a B micro-panel).
    pub nr: usize,
    /// Depth of a k slice: a B micro-panel (kc·nr) should stay in L1.
    pub kc: usize,
    /// Height of a packed A block (mc·kc) that should stay in L2.
    pub mc: usize,
    /// Width of a packed B block (kc·nc) that should stay in L3.
    pub nc: usize,
    pub run: KernelFn<T>,
}

/// Largest tile of any kernel (AVX2: 6×16), for edge-tile scratch space.
pub(super) const MAX_TILE: usize = 6 * 16;

/// The portable f32 kernel: a 4×8 tile of plain Rust that LLVM vectorises with
/// whatever the baseline target offers.
pub(super) static PORTABLE_F32: MicroKernel<f32> =
    MicroKernel { mr: 4, nr: 8, kc: 256, mc: 128, nc: 4096, run: portable_kernel::<f32, 4, 8> };

/// The portable kernel for any float type (f64 uses it for gradient checks).
pub(super) fn portable<T: Float>() -> MicroKernel<T> {
    MicroKernel { mr: 4, nr: 4, kc: 256, mc: 128, nc: 2048, run: portable_kernel::<T, 4, 4> }
}

/// The AVX2+FMA kernel, if this CPU has those features.
pub(super) fn avx2_f32() -> Option<&'static MicroKernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some(&super::avx2::KERNEL);
    }
    None
}

/// The f32 kernel to use on this CPU, detected on first call and cached.
pub(super) fn best_f32() -> (SgemmKernel, &'static MicroKernel<f32>) {
    static BEST: OnceLock<(SgemmKernel, &'static MicroKernel<f32>)> = OnceLock::new();
    *BEST.get_or_init(|| if let Some(k) = avx2_f32() { (SgemmKernel::Avx2Fma, k) } else { (SgemmKernel::Portable, &PORTABLE_F32) })
}

/// # Safety
/// See [`KernelFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn portable_kernel<T: Float, const MR: usize, const NR: usize>(
    kc: usize,
    alpha: T,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    beta: T,
    c: *mut T,
    rsc: usize,
) {
    // SAFETY: the caller guarantees kc·NR readable elements at `b`.
    let b = unsafe { std::slice::from_raw_parts(b, kc * NR) };
    let mut acc = [[T::zero(); NR]; MR];
    for (p, b_step) in b.chunks_exact(NR).enumerate() {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: (r, p) with r < MR, p < kc is readable by the caller's guarantee.
            let av = unsafe { *a.add(r * rsa + p * csa) };
            for (acc_v, &bv) in acc_row.iter_mut().zip(b_step) {
                *acc_v += av * bv;
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        if beta == T::zero() {
            for (j, &v) in acc_row.iter().enumerate() {
                // Written through the pointer, never read: C may be uninitialised memory.
                // SAFETY: the caller guarantees the MR×NR tile with row stride `rsc` is writable.
                unsafe { c.add(r * rsc + j).write(alpha * v) };
            }
        } else {
            // SAFETY: as above; with beta ≠ 0 the caller guarantees C is initialised.
            let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(r * rsc), NR) };
            for (cv, &v) in c_row.iter_mut().zip(acc_row) {
                *cv = beta * *cv + alpha * v;
            }
        }
    }
}

//! The AVX2+FMA f32 micro-kernel: a 6×16 tile held in 12 ymm accumulators.
//! Each k step loads two B vectors, broadcasts six A values and issues 12
//! FMAs, enough independent chains to cover the FMA latency on both ports.

#![cfg(target_arch = "x86_64")]

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

/// 6×16 tiles; KC·NR·4 B = 24 KiB of B micro-panel in L1, MC·KC·4 B = 288 KiB of A block
/// in L2, KC·NC·4 B = 4.5 MiB of B block in L3.
pub(super) static KERNEL: MicroKernel<f32> = MicroKernel { mr: MR, nr: NR, kc: 384, mc: 192, nc: 3072, run: kernel_6x16 };

/// # Safety
/// See [`super::kernel::KernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_6x16(kc: usize, alpha: f32, a: *const f32, rsa: usize, csa: usize, b: *const f32, beta: f32, c: *mut f32, rsc: usize) {
    // A packed micro-panel gets its own instantiation, with the strides as constants.
    // SAFETY: forwarded with the caller's guarantees.
    unsafe {
        if (rsa, csa) == (1, MR) {
            tile::<true>(kc, alpha, a, 1, MR, b, beta, c, rsc)
        } else {
            tile::<false>(kc, alpha, a, rsa, csa, b, beta, c, rsc)
        }
    }
}

/// The tile product; with `PACKED` the A strides are the packed panel's (1, MR).
///
/// # Safety
/// As [`kernel_6x16`].
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const PACKED: bool>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    let (rsa, csa) = if PACKED { (1, MR) } else { (rsa, csa) };
    // Fetch the C tile now so its misses overlap the k loop instead of stalling the stores.
    for r in 0..MR {
        // SAFETY: prefetching never faults; the address lies in the caller's tile anyway.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * rsc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * rsc + NR - 1) as *const i8);
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY: the caller guarantees A elements (r, p) at r·rsa + p·csa for r < MR,
    // p < kc, and kc·NR floats at `b`; every offset below stays inside step p's values.
    unsafe {
        let (mut a, mut b) = (a, b);
        // One k step at offset `step` from the current panel positions.
        macro_rules! k_step {
            ($step:expr) => {{
                let b0 = _mm256_loadu_ps(b.add($step * NR));
                let b1 = _mm256_loadu_ps(b.add($step * NR + 8));
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add($step * csa + r * rsa));
                    acc_row[0] = _mm256_fmadd_ps(av, b0, acc_row[0]);
                    acc_row[1] = _mm256_fmadd_ps(av, b1, acc_row[1]);
                }
            }};
        }
        // Unrolled by four so the loop bookkeeping is amortised over 48 FMAs.
        for _ in 0..kc / 4 {
            k_step!(0);
            k_step!(1);
            k_step!(2);
            k_step!(3);
            a = a.add(4 * csa);
            b = b.add(4 * NR);
        }
        for _ in 0..kc % 4 {
            k_step!(0);
            a = a.add(csa);
            b = b.add(NR);
        }
    }
    let alpha = _mm256_set1_ps(alpha);
    let beta_v = _mm256_set1_ps(beta);
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees the MR×NR tile at `c` with row stride `rsc` is writable.
        unsafe {
            let c_row = c.add(r * rsc);
            for (h, &v) in acc_row.iter().enumerate() {
                let dst = c_row.add(h * 8);
                let scaled = _mm256_mul_ps(alpha, v);
                let out = if beta == 0.0 { scaled } else { _mm256_add_ps(_mm256_mul_ps(beta_v, _mm256_loadu_ps(dst)), scaled) };
                _mm256_storeu_ps(dst, out);
            }
        }
    }
}

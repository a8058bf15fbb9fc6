//! The AVX2+FMA f32 micro-kernel: a 6×16 tile held in 12 ymm accumulators.
//! Each k step loads two B vectors, broadcasts six A values and issues 12
//! FMAs, enough independent chains to cover the FMA latency on both ports.

#![cfg(target_arch = "x86_64")]

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

/// 6×16 tiles; KC·NR·4 B = 16 KiB of B panel in L1, MC·KC·4 B ≈ 330 KiB of A block in L2.
pub(super) static KERNEL: MicroKernel<f32> = MicroKernel { mr: MR, nr: NR, kc: 320, mc: 258, nc: 3072, run: kernel_6x16 };

/// # Safety
/// See [`super::kernel::KernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, rsc: usize) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY: the caller guarantees kc·MR floats at `a` and kc·NR at `b`; every
    // offset below stays inside step p's MR (resp. NR) values.
    unsafe {
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                acc_row[0] = _mm256_fmadd_ps(av, b0, acc_row[0]);
                acc_row[1] = _mm256_fmadd_ps(av, b1, acc_row[1]);
            }
            a = a.add(MR);
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

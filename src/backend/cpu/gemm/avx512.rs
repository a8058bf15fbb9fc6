//! The AVX-512 f32 micro-kernel: a 12×32 tile held in 24 zmm accumulators.
//! With 32 vector registers the tile is four times the AVX2 one, so each
//! loaded value feeds more FMAs and the loop issues half as many instructions
//! per flop (Zen 4 runs a zmm FMA as two 256-bit halves, so peak is the same).

#![cfg(target_arch = "x86_64")]

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;

/// 12×32 tiles; KC·NR·4 B = 24 KiB of B panel in L1, MC·KC·4 B ≈ 216 KiB of A block in L2.
pub(super) static KERNEL: MicroKernel<f32> = MicroKernel { mr: MR, nr: NR, kc: 192, mc: 288, nc: 3072, run: kernel_12x32 };

/// # Safety
/// See [`super::kernel::KernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_12x32(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, rsc: usize) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY: the caller guarantees kc·MR floats at `a` and kc·NR at `b`; every
    // offset below stays inside step p's MR (resp. NR) values.
    unsafe {
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r));
                acc_row[0] = _mm512_fmadd_ps(av, b0, acc_row[0]);
                acc_row[1] = _mm512_fmadd_ps(av, b1, acc_row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let alpha = _mm512_set1_ps(alpha);
    let beta_v = _mm512_set1_ps(beta);
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees the MR×NR tile at `c` with row stride `rsc` is writable.
        unsafe {
            let c_row = c.add(r * rsc);
            for (h, &v) in acc_row.iter().enumerate() {
                let dst = c_row.add(h * 16);
                let scaled = _mm512_mul_ps(alpha, v);
                let out = if beta == 0.0 { scaled } else { _mm512_add_ps(_mm512_mul_ps(beta_v, _mm512_loadu_ps(dst)), scaled) };
                _mm512_storeu_ps(dst, out);
            }
        }
    }
}

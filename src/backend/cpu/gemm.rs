//! General matrix multiply, C = alpha·A·B + beta·C, with arbitrary row and
//! column strides so transposed operands need no copy.
//!
//! (Reference loop nest; the packed AVX2/FMA kernel replaces the f32 path.)

use crate::tensor::Float;
use rayon::prelude::*;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// C (m×n, row stride `rsc`, unit column stride) = alpha·A (m×k)·B (k×n) + beta·C.
/// `parallel` lets the kernel use the rayon pool (off when the caller already
/// parallelises over a batch).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<T>,
    b: MatRef<T>,
    beta: T,
    c: &mut [T],
    rsc: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let row = |i: usize, crow: &mut [T]| {
        let crow = &mut crow[..n];
        if beta == T::zero() {
            crow.iter_mut().for_each(|v| *v = T::zero());
        } else if beta != T::one() {
            crow.iter_mut().for_each(|v| *v *= beta);
        }
        for p in 0..k {
            let av = alpha * a.data[i * a.rs + p * a.cs];
            if b.cs == 1 {
                let brow = &b.data[p * b.rs..p * b.rs + n];
                for (cv, &bv) in crow.iter_mut().zip(brow) {
                    *cv += av * bv;
                }
            } else {
                for (j, cv) in crow.iter_mut().enumerate() {
                    *cv += av * b.data[p * b.rs + j * b.cs];
                }
            }
        }
    };
    if parallel && m * n * k > 1 << 16 {
        c.par_chunks_mut(rsc).take(m).enumerate().for_each(|(i, crow)| row(i, crow));
    } else {
        for (i, crow) in c.chunks_mut(rsc).take(m).enumerate() {
            row(i, crow);
        }
    }
}

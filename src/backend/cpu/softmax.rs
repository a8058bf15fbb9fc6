//! Softmax and log-softmax over one axis of a contiguous tensor viewed as
//! `[outer, len, inner]`: numerically stable (the row maximum is subtracted
//! before exponentiating), with dedicated backward kernels. Also the slice
//! helpers (vectorised exp, max, dot) that attention and the norms share.

use super::reduce::sum_slice;
use super::vmath::{exp_f32, simd_dispatch};
use super::PARALLEL_MIN;
use crate::tensor::{DType, Float};
use rayon::prelude::*;

/// Largest element of a slice (−∞ when empty), with eight independent lanes
/// so the loop vectorises. NaNs are skipped here; they still poison the
/// softmax through the sum of exponentials.
#[inline]
pub fn max_slice<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = acc.iter().copied().fold(T::neg_infinity(), |a, b| if b > a { b } else { a });
    for &v in rest {
        if v > m {
            m = v;
        }
    }
    m
}

/// `Σ a·b` with eight independent accumulators.
#[inline]
pub fn dot_slice<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

simd_dispatch!(exp_shifted_f32, FMA, (x: &mut [f32], shift: f32), {
    for v in x.iter_mut() {
        *v = exp_f32::<FMA>(*v - shift);
    }
});

/// `x[i] = exp(x[i] − shift)` in place, returning the sum of the results:
/// the shift, the exponential and the sum of an online softmax's row in one
/// call. f32 as [`exp_inplace`]; f64 exact. The sum is a second loop over
/// the row (in L1 by then): folded into the exponential's loop, the 8-lane
/// sum kept that loop from vectorising and ran 1.8× slower.
pub fn exp_shifted_sum<T: Float>(x: &mut [T], shift: T) -> T {
    if T::DTYPE == DType::F32 {
        exp_shifted_f32(bytemuck::cast_slice_mut(x), bytemuck::cast(shift));
        return sum_slice(x);
    }
    let mut total = T::zero();
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        total += *v;
    }
    total
}

/// Replace each element by its exponential. f32 uses the vectorised
/// polynomial of `vmath` (AVX2+FMA when the CPU has it); f64 uses the exact
/// libm exp, as gradient checks need.
pub fn exp_inplace<T: Float>(x: &mut [T]) {
    if T::DTYPE == DType::F32 {
        // exp(x − 0) is exp(x) bit for bit (x − 0 = x, for −0 and NaN too).
        exp_shifted_f32(bytemuck::cast_slice_mut(x), 0.0);
    } else {
        for v in x.iter_mut() {
            *v = v.exp();
        }
    }
}

/// Softmax (or log-softmax) of one `[len, inner]` block along its first axis.
fn softmax_block<T: Float>(x: &[T], y: &mut [T], len: usize, inner: usize, log: bool, scratch: &mut Vec<T>) {
    if inner == 1 {
        let m = max_slice(x);
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - m;
        }
        if log {
            scratch.clear();
            scratch.extend_from_slice(y);
            exp_inplace(scratch);
            let lse = sum_slice(scratch).ln();
            y.iter_mut().for_each(|v| *v -= lse);
        } else {
            exp_inplace(y);
            let r = sum_slice(y).recip();
            y.iter_mut().for_each(|v| *v *= r);
        }
        return;
    }
    // Along a middle axis: the statistics are vectors over `inner`, and every
    // loop runs over a contiguous row of `inner` elements.
    scratch.clear();
    scratch.resize(2 * inner, T::zero());
    let (m, s) = scratch.split_at_mut(inner);
    m.fill(T::neg_infinity());
    for row in x.chunks_exact(inner) {
        for (mv, &v) in m.iter_mut().zip(row) {
            if v > *mv {
                *mv = v;
            }
        }
    }
    for (orow, xrow) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        for ((o, &v), &mv) in orow.iter_mut().zip(xrow).zip(m.iter()) {
            *o = v - mv;
        }
        exp_inplace(orow);
        for (sv, &o) in s.iter_mut().zip(orow.iter()) {
            *sv += o;
        }
    }
    if log {
        for (sv, &mv) in s.iter_mut().zip(m.iter()) {
            *sv = sv.ln() + mv;
        }
        for (orow, xrow) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
            for ((o, &v), &lse) in orow.iter_mut().zip(xrow).zip(s.iter()) {
                *o = v - lse;
            }
        }
    } else {
        s.iter_mut().for_each(|v| *v = v.recip());
        for orow in y.chunks_exact_mut(inner) {
            for (o, &r) in orow.iter_mut().zip(s.iter()) {
                *o *= r;
            }
        }
    }
    debug_assert_eq!(y.len(), len * inner);
}

/// Gradient of one `[len, inner]` block: softmax `dx = y·(g − Σ g·y)`,
/// log-softmax `dx = g − exp(y)·Σ g`.
fn softmax_bwd_block<T: Float>(y: &[T], g: &[T], dx: &mut [T], inner: usize, log: bool, scratch: &mut Vec<T>) {
    if inner == 1 {
        if log {
            let sg = sum_slice(g);
            dx.copy_from_slice(y);
            exp_inplace(dx);
            for (d, &gv) in dx.iter_mut().zip(g) {
                *d = gv - *d * sg;
            }
        } else {
            let dot = dot_slice(g, y);
            for ((d, &gv), &yv) in dx.iter_mut().zip(g).zip(y) {
                *d = yv * (gv - dot);
            }
        }
        return;
    }
    scratch.clear();
    scratch.resize(inner, T::zero());
    let acc = &mut scratch[..];
    for (yrow, grow) in y.chunks_exact(inner).zip(g.chunks_exact(inner)) {
        for ((a, &yv), &gv) in acc.iter_mut().zip(yrow).zip(grow) {
            *a += if log { gv } else { gv * yv };
        }
    }
    for ((drow, yrow), grow) in dx.chunks_exact_mut(inner).zip(y.chunks_exact(inner)).zip(g.chunks_exact(inner)) {
        if log {
            drow.copy_from_slice(yrow);
            exp_inplace(drow);
            for ((d, &gv), &a) in drow.iter_mut().zip(grow).zip(acc.iter()) {
                *d = gv - *d * a;
            }
        } else {
            for (((d, &yv), &gv), &a) in drow.iter_mut().zip(yrow).zip(grow).zip(acc.iter()) {
                *d = yv * (gv - a);
            }
        }
    }
}

/// How many `[len, inner]` blocks one rayon task takes.
fn blocks_per_task(block: usize) -> usize {
    (PARALLEL_MIN / 4 / block.max(1)).max(1)
}

/// Softmax (`log == false`) or log-softmax of a contiguous `[outer, len, inner]`
/// tensor along its middle axis.
pub fn softmax_fwd<T: Float>(x: &[T], len: usize, inner: usize, log: bool) -> Vec<T> {
    let block = len * inner;
    let mut y = vec![T::zero(); x.len()];
    if block == 0 {
        return y;
    }
    let per_task = blocks_per_task(block);
    let run = |xs: &[T], ys: &mut [T]| {
        let mut scratch = Vec::new();
        for (xb, yb) in xs.chunks_exact(block).zip(ys.chunks_exact_mut(block)) {
            softmax_block(xb, yb, len, inner, log, &mut scratch);
        }
    };
    if x.len() >= PARALLEL_MIN && x.len() > block {
        y.par_chunks_mut(per_task * block).zip(x.par_chunks(per_task * block)).for_each(|(ys, xs)| run(xs, ys));
    } else {
        run(x, &mut y);
    }
    y
}

/// Gradient of [`softmax_fwd`] given its output `y` and the output gradient `g`
/// (both contiguous `[outer, len, inner]`).
pub fn softmax_bwd<T: Float>(y: &[T], g: &[T], len: usize, inner: usize, log: bool) -> Vec<T> {
    let block = len * inner;
    let mut dx = vec![T::zero(); y.len()];
    if block == 0 {
        return dx;
    }
    let per_task = blocks_per_task(block);
    let run = |ys: &[T], gs: &[T], ds: &mut [T]| {
        let mut scratch = Vec::new();
        for ((yb, gb), db) in ys.chunks_exact(block).zip(gs.chunks_exact(block)).zip(ds.chunks_exact_mut(block)) {
            softmax_bwd_block(yb, gb, db, inner, log, &mut scratch);
        }
    };
    if y.len() >= PARALLEL_MIN && y.len() > block {
        let c = per_task * block;
        dx.par_chunks_mut(c).zip(y.par_chunks(c).zip(g.par_chunks(c))).for_each(|(ds, (ys, gs))| run(ys, gs, ds));
    } else {
        run(y, g, &mut dx);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_f32_is_accurate_and_flushes_the_tail() {
        let mut xs: Vec<f32> = (0..20001).map(|i| -90.0 + i as f32 * 0.0089).collect();
        xs.extend([f32::NEG_INFINITY, 0.0, -1e-8, 1.0]);
        let mut ys = xs.clone();
        exp_inplace(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            if x < -87.0 {
                assert_eq!(y, 0.0, "exp({x})");
            } else {
                assert!(((y as f64) - want).abs() <= 3e-7 * want, "exp({x}) = {y}, want {want}");
            }
        }
        let mut nan = [f32::NAN];
        exp_inplace(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn exp_shifted_sum_matches_the_f64_reference() {
        for len in [1usize, 7, 8, 128, 131] {
            let xs: Vec<f64> = (0..len).map(|i| ((i * 37) % 23) as f64 * 0.4 - 6.0).collect();
            let shift = 2.5;
            let want: Vec<f64> = xs.iter().map(|&x| (x - shift).exp()).collect();
            let want_sum: f64 = want.iter().sum();
            let mut x64 = xs.clone();
            assert!((exp_shifted_sum(&mut x64, shift) - want_sum).abs() <= 1e-12 * want_sum);
            let mut x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
            let sum32 = exp_shifted_sum(&mut x32, shift as f32);
            assert!((sum32 as f64 - want_sum).abs() <= 1e-6 * want_sum, "len {len}: sum {sum32} vs {want_sum}");
            for (got, w) in x32.iter().zip(&want) {
                assert!((*got as f64 - w).abs() <= 1e-6 * w, "len {len}: {got} vs {w}");
            }
        }
    }
}

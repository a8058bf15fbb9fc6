//! Elementwise kernels: unary maps, their derivatives, and broadcasting
//! binary maps and comparisons over strided views.

use super::{new_vec_by_chunks, row_offset, vmath, PARALLEL_MIN};
use crate::backend::op::{BinaryOp, CmpOp, UnaryOp};
use crate::tensor::{DType, Float, Layout};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Apply `f` to each element of a contiguous slice, in parallel when large.
/// The output is collected, not zero-filled and overwritten.
pub fn map_slice<T: Copy + Send + Sync, U: Copy + Send + Sync + Default>(src: &[T], f: impl Fn(T) -> U + Sync) -> Vec<U> {
    if src.len() >= PARALLEL_MIN {
        src.par_iter().with_min_len(PARALLEL_MIN / 4).map(|&s| f(s)).collect()
    } else {
        src.iter().map(|&s| f(s)).collect()
    }
}

/// y = f(x) over a contiguous slice. The hot activations get their own
/// monomorphised loop (the op is matched once, not per element), so the
/// compiler can vectorise them.
pub fn unary<T: Float>(op: UnaryOp, x: &[T]) -> Vec<T> {
    if T::DTYPE == DType::F32 && vmath::has_f32_kernel(op) {
        return bytemuck::allocation::cast_vec(vmath::unary_f32(op, bytemuck::cast_slice(x)));
    }
    match op {
        UnaryOp::Relu => map_slice(x, |v| UnaryOp::Relu.apply(v)),
        UnaryOp::Silu => map_slice(x, |v| UnaryOp::Silu.apply(v)),
        UnaryOp::Sigmoid => map_slice(x, |v| UnaryOp::Sigmoid.apply(v)),
        UnaryOp::Gelu => map_slice(x, |v| UnaryOp::Gelu.apply(v)),
        UnaryOp::QuickGelu => map_slice(x, |v| UnaryOp::QuickGelu.apply(v)),
        UnaryOp::Neg => map_slice(x, |v| -v),
        UnaryOp::Exp => map_slice(x, |v| v.exp()),
        UnaryOp::Square => map_slice(x, |v| v * v),
        UnaryOp::Tanh => map_slice(x, |v| v.tanh()),
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (T::from_f64(mul), T::from_f64(add));
            map_slice(x, move |v| v * m + a)
        }
        op => map_slice(x, move |v| op.apply(v)),
    }
}

/// dx = g * f'(x) over contiguous slices of equal length.
pub fn unary_backward<T: Float>(op: UnaryOp, x: &[T], y: &[T], g: &[T]) -> Vec<T> {
    if T::DTYPE == DType::F32 && vmath::has_f32_kernel(op) {
        let (x, y, g) = (bytemuck::cast_slice(x), bytemuck::cast_slice(y), bytemuck::cast_slice(g));
        return bytemuck::allocation::cast_vec(vmath::unary_backward_f32(op, x, y, g));
    }
    let mut out = vec![T::zero(); x.len()];
    let body = |o: &mut [T], x: &[T], y: &[T], g: &[T]| {
        for i in 0..o.len() {
            o[i] = g[i] * op.derivative(x[i], y[i]);
        }
    };
    if x.len() >= PARALLEL_MIN {
        let c = PARALLEL_MIN / 4;
        out.par_chunks_mut(c).zip(x.par_chunks(c)).zip(y.par_chunks(c).zip(g.par_chunks(c))).for_each(|((o, x), (y, g))| body(o, x, y, g));
    } else {
        body(&mut out, x, y, g);
    }
    out
}

/// `out[i] = f(a[ia], b[ib])` where both views are broadcast to `shape`.
pub fn zip_map<A, B, U>(a: &[A], la: &Layout, b: &[B], lb: &Layout, shape: &[usize], f: impl Fn(A, B) -> U + Sync) -> Vec<U>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    U: Copy + Send + Sync,
{
    let la = la.broadcast_to(shape).expect("caller checked broadcast");
    let lb = lb.broadcast_to(shape).expect("caller checked broadcast");
    let n: usize = shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        let c = if n >= PARALLEL_MIN { PARALLEL_MIN / 4 } else { n };
        let body = |start: usize, o: &mut [MaybeUninit<U>]| {
            for (o, (&a, &b)) in o.iter_mut().zip(a[start..].iter().zip(&b[start..])) {
                o.write(f(a, b));
            }
        };
        // SAFETY: chunk [start, start+len) of the output pairs with elements start.. of
        // `a` and `b`, which hold n each, so the zip writes every element of the chunk.
        return unsafe { new_vec_by_chunks(n, c, n >= PARALLEL_MIN, body) };
    }
    let (cshape, cstrides) = Layout::coalesced(shape, &[la.strides(), lb.strides()]);
    let (sa, sb) = (&cstrides[0], &cstrides[1]);
    let inner = *cshape.last().unwrap();
    let (ia, ib) = (*sa.last().unwrap(), *sb.last().unwrap());
    let (base_a, base_b) = (la.offset(), lb.offset());
    let fill = |start: usize, chunk: &mut [MaybeUninit<U>]| {
        let row0 = start / inner;
        for (r, o) in chunk.chunks_mut(inner).enumerate() {
            let oa = row_offset(&cshape, sa, row0 + r, base_a);
            let ob = row_offset(&cshape, sb, row0 + r, base_b);
            match (ia, ib) {
                (1, 1) => {
                    for (j, o) in o.iter_mut().enumerate() {
                        o.write(f(a[oa + j], b[ob + j]));
                    }
                }
                (1, 0) => {
                    let bv = b[ob];
                    for (j, o) in o.iter_mut().enumerate() {
                        o.write(f(a[oa + j], bv));
                    }
                }
                (0, 1) => {
                    let av = a[oa];
                    for (j, o) in o.iter_mut().enumerate() {
                        o.write(f(av, b[ob + j]));
                    }
                }
                _ => {
                    for (j, o) in o.iter_mut().enumerate() {
                        o.write(f(a[oa + j * ia], b[ob + j * ib]));
                    }
                }
            }
        }
    };
    let parallel = n >= PARALLEL_MIN && n / inner > 1;
    let rows = if parallel { (PARALLEL_MIN / inner).max(1) } else { n / inner };
    // SAFETY: chunks are whole rows of `inner` elements (`rows·inner` each, the last
    // shorter but still whole rows since inner divides n), and `fill` writes every
    // element of every row of its chunk.
    unsafe { new_vec_by_chunks(n, rows * inner, parallel, fill) }
}

/// Broadcasting binary op.
pub fn binary<T: Float>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout, shape: &[usize]) -> Vec<T> {
    match op {
        // Monomorphised closures for the hot ops, so the inner loops vectorise.
        BinaryOp::Add => zip_map(a, la, b, lb, shape, |x, y| x + y),
        BinaryOp::Sub => zip_map(a, la, b, lb, shape, |x, y| x - y),
        BinaryOp::Mul => zip_map(a, la, b, lb, shape, |x, y| x * y),
        BinaryOp::Div => zip_map(a, la, b, lb, shape, |x, y| x / y),
        op => zip_map(a, la, b, lb, shape, move |x, y| op.apply(x, y)),
    }
}

/// Broadcasting comparison; 1 where true.
pub fn compare<T: Copy + PartialOrd + Send + Sync>(op: CmpOp, a: &[T], la: &Layout, b: &[T], lb: &Layout, shape: &[usize]) -> Vec<u8> {
    zip_map(a, la, b, lb, shape, move |x, y| op.apply(x, y) as u8)
}

//! GEGLU, `a · gelu(gate)` where each row of the input is `[a | gate]`
//! (diffusers' `GEGLU` feed-forward activation), forward and backward in one
//! pass over the rows. Composed from narrow, GELU and multiply it took five
//! passes (two copies of the strided halves, a zero-filled output, the GELU,
//! the product) and 2.5× PyTorch's time in the demo UNet.

use super::vmath::{gelu_and_grad_f32, gelu_f32, simd_dispatch};
use super::{new_vec_by_chunks, PARALLEL_MIN};
use crate::backend::op::UnaryOp;
use crate::tensor::{DType, Float};
use std::mem::MaybeUninit;

/// Rows per parallel task: about PARALLEL_MIN / 4 output elements.
fn rows_per_task(half: usize) -> usize {
    (PARALLEL_MIN / 4 / half.max(1)).max(1)
}

simd_dispatch!(forward_rows_f32, FMA, (x: &[f32], half: usize, out: &mut [MaybeUninit<f32>]), {
    for (row, o) in x.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (a, gate) = row.split_at(half);
        for ((o, &a), &g) in o.iter_mut().zip(a).zip(gate) {
            o.write(a * gelu_f32::<FMA>(g));
        }
    }
});

simd_dispatch!(backward_rows_f32, FMA, (x: &[f32], grad: &[f32], half: usize, dx: &mut [MaybeUninit<f32>]), {
    for ((row, g), d) in x.chunks_exact(2 * half).zip(grad.chunks_exact(half)).zip(dx.chunks_exact_mut(2 * half)) {
        let (a, gate) = row.split_at(half);
        let (da, dgate) = d.split_at_mut(half);
        for i in 0..half {
            let (y, dy) = gelu_and_grad_f32::<FMA>(gate[i]);
            da[i].write(g[i] * y);
            dgate[i].write(g[i] * a[i] * dy);
        }
    }
});

/// `out[r, i] = x[r, i] · gelu(x[r, half + i])` for a contiguous `x` of rows
/// of `2·half`; returns rows of `half`.
pub fn geglu_fwd<T: Float>(x: &[T], half: usize) -> Vec<T> {
    assert_eq!(x.len() % (2 * half).max(1), 0, "geglu: input is not whole rows of 2·{half}");
    let len = if half == 0 { 0 } else { x.len() / 2 };
    let rows = rows_per_task(half);
    let fill = |start: usize, o: &mut [MaybeUninit<T>]| {
        let x = &x[start * 2..][..o.len() * 2];
        if T::DTYPE == DType::F32 {
            // SAFETY: T is f32 (its dtype says so), so MaybeUninit<T> and
            // MaybeUninit<f32> are the same type; the slice is ours alone.
            let o = unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<MaybeUninit<f32>>(), o.len()) };
            forward_rows_f32(bytemuck::cast_slice(x), half, o);
        } else {
            for (row, o) in x.chunks_exact(2 * half).zip(o.chunks_exact_mut(half)) {
                let (a, gate) = row.split_at(half);
                for ((o, &a), &g) in o.iter_mut().zip(a).zip(gate) {
                    o.write(a * UnaryOp::Gelu.apply(g));
                }
            }
        }
    };
    // SAFETY: each chunk is whole rows of the output, and `fill` writes every element of its rows.
    unsafe { new_vec_by_chunks(len, rows * half, len >= PARALLEL_MIN, fill) }
}

/// The gradient of [`geglu_fwd`] at `x` for output gradient `grad` (rows of
/// `half`): `dx[r, i] = grad·gelu(gate)`, `dx[r, half + i] = grad·a·gelu'(gate)`.
pub fn geglu_bwd<T: Float>(x: &[T], grad: &[T], half: usize) -> Vec<T> {
    assert_eq!(grad.len() * 2, x.len(), "geglu: gradient is not half the input");
    let rows = rows_per_task(half);
    let fill = |start: usize, d: &mut [MaybeUninit<T>]| {
        let x = &x[start..][..d.len()];
        let g = &grad[start / 2..][..d.len() / 2];
        if T::DTYPE == DType::F32 {
            // SAFETY: T is f32 (its dtype says so), so MaybeUninit<T> and
            // MaybeUninit<f32> are the same type; the slice is ours alone.
            let d = unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<MaybeUninit<f32>>(), d.len()) };
            backward_rows_f32(bytemuck::cast_slice(x), bytemuck::cast_slice(g), half, d);
        } else {
            for ((row, g), d) in x.chunks_exact(2 * half).zip(g.chunks_exact(half)).zip(d.chunks_exact_mut(2 * half)) {
                let (a, gate) = row.split_at(half);
                let (da, dgate) = d.split_at_mut(half);
                for i in 0..half {
                    let y = UnaryOp::Gelu.apply(gate[i]);
                    da[i].write(g[i] * y);
                    dgate[i].write(g[i] * a[i] * UnaryOp::Gelu.derivative(gate[i], y));
                }
            }
        }
    };
    // SAFETY: each chunk is whole rows of dx, and `fill` writes every element of its rows.
    unsafe { new_vec_by_chunks(x.len(), rows * 2 * half, x.len() >= PARALLEL_MIN, fill) }
}

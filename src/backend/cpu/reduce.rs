//! Reductions over the trailing axis of a contiguous [rows, len] matrix;
//! the tensor layer moves the reduced dims to the end first.

use super::PARALLEL_MIN;
use crate::backend::op::ReduceOp;
use crate::tensor::Float;
use rayon::prelude::*;

/// Sum with eight independent accumulators: vectorises and keeps the error
/// growth closer to pairwise summation than a single running sum.
#[inline]
pub fn sum_slice<T: Float>(x: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

fn reduce_one<T: Float>(op: ReduceOp, x: &[T]) -> T {
    match op {
        ReduceOp::Sum => {
            if x.len() >= PARALLEL_MIN * 4 {
                x.par_chunks(PARALLEL_MIN).map(sum_slice).collect::<Vec<_>>().into_iter().fold(T::zero(), |a, b| a + b)
            } else {
                sum_slice(x)
            }
        }
        ReduceOp::Max => x.iter().copied().fold(T::neg_infinity(), |a, b| if b > a || b.is_nan() { b } else { a }),
        ReduceOp::Min => x.iter().copied().fold(T::infinity(), |a, b| if b < a || b.is_nan() { b } else { a }),
    }
}

/// Reduce each row of a contiguous `[rows, len]` matrix.
pub fn reduce_rows<T: Float>(op: ReduceOp, x: &[T], len: usize) -> Vec<T> {
    if len == 0 {
        let rows = if x.is_empty() { 0 } else { x.len() };
        let init = match op {
            ReduceOp::Sum => T::zero(),
            ReduceOp::Max => T::neg_infinity(),
            ReduceOp::Min => T::infinity(),
        };
        return vec![init; rows];
    }
    let rows = x.len() / len;
    if rows > 1 && x.len() >= PARALLEL_MIN {
        x.par_chunks(len).map(|r| reduce_one(op, r)).collect()
    } else {
        x.chunks(len).map(|r| reduce_one(op, r)).collect()
    }
}

/// Index of the largest (or smallest) element of each row; first wins ties.
pub fn arg_rows<T: Float>(x: &[T], len: usize, largest: bool) -> Vec<i64> {
    let f = |r: &[T]| {
        let mut best = 0;
        for (i, &v) in r.iter().enumerate() {
            let better = if largest { v > r[best] } else { v < r[best] };
            if better {
                best = i;
            }
        }
        best as i64
    };
    if x.len() >= PARALLEL_MIN {
        x.par_chunks(len).map(f).collect()
    } else {
        x.chunks(len).map(f).collect()
    }
}

/// Sum over the leading axis of a contiguous `[rows, len]` matrix (column sums),
/// the shape of bias gradients; avoids a transpose copy.
pub fn sum_columns<T: Float>(x: &[T], len: usize) -> Vec<T> {
    let rows = x.len() / len.max(1);
    let partial = |rs: &[T]| {
        let mut acc = vec![T::zero(); len];
        for r in rs.chunks(len) {
            for (a, &v) in acc.iter_mut().zip(r) {
                *a += v;
            }
        }
        acc
    };
    if x.len() >= PARALLEL_MIN && rows >= 8 {
        let per = rows.div_ceil(rayon::current_num_threads() * 2).max(1);
        x.par_chunks(per * len).map(partial).reduce(
            || vec![T::zero(); len],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        )
    } else {
        partial(x)
    }
}

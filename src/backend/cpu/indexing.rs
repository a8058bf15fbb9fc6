//! Row gathers and their scatter-add gradients: embedding, index_select and gather.
//!
//! Indices reach these kernels already checked and converted to `usize` by the
//! op layer. The scatter-add kernels partition the work by *destination*, so
//! threads never write the same element and the summation order is fixed
//! (results do not depend on the thread count).

use super::{row_offset, PARALLEL_MIN};
use crate::tensor::Float;
use rayon::prelude::*;

/// `out[o, j, :] = src[o, idx[j], :]` for a contiguous `src` of shape
/// `[outer, size, inner]`; the output is `[outer, idx.len(), inner]`.
/// Embedding is the case `outer = 1`, `inner = D`.
pub fn index_select_rows<T: Copy + Send + Sync + Default>(src: &[T], outer: usize, size: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let n = idx.len();
    let mut out = vec![T::default(); outer * n * inner];
    if out.is_empty() {
        return out;
    }
    let fill = |row0: usize, chunk: &mut [T]| {
        for (r, dst) in chunk.chunks_exact_mut(inner).enumerate() {
            let row = row0 + r;
            let (o, j) = (row / n, row % n);
            let from = (o * size + idx[j]) * inner;
            dst.copy_from_slice(&src[from..from + inner]);
        }
    };
    let rows = outer * n;
    if out.len() >= PARALLEL_MIN && rows > 1 {
        let rows_per_chunk = (PARALLEL_MIN / inner).clamp(1, rows.div_ceil(rayon::current_num_threads()));
        out.par_chunks_mut(rows_per_chunk * inner).enumerate().for_each(|(c, chunk)| fill(c * rows_per_chunk, chunk));
    } else {
        fill(0, &mut out);
    }
    out
}

/// Positions `j` grouped by destination `idx[j]` (a counting sort): the
/// positions that land in row `s` are `order[starts[s]..starts[s + 1]]`, in
/// increasing `j`.
struct Buckets {
    starts: Vec<usize>,
    order: Vec<usize>,
}

impl Buckets {
    fn new(idx: &[usize], size: usize) -> Self {
        let mut starts = vec![0usize; size + 1];
        for &i in idx {
            starts[i + 1] += 1;
        }
        for s in 0..size {
            starts[s + 1] += starts[s];
        }
        let mut cursor = starts.clone();
        let mut order = vec![0usize; idx.len()];
        for (j, &i) in idx.iter().enumerate() {
            order[cursor[i]] = j;
            cursor[i] += 1;
        }
        Buckets { starts, order }
    }

    #[inline]
    fn sources(&self, s: usize) -> &[usize] {
        &self.order[self.starts[s]..self.starts[s + 1]]
    }
}

/// The gradient of [`index_select_rows`]: `out[o, s, :] = Σ_{j: idx[j] = s} grad[o, j, :]`
/// for a contiguous `grad` of shape `[outer, idx.len(), inner]`; the output is
/// `[outer, size, inner]`. Each output row is summed by one thread from the
/// grad rows that select it, so repeated indices need no atomics.
pub fn index_add_rows<T: Float>(grad: &[T], outer: usize, size: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let n = idx.len();
    let mut out = vec![T::zero(); outer * size * inner];
    if out.is_empty() || n == 0 {
        return out;
    }
    let buckets = Buckets::new(idx, size);
    let fill = |row0: usize, chunk: &mut [T]| {
        for (r, dst) in chunk.chunks_exact_mut(inner).enumerate() {
            let row = row0 + r;
            let (o, s) = (row / size, row % size);
            for &j in buckets.sources(s) {
                let from = (o * n + j) * inner;
                for (d, &g) in dst.iter_mut().zip(&grad[from..from + inner]) {
                    *d += g;
                }
            }
        }
    };
    let rows = outer * size;
    if out.len().max(grad.len()) >= PARALLEL_MIN && rows > 1 {
        let rows_per_chunk = (PARALLEL_MIN / inner).clamp(1, rows.div_ceil(rayon::current_num_threads() * 4));
        out.par_chunks_mut(rows_per_chunk * inner).enumerate().for_each(|(c, chunk)| fill(c * rows_per_chunk, chunk));
    } else {
        fill(0, &mut out);
    }
    out
}

/// Strides of `src` with the gathered dimension zeroed: the storage offset of
/// an index position, before the index value itself is added.
fn strides_without(strides: &[usize], dim: usize) -> Vec<usize> {
    let mut s = strides.to_vec();
    s[dim] = 0;
    s
}

/// `out[c] = src[c with c[dim] replaced by index[c]]` over every position `c`
/// of `index_shape` (PyTorch's `gather`). `src` is a strided view given by
/// `src_strides` and `src_offset`; `index` is contiguous; rank ≥ 1.
pub fn gather<T: Copy + Send + Sync + Default>(
    src: &[T],
    src_strides: &[usize],
    src_offset: usize,
    index: &[usize],
    index_shape: &[usize],
    dim: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); index.len()];
    if out.is_empty() {
        return out;
    }
    let rank = index_shape.len();
    let inner = index_shape[rank - 1];
    let masked = strides_without(src_strides, dim);
    let (inner_stride, dim_stride) = (masked[rank - 1], src_strides[dim]);
    let fill = |row0: usize, chunk: &mut [T]| {
        for (r, dst) in chunk.chunks_exact_mut(inner).enumerate() {
            let row = row0 + r;
            let base = row_offset(index_shape, &masked, row, src_offset);
            let ids = &index[row * inner..(row + 1) * inner];
            for (j, (d, &i)) in dst.iter_mut().zip(ids).enumerate() {
                *d = src[base + j * inner_stride + i * dim_stride];
            }
        }
    };
    let rows = out.len() / inner;
    if out.len() >= PARALLEL_MIN && rows > 1 {
        let rows_per_chunk = (PARALLEL_MIN / inner).max(1);
        out.par_chunks_mut(rows_per_chunk * inner).enumerate().for_each(|(c, chunk)| fill(c * rows_per_chunk, chunk));
    } else {
        fill(0, &mut out);
    }
    out
}

/// The gradient of [`gather`]: zeros of `input_shape` with each `grad[c]`
/// added at `c with c[dim] replaced by index[c]` (PyTorch's `scatter_add`).
/// `grad` and `index` are contiguous of `index_shape`; rank ≥ 1.
///
/// Positions with different leading coordinates land in disjoint slabs of the
/// output, so when `dim > 0` the slabs are filled in parallel.
pub fn gather_backward<T: Float>(grad: &[T], index: &[usize], index_shape: &[usize], dim: usize, input_shape: &[usize]) -> Vec<T> {
    let numel: usize = input_shape.iter().product();
    let mut out = vec![T::zero(); numel];
    if grad.is_empty() {
        return out;
    }
    let rank = index_shape.len();
    let inner = index_shape[rank - 1];
    let strides = crate::tensor::contiguous_strides(input_shape);
    let masked = strides_without(&strides, dim);
    let (inner_stride, dim_stride) = (masked[rank - 1], strides[dim]);
    // Adds the index rows `rows` into `slab`, which starts at storage offset `slab_start`.
    let add_rows = |rows: std::ops::Range<usize>, slab: &mut [T], slab_start: usize| {
        for row in rows {
            let base = row_offset(index_shape, &masked, row, 0) - slab_start;
            let ids = &index[row * inner..(row + 1) * inner];
            let gs = &grad[row * inner..(row + 1) * inner];
            for (j, (&i, &g)) in ids.iter().zip(gs).enumerate() {
                slab[base + j * inner_stride + i * dim_stride] += g;
            }
        }
    };
    let rows_per_lead = grad.len() / inner / index_shape[0].max(1);
    let lead = index_shape[0];
    if dim > 0 && rank > 1 && lead > 1 && grad.len() >= PARALLEL_MIN {
        // Slab c0 of the output (input coordinate 0 = c0) receives only index rows with coordinate 0 = c0.
        out.par_chunks_mut(strides[0]).take(lead).enumerate().for_each(|(c0, slab)| {
            add_rows(c0 * rows_per_lead..(c0 + 1) * rows_per_lead, slab, c0 * strides[0]);
        });
    } else {
        add_rows(0..grad.len() / inner, &mut out, 0);
    }
    out
}

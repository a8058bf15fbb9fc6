//! Strided gather: materialise any view as a contiguous vector.

use super::{row_offset, PARALLEL_MIN};
use crate::tensor::Layout;
use rayon::prelude::*;

/// Copy the elements of the view `layout` over `src` into a new row-major vector.
pub fn gather<T: Copy + Send + Sync + Default>(src: &[T], layout: &Layout) -> Vec<T> {
    if let Some(r) = layout.contiguous_range() {
        return src[r].to_vec();
    }
    let n = layout.numel();
    let (shape, strides) = Layout::coalesced(layout.shape(), &[layout.strides()]);
    let strides = &strides[0];
    let inner = *shape.last().unwrap();
    let inner_stride = *strides.last().unwrap();
    let mut out = vec![T::default(); n];
    let base = layout.offset();
    let fill_rows = |row0: usize, chunk: &mut [T]| {
        for (r, dst) in chunk.chunks_mut(inner).enumerate() {
            let off = row_offset(&shape, strides, row0 + r, base);
            if inner_stride == 1 {
                dst.copy_from_slice(&src[off..off + inner]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src[off + j * inner_stride];
                }
            }
        }
    };
    if n >= PARALLEL_MIN && n / inner > 1 {
        let rows_per_chunk = (PARALLEL_MIN / inner).max(1);
        out.par_chunks_mut(rows_per_chunk * inner).enumerate().for_each(|(c, chunk)| fill_rows(c * rows_per_chunk, chunk));
    } else {
        fill_rows(0, &mut out);
    }
    out
}

/// Write `values` (row-major) into the view `layout` of `dst`.
pub fn scatter<T: Copy>(dst: &mut [T], layout: &Layout, values: &[T]) {
    if let Some(r) = layout.contiguous_range() {
        dst[r].copy_from_slice(values);
        return;
    }
    for (off, &v) in layout.offsets().zip(values) {
        dst[off] = v;
    }
}

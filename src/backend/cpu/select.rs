//! Elementwise selection between two broadcast views by a mask (where_cond, masked_fill).

use super::{row_offset, PARALLEL_MIN};
use crate::tensor::{Element, Layout};
use rayon::prelude::*;

/// 1 where `src` (any element type, read through `layout` broadcast to
/// `shape`) is nonzero, 0 elsewhere; row-major over `shape`.
pub fn nonzero_mask<T: Element>(src: &[T], layout: &Layout, shape: &[usize]) -> Vec<u8> {
    let view = layout.broadcast_to(shape).expect("caller checked broadcast");
    let values = super::copy::gather(src, &view);
    super::elementwise::map_slice(&values, |v: T| (v.to_f64() != 0.0) as u8)
}

/// `out[i] = if mask[i] != 0 { a[i] } else { b[i] }` where `mask` is
/// contiguous over `shape` and `a`, `b` are views broadcast to `shape`.
pub fn select<T: Copy + Send + Sync + Default>(mask: &[u8], a: &[T], la: &Layout, b: &[T], lb: &Layout, shape: &[usize]) -> Vec<T> {
    let la = la.broadcast_to(shape).expect("caller checked broadcast");
    let lb = lb.broadcast_to(shape).expect("caller checked broadcast");
    let n: usize = shape.iter().product();
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    let (cshape, cstrides) = Layout::coalesced(shape, &[la.strides(), lb.strides()]);
    let (sa, sb) = (&cstrides[0], &cstrides[1]);
    let inner = *cshape.last().unwrap();
    let (ia, ib) = (*sa.last().unwrap(), *sb.last().unwrap());
    let (base_a, base_b) = (la.offset(), lb.offset());
    let fill = |row0: usize, chunk: &mut [T]| {
        for (r, o) in chunk.chunks_mut(inner).enumerate() {
            let row = row0 + r;
            let oa = row_offset(&cshape, sa, row, base_a);
            let ob = row_offset(&cshape, sb, row, base_b);
            let m = &mask[row * inner..(row + 1) * inner];
            for (j, (o, &keep)) in o.iter_mut().zip(m).enumerate() {
                *o = if keep != 0 { a[oa + j * ia] } else { b[ob + j * ib] };
            }
        }
    };
    if n >= PARALLEL_MIN && n / inner > 1 {
        let rows = (PARALLEL_MIN / inner).max(1);
        out.par_chunks_mut(rows * inner).enumerate().for_each(|(c, chunk)| fill(c * rows, chunk));
    } else {
        fill(0, &mut out);
    }
    out
}

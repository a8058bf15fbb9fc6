//! Packing: copying a block of A or B, whatever its strides, into the
//! contiguous micro-panel order the micro-kernel streams, zero-padded to whole
//! panels so edge tiles need no special case inside the kernel.

use super::{BOperand, MatRef, SegmentedRef};
use crate::tensor::Float;
use rayon::prelude::*;

/// Pack rows `row0..row0+mc`, columns `col0..col0+kc` of `a` into panels of
/// `mr` rows: panel q, step p, lane r holds A[row0 + q·mr + r, col0 + p].
/// Rows past the end are zero. `dst` holds ⌈mc/mr⌉·mr·kc elements.
pub(super) fn pack_a<T: Float>(dst: &mut [T], a: MatRef<T>, row0: usize, col0: usize, mc: usize, kc: usize, mr: usize) {
    for (q, panel) in dst.chunks_exact_mut(kc * mr).enumerate() {
        let rows = mr.min(mc - q * mr);
        let first_row = row0 + q * mr;
        if rows < mr {
            panel.fill(T::zero());
        }
        if a.cs == 1 && a.rs != 1 && rows == mr && mr == 6 {
            interleave_rows::<T, 6>(panel, a, first_row, col0, kc);
            continue;
        }
        if a.cs == 1 && a.rs != 1 && rows == mr && mr == 4 {
            interleave_rows::<T, 4>(panel, a, first_row, col0, kc);
            continue;
        }
        if a.rs == 1 && a.cs != 1 && rows == mr && mr == 6 {
            copy_a_steps::<T, 6>(panel, a, first_row, col0);
            continue;
        }
        if a.rs == 1 && a.cs != 1 && rows == mr && mr == 4 {
            copy_a_steps::<T, 4>(panel, a, first_row, col0);
            continue;
        }
        if a.rs == 1 && a.cs != 1 && rows == mr {
            // Column-major A (a transposed operand): each step is a contiguous run of mr rows.
            for (p, step) in panel.chunks_exact_mut(mr).enumerate() {
                let start = first_row + (col0 + p) * a.cs;
                step.copy_from_slice(&a.data[start..start + mr]);
            }
            continue;
        }
        for r in 0..rows {
            let start = (first_row + r) * a.rs + col0 * a.cs;
            if a.cs == 1 {
                for (step, &v) in panel.chunks_exact_mut(mr).zip(&a.data[start..start + kc]) {
                    step[r] = v;
                }
            } else {
                for (p, step) in panel.chunks_exact_mut(mr).enumerate() {
                    step[r] = a.data[start + p * a.cs];
                }
            }
        }
    }
}

/// Pack rows `row0..row0+kc`, columns `col0..col0+nc` of `b` into panels of
/// `nr` columns: panel q, step p, lane j holds B[row0 + p, col0 + q·nr + j].
/// Columns past the end are zero. `dst` holds ⌈nc/nr⌉·nr·kc elements.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b<T: Float>(dst: &mut [T], b: BOperand<T>, row0: usize, col0: usize, kc: usize, nc: usize, nr: usize, parallel: bool) {
    match b {
        BOperand::Strided(b) => pack_b_strided(dst, b, row0, col0, kc, nc, nr, parallel),
        BOperand::Segmented(b) => pack_b_segmented(dst, b, row0, col0, kc, nc, nr, parallel),
    }
}

/// [`pack_b`] for a B whose columns come in runs (see `SegmentedRef`): a
/// panel inside one run is a plain row-major copy; a panel across runs is
/// copied piece by piece.
#[allow(clippy::too_many_arguments)]
fn pack_b_segmented<T: Float>(
    dst: &mut [T],
    b: SegmentedRef<T>,
    row0: usize,
    col0: usize,
    kc: usize,
    nc: usize,
    nr: usize,
    parallel: bool,
) {
    let pack_panel = |(q, panel): (usize, &mut [T])| {
        let cols = nr.min(nc - q * nr);
        let first_col = col0 + q * nr;
        let (seg, offset) = (first_col / b.seg_len, first_col % b.seg_len);
        if offset + cols <= b.seg_len {
            let run = MatRef { data: &b.data[seg * b.seg_stride + offset..], rs: b.rs, cs: 1 };
            pack_b_strided(panel, run, row0, 0, kc, cols, nr, false);
            return;
        }
        if cols < nr {
            panel.fill(T::zero());
        }
        // (first lane, lanes, start in data) of each run the panel crosses.
        let mut pieces = Vec::with_capacity(nr);
        let mut lane = 0;
        while lane < cols {
            let col = first_col + lane;
            let (seg, offset) = (col / b.seg_len, col % b.seg_len);
            let len = (b.seg_len - offset).min(cols - lane);
            pieces.push((lane, len, seg * b.seg_stride + offset));
            lane += len;
        }
        for (p, step) in panel.chunks_exact_mut(nr).enumerate() {
            let row = (row0 + p) * b.rs;
            for &(lane, len, start) in &pieces {
                step[lane..lane + len].copy_from_slice(&b.data[start + row..][..len]);
            }
        }
    };
    if parallel {
        dst.par_chunks_mut(kc * nr).enumerate().for_each(pack_panel);
    } else {
        dst.chunks_mut(kc * nr).enumerate().for_each(pack_panel);
    }
}

#[allow(clippy::too_many_arguments)]
fn pack_b_strided<T: Float>(dst: &mut [T], b: MatRef<T>, row0: usize, col0: usize, kc: usize, nc: usize, nr: usize, parallel: bool) {
    let pack_panel = |(q, panel): (usize, &mut [T])| {
        let cols = nr.min(nc - q * nr);
        let first_col = col0 + q * nr;
        if cols < nr {
            panel.fill(T::zero());
        }
        if b.cs == 1 && cols == nr && nr == 16 {
            copy_steps::<T, 16>(panel, b, row0, first_col);
        } else if b.cs == 1 && cols == nr && nr == 8 {
            copy_steps::<T, 8>(panel, b, row0, first_col);
        } else if b.cs == 1 {
            for (p, step) in panel.chunks_exact_mut(nr).enumerate() {
                let start = (row0 + p) * b.rs + first_col;
                step[..cols].copy_from_slice(&b.data[start..start + cols]);
            }
        } else if b.rs == 1 {
            // Column-major B (a transposed operand, e.g. x·Wᵀ): walk each column contiguously.
            for j in 0..cols {
                let start = (first_col + j) * b.cs + row0;
                for (step, &v) in panel.chunks_exact_mut(nr).zip(&b.data[start..start + kc]) {
                    step[j] = v;
                }
            }
        } else {
            for (p, step) in panel.chunks_exact_mut(nr).enumerate() {
                let start = (row0 + p) * b.rs + first_col * b.cs;
                for (j, v) in step[..cols].iter_mut().enumerate() {
                    *v = b.data[start + j * b.cs];
                }
            }
        }
    };
    if parallel {
        dst.par_chunks_mut(kc * nr).enumerate().for_each(pack_panel);
    } else {
        dst.chunks_mut(kc * nr).enumerate().for_each(pack_panel);
    }
}

/// One full-width B panel from a row-major B: each step is `N` consecutive
/// elements of a row. A fixed-size copy compiles to a few vector moves, where
/// a slice copy of runtime length is a `memcpy` call per step (7.5 % of a
/// ResNet-50 forward in profiles).
#[inline(always)]
fn copy_steps<T: Float, const N: usize>(panel: &mut [T], b: MatRef<T>, row0: usize, first_col: usize) {
    for (p, step) in panel.chunks_exact_mut(N).enumerate() {
        let start = (row0 + p) * b.rs + first_col;
        let src: &[T; N] = b.data[start..start + N].try_into().expect("B row segment of N elements");
        let dst: &mut [T; N] = step.try_into().expect("panel step of N elements");
        *dst = *src;
    }
}

/// One full A panel from a column-major A (a transposed operand): each step
/// is `N` consecutive elements of a column. Fixed-size copies, not a `memcpy`
/// call per step (4 % of a demo-UNet training step in profiles).
#[inline(always)]
fn copy_a_steps<T: Float, const N: usize>(panel: &mut [T], a: MatRef<T>, first_row: usize, col0: usize) {
    for (p, step) in panel.chunks_exact_mut(N).enumerate() {
        let start = first_row + (col0 + p) * a.cs;
        let src: &[T; N] = a.data[start..start + N].try_into().expect("A column segment of N elements");
        let dst: &mut [T; N] = step.try_into().expect("panel step of N elements");
        *dst = *src;
    }
}

/// One full A panel from a row-major A (weights, activations): step p holds
/// element p of each of the `N` rows. The rows are read side by side so each
/// step is written whole, instead of row by row at a stride of `N`.
#[inline(always)]
fn interleave_rows<T: Float, const N: usize>(panel: &mut [T], a: MatRef<T>, first_row: usize, col0: usize, kc: usize) {
    let rows: [&[T]; N] = std::array::from_fn(|r| &a.data[(first_row + r) * a.rs + col0..][..kc]);
    for (p, step) in panel[..kc * N].chunks_exact_mut(N).enumerate() {
        let step: &mut [T; N] = step.try_into().expect("panel step of N elements");
        for (v, row) in step.iter_mut().zip(&rows) {
            *v = row[p];
        }
    }
}

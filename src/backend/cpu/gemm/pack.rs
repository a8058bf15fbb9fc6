//! Packing: copying a block of A or B, whatever its strides, into the
//! contiguous micro-panel order the micro-kernel streams, zero-padded to whole
//! panels so edge tiles need no special case inside the kernel.

use super::{BOperand, Im2colRef, MatRef, SegmentedRef};
use crate::tensor::Float;
use rayon::prelude::*;
use std::any::TypeId;

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
        BOperand::Im2col(b) => pack_b_im2col(dst, b, row0, col0, kc, nc, nr, parallel),
    }
}

/// Call `pack_panel(q, panel)` for each `panel_len` panel of `dst`, on every
/// thread when `parallel`.
fn for_each_panel<T: Float>(dst: &mut [T], panel_len: usize, parallel: bool, pack_panel: impl Fn((usize, &mut [T])) + Sync + Send) {
    if parallel {
        dst.par_chunks_mut(panel_len).enumerate().for_each(pack_panel);
    } else {
        dst.chunks_mut(panel_len).enumerate().for_each(pack_panel);
    }
}

/// Widest B panel any micro-kernel uses.
const MAX_NR: usize = 16;

/// The columns of one panel that lie on one output row of one image.
#[derive(Clone, Copy, Default)]
struct RowPiece {
    lane: usize,
    len: usize,
    /// Offset of the image in the data.
    image: usize,
    oh: usize,
    ow: usize,
}

/// Entries (pieces × taps) of the per-panel tap table: a 3×3 kernel over up
/// to 7 pieces, a 7×7 over one.
const MAX_PLANNED_RUNS: usize = 64;

/// Where one piece of a panel reads for one tap, at stride 1: lanes lo..hi
/// lie inside the input row, lane lo reading element `src` of channel 0.
#[derive(Clone, Copy, Default)]
struct TapRun {
    src: usize,
    lo: usize,
    hi: usize,
}

/// Where the input row that `piece` reads for kernel row `ki` starts in
/// channel 0, or `None` when that row is padding.
fn input_row<T>(piece: &RowPiece, ki: usize, b: &Im2colRef<T>) -> Option<usize> {
    let ih = (piece.oh * b.stride[0] + ki * b.dilation[0]) as isize - b.padding[0] as isize;
    (0..b.in_size[0] as isize).contains(&ih).then(|| piece.image + ih as usize * b.in_size[1])
}

/// The [`TapRun`] of `piece` for kernel row `ki`, column `kj` (stride 1).
fn tap_run<T>(piece: &RowPiece, ki: usize, kj: usize, b: &Im2colRef<T>) -> TapRun {
    let Some(row) = input_row(piece, ki, b) else { return TapRun::default() };
    let iw0 = (piece.ow + kj * b.dilation[1]) as isize - b.padding[1] as isize;
    let lo = (-iw0).clamp(0, piece.len as isize) as usize;
    let hi = (b.in_size[1] as isize - iw0).clamp(lo as isize, piece.len as isize) as usize;
    let src = if lo < hi { row + (iw0 + lo as isize) as usize } else { 0 };
    TapRun { src, lo, hi }
}

/// [`pack_b`] for an im2col B read from the images (see `Im2colRef`). A
/// panel's columns are cut into pieces on one output row each (one piece
/// when the row is at least a panel wide); then each step, one (channel,
/// tap) row of the matrix, copies per piece a run of one input row (a
/// strided gather when the stride is not 1), zero where the tap falls into
/// the padding.
#[allow(clippy::too_many_arguments)]
fn pack_b_im2col<T: Float>(dst: &mut [T], b: Im2colRef<T>, row0: usize, col0: usize, kc: usize, nc: usize, nr: usize, parallel: bool) {
    assert!(nr <= MAX_NR, "gemm: im2col packing supports panels up to {MAX_NR} wide, not {nr}");
    let ([in_h, in_w], [out_h, out_w]) = (b.in_size, b.out_size);
    let ([kh, kw], [_, sw], [_, pw], [_, dw]) = (b.kernel, b.stride, b.padding, b.dilation);
    let (plane, out_plane, taps) = (in_h * in_w, out_h * out_w, kh * kw);
    let pack_panel = |(q, panel): (usize, &mut [T])| {
        let cols = nr.min(nc - q * nr);
        let first = b.first_pixel + col0 + q * nr;
        let mut pieces = [RowPiece::default(); MAX_NR];
        let (mut count, mut lane) = (0, 0);
        while lane < cols {
            let pixel = first + lane;
            let (image, in_image) = (pixel / out_plane, pixel % out_plane);
            let (oh, ow) = (in_image / out_w, in_image % out_w);
            let len = (out_w - ow).min(cols - lane);
            pieces[count] = RowPiece { lane, len, image: image * b.image_stride, oh, ow };
            count += 1;
            lane += len;
        }
        let pieces = &pieces[..count];
        // At stride 1, per piece and tap, worked out once per panel: the lanes
        // lo..hi inside the image and where lane lo reads in channel 0 (lo =
        // hi = 0 when the tap's input row is padding). Each step then costs a
        // table read and a copy per piece.
        let mut runs = [TapRun::default(); MAX_PLANNED_RUNS];
        let planned = sw == 1 && pieces.len() * taps <= MAX_PLANNED_RUNS;
        if planned {
            for (index, piece) in pieces.iter().enumerate() {
                for t in 0..taps {
                    runs[index * taps + t] = tap_run(piece, t / kw, t % kw, &b);
                }
            }
        }
        let (mut channel, mut tap) = (row0 / taps, row0 % taps);
        for step in panel.chunks_exact_mut(nr) {
            let base = channel * plane;
            for (index, piece) in pieces.iter().enumerate() {
                let out = &mut step[piece.lane..piece.lane + piece.len];
                if sw == 1 {
                    let run = if planned { runs[index * taps + tap] } else { tap_run(piece, tap / kw, tap % kw, &b) };
                    if run.lo == 0 && run.hi == piece.len {
                        copy_run(out, &b.data[base + run.src..]);
                        continue;
                    }
                    out[..run.lo].fill(T::zero());
                    out[run.hi..].fill(T::zero());
                    if run.lo < run.hi {
                        copy_run(&mut out[run.lo..run.hi], &b.data[base + run.src..]);
                    }
                    continue;
                }
                let Some(row) = input_row(piece, tap / kw, &b) else {
                    out.fill(T::zero());
                    continue;
                };
                let row = &b.data[base + row..][..in_w];
                let iw0 = (piece.ow * sw + tap % kw * dw) as isize - pw as isize;
                for (t, v) in out.iter_mut().enumerate() {
                    let iw = iw0 + (t * sw) as isize;
                    *v = if iw >= 0 && iw < in_w as isize { row[iw as usize] } else { T::zero() };
                }
            }
            step[cols..].fill(T::zero());
            tap += 1;
            if tap == taps {
                tap = 0;
                channel += 1;
            }
        }
    };
    for_each_panel(dst, kc * nr, parallel, pack_panel);
}

/// `dst.copy_from_slice(&src[..dst.len()])`, as fixed-size moves for the run
/// lengths im2col panels have most (a whole panel, or a row of an 8- or
/// 4-pixel-wide plane) rather than a `memcpy` call per step.
#[inline(always)]
fn copy_run<T: Float>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Float, const N: usize>(dst: &mut [T], src: &[T]) {
        let src: &[T; N] = src[..N].try_into().expect("run of N elements");
        let dst: &mut [T; N] = dst.try_into().expect("run of N elements");
        *dst = *src;
    }
    match dst.len() {
        16 => fixed::<T, 16>(dst, src),
        8 => fixed::<T, 8>(dst, src),
        4 => fixed::<T, 4>(dst, src),
        len => dst.copy_from_slice(&src[..len]),
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
    for_each_panel(dst, kc * nr, parallel, pack_panel);
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
        } else if b.rs == 1 && cols == nr && nr == 16 && transpose_panel_16(panel, b, row0, first_col, kc) {
            // Done: column-major B, 8×8 blocks transposed in registers.
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
    for_each_panel(dst, kc * nr, parallel, pack_panel);
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

/// One full 16-wide panel of a column-major f32 B (a transposed operand:
/// `x·Wᵀ` in every linear layer, `dy·colᵀ` in a convolution's weight
/// gradient, `Q·Kᵀ` in attention), transposed 8×8 at a time in AVX2
/// registers; the scalar walk writes one lane per store and cost 5 % of a
/// demo-UNet forward in profiles. Returns false, having written nothing,
/// when `T` is not f32 or the CPU lacks AVX2.
fn transpose_panel_16<T: Float>(panel: &mut [T], b: MatRef<T>, row0: usize, first_col: usize, kc: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx2") {
        let (panel, data): (&mut [f32], &[f32]) = (bytemuck::cast_slice_mut(panel), bytemuck::cast_slice(b.data));
        assert!(panel.len() >= kc * 16, "gemm: B panel shorter than {kc} steps of 16");
        assert!(kc == 0 || (first_col + 15) * b.cs + row0 + kc <= data.len(), "gemm: column-major B too short for its panel");
        // SAFETY: AVX2 is present (checked above); the asserts put every read
        // (columns first_col..+16, rows row0..row0+kc) inside `data` and every
        // write (kc steps of 16) inside `panel`.
        unsafe { transpose_avx2::panel_16(panel.as_mut_ptr(), data.as_ptr().add(first_col * b.cs + row0), b.cs, kc) };
        return true;
    }
    let _ = (panel, b, row0, first_col, kc);
    false
}

#[cfg(target_arch = "x86_64")]
mod transpose_avx2 {
    use std::arch::x86_64::*;

    /// `panel[p·16 + j] = src[j·cs + p]` for p < kc, j < 16.
    ///
    /// # Safety
    /// AVX2 must be present; `src` valid for reads of `j·cs + p` and `panel`
    /// for writes of `kc·16` elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn panel_16(panel: *mut f32, src: *const f32, cs: usize, kc: usize) {
        let mut p = 0;
        while p + 8 <= kc {
            for half in 0..2 {
                // SAFETY: columns half·8..half·8+8, steps p..p+8 are inside the caller's bounds.
                let columns: [__m256; 8] = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(src.add((half * 8 + j) * cs + p)) });
                for (q, step) in transpose8(columns).into_iter().enumerate() {
                    // SAFETY: step p+q < kc, lanes half·8..half·8+8 < 16.
                    unsafe { _mm256_storeu_ps(panel.add((p + q) * 16 + half * 8), step) };
                }
            }
            p += 8;
        }
        for p in p..kc {
            for j in 0..16 {
                // SAFETY: as above, for the last kc mod 8 steps.
                unsafe { *panel.add(p * 16 + j) = *src.add(j * cs + p) };
            }
        }
    }

    /// Rows r[0..8] in, columns out: out[q][j] = r[j][q].
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // Pairs of rows interleaved, then 4×4 blocks per 128-bit lane, then the lanes swapped.
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

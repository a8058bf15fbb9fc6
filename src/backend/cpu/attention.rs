//! Scaled dot-product attention, blockwise in the manner of FlashAttention-2:
//! query blocks × key blocks, an online softmax (running row maximum and
//! sum), and never more than one `BLOCK_Q × BLOCK_K` tile of scores in memory
//! per task, so a 4096-token self-attention costs tiles, not a 4096² matrix.
//! The tile products go through the shared GEMM.
//!
//! The forward saves the log-sum-exp of every query row; the backward
//! recomputes each tile's probabilities from it. Every task owns what it
//! writes: with many heads a task is one head (dQ, dK, dV in one pass over its
//! tiles); with few, the backward runs in two passes, one over key blocks
//! (dK, dV) and one over query blocks (dQ), recomputing the tiles in each.
//!
//! A query row whose every score is −∞ (all keys masked) has no softmax; we
//! define its output as 0 — the value a row of zero probabilities would give
//! — with log-sum-exp −∞ and zero gradients, instead of PyTorch's NaN.

use super::gemm::{gemm, MatRef};
use super::softmax::{exp_shifted_sum, max_slice};
use crate::tensor::{Float, Layout};
use rayon::prelude::*;

/// Query rows per tile.
pub const BLOCK_Q: usize = 64;
/// Key rows per tile.
pub const BLOCK_K: usize = 128;
/// The backward runs as one pass of whole-head tasks (each tile's scores
/// computed once) when there are at least this many heads per thread, and
/// otherwise as a key-block pass and a query-block pass (scores twice) so
/// that a few long heads still spread over every thread.
const HEADS_PER_THREAD_FOR_ONE_PASS: usize = 4;

/// Where the `[rows, cols]` matrix of each (batch, head) of a rank-4 strided
/// view sits in its storage.
#[derive(Clone, Copy, Debug)]
pub struct HeadMatrices {
    offset: usize,
    batch_stride: usize,
    head_stride: usize,
    heads: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl HeadMatrices {
    /// From a rank-4 `[B, H, rows, cols]` layout (broadcast dims have stride 0).
    pub fn new(layout: &Layout) -> Self {
        let s = layout.strides();
        debug_assert_eq!(s.len(), 4);
        HeadMatrices { offset: layout.offset(), batch_stride: s[0], head_stride: s[1], heads: layout.shape()[1], rs: s[2], cs: s[3] }
    }

    /// Storage offset of row `row` of the matrix of flattened (batch, head) `bh`.
    #[inline]
    fn at(&self, bh: usize, row: usize) -> usize {
        self.offset + (bh / self.heads) * self.batch_stride + (bh % self.heads) * self.head_stride + row * self.rs
    }

    /// The matrix from row `row` on, as a GEMM operand.
    #[inline]
    fn mat<'a, T>(&self, data: &'a [T], bh: usize, row: usize) -> MatRef<'a, T> {
        MatRef { data: &data[self.at(bh, row)..], rs: self.rs, cs: self.cs }
    }
}

/// A strided operand: its storage and where its matrices are.
#[derive(Clone, Copy)]
pub struct Operand<'a, T> {
    /// The whole storage the view reads.
    pub data: &'a [T],
    /// Where each (batch, head) matrix starts and its strides.
    pub heads: HeadMatrices,
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDims {
    /// Batch × heads.
    pub bh: usize,
    /// Query length.
    pub lq: usize,
    /// Key/value length.
    pub lk: usize,
    /// Query/key head size.
    pub d: usize,
    /// Value head size.
    pub dv: usize,
}

/// Everything that defines the scores `scale·QKᵀ + mask` (with causal −∞).
#[derive(Clone, Copy)]
pub struct Scores<'a, T> {
    /// Queries `[B, H, Lq, D]`.
    pub q: Operand<'a, T>,
    /// Keys `[B, H, Lk, D]`.
    pub k: Operand<'a, T>,
    /// Additive mask broadcast to `[B, H, Lq, Lk]`.
    pub mask: Option<Operand<'a, T>>,
    /// Query `i` sees keys `j <= i` only (top-left aligned, as PyTorch's `is_causal`).
    pub causal: bool,
    /// Multiplies `QKᵀ` before the mask is added.
    pub scale: T,
    /// The call's sizes.
    pub dims: AttentionDims,
}

impl<T: Float> Scores<'_, T> {
    /// Keys that query rows `i0..i0+rows` may see at all.
    fn key_end(&self, i0: usize, rows: usize) -> usize {
        if self.causal {
            self.dims.lk.min(i0 + rows)
        } else {
            self.dims.lk
        }
    }

    /// `Kᵀ` for keys from `j0` on, as a GEMM operand read in place (the
    /// GEMM's packing does the transpose).
    fn kt(&self, bh: usize, j0: usize) -> MatRef<'_, T> {
        transposed(self.k, bh, j0)
    }

    /// The tile `s[rows, cols]` of scores for queries `i0..` and keys `j0..`.
    fn tile(&self, bh: usize, i0: usize, rows: usize, j0: usize, cols: usize, s: &mut [T]) {
        let d = self.dims.d;
        gemm(rows, cols, d, self.scale, self.q.heads.mat(self.q.data, bh, i0), self.kt(bh, j0), T::zero(), s, cols, false);
        if let Some(m) = self.mask {
            for (i, row) in s.chunks_exact_mut(cols).take(rows).enumerate() {
                let base = m.heads.at(bh, i0 + i) + j0 * m.heads.cs;
                if m.heads.cs == 1 {
                    row.iter_mut().zip(&m.data[base..base + cols]).for_each(|(v, &a)| *v += a);
                } else {
                    row.iter_mut().enumerate().for_each(|(j, v)| *v += m.data[base + j * m.heads.cs]);
                }
            }
        }
        if self.causal {
            for (i, row) in s.chunks_exact_mut(cols).take(rows).enumerate() {
                // Keys j > i0 + i are hidden: local index (i0 + i + 1 − j0) onwards.
                let first_hidden = (i0 + i + 1).saturating_sub(j0).min(cols);
                row[first_hidden..].fill(T::neg_infinity());
            }
        }
    }
}

/// The transpose of an operand's matrix `bh` from row `row0` on, read in
/// place: element (c, r) is row `row0 + r`, column c.
fn transposed<T>(x: Operand<'_, T>, bh: usize, row0: usize) -> MatRef<'_, T> {
    MatRef { data: &x.data[x.heads.at(bh, row0)..], rs: x.heads.cs, cs: x.heads.rs }
}

/// Attention output `[BH, Lq, Dv]` and per-row log-sum-exp `[BH, Lq]`.
pub fn attention_fwd<T: Float>(sc: Scores<T>, v: Operand<T>) -> (Vec<T>, Vec<T>) {
    let AttentionDims { bh, lq, dv, .. } = sc.dims;
    let mut out = vec![T::zero(); bh * lq * dv];
    let mut lse = vec![T::neg_infinity(); bh * lq];
    if out.is_empty() {
        return (out, lse);
    }
    out.par_chunks_mut(lq * dv).zip(lse.par_chunks_mut(lq)).enumerate().for_each(|(b, (o_head, l_head))| {
        o_head.par_chunks_mut(BLOCK_Q * dv).zip(l_head.par_chunks_mut(BLOCK_Q)).enumerate().for_each(|(qb, (o, l))| {
            forward_block(&sc, v, b, qb * BLOCK_Q, o, l);
        });
    });
    (out, lse)
}

/// One query block: `o` (`[rows, dv]`, zeroed) and `lse` (`[rows]`) for queries from `i0`.
fn forward_block<T: Float>(sc: &Scores<T>, v: Operand<T>, bh: usize, i0: usize, o: &mut [T], lse: &mut [T]) {
    let dv = sc.dims.dv;
    let rows = lse.len();
    let mut s = vec![T::zero(); rows * BLOCK_K];
    let mut row_max = vec![T::neg_infinity(); rows];
    let mut row_sum = vec![T::zero(); rows];
    let key_end = sc.key_end(i0, rows);
    for j0 in (0..key_end).step_by(BLOCK_K) {
        let cols = BLOCK_K.min(key_end - j0);
        let s = &mut s[..rows * cols];
        sc.tile(bh, i0, rows, j0, cols, s);
        for (i, srow) in s.chunks_exact_mut(cols).enumerate() {
            let m_new = row_max[i].max(max_slice(srow));
            if m_new == T::neg_infinity() {
                // Nothing visible yet in this row: contributes nothing.
                srow.fill(T::zero());
                continue;
            }
            let tile_sum = exp_shifted_sum(srow, m_new);
            let alpha = (row_max[i] - m_new).exp();
            row_sum[i] = row_sum[i] * alpha + tile_sum;
            row_max[i] = m_new;
            if alpha != T::one() {
                o[i * dv..(i + 1) * dv].iter_mut().for_each(|x| *x *= alpha);
            }
        }
        gemm(rows, dv, cols, T::one(), MatRef { data: s, rs: cols, cs: 1 }, v.heads.mat(v.data, bh, j0), T::one(), o, dv, false);
    }
    for (i, orow) in o.chunks_exact_mut(dv).enumerate() {
        if row_sum[i] > T::zero() {
            let r = row_sum[i].recip();
            orow.iter_mut().for_each(|x| *x *= r);
            lse[i] = row_max[i] + row_sum[i].ln();
        } else {
            orow.fill(T::zero());
            lse[i] = T::neg_infinity();
        }
    }
}

/// Probabilities `p = exp(s − lse)` of a tile in place (rows with lse −∞ are 0).
fn probs_from_lse<T: Float>(s: &mut [T], cols: usize, lse: &[T]) {
    for (srow, &l) in s.chunks_exact_mut(cols).zip(lse) {
        if l == T::neg_infinity() {
            srow.fill(T::zero());
        } else {
            exp_shifted_sum(srow, l);
        }
    }
}

/// `ds = p ∘ (dp − delta_row)` in place in `dp`.
fn score_grads<T: Float>(p: &[T], dp: &mut [T], cols: usize, delta: &[T]) {
    for ((dprow, prow), &dl) in dp.chunks_exact_mut(cols).zip(p.chunks_exact(cols)).zip(delta) {
        for (g, &pv) in dprow.iter_mut().zip(prow) {
            *g = pv * (*g - dl);
        }
    }
}

/// Saved forward state and output gradient for [`attention_bwd`].
#[derive(Clone, Copy)]
pub struct AttentionGradInputs<'a, T> {
    /// Values `[B, H, Lk, Dv]`.
    pub v: Operand<'a, T>,
    /// Contiguous `[BH, Lq, Dv]` forward output.
    pub out: &'a [T],
    /// Contiguous `[BH, Lq, Dv]` output gradient.
    pub grad: &'a [T],
    /// `[BH, Lq]` log-sum-exp saved by the forward.
    pub lse: &'a [T],
}

/// Gradients `(dQ [BH, Lq, D], dK [BH, Lk, D], dV [BH, Lk, Dv])`, contiguous.
pub fn attention_bwd<T: Float>(sc: Scores<T>, gi: AttentionGradInputs<T>) -> (Vec<T>, Vec<T>, Vec<T>) {
    let AttentionDims { bh, lq, lk, d, dv } = sc.dims;
    let mut dq = vec![T::zero(); bh * lq * d];
    let mut dk = vec![T::zero(); bh * lk * d];
    let mut dvv = vec![T::zero(); bh * lk * dv];
    if bh * lq == 0 || lk == 0 {
        return (dq, dk, dvv);
    }
    // delta_i = Σ dO_i·O_i = Σ_j P_ij·dP_ij, the softmax-backward row term.
    let delta: Vec<T> =
        gi.out.par_chunks(dv).zip(gi.grad.par_chunks(dv)).with_min_len(256).map(|(o, g)| super::softmax::dot_slice(o, g)).collect();

    if bh >= HEADS_PER_THREAD_FOR_ONE_PASS * rayon::current_num_threads() {
        // Enough heads to keep every thread busy: each task owns one head's dQ,
        // dK and dV, so each score tile and its probabilities are computed once.
        let heads = dq.par_chunks_mut(lq * d).zip(dk.par_chunks_mut(lk * d)).zip(dvv.par_chunks_mut(lk * dv));
        heads.enumerate().for_each(|(b, ((dq_head, dk_head), dv_head))| {
            for (kb, (dkb, dvb)) in dk_head.chunks_mut(BLOCK_K * d).zip(dv_head.chunks_mut(BLOCK_K * dv)).enumerate() {
                key_block_grads(&sc, &gi, &delta, b, kb * BLOCK_K, dkb, dvb, Some(&mut *dq_head));
            }
        });
        return (dq, dk, dvv);
    }
    // Pass 1: each task owns one key block of dK and dV.
    dk.par_chunks_mut(lk * d).zip(dvv.par_chunks_mut(lk * dv)).enumerate().for_each(|(b, (dk_head, dv_head))| {
        dk_head.par_chunks_mut(BLOCK_K * d).zip(dv_head.par_chunks_mut(BLOCK_K * dv)).enumerate().for_each(|(kb, (dkb, dvb))| {
            key_block_grads(&sc, &gi, &delta, b, kb * BLOCK_K, dkb, dvb, None);
        });
    });
    // Pass 2: each task owns one query block of dQ.
    dq.par_chunks_mut(lq * d).enumerate().for_each(|(b, dq_head)| {
        dq_head.par_chunks_mut(BLOCK_Q * d).enumerate().for_each(|(qb, dqb)| {
            query_block_grads(&sc, &gi, &delta, b, qb * BLOCK_Q, dqb);
        });
    });
    (dq, dk, dvv)
}

/// dK and dV of keys `j0..j0+cols` (`dkb` is `[cols, d]`, `dvb` `[cols, dv]`,
/// zeroed), and these keys' share of dQ added into `dq_head` (`[lq, d]`) when given.
#[allow(clippy::too_many_arguments)]
fn key_block_grads<T: Float>(
    sc: &Scores<T>,
    gi: &AttentionGradInputs<T>,
    delta: &[T],
    bh: usize,
    j0: usize,
    dkb: &mut [T],
    dvb: &mut [T],
    mut dq_head: Option<&mut [T]>,
) {
    let AttentionDims { lq, d, dv, .. } = sc.dims;
    let cols = dvb.len() / dv;
    let vt = transposed(gi.v, bh, j0);
    let mut p = vec![T::zero(); BLOCK_Q * cols];
    let mut dp = vec![T::zero(); BLOCK_Q * cols];
    // Causal: queries before j0 see none of these keys.
    let first_block = if sc.causal { j0 / BLOCK_Q } else { 0 };
    for i0 in (first_block * BLOCK_Q..lq).step_by(BLOCK_Q) {
        let rows = BLOCK_Q.min(lq - i0);
        let (p, dp) = (&mut p[..rows * cols], &mut dp[..rows * cols]);
        let row_range = bh * lq + i0..bh * lq + i0 + rows;
        sc.tile(bh, i0, rows, j0, cols, p);
        probs_from_lse(p, cols, &gi.lse[row_range.clone()]);
        let g_blk = MatRef { data: &gi.grad[(bh * lq + i0) * dv..], rs: dv, cs: 1 };
        // dV += Pᵀ·dO
        gemm(cols, dv, rows, T::one(), MatRef { data: p, rs: 1, cs: cols }, g_blk, T::one(), dvb, dv, false);
        // dP = dO·Vᵀ, then dS = P ∘ (dP − delta)
        gemm(rows, cols, dv, T::one(), g_blk, vt, T::zero(), dp, cols, false);
        score_grads(p, dp, cols, &delta[row_range]);
        // dK += scale·dSᵀ·Q
        gemm(cols, d, rows, sc.scale, MatRef { data: dp, rs: 1, cs: cols }, sc.q.heads.mat(sc.q.data, bh, i0), T::one(), dkb, d, false);
        if let Some(dq_head) = dq_head.as_deref_mut() {
            // dQ += scale·dS·K
            let k_blk = sc.k.heads.mat(sc.k.data, bh, j0);
            gemm(rows, d, cols, sc.scale, MatRef { data: dp, rs: cols, cs: 1 }, k_blk, T::one(), &mut dq_head[i0 * d..], d, false);
        }
    }
}

/// dQ of queries `i0..` (`dqb` is `[rows, d]`, zeroed).
fn query_block_grads<T: Float>(sc: &Scores<T>, gi: &AttentionGradInputs<T>, delta: &[T], bh: usize, i0: usize, dqb: &mut [T]) {
    let AttentionDims { lq, d, dv, .. } = sc.dims;
    let rows = dqb.len() / d;
    let mut p = vec![T::zero(); rows * BLOCK_K];
    let mut dp = vec![T::zero(); rows * BLOCK_K];
    let row_range = bh * lq + i0..bh * lq + i0 + rows;
    let g_blk = MatRef { data: &gi.grad[(bh * lq + i0) * dv..], rs: dv, cs: 1 };
    let key_end = sc.key_end(i0, rows);
    for j0 in (0..key_end).step_by(BLOCK_K) {
        let cols = BLOCK_K.min(key_end - j0);
        let (p, dp) = (&mut p[..rows * cols], &mut dp[..rows * cols]);
        sc.tile(bh, i0, rows, j0, cols, p);
        probs_from_lse(p, cols, &gi.lse[row_range.clone()]);
        gemm(rows, cols, dv, T::one(), g_blk, transposed(gi.v, bh, j0), T::zero(), dp, cols, false);
        score_grads(p, dp, cols, &delta[row_range.clone()]);
        // dQ += scale·dS·K
        gemm(rows, d, cols, sc.scale, MatRef { data: dp, rs: cols, cs: 1 }, sc.k.heads.mat(sc.k.data, bh, j0), T::one(), dqb, d, false);
    }
}

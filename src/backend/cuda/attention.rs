//! Fused scaled dot-product attention (kernels/attention.cu): a tiled forward
//! with an online softmax that never writes the score matrix to global
//! memory, and a two-pass backward (dK/dV per key tile, dQ per query tile)
//! that recomputes the probabilities from the saved log-sum-exp. Optional
//! additive mask (any view broadcast to `[B, H, Lq, Lk]`, read in place
//! through its strides) and causal mask; head dims up to 128.
//! CPU twin: src/backend/cpu/attention.rs.

use super::copy::check_extent;
use super::{accumulator, check_float, dense, dptr, dtype_suffix, rows_config, same_all, CudaStorage, Operand};
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Largest head dim the kernels take (kernels/attention.cu DMAX).
pub const MAX_HEAD_DIM: usize = 128;
/// Threads per block of every tile kernel (ATTN_THREADS).
const THREADS: u32 = 128;

/// Sizes of one attention call: q `[batch, heads, lq, d]`, k `[batch, heads, lk, d]`,
/// v `[batch, heads, lk, dv]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub dv: usize,
}

impl AttentionShape {
    fn bh(&self) -> usize {
        self.batch * self.heads
    }
}

/// Kernel argument; mirrors `AttentionGeometry` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttentionGeometry {
    bh: u32,
    heads: u32,
    lq: u32,
    lk: u32,
    d: u32,
    dv: u32,
    causal: u32,
    has_mask: u32,
    scale: f64,
    mask_offset: u64,
    mask_sb: u64,
    mask_sh: u64,
    mask_si: u64,
    mask_sj: u64,
}

// SAFETY: #[repr(C)] struct of eight u32, one f64 and five u64 in the field
// order of the C struct (80 bytes; the f64 sits at offset 32, so no padding).
unsafe impl DeviceRepr for AttentionGeometry {}

/// (query rows per forward block, rows per backward block) for a compute type (kernels' `Tiles`).
fn tiles(dtype: DType) -> (usize, usize) {
    if accumulator(dtype) == DType::F64 {
        (8, 8)
    } else {
        (16, 16)
    }
}

fn geometry(op: &'static str, s: &AttentionShape, mask: Option<&Layout>, causal: bool, scale: f64) -> Result<AttentionGeometry> {
    if s.d > MAX_HEAD_DIM || s.dv > MAX_HEAD_DIM {
        return Err(Error::bad_shape(
            op,
            format!("the CUDA attention kernels take head dims up to {MAX_HEAD_DIM}, got {} (query/key) and {} (value)", s.d, s.dv),
        ));
    }
    let u = |v: usize| u32::try_from(v).map_err(|_| Error::bad_shape(op, format!("{s:?} is too large for the CUDA attention kernels")));
    if u32::try_from(s.bh()).map_or(true, |bh| bh > 65_535) {
        return Err(Error::bad_shape(op, format!("batch × heads = {} exceeds the CUDA grid (65535)", s.bh())));
    }
    let (offset, strides) = match mask {
        Some(l) => {
            if l.shape() != [s.batch, s.heads, s.lq, s.lk] {
                return Err(Error::bad_shape(op, format!("mask view {:?} is not broadcast to the scores {:?}", l.shape(), s)));
            }
            (l.offset() as u64, [l.strides()[0] as u64, l.strides()[1] as u64, l.strides()[2] as u64, l.strides()[3] as u64])
        }
        None => (0, [0; 4]),
    };
    Ok(AttentionGeometry {
        bh: u(s.bh())?,
        heads: u(s.heads.max(1))?,
        lq: u(s.lq)?,
        lk: u(s.lk)?,
        d: u(s.d)?,
        dv: u(s.dv)?,
        causal: causal as u32,
        has_mask: mask.is_some() as u32,
        scale,
        mask_offset: offset,
        mask_sb: strides[0],
        mask_sh: strides[1],
        mask_si: strides[2],
        mask_sj: strides[3],
    })
}

fn check_numel(op: &'static str, what: &str, x: &Operand<'_>, want: usize) -> Result<()> {
    if x.numel() != want {
        return Err(Error::bad_shape(op, format!("{what} has {} elements, the attention call needs {want}", x.numel())));
    }
    Ok(())
}

/// Validated operands: q, k, v packed; the mask checked against its storage (read in place).
fn check_operands(
    op: &'static str,
    q: &Operand<'_>,
    k: &Operand<'_>,
    v: &Operand<'_>,
    mask: Option<&Operand<'_>>,
    s: &AttentionShape,
) -> Result<()> {
    check_float(op, q.storage)?;
    same_all(op, q.storage, &[Some(k.storage), Some(v.storage), mask.map(|m| m.storage)])?;
    check_numel(op, "query", q, s.bh() * s.lq * s.d)?;
    check_numel(op, "key", k, s.bh() * s.lk * s.d)?;
    check_numel(op, "value", v, s.bh() * s.lk * s.dv)?;
    if let Some(m) = mask {
        check_extent(op, m.layout, m.storage)?;
    }
    Ok(())
}

fn grid(blocks: usize, bh: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks.max(1) as u32, bh as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Forward attention: the output `[B, H, Lq, Dv]` (dtype of q, contiguous) and
/// the per-row log-sum-exp `[B, H, Lq]` in the accumulation dtype (f32, or
/// f64 for f64), −∞ for a row with no visible key (whose output is 0).
/// `mask` is an additive mask in q's dtype whose view is already broadcast to
/// `[B, H, Lq, Lk]`.
pub fn attention_forward(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    mask: Option<Operand<'_>>,
    shape: &AttentionShape,
    causal: bool,
    scale: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "scaled_dot_product_attention";
    check_operands(OP, &q, &k, &v, mask.as_ref(), shape)?;
    let geom = geometry(OP, shape, mask.map(|m| m.layout), causal, scale)?;
    let (qd, kd, vd) = (dense(OP, q)?, dense(OP, k)?, dense(OP, v)?);
    let dev = qd.device.clone();
    let dtype = qd.dtype;
    let out = super::alloc(&dev, dtype, shape.bh() * shape.lq * shape.dv, OP)?;
    let lse = super::alloc(&dev, accumulator(dtype), shape.bh() * shape.lq, OP)?;
    if shape.bh() * shape.lq == 0 {
        return Ok((out, lse));
    }
    let (bq, _) = tiles(dtype);
    let f = dev.function("attention", &format!("attention_fwd_{}", dtype_suffix(dtype)))?;
    let (pq, pk, pv, pm, po, pl) = (dptr(&qd), dptr(&kd), dptr(&vd), mask.map_or(0, |m| dptr(m.storage)), dptr(&out), dptr(&lse));
    let mut b = dev.stream.launch_builder(&f);
    b.arg(&geom).arg(&pq).arg(&pk).arg(&pv).arg(&pm).arg(&po).arg(&pl);
    // SAFETY: attention_fwd_T(geometry, q, k, v, mask, o, lse) with T the dtype of
    // q, k, v and the mask (checked): q, k, v packed with the element counts the
    // geometry implies (checked), the mask view (offset and strides in the
    // geometry) lies inside its storage (checked), o holds BH·Lq·Dv and lse
    // BH·Lq accumulator elements; d, dv <= DMAX; a block per (query tile, bh).
    unsafe { b.launch(grid(shape.lq.div_ceil(bq), shape.bh())) }.map_err(|e| super::driver_error(OP, e))?;
    Ok((out, lse))
}

/// Gradients `(dq, dk, dv)` (contiguous, q's dtype) of [`attention_forward`]
/// from its output `out`, log-sum-exp `lse` (any float dtype; converted to the
/// accumulation dtype) and the output gradient `grad`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    mask: Option<Operand<'_>>,
    shape: &AttentionShape,
    causal: bool,
    scale: f64,
    out: Operand<'_>,
    lse: Operand<'_>,
    grad: Operand<'_>,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "scaled_dot_product_attention_backward";
    check_operands(OP, &q, &k, &v, mask.as_ref(), shape)?;
    same_all(OP, q.storage, &[Some(out.storage), Some(grad.storage)])?;
    super::same_device(OP, q.storage, lse.storage)?;
    let rows = shape.bh() * shape.lq;
    check_numel(OP, "output", &out, rows * shape.dv)?;
    check_numel(OP, "output gradient", &grad, rows * shape.dv)?;
    check_numel(OP, "log-sum-exp", &lse, rows)?;
    let geom = geometry(OP, shape, mask.map(|m| m.layout), causal, scale)?;
    let (qd, kd, vd, od, gd) = (dense(OP, q)?, dense(OP, k)?, dense(OP, v)?, dense(OP, out)?, dense(OP, grad)?);
    let dev = qd.device.clone();
    let dtype = qd.dtype;
    let acc = accumulator(dtype);
    let lse_acc = if lse.dtype() == acc { dense(OP, lse)? } else { super::Dense::Owned(super::cast(lse.storage, lse.layout, acc)?) };
    let dq = super::zeros(&dev, dtype, rows * shape.d, OP)?;
    let dk = super::zeros(&dev, dtype, shape.bh() * shape.lk * shape.d, OP)?;
    let dvv = super::zeros(&dev, dtype, shape.bh() * shape.lk * shape.dv, OP)?;
    if rows == 0 || shape.lk == 0 {
        return Ok((dq, dk, dvv));
    }
    let suffix = dtype_suffix(dtype);
    let delta = super::alloc(&dev, acc, rows, OP)?;
    {
        let f = dev.function("attention", &format!("attention_delta_{suffix}"))?;
        let (rows64, dv32, po, pg, pd) = (rows as u64, shape.dv as u32, dptr(&od), dptr(&gd), dptr(&delta));
        let mut b = dev.stream.launch_builder(&f);
        b.arg(&rows64).arg(&dv32).arg(&po).arg(&pg).arg(&pd);
        let cfg = rows_config(&dev, rows.div_ceil(8), 256);
        // SAFETY: attention_delta_T(rows, dv, o, dout, delta): o and dout packed
        // with rows·dv elements (checked), delta holds `rows` accumulator elements;
        // whole warps, one row per warp, grid-stride.
        unsafe { b.launch(cfg) }.map_err(|e| super::driver_error(OP, e))?;
    }
    let (_, bb) = tiles(dtype);
    let pm = mask.map_or(0, |m| dptr(m.storage));
    let (pq, pk, pv, pg, pl, pd) = (dptr(&qd), dptr(&kd), dptr(&vd), dptr(&gd), dptr(&lse_acc), dptr(&delta));
    {
        let f = dev.function("attention", &format!("attention_bwd_kv_{suffix}"))?;
        let (pdk, pdv) = (dptr(&dk), dptr(&dvv));
        let mut b = dev.stream.launch_builder(&f);
        b.arg(&geom).arg(&pq).arg(&pk).arg(&pv).arg(&pm).arg(&pg).arg(&pl).arg(&pd).arg(&pdk).arg(&pdv);
        // SAFETY: attention_bwd_kv_T(geometry, q, k, v, mask, dout, lse, delta, dk, dv):
        // operands as in the forward, dout packed BH·Lq·Dv, lse and delta BH·Lq
        // accumulator elements, dk BH·Lk·D and dv BH·Lk·Dv; a block per (key tile, bh).
        unsafe { b.launch(grid(shape.lk.div_ceil(bb), shape.bh())) }.map_err(|e| super::driver_error(OP, e))?;
    }
    {
        let f = dev.function("attention", &format!("attention_bwd_q_{suffix}"))?;
        let pdq = dptr(&dq);
        let mut b = dev.stream.launch_builder(&f);
        b.arg(&geom).arg(&pq).arg(&pk).arg(&pv).arg(&pm).arg(&pg).arg(&pl).arg(&pd).arg(&pdq);
        // SAFETY: attention_bwd_q_T(geometry, q, k, v, mask, dout, lse, delta, dq):
        // as above, dq holds BH·Lq·D; a block per (query tile, bh).
        unsafe { b.launch(grid(shape.lq.div_ceil(bb), shape.bh())) }.map_err(|e| super::driver_error(OP, e))?;
    }
    Ok((dq, dk, dvv))
}

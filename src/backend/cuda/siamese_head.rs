//! The fused siamese re-identification head (kernels/siamese_head.cu):
//! branch sigmoid, |a − b|, Linear(D → 1) and optionally the mean BCE, one
//! kernel forward and one backward. CPU twin: src/backend/cpu/siamese_head.rs.

use super::{check_float, dense, dptr, dtype_suffix, rows_config, same_all, CudaStorage, Operand, BLOCK};
use crate::{Error, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// `(n, d)` of embeddings `a`, `b` `[N, D]` with `weight` of D and `bias` of one element.
fn check(op: &'static str, a: &Operand<'_>, b: &Operand<'_>, weight: &Operand<'_>, bias: Option<&Operand<'_>>) -> Result<(usize, usize)> {
    check_float(op, a.storage)?;
    same_all(op, a.storage, &[Some(b.storage), Some(weight.storage), bias.map(|x| x.storage)])?;
    let &[n, d] = a.shape() else {
        return Err(Error::bad_shape(op, format!("embeddings must be [N, D], got {:?}", a.shape())));
    };
    if b.shape() != a.shape() || weight.numel() != d || bias.is_some_and(|x| x.numel() != 1) {
        return Err(Error::bad_shape(
            op,
            format!("embeddings {:?} / {:?}, head weight of {} elements do not match", a.shape(), b.shape(), weight.numel()),
        ));
    }
    Ok((n, d))
}

/// Logits `[N]` of the head: `bias + Σ_j weight_j·|σ(a_ij) − σ(b_ij)|`.
pub fn siamese_head_forward(a: Operand<'_>, b: Operand<'_>, weight: Operand<'_>, bias: Operand<'_>) -> Result<CudaStorage> {
    const OP: &str = "siamese_head";
    let (n, d) = check(OP, &a, &b, &weight, Some(&bias))?;
    let (ad, bd, wd, biasd) = (dense(OP, a)?, dense(OP, b)?, dense(OP, weight)?, dense(OP, bias)?);
    let dev = ad.device.clone();
    let out = super::alloc(&dev, ad.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("siamese_head", &format!("siamese_head_fwd_{}", dtype_suffix(ad.dtype)))?;
    let (n64, d64, pa, pb, pw, pbias, po) = (n as u64, d as u64, dptr(&ad), dptr(&bd), dptr(&wd), dptr(&biasd), dptr(&out));
    let mut builder = dev.stream.launch_builder(&f);
    builder.arg(&n64).arg(&d64).arg(&pa).arg(&pb).arg(&pw).arg(&pbias).arg(&po);
    // SAFETY: siamese_head_fwd_T(n, d, a, b, w, bias, logits): a and b packed
    // with n·d elements, w with d, bias with 1 (checked), logits holds n; whole
    // warps (one row per warp).
    unsafe { builder.launch(rows_config(&dev, n.div_ceil(8), BLOCK as usize)) }.map_err(|e| super::driver_error(OP, e))?;
    Ok(out)
}

/// The head fused with the mean BCE against `target` (N elements of 0/1, the
/// embeddings' dtype): `(loss [1], dloss/dlogit [N])`.
pub fn siamese_head_bce(
    a: Operand<'_>,
    b: Operand<'_>,
    weight: Operand<'_>,
    bias: Operand<'_>,
    target: Operand<'_>,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "siamese_head_bce";
    let (n, d) = check(OP, &a, &b, &weight, Some(&bias))?;
    same_all(OP, a.storage, &[Some(target.storage)])?;
    if target.numel() != n {
        return Err(Error::bad_shape(OP, format!("{} targets for {n} pairs", target.numel())));
    }
    let (ad, bd, wd, biasd, td) = (dense(OP, a)?, dense(OP, b)?, dense(OP, weight)?, dense(OP, bias)?, dense(OP, target)?);
    let dev = ad.device.clone();
    let loss = super::alloc(&dev, ad.dtype, 1, OP)?;
    let grad = super::alloc(&dev, ad.dtype, n, OP)?;
    let f = dev.function("siamese_head", &format!("siamese_head_bce_{}", dtype_suffix(ad.dtype)))?;
    let (n64, d64, pa, pb, pw, pbias) = (n as u64, d as u64, dptr(&ad), dptr(&bd), dptr(&wd), dptr(&biasd));
    let (pt, pl, pg) = (dptr(&td), dptr(&loss), dptr(&grad));
    let mut builder = dev.stream.launch_builder(&f);
    builder.arg(&n64).arg(&d64).arg(&pa).arg(&pb).arg(&pw).arg(&pbias).arg(&pt).arg(&pl).arg(&pg);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: siamese_head_bce_T(n, d, a, b, w, bias, target, loss, grad_logit):
    // buffers as in the forward plus target (n, checked), loss (1) and
    // grad_logit (n); exactly one block of BLOCK threads, as the kernel's
    // block-wide loss sum needs.
    unsafe { builder.launch(cfg) }.map_err(|e| super::driver_error(OP, e))?;
    Ok((loss, grad))
}

/// Gradients `(da [N, D], db [N, D], dweight [D], dbias [1])` from dL/dlogit `[N]`.
pub fn siamese_head_backward(a: Operand<'_>, b: Operand<'_>, weight: Operand<'_>, grad_logit: Operand<'_>) -> Result<[CudaStorage; 4]> {
    const OP: &str = "siamese_head_backward";
    let (n, d) = check(OP, &a, &b, &weight, None)?;
    same_all(OP, a.storage, &[Some(grad_logit.storage)])?;
    if grad_logit.numel() != n {
        return Err(Error::bad_shape(OP, format!("{} logit gradients for {n} pairs", grad_logit.numel())));
    }
    let (ad, bd, wd, gd) = (dense(OP, a)?, dense(OP, b)?, dense(OP, weight)?, dense(OP, grad_logit)?);
    let dev = ad.device.clone();
    let dtype = ad.dtype;
    let da = super::alloc(&dev, dtype, n * d, OP)?;
    let db = super::alloc(&dev, dtype, n * d, OP)?;
    let dw = super::alloc(&dev, dtype, d, OP)?;
    let dbias = super::alloc(&dev, dtype, 1, OP)?;
    let f = dev.function("siamese_head", &format!("siamese_head_bwd_{}", dtype_suffix(dtype)))?;
    let (n64, d64, pa, pb, pw, pg) = (n as u64, d as u64, dptr(&ad), dptr(&bd), dptr(&wd), dptr(&gd));
    let (pda, pdb, pdw, pdbias) = (dptr(&da), dptr(&db), dptr(&dw), dptr(&dbias));
    let mut builder = dev.stream.launch_builder(&f);
    builder.arg(&n64).arg(&d64).arg(&pa).arg(&pb).arg(&pw).arg(&pg).arg(&pda).arg(&pdb).arg(&pdw).arg(&pdbias);
    // SAFETY: siamese_head_bwd_T(n, d, a, b, w, grad_logit, da, db, dw, dbias):
    // a, b packed n·d, w d, grad_logit n (checked); da, db hold n·d, dw d, dbias
    // 1; blocks of whole warps no wider than BLOCK (block_sum), one per column
    // plus one for the bias, grid-stride.
    unsafe { builder.launch(rows_config(&dev, d + 1, n)) }.map_err(|e| super::driver_error(OP, e))?;
    Ok([da, db, dw, dbias])
}

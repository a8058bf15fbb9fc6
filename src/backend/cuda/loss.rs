//! Fused losses (kernels/loss.cu): per-element (or per-sample) forward
//! values, which the op layer sums for "mean"/"sum", and one-pass backward
//! kernels. CPU twin: src/backend/cpu/loss.rs.

use super::{check_float, dense, dptr, dptr_opt, dtype_suffix, grid_for, launch, same_all, upload_i64, Arg, CudaStorage, Dense, Operand};
use crate::{Error, Result};

/// How the upstream gradient reaches each element (or sample) of a loss.
#[derive(Clone, Copy, Debug)]
pub enum LossGrad<'a> {
    /// Every element gets this factor: `g / count` for a mean, `g` for a sum.
    Uniform(f64),
    /// Reduction "none": one factor per element, a view of the loss's shape.
    PerElement(Operand<'a>),
}

/// The (pointer, scale) pair kernels take for the upstream gradient.
fn upstream<'a>(op: &'static str, g: LossGrad<'a>, n: usize) -> Result<(Option<Dense<'a>>, f64)> {
    match g {
        LossGrad::Uniform(s) => Ok((None, s)),
        LossGrad::PerElement(t) => {
            if t.numel() != n {
                return Err(Error::bad_shape(op, format!("gradient of {} elements for {n} losses", t.numel())));
            }
            Ok((Some(dense(op, t)?), 0.0))
        }
    }
}

fn pair<'a>(op: &'static str, a: Operand<'a>, b: Operand<'a>) -> Result<(Dense<'a>, Dense<'a>)> {
    check_float(op, a.storage)?;
    same_all(op, a.storage, &[Some(b.storage)])?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    Ok((dense(op, a)?, dense(op, b)?))
}

/// `(p − t)²` per element, packed.
pub fn mse_loss(pred: Operand<'_>, target: Operand<'_>) -> Result<CudaStorage> {
    const OP: &str = "mse_loss";
    let (p, t) = pair(OP, pred, target)?;
    let (dev, n) = (&p.device, pred.numel());
    let out = super::alloc(dev, p.dtype, n, OP)?;
    if n > 0 {
        let args = [Arg::U64(n as u64), Arg::U64(dptr(&p)), Arg::U64(dptr(&t)), Arg::U64(dptr(&out))];
        // SAFETY: mse_fwd_T(n, p, t, out): three packed buffers of n elements (shapes checked).
        unsafe { launch(dev, "loss", &format!("mse_fwd_{}", dtype_suffix(p.dtype)), grid_for(dev, n), OP, &args)? };
    }
    Ok(out)
}

/// d/dpred of the MSE loss, `2 (p − t) g`.
pub fn mse_loss_backward(pred: Operand<'_>, target: Operand<'_>, g: LossGrad<'_>) -> Result<CudaStorage> {
    const OP: &str = "mse_loss_backward";
    let (p, t) = pair(OP, pred, target)?;
    let (dev, n) = (&p.device, pred.numel());
    let (gd, scale) = upstream(OP, g, n)?;
    let out = super::alloc(dev, p.dtype, n, OP)?;
    if n > 0 {
        let args = [
            Arg::U64(n as u64),
            Arg::U64(dptr(&p)),
            Arg::U64(dptr(&t)),
            Arg::U64(dptr_opt(gd.as_deref())),
            Arg::F64(scale),
            Arg::U64(dptr(&out)),
        ];
        // SAFETY: mse_bwd_T(n, p, t, g, g_scale, dp): p, t, dp n elements; g n elements or null.
        unsafe { launch(dev, "loss", &format!("mse_bwd_{}", dtype_suffix(p.dtype)), grid_for(dev, n), OP, &args)? };
    }
    Ok(out)
}

/// Per-element binary cross entropy with logits; `pos_weight`, when given,
/// is a view already broadcast to the logits' shape.
pub fn bce_with_logits(x: Operand<'_>, y: Operand<'_>, pos_weight: Option<Operand<'_>>) -> Result<CudaStorage> {
    const OP: &str = "bce_with_logits";
    let (xd, yd) = pair(OP, x, y)?;
    let wd = weight(OP, &x, pos_weight)?;
    let (dev, n) = (&xd.device, x.numel());
    let out = super::alloc(dev, xd.dtype, n, OP)?;
    if n > 0 {
        let args = [Arg::U64(n as u64), Arg::U64(dptr(&xd)), Arg::U64(dptr(&yd)), Arg::U64(dptr_opt(wd.as_deref())), Arg::U64(dptr(&out))];
        // SAFETY: bce_with_logits_fwd_T(n, x, y, w, out): x, y, out n packed elements; w n or null.
        unsafe { launch(dev, "loss", &format!("bce_with_logits_fwd_{}", dtype_suffix(xd.dtype)), grid_for(dev, n), OP, &args)? };
    }
    Ok(out)
}

fn weight<'a>(op: &'static str, x: &Operand<'a>, w: Option<Operand<'a>>) -> Result<Option<Dense<'a>>> {
    let Some(w) = w else { return Ok(None) };
    same_all(op, x.storage, &[Some(w.storage)])?;
    if w.shape() != x.shape() {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: w.shape().to_vec() });
    }
    Ok(Some(dense(op, w)?))
}

/// Gradients of [`bce_with_logits`] for (logits, targets, pos_weight) as asked
/// by `need`; the pos_weight gradient is per element (the op layer sums it back).
pub fn bce_with_logits_backward(
    x: Operand<'_>,
    y: Operand<'_>,
    pos_weight: Option<Operand<'_>>,
    g: LossGrad<'_>,
    need: [bool; 3],
) -> Result<[Option<CudaStorage>; 3]> {
    const OP: &str = "bce_with_logits_backward";
    let (xd, yd) = pair(OP, x, y)?;
    let wd = weight(OP, &x, pos_weight)?;
    let (dev, n) = (&xd.device, x.numel());
    let (gd, scale) = upstream(OP, g, n)?;
    let want = |k: usize| -> Result<Option<CudaStorage>> {
        let wanted = need[k] && (k < 2 || wd.is_some());
        wanted.then(|| super::alloc(dev, xd.dtype, n, OP)).transpose()
    };
    let (dx, dy, dw) = (want(0)?, want(1)?, want(2)?);
    if n > 0 {
        let args = [
            Arg::U64(n as u64),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&yd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr_opt(gd.as_deref())),
            Arg::F64(scale),
            Arg::U64(dptr_opt(dx.as_ref())),
            Arg::U64(dptr_opt(dy.as_ref())),
            Arg::U64(dptr_opt(dw.as_ref())),
        ];
        // SAFETY: bce_with_logits_bwd_T(n, x, y, w, g, g_scale, dx, dy, dw): every non-null
        // buffer holds n packed elements; the kernel writes only non-null outputs.
        unsafe { launch(dev, "loss", &format!("bce_with_logits_bwd_{}", dtype_suffix(xd.dtype)), grid_for(dev, n), OP, &args)? };
    }
    Ok([dx, dy, dw])
}

/// Logits `[n, classes, inner]` with one target per `(n, inner)` sample.
#[derive(Clone, Copy, Debug)]
pub struct ClassDims {
    /// Batch size.
    pub n: usize,
    /// Number of classes.
    pub classes: usize,
    /// Product of the dims after the class dim.
    pub inner: usize,
}

fn class_args(op: &'static str, z: &Operand<'_>, targets: &[i64], d: ClassDims, smoothing: f64, ignore: Option<i64>) -> Result<Vec<Arg>> {
    let samples = d.n * d.inner;
    if z.numel() != samples * d.classes || targets.len() != samples {
        return Err(Error::bad_shape(op, format!("logits of {} elements and {} targets do not match {d:?}", z.numel(), targets.len())));
    }
    if let Some(bad) = targets.iter().find(|&&t| Some(t) != ignore && (t < 0 || t as u64 >= d.classes as u64)) {
        return Err(Error::msg(format!("{op}: target class {bad} is out of range for {} classes", d.classes)));
    }
    Ok(vec![
        Arg::U64(samples as u64),
        Arg::U64(d.classes as u64),
        Arg::U64(d.inner as u64),
        Arg::F64(smoothing),
        Arg::U32(ignore.is_some() as u32),
        Arg::I64(ignore.unwrap_or(0)),
    ])
}

/// Cross entropy of each sample (0 for ignored targets) and the log-sum-exp
/// of its logits, both `n·inner` long.
pub fn cross_entropy(
    z: Operand<'_>,
    targets: &[i64],
    dims: ClassDims,
    smoothing: f64,
    ignore: Option<i64>,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "cross_entropy";
    check_float(OP, z.storage)?;
    let mut args = class_args(OP, &z, targets, dims, smoothing, ignore)?;
    let zd = dense(OP, z)?;
    let (dev, samples) = (&zd.device, dims.n * dims.inner);
    let (loss, lse) = (super::alloc(dev, zd.dtype, samples, OP)?, super::alloc(dev, zd.dtype, samples, OP)?);
    if samples > 0 {
        let t = upload_i64(dev, targets, OP)?;
        args.extend([Arg::U64(dptr(&zd)), Arg::U64(dptr(&t)), Arg::U64(dptr(&loss)), Arg::U64(dptr(&lse))]);
        // SAFETY: cross_entropy_fwd_T(samples, classes, inner, smoothing, has_ignore, ignore, z,
        // targets, loss, lse): z samples·classes packed, targets samples i64 each a class or the
        // ignored value (checked), loss and lse samples.
        unsafe { launch(dev, "loss", &format!("cross_entropy_fwd_{}", dtype_suffix(zd.dtype)), grid_for(dev, samples), OP, &args)? };
    }
    Ok((loss, lse))
}

/// d/dlogits of [`cross_entropy`] given its log-sum-exp and the upstream gradient.
pub fn cross_entropy_backward(
    z: Operand<'_>,
    lse: Operand<'_>,
    targets: &[i64],
    dims: ClassDims,
    smoothing: f64,
    ignore: Option<i64>,
    g: LossGrad<'_>,
) -> Result<CudaStorage> {
    const OP: &str = "cross_entropy_backward";
    check_float(OP, z.storage)?;
    same_all(OP, z.storage, &[Some(lse.storage)])?;
    let mut args = class_args(OP, &z, targets, dims, smoothing, ignore)?;
    let samples = dims.n * dims.inner;
    if lse.numel() != samples {
        return Err(Error::bad_shape(OP, format!("log_sum_exp has {} elements for {samples} samples", lse.numel())));
    }
    let (zd, ld) = (dense(OP, z)?, dense(OP, lse)?);
    let (gd, scale) = upstream(OP, g, samples)?;
    let dev = &zd.device;
    let out = super::alloc(dev, zd.dtype, z.numel(), OP)?;
    if samples > 0 {
        let t = upload_i64(dev, targets, OP)?;
        args.extend([
            Arg::U64(dptr(&zd)),
            Arg::U64(dptr(&ld)),
            Arg::U64(dptr(&t)),
            Arg::U64(dptr_opt(gd.as_deref())),
            Arg::F64(scale),
            Arg::U64(dptr(&out)),
        ]);
        // SAFETY: cross_entropy_bwd_T(samples, classes, inner, smoothing, has_ignore, ignore, z, lse,
        // targets, g, g_scale, dz): z and dz samples·classes, lse and targets samples, g samples
        // or null; every target a class or the ignored value (checked).
        unsafe { launch(dev, "loss", &format!("cross_entropy_bwd_{}", dtype_suffix(zd.dtype)), grid_for(dev, samples), OP, &args)? };
    }
    Ok(out)
}

/// Cosine similarity of each pair of rows of `[rows, len]` views (one value per row).
pub fn cosine_similarity(a: Operand<'_>, b: Operand<'_>, rows: usize, len: usize, eps: f64) -> Result<CudaStorage> {
    const OP: &str = "cosine_similarity";
    let (ad, bd) = pair(OP, a, b)?;
    if a.numel() != rows * len {
        return Err(Error::bad_shape(OP, format!("{} elements are not {rows} rows of {len}", a.numel())));
    }
    let dev = &ad.device;
    let out = super::zeros(dev, ad.dtype, rows, OP)?;
    if rows > 0 && len > 0 {
        let args =
            [Arg::U64(rows as u64), Arg::U64(len as u64), Arg::F64(eps), Arg::U64(dptr(&ad)), Arg::U64(dptr(&bd)), Arg::U64(dptr(&out))];
        // SAFETY: cosine_similarity_fwd_T(rows, len, eps, a, b, out): a and b rows·len packed
        // (checked), out rows; one block of whole warps per row.
        unsafe {
            launch(
                dev,
                "loss",
                &format!("cosine_similarity_fwd_{}", dtype_suffix(ad.dtype)),
                super::rows_config(dev, rows, len),
                OP,
                &args,
            )?
        };
    }
    Ok(out)
}

/// Gradients of [`cosine_similarity`] with respect to both row matrices, given the similarity's gradient `g` (`rows`).
pub fn cosine_similarity_backward(
    a: Operand<'_>,
    b: Operand<'_>,
    g: Operand<'_>,
    rows: usize,
    len: usize,
    eps: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "cosine_similarity_backward";
    let (ad, bd) = pair(OP, a, b)?;
    same_all(OP, a.storage, &[Some(g.storage)])?;
    if a.numel() != rows * len || g.numel() != rows {
        return Err(Error::bad_shape(
            OP,
            format!("{} elements and a gradient of {} do not match {rows} rows of {len}", a.numel(), g.numel()),
        ));
    }
    let gd = dense(OP, g)?;
    let dev = &ad.device;
    let (da, db) = (super::zeros(dev, ad.dtype, rows * len, OP)?, super::zeros(dev, ad.dtype, rows * len, OP)?);
    if rows > 0 && len > 0 {
        let args = [
            Arg::U64(rows as u64),
            Arg::U64(len as u64),
            Arg::F64(eps),
            Arg::U64(dptr(&ad)),
            Arg::U64(dptr(&bd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&da)),
            Arg::U64(dptr(&db)),
        ];
        // SAFETY: cosine_similarity_bwd_T(rows, len, eps, a, b, g, da, db): a, b, da, db rows·len
        // packed, g rows (checked); one block of whole warps per row.
        unsafe {
            launch(
                dev,
                "loss",
                &format!("cosine_similarity_bwd_{}", dtype_suffix(ad.dtype)),
                super::rows_config(dev, rows, len),
                OP,
                &args,
            )?
        };
    }
    Ok((da, db))
}

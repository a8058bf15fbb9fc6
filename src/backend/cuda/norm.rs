//! Layer norm, group norm (optionally fused with SiLU) and batch norm,
//! forward and backward (kernels/norm.cu). Inputs are packed row-major first;
//! optional weight/bias/running statistics go to the kernels as null
//! pointers when absent. CPU twin: src/backend/cpu/norm.rs.

use super::{
    accumulator, alloc, check_float, dense, dense_opt, dptr, dptr_opt, dtype_suffix, grid_for, launch, rows_config, same_all, zeros, Arg,
    CudaStorage, Operand,
};
use crate::{Error, Result};

/// Output and saved statistics of a normalisation forward.
#[derive(Debug)]
pub struct NormForward {
    /// The normalised output, packed, of the input's shape.
    pub out: CudaStorage,
    /// Mean of each statistics group.
    pub mean: CudaStorage,
    /// `1/sqrt(var + eps)` of each statistics group.
    pub rstd: CudaStorage,
}

/// Gradients of a normalisation.
#[derive(Debug)]
pub struct NormGrads {
    /// Input gradient, packed, of the input's shape.
    pub dx: CudaStorage,
    /// Weight gradient (per channel, or per normalised element for layer norm).
    pub dweight: CudaStorage,
    /// Bias gradient, shaped like the weight's.
    pub dbias: CudaStorage,
}

/// Batch-norm statistics for the forward, and the updated running statistics.
#[derive(Debug)]
pub struct BatchStats {
    /// Per-channel mean used to normalise.
    pub mean: CudaStorage,
    /// Per-channel `1/sqrt(var + eps)` used to normalise.
    pub rstd: CudaStorage,
    /// `(1 − momentum)·running_mean + momentum·batch_mean`, when a running mean was given (training).
    pub running_mean: Option<CudaStorage>,
    /// `(1 − momentum)·running_var + momentum·unbiased_batch_var`, when a running variance was given (training).
    pub running_var: Option<CudaStorage>,
}

fn check_inputs(op: &'static str, x: &Operand<'_>, others: &[Option<Operand<'_>>]) -> Result<()> {
    check_float(op, x.storage)?;
    let storages: Vec<Option<&CudaStorage>> = others.iter().map(|o| o.map(|o| o.storage)).collect();
    same_all(op, x.storage, &storages)
}

fn check_len(op: &'static str, what: &str, o: Option<Operand<'_>>, len: usize) -> Result<()> {
    match o {
        Some(o) if o.numel() != len => Err(Error::bad_shape(op, format!("{what} has {} elements, expected {len}", o.numel()))),
        _ => Ok(()),
    }
}

/// Layer norm of rows of `len` elements, with optional affine `weight`/`bias` of `len` elements.
pub fn layer_norm(x: Operand<'_>, len: usize, weight: Option<Operand<'_>>, bias: Option<Operand<'_>>, eps: f64) -> Result<NormForward> {
    const OP: &str = "layer_norm";
    check_inputs(OP, &x, &[weight, bias])?;
    check_len(OP, "weight", weight, len)?;
    check_len(OP, "bias", bias, len)?;
    let (xd, wd, bd) = (dense(OP, x)?, dense_opt(OP, weight)?, dense_opt(OP, bias)?);
    let (dev, dtype, n) = (&xd.device, xd.dtype, x.numel());
    let rows = n.checked_div(len).unwrap_or(0);
    let (out, mean, rstd) = (alloc(dev, dtype, n, OP)?, alloc(dev, dtype, rows, OP)?, alloc(dev, dtype, rows, OP)?);
    if n > 0 {
        let args = [
            Arg::U64(rows as u64),
            Arg::U64(len as u64),
            Arg::F64(eps),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr_opt(bd.as_deref())),
            Arg::U64(dptr(&out)),
            Arg::U64(dptr(&mean)),
            Arg::U64(dptr(&rstd)),
        ];
        // SAFETY: layer_norm_fwd_T(rows, len, eps, x, w, b, y, mean, rstd): x and y
        // hold rows·len packed elements, w/b len elements or null, mean/rstd rows.
        unsafe { launch(dev, "norm", &format!("layer_norm_fwd_{}", dtype_suffix(dtype)), rows_config(dev, rows, len), OP, &args)? };
    }
    Ok(NormForward { out, mean, rstd })
}

/// Gradients of [`layer_norm`] from the input, the output gradient and the saved statistics.
pub fn layer_norm_backward(
    x: Operand<'_>,
    g: Operand<'_>,
    mean: Operand<'_>,
    rstd: Operand<'_>,
    len: usize,
    weight: Option<Operand<'_>>,
) -> Result<NormGrads> {
    const OP: &str = "layer_norm_backward";
    check_inputs(OP, &x, &[Some(g), Some(mean), Some(rstd), weight])?;
    check_len(OP, "weight", weight, len)?;
    let (xd, gd, md, rd, wd) = (dense(OP, x)?, dense(OP, g)?, dense(OP, mean)?, dense(OP, rstd)?, dense_opt(OP, weight)?);
    let (dev, dtype, n) = (&xd.device, xd.dtype, x.numel());
    let rows = n.checked_div(len).unwrap_or(0);
    if g.numel() != n || mean.numel() != rows || rstd.numel() != rows {
        return Err(Error::bad_shape(OP, format!("gradient or statistics do not match {rows} rows of {len}")));
    }
    let dx = alloc(dev, dtype, n, OP)?;
    let (dweight, dbias) = (zeros(dev, dtype, len, OP)?, zeros(dev, dtype, len, OP)?);
    if n > 0 {
        let sfx = dtype_suffix(dtype);
        let args = [
            Arg::U64(rows as u64),
            Arg::U64(len as u64),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr(&md)),
            Arg::U64(dptr(&rd)),
            Arg::U64(dptr(&dx)),
        ];
        // SAFETY: layer_norm_bwd_dx_T(rows, len, x, g, w, mean, rstd, dx): x, g, dx
        // rows·len packed, w len or null, mean/rstd rows (all checked above).
        unsafe { launch(dev, "norm", &format!("layer_norm_bwd_dx_{sfx}"), rows_config(dev, rows, len), OP, &args)? };
        let args = [
            Arg::U64(rows as u64),
            Arg::U64(len as u64),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&md)),
            Arg::U64(dptr(&rd)),
            Arg::U64(dptr(&dweight)),
            Arg::U64(dptr(&dbias)),
        ];
        // SAFETY: layer_norm_bwd_params_T(rows, len, x, g, mean, rstd, dw, db): as above, dw/db len.
        unsafe { launch(dev, "norm", &format!("layer_norm_bwd_params_{sfx}"), grid_for(dev, len), OP, &args)? };
    }
    Ok(NormGrads { dx, dweight, dbias })
}

/// Group norm of an `[n, c, spatial]` tensor with `groups` groups, optional
/// per-channel `weight`/`bias`, and SiLU after when `silu`. Statistics `[n, groups]`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: Operand<'_>,
    [n, c, spatial]: [usize; 3],
    groups: usize,
    weight: Option<Operand<'_>>,
    bias: Option<Operand<'_>>,
    eps: f64,
    silu: bool,
) -> Result<NormForward> {
    const OP: &str = "group_norm";
    check_inputs(OP, &x, &[weight, bias])?;
    check_len(OP, "weight", weight, c)?;
    check_len(OP, "bias", bias, c)?;
    if groups == 0 || c % groups != 0 || x.numel() != n * c * spatial {
        return Err(Error::bad_shape(OP, format!("{c} channels cannot be split into {groups} groups for shape {:?}", x.shape())));
    }
    let (xd, wd, bd) = (dense(OP, x)?, dense_opt(OP, weight)?, dense_opt(OP, bias)?);
    let (dev, dtype) = (&xd.device, xd.dtype);
    let total = n * groups;
    let (out, mean, rstd) = (alloc(dev, dtype, x.numel(), OP)?, zeros(dev, dtype, total, OP)?, zeros(dev, dtype, total, OP)?);
    let cg = c / groups;
    if x.numel() > 0 {
        let args = [
            Arg::U64(total as u64),
            Arg::U64(groups as u64),
            Arg::U64(cg as u64),
            Arg::U64(spatial as u64),
            Arg::F64(eps),
            Arg::U32(silu as u32),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr_opt(bd.as_deref())),
            Arg::U64(dptr(&out)),
            Arg::U64(dptr(&mean)),
            Arg::U64(dptr(&rstd)),
        ];
        // SAFETY: group_norm_fwd_T(total, groups, cg, spatial, eps, silu, x, w, b, y, mean, rstd):
        // x, y hold n·c·spatial packed elements (checked), w/b c or null, mean/rstd n·groups.
        unsafe {
            launch(dev, "norm", &format!("group_norm_fwd_{}", dtype_suffix(dtype)), rows_config(dev, total, cg * spatial), OP, &args)?
        };
    }
    Ok(NormForward { out, mean, rstd })
}

/// Gradients of [`group_norm`] (with `silu`, of the fused form); `bias` is
/// read only to recompute the SiLU input.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: Operand<'_>,
    g: Operand<'_>,
    mean: Operand<'_>,
    rstd: Operand<'_>,
    [n, c, spatial]: [usize; 3],
    groups: usize,
    weight: Option<Operand<'_>>,
    bias: Option<Operand<'_>>,
    silu: bool,
) -> Result<NormGrads> {
    const OP: &str = "group_norm_backward";
    check_inputs(OP, &x, &[Some(g), Some(mean), Some(rstd), weight, bias])?;
    check_len(OP, "weight", weight, c)?;
    check_len(OP, "bias", bias, c)?;
    let total = n * groups;
    if groups == 0
        || c % groups != 0
        || x.numel() != n * c * spatial
        || g.numel() != x.numel()
        || mean.numel() != total
        || rstd.numel() != total
    {
        return Err(Error::bad_shape(OP, format!("gradient or statistics do not match {groups} groups of {:?}", x.shape())));
    }
    let (xd, gd, md, rd) = (dense(OP, x)?, dense(OP, g)?, dense(OP, mean)?, dense(OP, rstd)?);
    let (wd, bd) = (dense_opt(OP, weight)?, dense_opt(OP, bias)?);
    let (dev, dtype) = (&xd.device, xd.dtype);
    let dx = alloc(dev, dtype, x.numel(), OP)?;
    let (dweight, dbias) = (zeros(dev, dtype, c, OP)?, zeros(dev, dtype, c, OP)?);
    if x.numel() > 0 {
        let acc = accumulator(dtype);
        let (sum_gx, sum_g) = (zeros(dev, acc, n * c, OP)?, zeros(dev, acc, n * c, OP)?);
        let sfx = dtype_suffix(dtype);
        let cg = c / groups;
        let args = [
            Arg::U64(total as u64),
            Arg::U64(groups as u64),
            Arg::U64(cg as u64),
            Arg::U64(spatial as u64),
            Arg::U32(silu as u32),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&md)),
            Arg::U64(dptr(&rd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr_opt(bd.as_deref())),
            Arg::U64(dptr(&dx)),
            Arg::U64(dptr(&sum_gx)),
            Arg::U64(dptr(&sum_g)),
        ];
        // SAFETY: group_norm_bwd_T(total, groups, cg, spatial, silu, x, g, mean, rstd, w, b, dx,
        // sum_gx, sum_g): x, g, dx n·c·spatial packed; mean/rstd n·groups; w/b c or null;
        // sums n·c of the accumulator type (f64 for f64, else f32), as the kernel's Num<T>::C.
        unsafe { launch(dev, "norm", &format!("group_norm_bwd_{sfx}"), rows_config(dev, total, spatial), OP, &args)? };
        let args = [
            Arg::U64(n as u64),
            Arg::U64(c as u64),
            Arg::U64(dptr(&sum_gx)),
            Arg::U64(dptr(&sum_g)),
            Arg::U64(dptr(&dweight)),
            Arg::U64(dptr(&dbias)),
        ];
        // SAFETY: group_norm_bwd_params_T(n, c, sum_gx, sum_g, dw, db): sums n·c, dw/db c.
        unsafe { launch(dev, "norm", &format!("group_norm_bwd_params_{sfx}"), grid_for(dev, c), OP, &args)? };
    }
    Ok(NormGrads { dx, dweight, dbias })
}

/// Training statistics of batch norm over an `[n, c, spatial]` tensor, and
/// the running statistics updated with `momentum` (the variance's unbiased).
pub fn batch_norm_train_stats(
    x: Operand<'_>,
    [n, c, spatial]: [usize; 3],
    running_mean: Option<Operand<'_>>,
    running_var: Option<Operand<'_>>,
    momentum: f64,
    eps: f64,
) -> Result<BatchStats> {
    const OP: &str = "batch_norm";
    check_inputs(OP, &x, &[running_mean, running_var])?;
    check_len(OP, "running_mean", running_mean, c)?;
    check_len(OP, "running_var", running_var, c)?;
    if x.numel() != n * c * spatial || n * spatial < 2 {
        return Err(Error::bad_shape(OP, format!("expected more than 1 value per channel when training, got input shape {:?}", x.shape())));
    }
    let (xd, rmd, rvd) = (dense(OP, x)?, dense_opt(OP, running_mean)?, dense_opt(OP, running_var)?);
    let (dev, dtype) = (&xd.device, xd.dtype);
    let (mean, rstd) = (alloc(dev, dtype, c, OP)?, alloc(dev, dtype, c, OP)?);
    let new_mean = rmd.as_ref().map(|_| alloc(dev, dtype, c, OP)).transpose()?;
    let new_var = rvd.as_ref().map(|_| alloc(dev, dtype, c, OP)).transpose()?;
    if c > 0 {
        let args = [
            Arg::U64(n as u64),
            Arg::U64(c as u64),
            Arg::U64(spatial as u64),
            Arg::F64(eps),
            Arg::F64(momentum),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr_opt(rmd.as_deref())),
            Arg::U64(dptr_opt(rvd.as_deref())),
            Arg::U64(dptr(&mean)),
            Arg::U64(dptr(&rstd)),
            Arg::U64(dptr_opt(new_mean.as_ref())),
            Arg::U64(dptr_opt(new_var.as_ref())),
        ];
        // SAFETY: batch_norm_stats_T(n, c, spatial, eps, momentum, x, rm, rv, mean, rstd, new_rm, new_rv):
        // x n·c·spatial packed (checked), every per-channel buffer c elements or null (a new
        // running buffer exists exactly when its old one does).
        unsafe { launch(dev, "norm", &format!("batch_norm_stats_{}", dtype_suffix(dtype)), rows_config(dev, c, n * spatial), OP, &args)? };
    }
    Ok(BatchStats { mean, rstd, running_mean: new_mean, running_var: new_var })
}

/// Evaluation statistics of batch norm: the running mean and `1/sqrt(running_var + eps)`.
pub fn batch_norm_eval_stats(running_mean: Operand<'_>, running_var: Operand<'_>, eps: f64) -> Result<BatchStats> {
    const OP: &str = "batch_norm";
    check_inputs(OP, &running_mean, &[Some(running_var)])?;
    let c = running_mean.numel();
    check_len(OP, "running_var", Some(running_var), c)?;
    let (rmd, rvd) = (dense(OP, running_mean)?, dense(OP, running_var)?);
    let (dev, dtype) = (&rmd.device, rmd.dtype);
    let (mean, rstd) = (alloc(dev, dtype, c, OP)?, alloc(dev, dtype, c, OP)?);
    if c > 0 {
        let args =
            [Arg::U64(c as u64), Arg::F64(eps), Arg::U64(dptr(&rmd)), Arg::U64(dptr(&rvd)), Arg::U64(dptr(&mean)), Arg::U64(dptr(&rstd))];
        // SAFETY: batch_norm_eval_stats_T(c, eps, rm, rv, mean, rstd): four buffers of c elements.
        unsafe { launch(dev, "norm", &format!("batch_norm_eval_stats_{}", dtype_suffix(dtype)), grid_for(dev, c), OP, &args)? };
    }
    Ok(BatchStats { mean, rstd, running_mean: None, running_var: None })
}

/// `y = (x − mean[c])·rstd[c]·weight[c] + bias[c]` over an `[n, c, spatial]` tensor.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    x: Operand<'_>,
    [n, c, spatial]: [usize; 3],
    mean: &CudaStorage,
    rstd: &CudaStorage,
    weight: Option<Operand<'_>>,
    bias: Option<Operand<'_>>,
) -> Result<CudaStorage> {
    const OP: &str = "batch_norm";
    check_inputs(OP, &x, &[weight, bias])?;
    same_all(OP, x.storage, &[Some(mean), Some(rstd)])?;
    check_len(OP, "weight", weight, c)?;
    check_len(OP, "bias", bias, c)?;
    if x.numel() != n * c * spatial || mean.len() != c || rstd.len() != c {
        return Err(Error::bad_shape(OP, format!("statistics do not match {c} channels of {:?}", x.shape())));
    }
    let (xd, wd, bd) = (dense(OP, x)?, dense_opt(OP, weight)?, dense_opt(OP, bias)?);
    let (dev, dtype, total) = (&xd.device, xd.dtype, x.numel());
    let out = alloc(dev, dtype, total, OP)?;
    if total > 0 {
        let args = [
            Arg::U64(total as u64),
            Arg::U64(c as u64),
            Arg::U64(spatial as u64),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(mean)),
            Arg::U64(dptr(rstd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr_opt(bd.as_deref())),
            Arg::U64(dptr(&out)),
        ];
        // SAFETY: batch_norm_fwd_T(total, c, spatial, x, mean, rstd, w, b, y): x, y total
        // packed, the per-channel buffers c elements or null (checked).
        unsafe { launch(dev, "norm", &format!("batch_norm_fwd_{}", dtype_suffix(dtype)), grid_for(dev, total), OP, &args)? };
    }
    Ok(out)
}

/// Gradients of batch norm from the statistics the forward used (batch
/// statistics when `training`, through which the gradient flows).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: Operand<'_>,
    g: Operand<'_>,
    [n, c, spatial]: [usize; 3],
    mean: Operand<'_>,
    rstd: Operand<'_>,
    weight: Option<Operand<'_>>,
    training: bool,
) -> Result<NormGrads> {
    const OP: &str = "batch_norm_backward";
    check_inputs(OP, &x, &[Some(g), Some(mean), Some(rstd), weight])?;
    check_len(OP, "weight", weight, c)?;
    if x.numel() != n * c * spatial || g.numel() != x.numel() || mean.numel() != c || rstd.numel() != c {
        return Err(Error::bad_shape(OP, format!("gradient or statistics do not match {c} channels of {:?}", x.shape())));
    }
    let (xd, gd, md, rd, wd) = (dense(OP, x)?, dense(OP, g)?, dense(OP, mean)?, dense(OP, rstd)?, dense_opt(OP, weight)?);
    let (dev, dtype, total) = (&xd.device, xd.dtype, x.numel());
    let dx = alloc(dev, dtype, total, OP)?;
    let (dweight, dbias) = (zeros(dev, dtype, c, OP)?, zeros(dev, dtype, c, OP)?);
    if total > 0 {
        let sfx = dtype_suffix(dtype);
        let acc = accumulator(dtype);
        let (sum_g, sum_gx) = (zeros(dev, acc, c, OP)?, zeros(dev, acc, c, OP)?);
        let args = [
            Arg::U64(n as u64),
            Arg::U64(c as u64),
            Arg::U64(spatial as u64),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&md)),
            Arg::U64(dptr(&sum_g)),
            Arg::U64(dptr(&sum_gx)),
        ];
        // SAFETY: batch_norm_bwd_sums_T(n, c, spatial, x, g, mean, sum_g, sum_gx): x, g
        // n·c·spatial packed, mean c, sums c of the accumulator type.
        unsafe { launch(dev, "norm", &format!("batch_norm_bwd_sums_{sfx}"), rows_config(dev, c, n * spatial), OP, &args)? };
        let args = [
            Arg::U64(total as u64),
            Arg::U64(c as u64),
            Arg::U64(spatial as u64),
            Arg::U64((n * spatial) as u64),
            Arg::U32(training as u32),
            Arg::U64(dptr(&xd)),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&md)),
            Arg::U64(dptr(&rd)),
            Arg::U64(dptr_opt(wd.as_deref())),
            Arg::U64(dptr(&sum_g)),
            Arg::U64(dptr(&sum_gx)),
            Arg::U64(dptr(&dx)),
        ];
        // SAFETY: batch_norm_bwd_dx_T(total, c, spatial, count, training, x, g, mean, rstd, w,
        // sum_g, sum_gx, dx): as above; dx total elements.
        unsafe { launch(dev, "norm", &format!("batch_norm_bwd_dx_{sfx}"), grid_for(dev, total), OP, &args)? };
        let args = [
            Arg::U64(c as u64),
            Arg::U64(dptr(&rd)),
            Arg::U64(dptr(&sum_g)),
            Arg::U64(dptr(&sum_gx)),
            Arg::U64(dptr(&dweight)),
            Arg::U64(dptr(&dbias)),
        ];
        // SAFETY: batch_norm_bwd_params_T(c, rstd, sum_g, sum_gx, dw, db): every buffer c elements.
        unsafe { launch(dev, "norm", &format!("batch_norm_bwd_params_{sfx}"), grid_for(dev, c), OP, &args)? };
    }
    Ok(NormGrads { dx, dweight, dbias })
}

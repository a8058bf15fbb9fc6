//! Softmax and log-softmax along one axis (kernels/softmax.cu): the input is
//! packed row-major and seen as `[outer, len, inner]`; rows (`inner == 1`)
//! get a block each, other axes a thread per column. CPU twin:
//! src/backend/cpu/softmax.rs.

use super::{check_float, dense, dptr, dtype_suffix, grid_for, launch, rows_config, same_all, Arg, CudaStorage, Operand};
use crate::{Error, Result};

/// The kernel family and launch shape for `[outer, len, inner]`.
fn plan(x: &CudaStorage, outer: usize, len: usize, inner: usize) -> (&'static str, cudarc::driver::LaunchConfig) {
    if inner == 1 {
        ("rows", rows_config(&x.device, outer, len))
    } else {
        ("columns", grid_for(&x.device, outer * inner))
    }
}

/// Softmax (or log-softmax when `log`) of `x` along an axis of length `len`
/// with `inner` elements after it; contiguous output of `x`'s shape.
pub fn softmax(x: Operand<'_>, len: usize, inner: usize, log: bool) -> Result<CudaStorage> {
    const OP: &str = "softmax";
    check_float(OP, x.storage)?;
    let xd = dense(OP, x)?;
    let n = x.numel();
    let out = super::alloc(&xd.device, xd.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let outer = n / (len * inner);
    let (kind, cfg) = plan(&xd, outer, len, inner);
    let name = format!("softmax_{kind}_{}", dtype_suffix(xd.dtype));
    let mut args = vec![Arg::U64(outer as u64), Arg::U64(len as u64)];
    if inner != 1 {
        args.push(Arg::U64(inner as u64));
    }
    args.extend([Arg::U32(log as u32), Arg::U64(dptr(&xd)), Arg::U64(dptr(&out))]);
    // SAFETY: softmax_{rows,columns}_T(outer, len, [inner,] log, x, y) with T the
    // dtype; x is packed with outer·len·inner = n elements, y holds n; the
    // rows kernel gets a block of whole warps no wider than BLOCK.
    unsafe { launch(&xd.device, "softmax", &name, cfg, OP, &args)? };
    Ok(out)
}

/// Gradient of [`softmax`] from its output `y` and the output gradient `g` (same shape).
pub fn softmax_backward(y: Operand<'_>, g: Operand<'_>, len: usize, inner: usize, log: bool) -> Result<CudaStorage> {
    const OP: &str = "softmax_backward";
    check_float(OP, y.storage)?;
    same_all(OP, y.storage, &[Some(g.storage)])?;
    if y.shape() != g.shape() {
        return Err(Error::ShapeMismatch { op: OP, lhs: y.shape().to_vec(), rhs: g.shape().to_vec() });
    }
    let (yd, gd) = (dense(OP, y)?, dense(OP, g)?);
    let n = y.numel();
    let out = super::alloc(&yd.device, yd.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let outer = n / (len * inner);
    let (kind, cfg) = plan(&yd, outer, len, inner);
    let name = format!("softmax_bwd_{kind}_{}", dtype_suffix(yd.dtype));
    let mut args = vec![Arg::U64(outer as u64), Arg::U64(len as u64)];
    if inner != 1 {
        args.push(Arg::U64(inner as u64));
    }
    args.extend([Arg::U32(log as u32), Arg::U64(dptr(&yd)), Arg::U64(dptr(&gd)), Arg::U64(dptr(&out))]);
    // SAFETY: softmax_bwd_{rows,columns}_T(outer, len, [inner,] log, y, g, dx);
    // y and g packed with n elements each (same shape, checked), dx holds n.
    unsafe { launch(&yd.device, "softmax", &name, cfg, OP, &args)? };
    Ok(out)
}

//! 2-d pooling of NCHW planes (kernels/pool.cu): max with argmax indices,
//! average with `count_include_pad`, adaptive average; forward and backward.
//! The op layer checks the geometry. CPU twin: src/backend/cpu/pool.rs.

use super::{accumulator, check_float, dense, dptr, dtype_suffix, grid_for, launch, zeros, Arg, CudaStorage, Operand};
use crate::tensor::DType;
use crate::{Error, Result};
use cudarc::driver::DeviceRepr;

/// Sizes of one pooling sweep; mirrors `PoolGeometry` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// N·C.
    pub planes: u64,
    /// Input height.
    pub h: u64,
    /// Input width.
    pub w: u64,
    /// Output height.
    pub oh: u64,
    /// Output width.
    pub ow: u64,
    /// Window height and width.
    pub kh: u64,
    pub kw: u64,
    /// Strides.
    pub sh: u64,
    pub sw: u64,
    /// Paddings.
    pub ph: u64,
    pub pw: u64,
}

// SAFETY: #[repr(C)] struct of eleven u64, the field order of the C struct in
// kernels/pool.cu (88 bytes, no padding).
unsafe impl DeviceRepr for PoolGeometry {}

impl PoolGeometry {
    fn input_len(&self) -> usize {
        (self.planes * self.h * self.w) as usize
    }
    fn output_len(&self) -> usize {
        (self.planes * self.oh * self.ow) as usize
    }
}

fn check_len(op: &'static str, what: &str, x: &Operand<'_>, len: usize) -> Result<()> {
    if x.numel() != len {
        return Err(Error::bad_shape(op, format!("{what} has {} elements, the geometry needs {len}", x.numel())));
    }
    Ok(())
}

/// Run `{kernel}_{dtype}(g, in, out[, extra])` writing `out_len` elements.
#[allow(clippy::too_many_arguments)]
fn run(
    op: &'static str,
    kernel: &str,
    g: &PoolGeometry,
    x: Operand<'_>,
    in_len: usize,
    out_len: usize,
    extra: Option<&CudaStorage>,
    out: &CudaStorage,
    threads: usize,
) -> Result<()> {
    let xd = dense(op, x)?;
    check_len(op, "input", &x, in_len)?;
    if threads == 0 {
        return Ok(());
    }
    let mut args = vec![Arg::Pool(*g), Arg::U64(dptr(&xd))];
    if let Some(e) = extra {
        args.push(Arg::U64(dptr(e)));
    }
    args.push(Arg::U64(dptr(out)));
    debug_assert!(out.len() >= out_len);
    // SAFETY: {kernel}_T(PoolGeometry, in, [indices,] out) with T the dtype: `in` holds
    // in_len packed elements (checked), `out` out_len, the index buffer (i64) the
    // output's count; every kernel indexes within those sizes for geometry `g`.
    unsafe { launch(&xd.device, "pool", &format!("{kernel}_{}", dtype_suffix(xd.dtype)), grid_for(&xd.device, threads), op, &args) }
}

/// Max pooling: the maxima and the i64 flat in-plane index of each.
pub fn max_pool2d(x: Operand<'_>, g: &PoolGeometry) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "max_pool2d";
    check_float(OP, x.storage)?;
    let dev = &x.storage.device;
    let (values, indices) = (super::alloc(dev, x.dtype(), g.output_len(), OP)?, super::alloc(dev, DType::I64, g.output_len(), OP)?);
    let xd = dense(OP, x)?;
    check_len(OP, "input", &x, g.input_len())?;
    if g.output_len() > 0 {
        let args = [Arg::Pool(*g), Arg::U64(dptr(&xd)), Arg::U64(dptr(&values)), Arg::U64(dptr(&indices))];
        // SAFETY: max_pool2d_fwd_T(PoolGeometry, x, y, idx): x planes·h·w packed (checked),
        // y and idx planes·oh·ow each.
        unsafe { launch(dev, "pool", &format!("max_pool2d_fwd_{}", dtype_suffix(xd.dtype)), grid_for(dev, g.output_len()), OP, &args)? };
    }
    Ok((values, indices))
}

/// Gradient of max pooling: each output gradient added at the input element
/// its index names (indices within `0..h·w`; the op layer checks them).
/// Accumulates in f32 (f64 for f64) with atomics, then casts to the dtype.
pub fn max_pool2d_backward(dy: Operand<'_>, indices: Operand<'_>, g: &PoolGeometry) -> Result<CudaStorage> {
    const OP: &str = "max_pool2d_backward";
    check_float(OP, dy.storage)?;
    if indices.dtype() != DType::I64 {
        return Err(Error::DTypeMismatch { op: OP, lhs: DType::I64, rhs: indices.dtype() });
    }
    check_len(OP, "indices", &indices, g.output_len())?;
    check_len(OP, "gradient", &dy, g.output_len())?;
    let (gd, id) = (dense(OP, dy)?, dense(OP, indices)?);
    let (dev, dtype) = (&gd.device, gd.dtype);
    let acc = zeros(dev, accumulator(dtype), g.input_len(), OP)?;
    if g.output_len() > 0 {
        let args = [Arg::Pool(*g), Arg::U64(dptr(&gd)), Arg::U64(dptr(&id)), Arg::U64(dptr(&acc))];
        // SAFETY: max_pool2d_bwd_T(PoolGeometry, dy, idx, acc): dy and idx planes·oh·ow
        // (checked), every index in 0..h·w (checked by the op layer), acc planes·h·w of
        // the accumulator type (Num<T>::C).
        unsafe { launch(dev, "pool", &format!("max_pool2d_bwd_{}", dtype_suffix(dtype)), grid_for(dev, g.output_len()), OP, &args)? };
    }
    if acc.dtype() == dtype {
        return Ok(acc);
    }
    super::cast(&acc, &crate::tensor::Layout::contiguous(&[g.input_len()]), dtype)
}

/// Average pooling (`count_include_pad`).
pub fn avg_pool2d(x: Operand<'_>, g: &PoolGeometry) -> Result<CudaStorage> {
    const OP: &str = "avg_pool2d";
    check_float(OP, x.storage)?;
    let out = super::alloc(&x.storage.device, x.dtype(), g.output_len(), OP)?;
    run(OP, "avg_pool2d_fwd", g, x, g.input_len(), g.output_len(), None, &out, g.output_len())?;
    Ok(out)
}

/// Gradient of [`avg_pool2d`].
pub fn avg_pool2d_backward(dy: Operand<'_>, g: &PoolGeometry) -> Result<CudaStorage> {
    const OP: &str = "avg_pool2d_backward";
    check_float(OP, dy.storage)?;
    let out = super::alloc(&dy.storage.device, dy.dtype(), g.input_len(), OP)?;
    run(OP, "avg_pool2d_bwd", g, dy, g.output_len(), g.input_len(), None, &out, g.input_len())?;
    Ok(out)
}

/// Adaptive average pooling to `g.oh × g.ow` (window fields unused).
pub fn adaptive_avg_pool2d(x: Operand<'_>, g: &PoolGeometry) -> Result<CudaStorage> {
    const OP: &str = "adaptive_avg_pool2d";
    check_float(OP, x.storage)?;
    let out = super::alloc(&x.storage.device, x.dtype(), g.output_len(), OP)?;
    run(OP, "adaptive_avg_pool2d_fwd", g, x, g.input_len(), g.output_len(), None, &out, g.output_len())?;
    Ok(out)
}

/// Gradient of [`adaptive_avg_pool2d`].
pub fn adaptive_avg_pool2d_backward(dy: Operand<'_>, g: &PoolGeometry) -> Result<CudaStorage> {
    const OP: &str = "adaptive_avg_pool2d_backward";
    check_float(OP, dy.storage)?;
    let out = super::alloc(&dy.storage.device, dy.dtype(), g.input_len(), OP)?;
    run(OP, "adaptive_avg_pool2d_bwd", g, dy, g.output_len(), g.input_len(), None, &out, g.input_len())?;
    Ok(out)
}

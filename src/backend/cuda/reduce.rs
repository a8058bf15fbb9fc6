//! Reductions on the GPU (kernels/reduce.cu). The view is permuted so the
//! reduced dims come last — a layout change, no copy — and one block reduces
//! each row. CPU twin: src/backend/cpu/reduce.rs.

use super::copy::check_extent;
use super::device::CudaDevice;
use super::{alloc, driver_error, dtype_suffix, unsupported_dtype, CudaStorage, StridedLayout, BLOCK};
use crate::backend::op::ReduceOp;
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The view with `dims` moved last, its row count and its row length.
fn rows_view(op: &'static str, l: &Layout, dims: &[usize]) -> Result<(Layout, usize, usize)> {
    if let Some(&d) = dims.iter().find(|&&d| d >= l.rank()) {
        return Err(Error::bad_shape(op, format!("dimension {d} out of range for rank {}", l.rank())));
    }
    let mut perm: Vec<usize> = (0..l.rank()).filter(|d| !dims.contains(d)).collect();
    let rows: usize = perm.iter().map(|&d| l.shape()[d]).product();
    perm.extend_from_slice(dims);
    if perm.len() != l.rank() {
        return Err(Error::bad_shape(op, format!("repeated dimension in {dims:?}")));
    }
    let len: usize = dims.iter().map(|&d| l.shape()[d]).product();
    Ok((l.permute(&perm)?, rows, len))
}

/// One block per row (grid-stride over rows); a block no wider than the row
/// needs, in whole warps.
fn rows_config(dev: &CudaDevice, rows: usize, len: usize) -> LaunchConfig {
    let threads = len.next_power_of_two().clamp(32, BLOCK as usize) as u32;
    let grid = rows.min(dev.multiprocessors as usize * 32).max(1) as u32;
    LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

fn check_float(op: &'static str, s: &CudaStorage) -> Result<()> {
    match s.dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(unsupported_dtype(op, other, s.ordinal())),
    }
}

/// Reduce the view `l` of `s` over `dims` (sorted, distinct); the output holds
/// the kept dims in order, contiguous. An empty reduction gives 0 / -inf / +inf.
pub fn reduce(op: ReduceOp, s: &CudaStorage, l: &Layout, dims: &[usize]) -> Result<CudaStorage> {
    const OP: &str = "reduce";
    check_float(OP, s)?;
    check_extent(OP, l, s)?;
    let (view, rows, len) = rows_view(OP, l, dims)?;
    let dev = &s.device;
    let mut out = alloc(dev, s.dtype, rows, OP)?;
    if rows == 0 {
        return Ok(out);
    }
    let f = dev.function("reduce", &format!("reduce_{}", dtype_suffix(s.dtype)))?;
    let layout = StridedLayout::of(OP, &view)?;
    let code: u32 = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    };
    let (rows64, len64) = (rows as u64, len as u64);
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&code).arg(&rows64).arg(&len64).arg(&layout).arg(&*s.buf).arg(&mut *out.buf);
    // SAFETY: reduce_T(u32, u64 rows, u64 len, StridedLayout, const T*, T*) with
    // T the storage dtype; the permuted view has rows*len elements inside the
    // storage (checked), the output `rows`; block size is a multiple of 32 and
    // at most BLOCK, as the kernel's shared arrays and shuffles assume.
    unsafe { launch.launch(rows_config(dev, rows, len)) }.map_err(|e| driver_error(OP, e))?;
    Ok(out)
}

/// Index (i64) of the largest (or smallest) element along `dim`; first wins ties.
pub fn arg_reduce(s: &CudaStorage, l: &Layout, dim: usize, largest: bool) -> Result<CudaStorage> {
    const OP: &str = "argmax/argmin";
    check_float(OP, s)?;
    check_extent(OP, l, s)?;
    let (view, rows, len) = rows_view(OP, l, &[dim])?;
    if len == 0 && rows > 0 {
        return Err(Error::bad_shape(OP, format!("dimension {dim} of {:?} is empty", l.shape())));
    }
    let dev = &s.device;
    let mut out = alloc(dev, DType::I64, rows, OP)?;
    if rows == 0 {
        return Ok(out);
    }
    let f = dev.function("reduce", &format!("arg_reduce_{}", dtype_suffix(s.dtype)))?;
    let layout = StridedLayout::of(OP, &view)?;
    let largest = largest as u32;
    let (rows64, len64) = (rows as u64, len as u64);
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&largest).arg(&rows64).arg(&len64).arg(&layout).arg(&*s.buf).arg(&mut *out.buf);
    // SAFETY: arg_reduce_T(u32, u64, u64, StridedLayout, const T*, i64*) with T
    // the storage dtype; view inside the storage (checked); `rows` i64 outputs;
    // block size a multiple of 32, at most BLOCK.
    unsafe { launch.launch(rows_config(dev, rows, len)) }.map_err(|e| driver_error(OP, e))?;
    Ok(out)
}

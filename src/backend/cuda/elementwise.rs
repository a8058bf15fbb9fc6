//! Elementwise ops on the GPU (kernels/elementwise.cu): unary maps and their
//! derivatives, broadcasting binary maps, comparisons. CPU twin:
//! src/backend/cpu/elementwise.rs. f16/bf16 compute in f32, f64 in f64.

use super::copy::check_extent;
use super::{alloc, driver_error, dtype_suffix, grid_for, same_device, unsupported_dtype, CudaStorage, StridedLayout};
use crate::backend::op::{BinaryOp, CmpOp, UnaryOp};
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::PushKernelArg;

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// The op code of kernels/elementwise.cu (`U_*`) and the op's two scalar parameters.
fn unary_code(op: UnaryOp) -> (u32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Square => (6, 0.0, 0.0),
        UnaryOp::Recip => (7, 0.0, 0.0),
        UnaryOp::Sin => (8, 0.0, 0.0),
        UnaryOp::Cos => (9, 0.0, 0.0),
        UnaryOp::Sigmoid => (10, 0.0, 0.0),
        UnaryOp::Tanh => (11, 0.0, 0.0),
        UnaryOp::Relu => (12, 0.0, 0.0),
        UnaryOp::Silu => (13, 0.0, 0.0),
        UnaryOp::Gelu => (14, 0.0, 0.0),
        UnaryOp::GeluTanh => (15, 0.0, 0.0),
        UnaryOp::QuickGelu => (16, 0.0, 0.0),
        UnaryOp::Affine { mul, add } => (17, mul, add),
        UnaryOp::Powf(p) => (18, p, 0.0),
        UnaryOp::Clamp { min, max } => (19, min, max),
        UnaryOp::LeakyRelu(s) => (20, s, 0.0),
    }
}

/// The op code of kernels/elementwise.cu (`B_*`).
fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Pow => 4,
        BinaryOp::Maximum => 5,
        BinaryOp::Minimum => 6,
    }
}

/// The op code of kernels/elementwise.cu (`C_*`).
fn compare_code(op: CmpOp) -> u32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
        CmpOp::Lt => 2,
        CmpOp::Le => 3,
        CmpOp::Gt => 4,
        CmpOp::Ge => 5,
    }
}

/// y = f(x) over the view `l` of `s`, as a new contiguous buffer.
pub fn unary(op: UnaryOp, s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    if !is_float(s.dtype) {
        return Err(unsupported_dtype(op.name(), s.dtype, s.ordinal()));
    }
    check_extent(op.name(), l, s)?;
    let dev = &s.device;
    let n = l.numel();
    let mut out = alloc(dev, s.dtype, n, op.name())?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("elementwise", &format!("unary_{}", dtype_suffix(s.dtype)))?;
    let layout = StridedLayout::of(op.name(), l)?;
    let (code, p0, p1) = unary_code(op);
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&code).arg(&p0).arg(&p1).arg(&layout).arg(&*s.buf).arg(&mut *out.buf);
    // SAFETY: unary_T(u64 n, u32 op, double p0, double p1, StridedLayout, const T*, T*)
    // with T the storage dtype; input offsets < s.len (checked), n outputs allocated.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error(op.name(), e))?;
    Ok(out)
}

/// dx = g * f'(x) given y = f(x); all three views have x's shape. Contiguous output.
pub fn unary_backward(
    op: UnaryOp,
    x: &CudaStorage,
    lx: &Layout,
    y: &CudaStorage,
    ly: &Layout,
    g: &CudaStorage,
    lg: &Layout,
) -> Result<CudaStorage> {
    const OP: &str = "unary_backward";
    same_device(OP, x, y)?;
    same_device(OP, x, g)?;
    for other in [y.dtype, g.dtype] {
        if other != x.dtype {
            return Err(Error::DTypeMismatch { op: OP, lhs: x.dtype, rhs: other });
        }
    }
    if !is_float(x.dtype) {
        return Err(unsupported_dtype(OP, x.dtype, x.ordinal()));
    }
    check_extent(OP, lx, x)?;
    check_extent(OP, ly, y)?;
    check_extent(OP, lg, g)?;
    let [layout_x, layout_y, layout_g] = StridedLayout::joint(OP, [lx, ly, lg])?;
    let dev = &x.device;
    let n = lx.numel();
    let mut out = alloc(dev, x.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("elementwise", &format!("unary_backward_{}", dtype_suffix(x.dtype)))?;
    let (code, p0, p1) = unary_code(op);
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&code).arg(&p0).arg(&p1);
    launch.arg(&layout_x).arg(&*x.buf).arg(&layout_y).arg(&*y.buf).arg(&layout_g).arg(&*g.buf).arg(&mut *out.buf);
    // SAFETY: unary_backward_T(u64, u32, double, double, StridedLayout, const T*,
    // StridedLayout, const T*, StridedLayout, const T*, T*) with T the common
    // dtype (checked); each view stays inside its storage (checked); n outputs.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error(OP, e))?;
    Ok(out)
}

/// Views `la`, `lb` broadcast to `shape`, merged jointly, with their storages checked.
fn broadcast_pair(
    op: &'static str,
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    shape: &[usize],
) -> Result<[StridedLayout; 2]> {
    same_device(op, a, b)?;
    if a.dtype != b.dtype {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype, rhs: b.dtype });
    }
    check_extent(op, la, a)?;
    check_extent(op, lb, b)?;
    let la = la.broadcast_to(shape)?;
    let lb = lb.broadcast_to(shape)?;
    StridedLayout::joint(op, [&la, &lb])
}

/// `op(a, b)` with both views broadcast to `shape`; contiguous output.
pub fn binary(op: BinaryOp, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout, shape: &[usize]) -> Result<CudaStorage> {
    let [layout_a, layout_b] = broadcast_pair(op.name(), a, la, b, lb, shape)?;
    if !is_float(a.dtype) {
        return Err(unsupported_dtype(op.name(), a.dtype, a.ordinal()));
    }
    let dev = &a.device;
    let n: usize = shape.iter().product();
    let mut out = alloc(dev, a.dtype, n, op.name())?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("elementwise", &format!("binary_{}", dtype_suffix(a.dtype)))?;
    let code = binary_code(op);
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&code).arg(&layout_a).arg(&*a.buf).arg(&layout_b).arg(&*b.buf).arg(&mut *out.buf);
    // SAFETY: binary_T(u64, u32, StridedLayout, const T*, StridedLayout, const T*, T*)
    // with T the common dtype (checked); broadcast views stay inside their storages; n outputs.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error(op.name(), e))?;
    Ok(out)
}

/// `op(a, b)` as a u8 mask (1 = true) with broadcasting; every dtype.
pub fn compare(op: CmpOp, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout, shape: &[usize]) -> Result<CudaStorage> {
    const OP: &str = "compare";
    let [layout_a, layout_b] = broadcast_pair(OP, a, la, b, lb, shape)?;
    let dev = &a.device;
    let n: usize = shape.iter().product();
    let mut out = alloc(dev, DType::U8, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("elementwise", &format!("compare_{}", dtype_suffix(a.dtype)))?;
    let code = compare_code(op);
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&code).arg(&layout_a).arg(&*a.buf).arg(&layout_b).arg(&*b.buf).arg(&mut *out.buf);
    // SAFETY: compare_T(u64, u32, StridedLayout, const T*, StridedLayout, const T*, u8*)
    // with T the common dtype (checked); views inside their storages; n u8 outputs.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error(OP, e))?;
    Ok(out)
}

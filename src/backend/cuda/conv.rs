//! 2-d convolution over NCHW tensors (kernels/conv.cu): forward,
//! backward-data and backward-weight as implicit GEMM (operands gathered from
//! the activations inside the kernel, no im2col buffer), with a tensor-core
//! kernel (`mma.sync`, f32 accumulation) for f16/bf16 on sm_80 and newer and a
//! portable shared-memory tile kernel for everything else. A 1×1, stride-1,
//! unpadded, ungrouped convolution is a plain batched GEMM and goes to cuBLAS
//! (forward and backward-data). The op layer checks the geometry; the
//! operands may be any strided views (they are packed first).
//! CPU twin: src/backend/cpu/conv.rs.

use super::device::CudaDevice;
use super::{check_float, dense, dptr, dptr_opt, dtype_suffix, grid_for, rows_config, same_all, CudaStorage, Operand};
use crate::backend::cpu::conv::Conv2dGeometry;
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::atomic::{AtomicBool, Ordering};

/// Output tile of both GEMM kernels (kernels/conv.cu TILE_M, TILE_N).
const TILE: usize = 64;
/// Threads of the portable tile kernel (GEMM_THREADS).
const GEMM_THREADS: u32 = 256;
/// Threads of the tensor-core tile kernel (MMA_THREADS).
const MMA_THREADS: u32 = 128;

/// Whether f16/bf16 convolutions may use the tensor-core kernel (on by default).
static TENSOR_CORES: AtomicBool = AtomicBool::new(true);

/// Allow or forbid the tensor-core convolution kernel for f16/bf16 (the
/// parity tests run both kernels; the default is allowed). Devices older
/// than sm_80 never use it.
pub fn set_conv_tensor_cores(enabled: bool) {
    TENSOR_CORES.store(enabled, Ordering::Relaxed);
}

/// Every size of one convolution; mirrors `ConvGeometry` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConvGeometry {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    kernel_h: u32,
    kernel_w: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    groups: u32,
}

// SAFETY: #[repr(C)] struct of sixteen u32, the field order of the C struct in
// kernels/conv.cu (64 bytes, no padding).
unsafe impl DeviceRepr for ConvGeometry {}

/// Which of the three GEMMs a launch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Mode {
    fn kernel_suffix(self) -> &'static str {
        match self {
            Mode::Forward => "fwd",
            Mode::BackwardData => "bwd_data",
            Mode::BackwardWeight => "bwd_weight",
        }
    }
}

/// The kernel geometry, or an error when a size does not fit the kernels' 32-bit index arithmetic.
fn geometry(op: &'static str, g: &Conv2dGeometry) -> Result<ConvGeometry> {
    let too_big = || Error::bad_shape(op, format!("the CUDA convolution kernels index with 32 bits; {g:?} is too large"));
    let u = |v: usize| u32::try_from(v).map_err(|_| too_big());
    // The GEMM sizes (and per-image plane offsets) must fit as well.
    let n_fwd = g.batch * g.out_size[0] * g.out_size[1];
    let n_data = g.batch * g.in_size[0] * g.in_size[1];
    if u32::try_from(n_fwd.max(n_data).max(g.col_rows()).max(g.out_per_group() * g.kernel[0] * g.kernel[1])).is_err() {
        return Err(too_big());
    }
    Ok(ConvGeometry {
        batch: u(g.batch)?,
        in_channels: u(g.in_channels)?,
        in_h: u(g.in_size[0])?,
        in_w: u(g.in_size[1])?,
        out_channels: u(g.out_channels)?,
        kernel_h: u(g.kernel[0])?,
        kernel_w: u(g.kernel[1])?,
        out_h: u(g.out_size[0])?,
        out_w: u(g.out_size[1])?,
        stride_h: u(g.stride[0])?,
        stride_w: u(g.stride[1])?,
        pad_h: u(g.padding[0])?,
        pad_w: u(g.padding[1])?,
        dil_h: u(g.dilation[0])?,
        dil_w: u(g.dilation[1])?,
        groups: u(g.groups)?,
    })
}

/// (M, N, K) of one group's GEMM in `mode` (the kernels' `gemm_dims`).
fn gemm_dims(g: &Conv2dGeometry, mode: Mode) -> (usize, usize, usize) {
    let taps = g.kernel[0] * g.kernel[1];
    match mode {
        Mode::Forward => (g.out_per_group(), g.batch * g.out_size[0] * g.out_size[1], g.in_per_group() * taps),
        Mode::BackwardData => (g.in_per_group(), g.batch * g.in_size[0] * g.in_size[1], g.out_per_group() * taps),
        Mode::BackwardWeight => (g.out_per_group(), g.in_per_group() * taps, g.batch * g.out_size[0] * g.out_size[1]),
    }
}

/// Whether this launch may use the tensor-core kernel.
fn use_tensor_cores(dev: &CudaDevice, dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16) && dev.compute_capability.0 >= 8 && TENSOR_CORES.load(Ordering::Relaxed)
}

/// Launch one implicit-GEMM kernel writing every element of `out`.
fn launch_gemm(
    op: &'static str,
    mode: Mode,
    g: &Conv2dGeometry,
    a: &CudaStorage,
    b: &CudaStorage,
    bias: Option<&CudaStorage>,
    out: &CudaStorage,
) -> Result<()> {
    let geom = geometry(op, g)?;
    let (m, n, _) = gemm_dims(g, mode);
    if m == 0 || n == 0 || g.groups == 0 {
        return Ok(());
    }
    let dev = &a.device;
    let tensor_cores = use_tensor_cores(dev, a.dtype);
    let family = if tensor_cores { "mma" } else { "gemm" };
    let name = format!("conv2d_{family}_{}_{}", mode.kernel_suffix(), dtype_suffix(a.dtype));
    let grid_y = u32::try_from(m.div_ceil(TILE)).ok().filter(|&y| y <= 65_535);
    let Some(grid_y) = grid_y else {
        return Err(Error::bad_shape(op, format!("{m} rows per group exceed the CUDA grid ({g:?})")));
    };
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(TILE) as u32, grid_y, g.groups as u32),
        block_dim: (if tensor_cores { MMA_THREADS } else { GEMM_THREADS }, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = dev.function("conv", &name)?;
    let (pa, pb, pbias, pout) = (dptr(a), dptr(b), dptr_opt(bias), dptr(out));
    let mut builder = dev.stream.launch_builder(&f);
    builder.arg(&geom).arg(&pa).arg(&pb).arg(&pbias).arg(&pout);
    // SAFETY: conv2d_{gemm,mma}_{mode}_T(ConvGeometry, a, b, bias, out) with T the
    // dtype of every buffer (checked by the callers); the callers pass packed
    // operands of exactly the sizes `geom` implies (weight C_out·C_in/groups·kh·kw,
    // activations N·C·H·W, gradients N·C_out·H_out·W_out), `out` holds the
    // mode's output, `bias` (forward only) C_out elements or is 0. The grid
    // covers (N tiles, M tiles, groups) with the block size the kernel was built for.
    unsafe { builder.launch(cfg) }.map_err(|e| super::driver_error(op, e))?;
    Ok(())
}

fn check_numel(op: &'static str, what: &str, x: &Operand<'_>, want: usize) -> Result<()> {
    if x.numel() != want {
        return Err(Error::bad_shape(op, format!("{what} has {} elements, the convolution {want}", x.numel())));
    }
    Ok(())
}

fn input_len(g: &Conv2dGeometry) -> usize {
    g.batch * g.in_channels * g.in_size[0] * g.in_size[1]
}
fn output_len(g: &Conv2dGeometry) -> usize {
    g.batch * g.out_channels * g.out_size[0] * g.out_size[1]
}
fn weight_len(g: &Conv2dGeometry) -> usize {
    g.out_channels * g.col_rows()
}

/// `x[b]` as a `[batch, rows, cols]` GEMM operand over a packed buffer.
fn planes(batch: usize, rows: usize, cols: usize) -> Layout {
    Layout::contiguous(&[batch, rows, cols])
}

/// `w` `[C_out, C_in]` repeated over the batch (stride 0), transposed when `transpose`.
fn pointwise_weight(batch: usize, g: &Conv2dGeometry, transpose: bool) -> Layout {
    let (co, ci) = (g.out_channels, g.in_channels);
    if transpose {
        Layout::new(vec![batch, ci, co], vec![0, 1, ci], 0)
    } else {
        Layout::new(vec![batch, co, ci], vec![0, ci, 1], 0)
    }
}

/// Forward convolution: `x` `[N, C_in, H, W]`, `w` `[C_out, C_in/groups, kh, kw]`,
/// optional `bias` `[C_out]` → contiguous `[N, C_out, H_out, W_out]`.
pub fn conv2d(x: Operand<'_>, w: Operand<'_>, bias: Option<Operand<'_>>, g: &Conv2dGeometry) -> Result<CudaStorage> {
    const OP: &str = "conv2d";
    check_float(OP, x.storage)?;
    same_all(OP, x.storage, &[Some(w.storage), bias.map(|b| b.storage)])?;
    check_numel(OP, "input", &x, input_len(g))?;
    check_numel(OP, "weight", &w, weight_len(g))?;
    if let Some(b) = &bias {
        check_numel(OP, "bias", b, g.out_channels)?;
    }
    let (xd, wd, bd) = (dense(OP, x)?, dense(OP, w)?, super::dense_opt(OP, bias)?);
    let dev = xd.device.clone();
    if g.is_pointwise() && g.groups == 1 && g.batch > 0 {
        let plane = g.in_size[0] * g.in_size[1];
        let y = super::matmul(
            &wd,
            &pointwise_weight(g.batch, g, false),
            &xd,
            &planes(g.batch, g.in_channels, plane),
            &[g.batch],
            g.out_channels,
            g.in_channels,
            plane,
        )?;
        if let Some(bd) = &bd {
            let n = output_len(g);
            if n > 0 {
                let f = dev.function("conv", &format!("conv2d_bias_add_{}", dtype_suffix(xd.dtype)))?;
                let (n64, plane64, ch64, pb, py) = (n as u64, plane as u64, g.out_channels as u64, dptr(bd), dptr(&y));
                let mut builder = dev.stream.launch_builder(&f);
                builder.arg(&n64).arg(&plane64).arg(&ch64).arg(&pb).arg(&py);
                // SAFETY: conv2d_bias_add_T(n, plane, channels, bias, y): y is the packed
                // [N, C_out, plane] output (n elements), bias holds C_out (checked).
                unsafe { builder.launch(grid_for(&dev, n)) }.map_err(|e| super::driver_error(OP, e))?;
            }
        }
        return Ok(y);
    }
    let out = super::alloc(&dev, xd.dtype, output_len(g), OP)?;
    launch_gemm(OP, Mode::Forward, g, &wd, &xd, bd.as_deref(), &out)?;
    Ok(out)
}

/// Backward-data: `dy` `[N, C_out, H_out, W_out]` and `w` → contiguous `dx` `[N, C_in, H, W]`.
pub fn conv2d_backward_data(dy: Operand<'_>, w: Operand<'_>, g: &Conv2dGeometry) -> Result<CudaStorage> {
    const OP: &str = "conv2d_backward_input";
    check_float(OP, dy.storage)?;
    same_all(OP, dy.storage, &[Some(w.storage)])?;
    check_numel(OP, "grad_output", &dy, output_len(g))?;
    check_numel(OP, "weight", &w, weight_len(g))?;
    let (dyd, wd) = (dense(OP, dy)?, dense(OP, w)?);
    let dev = dyd.device.clone();
    if g.is_pointwise() && g.groups == 1 && g.batch > 0 {
        let plane = g.in_size[0] * g.in_size[1];
        let wt = pointwise_weight(g.batch, g, true);
        return super::matmul(&wd, &wt, &dyd, &planes(g.batch, g.out_channels, plane), &[g.batch], g.in_channels, g.out_channels, plane);
    }
    // Input pixels no tap reaches (stride > kernel span) must come out 0: the
    // kernel writes every element of dx, reading those taps as 0.
    let out = super::alloc(&dev, dyd.dtype, input_len(g), OP)?;
    launch_gemm(OP, Mode::BackwardData, g, &wd, &dyd, None, &out)?;
    Ok(out)
}

/// Backward-weight: `x` `[N, C_in, H, W]` and `dy` → contiguous `dw` `[C_out, C_in/groups, kh, kw]`.
pub fn conv2d_backward_weight(x: Operand<'_>, dy: Operand<'_>, g: &Conv2dGeometry) -> Result<CudaStorage> {
    const OP: &str = "conv2d_backward_weight";
    check_float(OP, x.storage)?;
    same_all(OP, x.storage, &[Some(dy.storage)])?;
    check_numel(OP, "input", &x, input_len(g))?;
    check_numel(OP, "grad_output", &dy, output_len(g))?;
    let (xd, dyd) = (dense(OP, x)?, dense(OP, dy)?);
    let dev = xd.device.clone();
    if g.batch * g.out_size[0] * g.out_size[1] == 0 {
        return super::zeros(&dev, xd.dtype, weight_len(g), OP);
    }
    let out = super::alloc(&dev, xd.dtype, weight_len(g), OP)?;
    launch_gemm(OP, Mode::BackwardWeight, g, &dyd, &xd, None, &out)?;
    Ok(out)
}

/// Bias gradient: `dy` `[batch, channels, plane]` summed over batch and plane → `[channels]`.
pub fn conv2d_backward_bias(dy: Operand<'_>, batch: usize, channels: usize, plane: usize) -> Result<CudaStorage> {
    const OP: &str = "conv2d_backward_bias";
    check_float(OP, dy.storage)?;
    check_numel(OP, "grad_output", &dy, batch * channels * plane)?;
    let dyd = dense(OP, dy)?;
    let dev = dyd.device.clone();
    if channels == 0 {
        return super::alloc(&dev, dyd.dtype, 0, OP);
    }
    if batch * plane == 0 {
        return super::zeros(&dev, dyd.dtype, channels, OP);
    }
    let out = super::alloc(&dev, dyd.dtype, channels, OP)?;
    let f = dev.function("conv", &format!("conv2d_bias_grad_{}", dtype_suffix(dyd.dtype)))?;
    let (b64, c64, p64, pdy, pdb) = (batch as u64, channels as u64, plane as u64, dptr(&dyd), dptr(&out));
    let mut builder = dev.stream.launch_builder(&f);
    builder.arg(&b64).arg(&c64).arg(&p64).arg(&pdy).arg(&pdb);
    // SAFETY: conv2d_bias_grad_T(batch, channels, plane, dy, db): dy is packed with
    // batch·channels·plane elements (checked), db holds `channels`; the block
    // is whole warps no wider than BLOCK, as block_sum needs.
    unsafe { builder.launch(rows_config(&dev, channels, batch * plane)) }.map_err(|e| super::driver_error(OP, e))?;
    Ok(out)
}

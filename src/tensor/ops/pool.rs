//! 2-d pooling over NCHW tensors with PyTorch semantics (`F.max_pool2d`,
//! `F.avg_pool2d`, `F.adaptive_avg_pool2d`, `ceil_mode=False`), and the
//! backward kernels their rules call.

use super::with_contiguous;
use super::{cuda_tensor, with_cuda};
use crate::autograd::rules::pool::{AdaptiveAvgPool2dBackward, AvgPool2dBackward, MaxPool2dBackward};
use crate::backend::cpu;
use crate::backend::cpu::pool::Pool2dGeometry;
use crate::backend::cuda;
use crate::tensor::{DType, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// `[N, C, H, W]` or an error naming `op`.
fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| Error::bad_shape(op, format!("input must be [N, C, H, W], got {shape:?}")))
}

/// Check a pooling window against the input shape and work out the output size.
fn pool_geometry(op: &'static str, shape: &[usize], kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Pool2dGeometry> {
    let [n, c, h, w] = nchw(op, shape)?;
    if kernel.contains(&0) || stride.contains(&0) {
        return Err(Error::bad_shape(op, format!("kernel {kernel:?} and stride {stride:?} must be positive")));
    }
    if (0..2).any(|a| 2 * padding[a] > kernel[a]) {
        return Err(Error::bad_shape(op, format!("padding {padding:?} must be at most half of the kernel {kernel:?}")));
    }
    let out_len = |a: usize| Pool2dGeometry::output_len(shape[2 + a], kernel[a], stride[a], padding[a]);
    let (Some(out_h), Some(out_w)) = (out_len(0), out_len(1)) else {
        return Err(Error::bad_shape(op, format!("kernel {kernel:?} is larger than the input {shape:?} with padding {padding:?}")));
    };
    Ok(Pool2dGeometry { planes: n * c, in_size: [h, w], out_size: [out_h, out_w], kernel, stride, padding })
}

/// `grad_output` must be `[N, C, out_h, out_w]` for an input of `input_shape`.
fn check_grad_output(op: &'static str, grad_output: &Tensor, input_shape: &[usize], out_size: [usize; 2]) -> Result<()> {
    let want = [input_shape[0], input_shape[1], out_size[0], out_size[1]];
    if grad_output.shape() != want {
        return Err(Error::ShapeMismatch { op, lhs: grad_output.shape().to_vec(), rhs: want.to_vec() });
    }
    Ok(())
}

/// The CUDA kernels' copy of a pooling geometry.
fn cuda_geometry(g: &Pool2dGeometry) -> cuda::PoolGeometry {
    let u = |v: usize| v as u64;
    cuda::PoolGeometry {
        planes: u(g.planes),
        h: u(g.in_size[0]),
        w: u(g.in_size[1]),
        oh: u(g.out_size[0]),
        ow: u(g.out_size[1]),
        kh: u(g.kernel[0]),
        kw: u(g.kernel[1]),
        sh: u(g.stride[0]),
        sw: u(g.stride[1]),
        ph: u(g.padding[0]),
        pw: u(g.padding[1]),
    }
}

/// A geometry of planes only (adaptive pooling and max-pool backward use no window).
fn plane_geometry(planes: usize, in_size: [usize; 2], out_size: [usize; 2]) -> cuda::PoolGeometry {
    cuda_geometry(&Pool2dGeometry { planes, in_size, out_size, kernel: [1, 1], stride: [1, 1], padding: [0, 0] })
}

impl Tensor {
    /// Max pooling of `[N, C, H, W]` over `kernel` windows moved by `stride`,
    /// with implicit `-inf` padding (`F.max_pool2d`; padding at most half the kernel).
    /// The gradient goes to the first maximum of each window.
    pub fn max_pool2d(&self, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Tensor> {
        let records = crate::autograd::is_grad_enabled() && self.requires_grad();
        if records || self.device() != Device::Cpu {
            return Ok(self.max_pool2d_with_indices(kernel, stride, padding)?.0);
        }
        // Nothing will backpropagate through it: skip the indices.
        let g = pool_geometry("max_pool2d", self.shape(), kernel, stride, padding)?;
        let out_shape = [self.shape()[0], self.shape()[1], g.out_size[0], g.out_size[1]];
        dispatch_float!(self.dtype(), "max_pool2d", |T| {
            Ok(Tensor::from_cpu_vec(with_contiguous::<T, _>(self, |x| cpu::pool::max_pool2d_values(x, &g))?, &out_shape))
        })
    }

    /// [`Tensor::max_pool2d`] that also returns, as an i64 tensor of the output
    /// shape, the flat index within its `H×W` plane of each chosen element
    /// (`return_indices=True`).
    pub fn max_pool2d_with_indices(&self, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<(Tensor, Tensor)> {
        let g = pool_geometry("max_pool2d", self.shape(), kernel, stride, padding)?;
        let out_shape = [self.shape()[0], self.shape()[1], g.out_size[0], g.out_size[1]];
        let (out, indices) = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), "max_pool2d", |T| {
                let (values, indices) = with_contiguous::<T, _>(self, |x| cpu::pool::max_pool2d_fwd(x, &g))?;
                (Tensor::from_cpu_vec(values, &out_shape), Tensor::from_cpu_vec(indices, &out_shape))
            }),
            Device::Cuda(_) => with_cuda("max_pool2d", &[Some(self)], |o| {
                let (values, indices) = cuda::max_pool2d(o[0].expect("given"), &cuda_geometry(&g))?;
                Ok((cuda_tensor(values, &out_shape), cuda_tensor(indices, &out_shape)))
            })?,
        };
        let out = out.recorded(&[self], || Arc::new(MaxPool2dBackward { input: self.clone(), indices: indices.clone() }));
        Ok((out, indices))
    }

    /// Average pooling of `[N, C, H, W]` over `kernel` windows moved by
    /// `stride`, with zero padding counted in the divisor (`F.avg_pool2d`
    /// with its defaults `count_include_pad=True`, `ceil_mode=False`).
    pub fn avg_pool2d(&self, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Tensor> {
        let g = pool_geometry("avg_pool2d", self.shape(), kernel, stride, padding)?;
        let out_shape = [self.shape()[0], self.shape()[1], g.out_size[0], g.out_size[1]];
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), "avg_pool2d", |T| {
                Tensor::from_cpu_vec(with_contiguous::<T, _>(self, |x| cpu::pool::avg_pool2d_fwd(x, &g))?, &out_shape)
            }),
            Device::Cuda(_) => with_cuda("avg_pool2d", &[Some(self)], |o| {
                Ok(cuda_tensor(cuda::avg_pool2d(o[0].expect("given"), &cuda_geometry(&g))?, &out_shape))
            })?,
        };
        Ok(out.recorded(&[self], || Arc::new(AvgPool2dBackward { input: self.clone(), kernel, stride, padding })))
    }

    /// Adaptive average pooling of `[N, C, H, W]` to `[N, C, out_h, out_w]`:
    /// output `i` averages rows `floor(i·H/out_h) .. ceil((i+1)·H/out_h)`,
    /// likewise for columns (`F.adaptive_avg_pool2d`).
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Result<Tensor> {
        let [n, c, h, w] = nchw("adaptive_avg_pool2d", self.shape())?;
        if h == 0 || w == 0 || output_size.contains(&0) {
            return Err(Error::bad_shape(
                "adaptive_avg_pool2d",
                format!("input {:?} and output size {output_size:?} need non-empty planes", self.shape()),
            ));
        }
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), "adaptive_avg_pool2d", |T| {
                let y = with_contiguous::<T, _>(self, |x| cpu::pool::adaptive_avg_pool2d_fwd(x, [h, w], output_size))?;
                Tensor::from_cpu_vec(y, &[n, c, output_size[0], output_size[1]])
            }),
            Device::Cuda(_) => with_cuda("adaptive_avg_pool2d", &[Some(self)], |o| {
                let g = plane_geometry(n * c, [h, w], output_size);
                Ok(cuda_tensor(cuda::adaptive_avg_pool2d(o[0].expect("given"), &g)?, &[n, c, output_size[0], output_size[1]]))
            })?,
        };
        Ok(out.recorded(&[self], || Arc::new(AdaptiveAvgPool2dBackward { input: self.clone() })))
    }
}

/// Gradient of max pooling: `grad_output` routed to the input elements named by
/// `indices` (from [`Tensor::max_pool2d_with_indices`]), for an input of
/// `input_shape`. Not recorded on the tape.
pub fn max_pool2d_backward(grad_output: &Tensor, indices: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let op = "max_pool2d_backward";
    let [n, c, h, w] = nchw(op, input_shape)?;
    let out = nchw(op, grad_output.shape())?;
    check_grad_output(op, grad_output, input_shape, [out[2], out[3]])?;
    if indices.shape() != grad_output.shape() || indices.dtype() != DType::I64 {
        return Err(Error::bad_shape(
            op,
            format!("indices must be i64 of shape {:?}, got {:?} {:?}", grad_output.shape(), indices.dtype(), indices.shape()),
        ));
    }
    match grad_output.device() {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let idx = indices.cpu_vec::<i64>()?;
            if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as usize >= h * w) {
                return Err(Error::bad_shape(op, format!("index {bad} is outside the {h}×{w} input plane")));
            }
            let dx = with_contiguous::<T, _>(grad_output, |dy| cpu::pool::max_pool2d_bwd(dy, &idx, n * c, h * w))?;
            Ok(Tensor::from_cpu_vec(dx, input_shape))
        }),
        Device::Cuda(_) => {
            let idx = indices.to_device(Device::Cpu)?.cpu_vec::<i64>()?;
            if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as usize >= h * w) {
                return Err(Error::bad_shape(op, format!("index {bad} is outside the {h}×{w} input plane")));
            }
            let g = plane_geometry(n * c, [h, w], [out[2], out[3]]);
            with_cuda(op, &[Some(grad_output), Some(indices)], |o| {
                Ok(cuda_tensor(cuda::max_pool2d_backward(o[0].expect("given"), o[1].expect("given"), &g)?, input_shape))
            })
        }
    }
}

/// Gradient of [`Tensor::avg_pool2d`] with the same window parameters, for an
/// input of `input_shape`. Not recorded on the tape.
pub fn avg_pool2d_backward(
    grad_output: &Tensor,
    input_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<Tensor> {
    let op = "avg_pool2d_backward";
    let g = pool_geometry(op, input_shape, kernel, stride, padding)?;
    check_grad_output(op, grad_output, input_shape, g.out_size)?;
    match grad_output.device() {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let dx = with_contiguous::<T, _>(grad_output, |dy| cpu::pool::avg_pool2d_bwd(dy, &g))?;
            Ok(Tensor::from_cpu_vec(dx, input_shape))
        }),
        Device::Cuda(_) => with_cuda(op, &[Some(grad_output)], |o| {
            Ok(cuda_tensor(cuda::avg_pool2d_backward(o[0].expect("given"), &cuda_geometry(&g))?, input_shape))
        }),
    }
}

/// Gradient of [`Tensor::adaptive_avg_pool2d`] for an input of `input_shape`;
/// the output size is read from `grad_output`. Not recorded on the tape.
pub fn adaptive_avg_pool2d_backward(grad_output: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let op = "adaptive_avg_pool2d_backward";
    let [_, _, h, w] = nchw(op, input_shape)?;
    let out = nchw(op, grad_output.shape())?;
    check_grad_output(op, grad_output, input_shape, [out[2], out[3]])?;
    match grad_output.device() {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let dx = with_contiguous::<T, _>(grad_output, |dy| cpu::pool::adaptive_avg_pool2d_bwd(dy, [h, w], [out[2], out[3]]))?;
            Ok(Tensor::from_cpu_vec(dx, input_shape))
        }),
        Device::Cuda(_) => with_cuda(op, &[Some(grad_output)], |o| {
            let g = plane_geometry(input_shape[0] * input_shape[1], [h, w], [out[2], out[3]]);
            Ok(cuda_tensor(cuda::adaptive_avg_pool2d_backward(o[0].expect("given"), &g)?, input_shape))
        }),
    }
}

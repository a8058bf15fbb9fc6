//! Nearest-neighbour 2-d upsampling of NCHW tensors with PyTorch's
//! `F.interpolate(mode="nearest")` semantics, and its backward kernel.

use super::with_contiguous;
use super::{cuda_tensor, with_cuda};
use crate::autograd::rules::upsample::UpsampleNearest2dBackward;
use crate::backend::cpu;
use crate::backend::cpu::upsample::nearest_source_indices;
use crate::backend::cuda;
use crate::tensor::Tensor;
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// `[N, C, H, W]` or an error naming `op`.
fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| Error::bad_shape(op, format!("input must be [N, C, H, W], got {shape:?}")))
}

/// Source row and column of each output row and column.
fn source_indices(in_size: [usize; 2], out_size: [usize; 2], scales: [Option<f64>; 2]) -> (Vec<usize>, Vec<usize>) {
    (nearest_source_indices(in_size[0], out_size[0], scales[0]), nearest_source_indices(in_size[1], out_size[1], scales[1]))
}

impl Tensor {
    /// Nearest-neighbour upsampling (or downsampling) of `[N, C, H, W]` to
    /// `[N, C, size[0], size[1]]`: output index `o` reads input
    /// `floor(o · in / out)` (`F.interpolate(size=..., mode="nearest")`).
    pub fn upsample_nearest2d(&self, size: [usize; 2]) -> Result<Tensor> {
        self.upsample_nearest(size, [None, None])
    }

    /// Nearest-neighbour resize by `scale` per axis, `[N, C, floor(H·s₀), floor(W·s₁)]`;
    /// output index `o` reads input `floor(o / s)`, as
    /// `F.interpolate(scale_factor=..., mode="nearest")` (diffusers' `Upsample2D` uses 2.0).
    pub fn upsample_nearest2d_scale(&self, scale: [f64; 2]) -> Result<Tensor> {
        let [_, _, h, w] = nchw("upsample_nearest2d", self.shape())?;
        if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::bad_shape("upsample_nearest2d", format!("scale factors {scale:?} must be positive and finite")));
        }
        let size = [(h as f64 * scale[0]).floor() as usize, (w as f64 * scale[1]).floor() as usize];
        self.upsample_nearest(size, [Some(scale[0]), Some(scale[1])])
    }

    fn upsample_nearest(&self, size: [usize; 2], scales: [Option<f64>; 2]) -> Result<Tensor> {
        let op = "upsample_nearest2d";
        let [n, c, h, w] = nchw(op, self.shape())?;
        if (h == 0 || w == 0 || size.contains(&0)) && n * c > 0 {
            return Err(Error::bad_shape(op, format!("cannot resize {:?} to {size:?}: planes must be non-empty", self.shape())));
        }
        let (rows, cols) = source_indices([h, w], size, scales);
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let y = with_contiguous::<T, _>(self, |x| cpu::upsample::upsample_nearest2d_fwd(x, [h, w], &rows, &cols))?;
                Tensor::from_cpu_vec(y, &[n, c, size[0], size[1]])
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self)], |o| {
                let y = cuda::upsample_nearest2d(o[0].expect("given"), n * c, [h, w], &rows, &cols)?;
                Ok(cuda_tensor(y, &[n, c, size[0], size[1]]))
            })?,
        };
        Ok(out.recorded(&[self], || Arc::new(UpsampleNearest2dBackward { input: self.clone(), scales })))
    }
}

/// Gradient of nearest upsampling: `grad_output` `[N, C, out_h, out_w]` summed
/// onto the input pixels of `input_shape` it was copied from. `scales` are
/// the scale factors of a [`Tensor::upsample_nearest2d_scale`] call (`None`
/// for an explicit size). Not recorded on the tape.
pub fn upsample_nearest2d_backward(grad_output: &Tensor, input_shape: &[usize], scales: [Option<f64>; 2]) -> Result<Tensor> {
    let op = "upsample_nearest2d_backward";
    let [n, c, h, w] = nchw(op, input_shape)?;
    let [gn, gc, out_h, out_w] = nchw(op, grad_output.shape())?;
    if [gn, gc] != [n, c] {
        return Err(Error::ShapeMismatch { op, lhs: grad_output.shape().to_vec(), rhs: input_shape.to_vec() });
    }
    let (rows, cols) = source_indices([h, w], [out_h, out_w], scales);
    match grad_output.device() {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let dx = with_contiguous::<T, _>(grad_output, |dy| cpu::upsample::upsample_nearest2d_bwd(dy, [h, w], &rows, &cols))?;
            Ok(Tensor::from_cpu_vec(dx, input_shape))
        }),
        Device::Cuda(_) => with_cuda(op, &[Some(grad_output)], |o| {
            Ok(cuda_tensor(cuda::upsample_nearest2d_backward(o[0].expect("given"), n * c, [h, w], &rows, &cols)?, input_shape))
        }),
    }
}

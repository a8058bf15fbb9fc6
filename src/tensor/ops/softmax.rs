//! Softmax and log-softmax along any dimension.

use super::with_contiguous;
use crate::autograd::rules::softmax::SoftmaxBackward;
use crate::backend::cpu;
use crate::tensor::{resolve_dim, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// The tensor seen as `[outer, len, inner]` around dimension `dim`.
fn split_around(shape: &[usize], dim: usize) -> (usize, usize) {
    let len = shape.get(dim).copied().unwrap_or(1);
    let inner: usize = shape.iter().skip(dim + 1).product();
    (len, inner)
}

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim` (negative counts from the end),
    /// computed with the maximum subtracted so large inputs do not overflow.
    /// A row of all −∞ gives NaN, as in PyTorch.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, false)
    }

    /// `x − log Σ exp(x)` along `dim`, stable for any input range.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, true)
    }

    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        let d = resolve_dim(dim, self.rank(), name)?;
        if !self.dtype().is_float() {
            return Err(Error::Unsupported {
                op: name,
                dtype: self.dtype(),
                device: self.device(),
                hint: " (softmax needs a float tensor)",
            });
        }
        let (len, inner) = split_around(self.shape(), d);
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), name, |T| {
                let y = with_contiguous::<T, _>(self, |x| cpu::softmax::softmax_fwd(x, len, inner, log))?;
                Tensor::from_cpu_vec(y, self.shape())
            }),
            Device::Cuda(_) => super::with_cuda(name, &[Some(self)], |o| {
                Ok(super::cuda_tensor(crate::backend::cuda::softmax(o[0].expect("given"), len, inner, log)?, self.shape()))
            })?,
        };
        Ok(out.recorded(&[self], || Arc::new(SoftmaxBackward { input: self.clone(), dim: d, log })))
    }

    /// Gradient of softmax (`log == false`) or log-softmax along `dim`, given
    /// this tensor as the op's output and `grad` as the output's gradient.
    pub fn softmax_backward(&self, grad: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax_backward" } else { "softmax_backward" };
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: name, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        super::same_dtype(name, self, grad)?;
        let (len, inner) = split_around(self.shape(), dim);
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), name, |T| {
                let dx = with_contiguous::<T, _>(self, |y| {
                    with_contiguous::<T, _>(grad, |g| cpu::softmax::softmax_bwd(y, g, len, inner, log))
                })??;
                Ok(Tensor::from_cpu_vec(dx, self.shape()))
            }),
            Device::Cuda(_) => super::with_cuda(name, &[Some(self), Some(grad)], |o| {
                let dx = crate::backend::cuda::softmax_backward(o[0].expect("given"), o[1].expect("given"), len, inner, log)?;
                Ok(super::cuda_tensor(dx, self.shape()))
            }),
        }
    }
}

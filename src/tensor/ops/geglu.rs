//! GEGLU, `a · gelu(gate)` over the last dimension split in halves `[a | gate]`.

use super::with_contiguous;
use crate::autograd::rules::geglu::GegluBackward;
use crate::backend::cpu;
use crate::tensor::Tensor;
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

impl Tensor {
    /// diffusers' GEGLU activation: the last dimension (even, 2h) is split
    /// into `a = x[..., :h]` and `gate = x[..., h:]`, and the result is
    /// `a · gelu(gate)` (exact GELU), shaped `[..., h]`. One fused pass on the
    /// CPU; composed from narrow, GELU and multiply elsewhere.
    pub fn geglu(&self) -> Result<Tensor> {
        let half = self.geglu_half()?;
        if self.device() != Device::Cpu {
            return self.narrow(-1, 0, half)?.mul(&self.narrow(-1, half, half)?.gelu()?);
        }
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank checked") = half;
        let out = dispatch_float!(self.dtype(), "geglu", |T| {
            Tensor::from_cpu_vec(with_contiguous::<T, _>(self, |x| cpu::geglu::geglu_fwd(x, half))?, &shape)
        });
        Ok(out.recorded(&[self], || Arc::new(GegluBackward { input: self.clone() })))
    }

    /// The gradient of [`Tensor::geglu`] at this input for the output gradient `grad`.
    pub fn geglu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        let half = self.geglu_half()?;
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("rank checked") = half;
        if grad.shape() != out_shape.as_slice() {
            return Err(Error::bad_shape("geglu_backward", format!("gradient {:?} must be shaped {out_shape:?}", grad.shape())));
        }
        dispatch_float!(self.dtype(), "geglu_backward", |T| {
            let dx = with_contiguous::<T, _>(self, |x| with_contiguous::<T, _>(grad, |g| cpu::geglu::geglu_bwd(x, g, half)))??;
            Ok(Tensor::from_cpu_vec(dx, self.shape()))
        })
    }

    /// Half the last dimension, which must be even and non-empty.
    fn geglu_half(&self) -> Result<usize> {
        match self.shape().last() {
            Some(&d) if d % 2 == 0 => Ok(d / 2),
            _ => Err(Error::bad_shape("geglu", format!("the last dimension must be even (value | gate), got shape {:?}", self.shape()))),
        }
    }
}

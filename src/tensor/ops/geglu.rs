//! GEGLU, `a · gelu(gate)` over the last dimension split in halves `[a | gate]`.

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
            let x = self.contiguous()?;
            let y = x.with_cpu_slice::<T, _>(|s, l| cpu::geglu::geglu_fwd(&s[l.contiguous_range().unwrap()], half))?;
            Tensor::from_cpu_vec(y, &shape)
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
            let (x, g) = (self.cpu_vec::<T>()?, grad.cpu_vec::<T>()?);
            Ok(Tensor::from_cpu_vec(cpu::geglu::geglu_bwd(&x, &g, half), self.shape()))
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

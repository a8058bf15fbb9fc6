//! Elementwise unary ops: activations, exp/log, affine, pow, clamp.

use super::unsupported;
use crate::autograd::rules::unary::UnaryBackward;
use crate::backend::cpu;
use crate::backend::op::UnaryOp;
use crate::tensor::{Storage, Tensor};
use crate::{dispatch_float, Device, Result};
use std::sync::Arc;

impl Tensor {
    /// Apply an elementwise function; the output is contiguous.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op.name(), |T| {
                let x = self.contiguous()?;
                let y = x.with_cpu_slice::<T, _>(|s, l| cpu::elementwise::unary(op, &s[l.contiguous_range().unwrap()]))?;
                Tensor::from_cpu_vec(y, self.shape())
            }),
            Device::Cuda(_) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                Tensor::from_storage(
                    Storage::Cuda(crate::backend::cuda::unary(op, s, self.layout()).map_err(|e| match e {
                        crate::Error::Unsupported { .. } => unsupported(op.name(), self),
                        e => e,
                    })?),
                    self.shape(),
                )
            }
        };
        Ok(out.recorded(&[self], || Arc::new(UnaryBackward { input: self.clone(), op })))
    }

    /// The gradient of `unary(op)` at this input: `grad * f'(self)`, given the output `y`.
    pub fn unary_backward(&self, op: UnaryOp, y: &Tensor, grad: &Tensor) -> Result<Tensor> {
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op.name(), |T| {
                let (x, y, g) = (self.cpu_vec::<T>()?, y.cpu_vec::<T>()?, grad.cpu_vec::<T>()?);
                Ok(Tensor::from_cpu_vec(cpu::elementwise::unary_backward(op, &x, &y, &g), self.shape()))
            }),
            Device::Cuda(_) => {
                let (xs, ys, gs) = (self.storage(), y.storage(), grad.storage());
                let (Storage::Cuda(x), Storage::Cuda(yv), Storage::Cuda(g)) = (&*xs, &*ys, &*gs) else {
                    return Err(crate::Error::msg("unary_backward: tensors on different devices"));
                };
                let out = crate::backend::cuda::unary_backward(op, x, self.layout(), yv, y.layout(), g, grad.layout())?;
                Ok(Tensor::from_storage(Storage::Cuda(out), self.shape()))
            }
        }
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Rsqrt)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Square)
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip)
    }
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin)
    }
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Cos)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    /// GELU, exact (erf) form.
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }
    /// GELU, tanh approximation.
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluTanh)
    }
    pub fn quick_gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::QuickGelu)
    }
    pub fn leaky_relu(&self, slope: f64) -> Result<Tensor> {
        self.unary(UnaryOp::LeakyRelu(slope))
    }
    /// `self * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Clamp { min, max })
    }
}

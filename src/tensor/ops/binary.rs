//! Broadcasting binary ops and comparisons.

use super::{same_device, same_dtype};
use crate::autograd::rules::binary::BinaryBackward;
use crate::backend::cpu;
use crate::backend::op::{BinaryOp, CmpOp};
use crate::tensor::{broadcast_shapes, Storage, Tensor};
use crate::{dispatch_any, dispatch_float, Device, Result};
use std::sync::Arc;

impl Tensor {
    /// Elementwise `op` with NumPy broadcasting.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let device = same_device(op.name(), self, rhs)?;
        same_dtype(op.name(), self, rhs)?;
        let shape = broadcast_shapes(op.name(), self.shape(), rhs.shape())?;
        let out = match device {
            Device::Cpu => dispatch_float!(self.dtype(), op.name(), |T| {
                let (sa, sb) = (self.storage(), rhs.storage());
                let a = sa.cpu().unwrap().as_slice::<T>().unwrap();
                let b = sb.cpu().unwrap().as_slice::<T>().unwrap();
                Tensor::from_cpu_vec(cpu::elementwise::binary(op, a, self.layout(), b, rhs.layout(), &shape), &shape)
            }),
            Device::Cuda(_) => {
                let (sa, sb) = (self.storage(), rhs.storage());
                let (Storage::Cuda(a), Storage::Cuda(b)) = (&*sa, &*sb) else { unreachable!() };
                Tensor::from_storage(Storage::Cuda(crate::backend::cuda::binary(op, a, self.layout(), b, rhs.layout(), &shape)?), &shape)
            }
        };
        Ok(out.recorded(&[self, rhs], || Arc::new(BinaryBackward { lhs: self.clone(), rhs: rhs.clone(), op })))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Pow)
    }
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Maximum)
    }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Minimum)
    }

    /// Elementwise comparison with broadcasting; a u8 mask, not differentiable.
    pub fn compare(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        let device = same_device("compare", self, rhs)?;
        same_dtype("compare", self, rhs)?;
        let shape = broadcast_shapes("compare", self.shape(), rhs.shape())?;
        match device {
            Device::Cpu => dispatch_any!(self.dtype(), |T| {
                let (sa, sb) = (self.storage(), rhs.storage());
                let a = sa.cpu().unwrap().as_slice::<T>().unwrap();
                let b = sb.cpu().unwrap().as_slice::<T>().unwrap();
                Ok(Tensor::from_cpu_vec(cpu::elementwise::compare(op, a, self.layout(), b, rhs.layout(), &shape), &shape))
            }),
            Device::Cuda(_) => {
                let (sa, sb) = (self.storage(), rhs.storage());
                let (Storage::Cuda(a), Storage::Cuda(b)) = (&*sa, &*sb) else { unreachable!() };
                Ok(Tensor::from_storage(
                    Storage::Cuda(crate::backend::cuda::compare(op, a, self.layout(), b, rhs.layout(), &shape)?),
                    &shape,
                ))
            }
        }
    }

    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Eq)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ne)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ge)
    }
}

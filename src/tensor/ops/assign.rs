//! In-place writes into a view: the one mutating op, used by optimizers and
//! by backward rules that scatter a gradient into a window. Not recorded.

use super::same_device;
use crate::backend::cpu;
use crate::tensor::{Storage, Tensor};
use crate::{dispatch_any, Device, Error, Result};

impl Tensor {
    /// Overwrite this view's elements with `src` (broadcast to this shape,
    /// same dtype). Every tensor sharing the storage sees the change.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        same_device("assign", self, src)?;
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op: "assign", lhs: self.dtype(), rhs: src.dtype() });
        }
        let src = crate::autograd::no_grad(|| src.broadcast_to(self.shape()))?;
        match self.device() {
            Device::Cpu => dispatch_any!(self.dtype(), |T| {
                // Gather first: `src` may alias this storage, and the write lock must not wait on our own read.
                let values = src.cpu_vec::<T>()?;
                let mut st = self.storage_mut();
                let Storage::Cpu(cs) = &mut *st else { unreachable!() };
                let dst = cs.as_mut_slice::<T>().expect("dtype checked");
                cpu::copy::scatter(dst, self.layout(), &values);
                Ok(())
            }),
            Device::Cuda(_) => {
                let src = src.contiguous()?;
                let staged = {
                    let ss = src.storage();
                    let Storage::Cuda(s) = &*ss else { unreachable!() };
                    crate::backend::cuda::copy_strided(s, src.layout())?
                };
                let mut st = self.storage_mut();
                let Storage::Cuda(d) = &mut *st else { unreachable!() };
                crate::backend::cuda::copy_into(d, self.layout(), &staged)
            }
        }
    }
}

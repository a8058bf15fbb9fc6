//! Elementwise selection by a mask: where_cond and masked_fill.

use super::{same_device, same_dtype, unsupported};
use crate::autograd::rules::select::WhereBackward;
use crate::backend::cpu;
use crate::tensor::{broadcast_shapes, Tensor};
use crate::{dispatch_any, Device, Error, Result};
use std::sync::Arc;

impl Tensor {
    /// `on_true` where `cond` is nonzero, `on_false` elsewhere, as torch.where:
    /// the three broadcast together (NumPy rules); `cond` may have any dtype;
    /// the values share a dtype. Gradients flow to both value inputs (summed
    /// back over broadcast dims), none to `cond`.
    pub fn where_cond(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        same_device(OP, cond, on_true)?;
        same_device(OP, on_true, on_false)?;
        same_dtype(OP, on_true, on_false)?;
        let shape = broadcast_shapes(OP, &broadcast_shapes(OP, cond.shape(), on_true.shape())?, on_false.shape())?;
        let out = match on_true.device() {
            Device::Cpu => {
                let mask = dispatch_any!(cond.dtype(), |C| cond.with_cpu_slice::<C, _>(|s, l| cpu::select::nonzero_mask(s, l, &shape))?);
                dispatch_any!(on_true.dtype(), |T| {
                    let (st, sf) = (on_true.storage(), on_false.storage());
                    let a = st.cpu().expect("on cpu").as_slice::<T>().expect("dtype checked");
                    let b = sf.cpu().expect("on cpu").as_slice::<T>().expect("dtype checked");
                    Tensor::from_cpu_vec(cpu::select::select(&mask, a, on_true.layout(), b, on_false.layout(), &shape), &shape)
                })
            }
            Device::Cuda(_) => return Err(unsupported(OP, on_true)),
        };
        Ok(out.recorded(&[on_true, on_false], || {
            Arc::new(WhereBackward { cond: cond.clone(), on_true: on_true.clone(), on_false: on_false.clone() })
        }))
    }

    /// A copy with `value` wherever `mask` (any dtype, nonzero = fill;
    /// broadcast to this tensor's shape) is set, as torch.Tensor.masked_fill.
    /// Filled elements get no gradient.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        const OP: &str = "masked_fill";
        let shape = broadcast_shapes(OP, mask.shape(), self.shape())?;
        if shape != self.shape() {
            return Err(Error::bad_shape(
                OP,
                format!("mask of shape {:?} does not broadcast to the input's shape {:?}", mask.shape(), self.shape()),
            ));
        }
        let fill = Tensor::full(value, &[], self.dtype(), self.device())?;
        Tensor::where_cond(mask, &fill, self)
    }
}

//! Concatenation along a dimension (cat) and along a new one (stack).

use super::unsupported;
use super::with_contiguous;
use crate::autograd::rules::concat::CatBackward;
use crate::backend::cpu;
use crate::tensor::{resolve_dim, Tensor};
use crate::{dispatch_any, Device, Error, Result};
use std::borrow::Borrow;
use std::sync::Arc;

impl Tensor {
    /// Join `tensors` (a slice of `Tensor` or of `&Tensor`) along `dim`
    /// (negative counts from the end), as torch.cat: all must have the same
    /// rank, dtype and device, and equal sizes except along `dim`. Inputs may
    /// be any views; the output is a new contiguous tensor. The gradient of
    /// each input is its window of the output gradient.
    pub fn cat<B: Borrow<Tensor>>(tensors: &[B], dim: isize) -> Result<Tensor> {
        const OP: &str = "cat";
        let parts: Vec<&Tensor> = tensors.iter().map(|t| t.borrow()).collect();
        let Some(&first) = parts.first() else {
            return Err(Error::bad_shape(OP, "needs at least one tensor"));
        };
        if first.rank() == 0 {
            return Err(Error::bad_shape(OP, "cannot concatenate rank-0 tensors (unsqueeze them or use stack)"));
        }
        let d = resolve_dim(dim, first.rank(), OP)?;
        for (k, t) in parts.iter().enumerate().skip(1) {
            if t.device() != first.device() {
                return Err(Error::DeviceMismatch { op: OP, lhs: first.device(), rhs: t.device() });
            }
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: OP, lhs: first.dtype(), rhs: t.dtype() });
            }
            let compatible =
                t.rank() == first.rank() && t.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == d || a == b);
            if !compatible {
                return Err(Error::bad_shape(
                    OP,
                    format!(
                        "tensor {k} has shape {:?}, tensor 0 has shape {:?}; sizes must match except along dim {d}",
                        t.shape(),
                        first.shape()
                    ),
                ));
            }
        }
        let sizes: Vec<usize> = parts.iter().map(|t| t.shape()[d]).collect();
        let mut shape = first.shape().to_vec();
        shape[d] = sizes.iter().sum();
        let inner: usize = shape[d + 1..].iter().product();
        let out_width = shape[d] * inner;
        let out = match first.device() {
            Device::Cpu => dispatch_any!(first.dtype(), |T| {
                let mut out = vec![T::default(); shape.iter().product()];
                let mut col = 0;
                for (t, &size) in parts.iter().zip(&sizes) {
                    with_contiguous::<T, _>(t, |s| cpu::concat::write_part(&mut out, out_width, col, s, size * inner))?;
                    col += size * inner;
                }
                Tensor::from_cpu_vec(out, &shape)
            }),
            Device::Cuda(_) => return Err(unsupported(OP, first)),
        };
        let inputs: Vec<Tensor> = parts.iter().map(|&t| t.clone()).collect();
        Ok(out.recorded(&parts, || Arc::new(CatBackward { inputs, dim: d })))
    }

    /// Join equally shaped `tensors` along a new dimension `dim` (in
    /// `-(rank+1)..=rank`), as torch.stack.
    pub fn stack<B: Borrow<Tensor>>(tensors: &[B], dim: isize) -> Result<Tensor> {
        const OP: &str = "stack";
        let parts: Vec<&Tensor> = tensors.iter().map(|t| t.borrow()).collect();
        let Some(&first) = parts.first() else {
            return Err(Error::bad_shape(OP, "needs at least one tensor"));
        };
        if let Some((k, t)) = parts.iter().enumerate().find(|(_, t)| t.shape() != first.shape()) {
            return Err(Error::bad_shape(
                OP,
                format!(
                    "tensor {k} has shape {:?}, tensor 0 has shape {:?}; stacked tensors must have equal shapes",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        let d = resolve_dim(dim, first.rank() + 1, OP)?;
        let expanded = parts.iter().map(|t| t.unsqueeze(d as isize)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&expanded, d as isize)
    }
}

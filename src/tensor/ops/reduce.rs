//! Reductions over any set of dimensions: sum, mean, max, min, argmax/argmin, var.

use crate::autograd::rules::reduce::{ReduceBackward, SumBackward};
use crate::backend::cpu;
use crate::backend::op::ReduceOp;
use crate::tensor::{resolve_dim, Storage, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// Sorted, de-duplicated dims; an empty list means every dim.
fn reduce_dims(t: &Tensor, dims: &[isize], op: &'static str) -> Result<Vec<usize>> {
    if dims.is_empty() {
        return Ok((0..t.rank()).collect());
    }
    let mut v = dims.iter().map(|&d| resolve_dim(d, t.rank(), op)).collect::<Result<Vec<_>>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The output shape with reduced dims kept as 1 or dropped.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    shape.iter().enumerate().filter_map(|(i, &d)| if dims.contains(&i) { keepdim.then_some(1) } else { Some(d) }).collect()
}

impl Tensor {
    /// Permute so the reduced dims come last, and return (rows, row length) for a contiguous copy.
    fn reduce_prepare(&self, dims: &[usize]) -> Result<(Tensor, usize)> {
        let mut perm: Vec<usize> = (0..self.rank()).filter(|d| !dims.contains(d)).collect();
        perm.extend_from_slice(dims);
        let len: usize = dims.iter().map(|&d| self.shape()[d]).product();
        let moved = crate::autograd::no_grad(|| -> Result<Tensor> {
            let p = if perm.iter().enumerate().all(|(i, &d)| i == d) { self.clone() } else { self.permute(&perm)? };
            p.contiguous()
        })?;
        Ok((moved, len))
    }

    fn reduce_raw(&self, op: ReduceOp, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let out_shape = reduced_shape(self.shape(), dims, keepdim);
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), "reduce", |T| {
                // Sums over leading dims (bias gradients) read columns in place.
                let leading = dims.iter().enumerate().all(|(i, &d)| i == d) && self.is_contiguous() && op == ReduceOp::Sum;
                let v = if leading && !dims.is_empty() && dims.len() < self.rank() {
                    let len: usize = self.shape()[dims.len()..].iter().product();
                    self.with_cpu_slice::<T, _>(|s, l| cpu::reduce::sum_columns(&s[l.contiguous_range().unwrap()], len))?
                } else {
                    let (m, len) = self.reduce_prepare(dims)?;
                    m.with_cpu_slice::<T, _>(|s, l| cpu::reduce::reduce_rows(op, &s[l.contiguous_range().unwrap()], len))?
                };
                let v = if v.is_empty() && out_shape.iter().product::<usize>() == 1 {
                    vec![<T as crate::tensor::Element>::from_f64(0.0)]
                } else {
                    v
                };
                Ok(Tensor::from_cpu_vec(v, &out_shape))
            }),
            Device::Cuda(_) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                Ok(Tensor::from_storage(Storage::Cuda(crate::backend::cuda::reduce(op, s, self.layout(), dims)?), &out_shape))
            }
        }
    }

    /// Sum over `dims` (empty = all).
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let d = reduce_dims(self, dims, "sum")?;
        let out = self.reduce_raw(ReduceOp::Sum, &d, keepdim)?;
        Ok(out.recorded(&[self], || Arc::new(SumBackward { input: self.clone(), dims: d, keepdim })))
    }

    /// Sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&[], false)
    }

    /// Mean over `dims` (empty = all).
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let d = reduce_dims(self, dims, "mean")?;
        let n: usize = d.iter().map(|&i| self.shape()[i]).product();
        self.sum(dims, keepdim)?.affine(1.0 / n.max(1) as f64, 0.0)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&[], false)
    }

    fn extremum(&self, op: ReduceOp, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let d = reduce_dims(self, dims, "max")?;
        if d.iter().any(|&i| self.shape()[i] == 0) {
            return Err(Error::bad_shape("max/min", "reduction over an empty dimension"));
        }
        let out = self.reduce_raw(op, &d, keepdim)?;
        Ok(out.recorded(&[self], || Arc::new(ReduceBackward { input: self.clone(), dims: d, keepdim })))
    }

    /// Maximum over `dims`; ties share the gradient equally.
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extremum(ReduceOp::Max, dims, keepdim)
    }

    /// Minimum over `dims`; ties share the gradient equally.
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extremum(ReduceOp::Min, dims, keepdim)
    }

    fn arg_extremum(&self, dim: isize, keepdim: bool, largest: bool) -> Result<Tensor> {
        let d = resolve_dim(dim, self.rank(), "argmax")?;
        let out_shape = reduced_shape(self.shape(), &[d], keepdim);
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), "argmax", |T| {
                let (m, len) = self.reduce_prepare(&[d])?;
                let v = m.with_cpu_slice::<T, _>(|s, l| cpu::reduce::arg_rows(&s[l.contiguous_range().unwrap()], len, largest))?;
                Ok(Tensor::from_cpu_vec(v, &out_shape))
            }),
            Device::Cuda(_) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                Ok(Tensor::from_storage(Storage::Cuda(crate::backend::cuda::arg_reduce(s, self.layout(), d, largest)?), &out_shape))
            }
        }
    }

    /// Index of the maximum along `dim` (i64).
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extremum(dim, keepdim, true)
    }

    /// Index of the minimum along `dim` (i64).
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extremum(dim, keepdim, false)
    }

    /// Variance over `dims`; `unbiased` divides by n-1 (Bessel), else by n.
    pub fn var(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let d = reduce_dims(self, dims, "var")?;
        let n: usize = d.iter().map(|&i| self.shape()[i]).product();
        let denom = if unbiased { n.saturating_sub(1) } else { n }.max(1);
        let centred = self.sub(&self.mean(dims, true)?)?;
        centred.square()?.sum(dims, keepdim)?.affine(1.0 / denom as f64, 0.0)
    }

    /// Reduce a broadcast gradient back to `shape` by summing the expanded dims.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.rank().checked_sub(shape.len()).ok_or_else(|| Error::ShapeMismatch {
            op: "sum_to_shape",
            lhs: self.shape().to_vec(),
            rhs: shape.to_vec(),
        })?;
        let mut dims: Vec<isize> = (0..extra as isize).collect();
        for (i, &s) in shape.iter().enumerate() {
            if s == 1 && self.shape()[i + extra] != 1 {
                dims.push((i + extra) as isize);
            }
        }
        let summed = if dims.is_empty() { self.clone() } else { self.sum(&dims, true)? };
        summed.reshape(shape)
    }
}

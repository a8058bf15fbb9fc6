//! Views: reshape, permute/transpose, narrow, broadcast, squeeze/unsqueeze.
//! None copies; `reshape` of a view whose strides do not allow it copies first.

use crate::autograd::rules::view::{BroadcastBackward, NarrowBackward, PermuteBackward, ReshapeBackward};
use crate::tensor::{resolve_dim, Tensor};
use crate::{Error, Result};
use std::sync::Arc;

impl Tensor {
    /// Same elements, new shape; one entry may be `usize::MAX` to infer it.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let mut shape = shape.to_vec();
        let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
        if let Some(pos) = shape.iter().position(|&d| d == usize::MAX) {
            if known == 0 || self.numel() % known != 0 {
                return Err(Error::bad_shape("reshape", format!("cannot infer a dimension of {shape:?} from {:?}", self.shape())));
            }
            shape[pos] = self.numel() / known;
        }
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::bad_shape(
                "reshape",
                format!("{:?} has {} elements, {shape:?} needs {}", self.shape(), self.numel(), shape.iter().product::<usize>()),
            ));
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let src_shape = self.shape().to_vec();
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.view_with(l, || Arc::new(ReshapeBackward { input: self.clone(), shape: src_shape }))),
            None => self.contiguous()?.reshape(&shape),
        }
    }

    /// Collapse dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = resolve_dim(start, self.rank(), "flatten")?;
        let e = resolve_dim(end, self.rank(), "flatten")?;
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// Reorder dimensions.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let l = self.layout().permute(dims)?;
        let dims = dims.to_vec();
        Ok(self.view_with(l, || Arc::new(PermuteBackward { input: self.clone(), dims })))
    }

    /// Swap two dimensions.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (resolve_dim(a, self.rank(), "transpose")?, resolve_dim(b, self.rank(), "transpose")?);
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// `len` entries of `dim` starting at `start`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = resolve_dim(dim, self.rank(), "narrow")?;
        let l = self.layout().narrow(d, start, len)?;
        Ok(self.view_with(l, || Arc::new(NarrowBackward { input: self.clone(), dim: d, start })))
    }

    /// Split `dim` into `n` nearly equal parts (the last may be smaller).
    pub fn chunk(&self, n: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = resolve_dim(dim, self.rank(), "chunk")?;
        let size = self.shape()[d];
        let step = size.div_ceil(n.max(1)).max(1);
        (0..size).step_by(step).map(|s| self.narrow(d as isize, s, step.min(size - s))).collect()
    }

    /// View with size-1 or missing leading dims expanded to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let l = self.layout().broadcast_to(shape)?;
        Ok(self.view_with(l, || Arc::new(BroadcastBackward { input: self.clone() })))
    }

    /// Insert a size-1 dimension at `dim`.
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = resolve_dim(dim, self.rank() + 1, "unsqueeze")?;
        let mut shape = self.shape().to_vec();
        shape.insert(d, 1);
        self.reshape(&shape)
    }

    /// Remove dimension `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = resolve_dim(dim, self.rank(), "squeeze")?;
        if self.shape()[d] != 1 {
            return Err(Error::bad_shape("squeeze", format!("dim {d} of {:?} is not 1", self.shape())));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape(&shape)
    }
}

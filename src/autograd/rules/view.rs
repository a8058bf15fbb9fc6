//! Backward rules of the view ops.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct ReshapeBackward {
    pub input: Tensor,
    pub shape: Vec<usize>,
}
impl BackwardRule for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&self.shape)?)])
    }
}

pub struct PermuteBackward {
    pub input: Tensor,
    pub dims: Vec<usize>,
}
impl BackwardRule for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0; self.dims.len()];
        for (i, &d) in self.dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(vec![Some(g.permute(&inverse)?)])
    }
}

pub struct NarrowBackward {
    pub input: Tensor,
    pub dim: usize,
    pub start: usize,
}
impl BackwardRule for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Zeros of the input's shape with the gradient written into the narrowed window.
        let full = Tensor::zeros(self.input.shape(), g.dtype(), g.device())?;
        full.narrow(self.dim as isize, self.start, g.shape()[self.dim])?.assign(g)?;
        Ok(vec![Some(full)])
    }
}

pub struct BroadcastBackward {
    pub input: Tensor,
}
impl BackwardRule for BroadcastBackward {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to_shape(self.input.shape())?)])
    }
}

//! Backward rules of the view ops.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// `[g's leading dim, *shape]`: the shape of a stack of per-sample gradients of a `shape` tensor.
fn per_sample_shape(g: &Tensor, shape: &[usize]) -> Vec<usize> {
    let mut s = vec![g.shape()[0]];
    s.extend_from_slice(shape);
    s
}

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
    fn backward_batched(&self, _out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(g.reshape(&per_sample_shape(g, &self.shape)).map(|t| vec![Some(t)]))
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
    fn backward_batched(&self, _out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        // The stack's leading dim stays first; the others are un-permuted behind it.
        let mut inverse = vec![0; self.dims.len() + 1];
        for (i, &d) in self.dims.iter().enumerate() {
            inverse[d + 1] = i + 1;
        }
        Some(g.permute(&inverse).map(|t| vec![Some(t)]))
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
    fn backward_batched(&self, _out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        // Pad the input shape to the output's rank behind the stack's leading dim, so that dim is never summed.
        let run = || -> Result<Vec<Option<Tensor>>> {
            let rank = g.rank() - 1;
            let input = self.input.shape();
            let mut padded = vec![g.shape()[0]];
            padded.extend(std::iter::repeat_n(1, rank - input.len()));
            padded.extend_from_slice(input);
            Ok(vec![Some(g.sum_to_shape(&padded)?.reshape(&per_sample_shape(g, input))?)])
        };
        Some(run())
    }
}

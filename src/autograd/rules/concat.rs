//! Backward rule of cat (stack is unsqueeze + cat): each input's gradient is
//! its window of the output gradient.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// cat's rule; `inputs` in order, concatenated along `dim`.
pub struct CatBackward {
    pub inputs: Vec<Tensor>,
    pub dim: usize,
}
impl BackwardRule for CatBackward {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.inputs.iter().collect()
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut grads = Vec::with_capacity(self.inputs.len());
        for t in &self.inputs {
            let size = t.shape()[self.dim];
            grads.push(if t.requires_grad() { Some(g.narrow(self.dim as isize, start, size)?) } else { None });
            start += size;
        }
        Ok(grads)
    }
}

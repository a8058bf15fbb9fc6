//! Backward rule of softmax and log-softmax: one dedicated kernel from the
//! saved output (softmax `y·(g − Σ g·y)`, log-softmax `g − exp(y)·Σ g`).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct SoftmaxBackward {
    pub input: Tensor,
    pub dim: usize,
    pub log: bool,
}
impl BackwardRule for SoftmaxBackward {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(out.softmax_backward(g, self.dim, self.log)?)])
    }
}

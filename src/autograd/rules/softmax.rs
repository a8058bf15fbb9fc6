//! Backward rule of softmax and log-softmax: one dedicated kernel from the
//! saved output (softmax `y·(g − Σ g·y)`, log-softmax `g − exp(y)·Σ g`).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// Saved state of softmax / log-softmax (the output comes with the gradient).
pub struct SoftmaxBackward {
    /// The op's input.
    pub input: Tensor,
    /// The (resolved) dimension normalised over.
    pub dim: usize,
    /// log-softmax rather than softmax.
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

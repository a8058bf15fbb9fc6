//! Backward rules of the pooling ops: each calls its dedicated backward kernel.

use crate::autograd::BackwardRule;
use crate::tensor::ops::pool::{adaptive_avg_pool2d_backward, avg_pool2d_backward, max_pool2d_backward};
use crate::{Result, Tensor};

/// Max pooling: the gradient goes to the recorded argmax of each window.
pub struct MaxPool2dBackward {
    pub input: Tensor,
    /// i64 flat indices within each input plane, the output's shape.
    pub indices: Tensor,
}
impl BackwardRule for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(max_pool2d_backward(g, &self.indices, self.input.shape())?)])
    }
}

pub struct AvgPool2dBackward {
    pub input: Tensor,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}
impl BackwardRule for AvgPool2dBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(avg_pool2d_backward(g, self.input.shape(), self.kernel, self.stride, self.padding)?)])
    }
}

pub struct AdaptiveAvgPool2dBackward {
    pub input: Tensor,
}
impl BackwardRule for AdaptiveAvgPool2dBackward {
    fn name(&self) -> &'static str {
        "adaptive_avg_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(adaptive_avg_pool2d_backward(g, self.input.shape())?)])
    }
}

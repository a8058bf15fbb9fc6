//! Backward rule of conv2d: each gradient is its own kernel (backward-data,
//! backward-weight, bias sum), computed only for the operands that need it.

use crate::autograd::BackwardRule;
use crate::tensor::ops::conv::{conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, Conv2dParams};
use crate::{Result, Tensor};

pub struct Conv2dBackward {
    pub input: Tensor,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub params: Conv2dParams,
}
impl BackwardRule for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        [Some(&self.input), Some(&self.weight), self.bias.as_ref()].into_iter().flatten().collect()
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (&self.input, &self.weight);
        let mut grads = vec![
            if x.requires_grad() { Some(conv2d_backward_input(g, w, x.shape(), self.params)?) } else { None },
            if w.requires_grad() { Some(conv2d_backward_weight(x, g, w.shape(), self.params)?) } else { None },
        ];
        if let Some(b) = &self.bias {
            grads.push(if b.requires_grad() { Some(conv2d_backward_bias(g)?) } else { None });
        }
        Ok(grads)
    }
}

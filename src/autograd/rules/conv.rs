//! Backward rule of conv2d: each gradient is its own kernel (backward-data,
//! backward-weight, bias sum), computed only for the operands that need it.

use crate::autograd::per_sample::{rows_per_sample, stack_per_sample};
use crate::autograd::BackwardRule;
use crate::tensor::ops::conv::{conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, Conv2dParams};
use crate::{Error, Result, Tensor};

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

    /// Weight and bias as parameters, the input sample-major data
    /// (`[B·m, C, H, W]`): one backward-weight kernel per sample (an im2col
    /// GEMM over that sample's images — the same work as the batched kernel,
    /// which loops over images too), the bias summed per sample over its
    /// images and pixels, and the input gradient in one batched call.
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        let run = || -> Result<Vec<Option<Tensor>>> {
            let (x, w) = (&self.input, &self.weight);
            if param_side[0] {
                return Err(Error::msg("per-sample gradients: op conv2d: the input depends on the parameters alone"));
            }
            let m = rows_per_sample(x, batch, "conv2d")?;
            let dx = if x.requires_grad() { Some(conv2d_backward_input(g, w, x.shape(), self.params)?) } else { None };
            let dw = if param_side[1] {
                let per = stack_per_sample(batch, |b| {
                    conv2d_backward_weight(&x.narrow(0, b * m, m)?, &g.narrow(0, b * m, m)?, w.shape(), self.params)
                })?;
                Some(per)
            } else if w.requires_grad() {
                Some(conv2d_backward_weight(x, g, w.shape(), self.params)?)
            } else {
                None
            };
            let mut grads = vec![dx, dw];
            if let Some(bias) = &self.bias {
                let db = if param_side.get(2).copied().unwrap_or(false) {
                    let (o, h, wd) = (g.shape()[1], g.shape()[2], g.shape()[3]);
                    Some(g.reshape(&[batch, m, o, h * wd])?.sum(&[1, 3], false)?)
                } else if bias.requires_grad() {
                    Some(conv2d_backward_bias(g)?)
                } else {
                    None
                };
                grads.push(db);
            }
            Ok(grads)
        };
        Some(run())
    }
}

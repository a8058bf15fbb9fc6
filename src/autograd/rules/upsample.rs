//! Backward rule of nearest upsampling: gradients summed back onto their source pixels.

use crate::autograd::BackwardRule;
use crate::tensor::ops::upsample::upsample_nearest2d_backward;
use crate::{Result, Tensor};

pub struct UpsampleNearest2dBackward {
    pub input: Tensor,
    /// Scale factors of a `upsample_nearest2d_scale` call, `None` for an explicit size.
    pub scales: [Option<f64>; 2],
}
impl BackwardRule for UpsampleNearest2dBackward {
    fn name(&self) -> &'static str {
        "upsample_nearest2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(upsample_nearest2d_backward(g, self.input.shape(), self.scales)?)])
    }
}

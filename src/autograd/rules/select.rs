//! Backward rule of where_cond (and so of masked_fill): the gradient goes to
//! the input each element was taken from.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// where_cond's rule: `cond` picks `on_true` (nonzero) or `on_false` per element.
pub struct WhereBackward {
    pub cond: Tensor,
    pub on_true: Tensor,
    pub on_false: Tensor,
}
impl BackwardRule for WhereBackward {
    fn name(&self) -> &'static str {
        "where_cond"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.on_true, &self.on_false]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zero = Tensor::zeros(&[], g.dtype(), g.device())?;
        let to_true = if self.on_true.requires_grad() {
            Some(Tensor::where_cond(&self.cond, g, &zero)?.sum_to_shape(self.on_true.shape())?)
        } else {
            None
        };
        let to_false = if self.on_false.requires_grad() {
            Some(Tensor::where_cond(&self.cond, &zero, g)?.sum_to_shape(self.on_false.shape())?)
        } else {
            None
        };
        Ok(vec![to_true, to_false])
    }
}

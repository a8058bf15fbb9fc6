//! Backward rule of matmul: dA = dC·Bᵀ, dB = Aᵀ·dC, summed over broadcast batch dims.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct MatmulBackward {
    pub lhs: Tensor,
    pub rhs: Tensor,
}
impl BackwardRule for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.lhs, &self.rhs]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ga = if self.lhs.requires_grad() { Some(g.matmul(&self.rhs.t()?)?.sum_to_shape(self.lhs.shape())?) } else { None };
        let gb = if self.rhs.requires_grad() { Some(self.lhs.t()?.matmul(g)?.sum_to_shape(self.rhs.shape())?) } else { None };
        Ok(vec![ga, gb])
    }
}

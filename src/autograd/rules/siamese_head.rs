//! Backward rules of the fused siamese head (with and without its BCE loss).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct SiameseHeadBackward {
    pub a: Tensor,
    pub b: Tensor,
    pub weight: Tensor,
    pub bias: Tensor,
}
impl BackwardRule for SiameseHeadBackward {
    fn name(&self) -> &'static str {
        "siamese_head"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b, &self.weight, &self.bias]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [da, db, dw, dbias] = Tensor::siamese_head_backward(&self.a, &self.b, &self.weight, g)?;
        Ok(vec![Some(da), Some(db), Some(dw), Some(dbias.reshape(self.bias.shape())?)])
    }
}

/// The BCE variant saved dL/dlogit (for a unit loss gradient) in the forward pass.
pub struct SiameseHeadBceBackward {
    pub a: Tensor,
    pub b: Tensor,
    pub weight: Tensor,
    pub bias: Tensor,
    pub grad_logit: Tensor,
}
impl BackwardRule for SiameseHeadBceBackward {
    fn name(&self) -> &'static str {
        "siamese_head_bce"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b, &self.weight, &self.bias]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let scaled = self.grad_logit.mul(&g.reshape(&[1, 1])?)?;
        let [da, db, dw, dbias] = Tensor::siamese_head_backward(&self.a, &self.b, &self.weight, &scaled)?;
        Ok(vec![Some(da), Some(db), Some(dw), Some(dbias.reshape(self.bias.shape())?)])
    }
}

//! Backward rule of GEGLU: both halves' gradients in one pass (see `backend::cpu::geglu`).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct GegluBackward {
    pub input: Tensor,
}
impl BackwardRule for GegluBackward {
    fn name(&self) -> &'static str {
        "geglu"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.input.geglu_backward(g)?)])
    }
}

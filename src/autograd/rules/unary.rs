//! Backward rule of the elementwise unary ops: grad · f'(x), one fused kernel.

use crate::autograd::BackwardRule;
use crate::backend::op::UnaryOp;
use crate::{Result, Tensor};

pub struct UnaryBackward {
    pub input: Tensor,
    pub op: UnaryOp,
}
impl BackwardRule for UnaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.input.unary_backward(self.op, out, g)?)])
    }
}

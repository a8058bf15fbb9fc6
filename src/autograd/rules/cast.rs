//! Backward rules of the copies: layout, dtype and device changes pass the gradient back.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct ContiguousBackward {
    pub input: Tensor,
}
impl BackwardRule for ContiguousBackward {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
    fn backward_batched(&self, out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(self.backward(out, g))
    }
}

pub struct ToDTypeBackward {
    pub input: Tensor,
}
impl BackwardRule for ToDTypeBackward {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.input.dtype())?)])
    }
    fn backward_batched(&self, out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(self.backward(out, g))
    }
}

pub struct ToDeviceBackward {
    pub input: Tensor,
}
impl BackwardRule for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.input.device())?)])
    }
    fn backward_batched(&self, out: &Tensor, g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(self.backward(out, g))
    }
}

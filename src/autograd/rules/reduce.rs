//! Backward rules of the reductions.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// The gradient with the reduced dims restored as size 1.
fn keepdim_shape(input: &Tensor, dims: &[usize]) -> Vec<usize> {
    input.shape().iter().enumerate().map(|(i, &d)| if dims.contains(&i) { 1 } else { d }).collect()
}

pub struct SumBackward {
    pub input: Tensor,
    pub dims: Vec<usize>,
    pub keepdim: bool,
}
impl BackwardRule for SumBackward {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = g.reshape(&keepdim_shape(&self.input, &self.dims))?;
        Ok(vec![Some(g.broadcast_to(self.input.shape())?.contiguous()?)])
    }
}

/// Max and min: the gradient goes to the elements equal to the extremum,
/// split evenly among ties.
pub struct ReduceBackward {
    pub input: Tensor,
    pub dims: Vec<usize>,
    pub keepdim: bool,
}
impl BackwardRule for ReduceBackward {
    fn name(&self) -> &'static str {
        "max/min"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let kshape = keepdim_shape(&self.input, &self.dims);
        let (out, g) = (out.reshape(&kshape)?, g.reshape(&kshape)?);
        let mask = self.input.eq(&out)?.to_dtype(g.dtype())?;
        let dims: Vec<isize> = self.dims.iter().map(|&d| d as isize).collect();
        let count = mask.sum(&dims, true)?;
        Ok(vec![Some(mask.mul(&g.div(&count)?)?)])
    }
}

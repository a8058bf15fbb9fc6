//! Backward rules of the indexing ops: each scatters the output gradient back
//! to where the forward read from, with a dedicated scatter-add kernel.

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// Embedding: the weight gradient is the output gradient added row by row
/// into the rows the ids picked; the ids get none.
pub struct EmbeddingBackward {
    pub ids: Tensor,
    pub weight: Tensor,
}
impl BackwardRule for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.ids, &self.weight]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None, Some(Tensor::embedding_backward(&self.ids, g, self.weight.shape()[0])?)])
    }
}

/// index_select: slices of the gradient are added back at their indices.
pub struct IndexSelectBackward {
    pub input: Tensor,
    pub indices: Tensor,
    pub dim: usize,
}
impl BackwardRule for IndexSelectBackward {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input, &self.indices]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.index_select_backward(self.dim, &self.indices, self.input.shape()[self.dim])?), None])
    }
}

/// gather: each gradient element is added where it was read from (scatter_add).
pub struct GatherBackward {
    pub input: Tensor,
    pub index: Tensor,
    pub dim: usize,
}
impl BackwardRule for GatherBackward {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input, &self.index]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.gather_backward(self.dim, &self.index, self.input.shape())?), None])
    }
}

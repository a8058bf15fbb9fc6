//! Backward rules of the indexing ops: each scatters the output gradient back
//! to where the forward read from, with a dedicated scatter-add kernel.

use crate::autograd::per_sample::{rows_per_sample, stack_per_sample};
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
    /// The table as a parameter, sample-major ids: each sample's rows scattered into its own table.
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        if !param_side[1] {
            return None;
        }
        let run = || -> Result<Vec<Option<Tensor>>> {
            let m = rows_per_sample(&self.ids, batch, "embedding")?;
            let vocab = self.weight.shape()[0];
            let dw =
                stack_per_sample(batch, |b| Tensor::embedding_backward(&self.ids.narrow(0, b * m, m)?, &g.narrow(0, b * m, m)?, vocab))?;
            Ok(vec![None, Some(dw)])
        };
        Some(run())
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

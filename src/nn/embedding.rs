//! `nn.Embedding`: rows of a table picked by integer ids.

use crate::nn::init::Init;
use crate::nn::store::ParamPath;
use crate::{Result, Tensor};

/// A lookup table `[num_embeddings, embedding_dim]`, N(0, 1) at creation as in PyTorch.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
}

impl Embedding {
    /// Create `weight` under `vs`, drawn from N(0, 1).
    pub fn new(vs: &ParamPath, num_embeddings: usize, embedding_dim: usize) -> Result<Embedding> {
        Ok(Embedding { weight: vs.var("weight", &[num_embeddings, embedding_dim], Init::default_embedding())? })
    }

    /// Rows of the table (the vocabulary size).
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Width of a row.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The rows of `ids` (any shape, integer dtype): `[*ids.shape, embedding_dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Tensor::embedding(ids, &self.weight)
    }
}

//! `nn.Embedding`: rows of a table picked by integer ids.

use crate::nn::init::Init;
use crate::nn::store::ParamPath;
use crate::{Result, Tensor};

/// A lookup table `[num_embeddings, embedding_dim]`, N(0, 1) at creation as in PyTorch.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// The row that receives no gradient (PyTorch's `padding_idx`).
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// Create `weight` under `vs`, drawn from N(0, 1).
    pub fn new(vs: &ParamPath, num_embeddings: usize, embedding_dim: usize) -> Result<Embedding> {
        Ok(Embedding { weight: vs.var("weight", &[num_embeddings, embedding_dim], Init::default_embedding())?, padding_idx: None })
    }

    /// Make `idx` the padding row, as `nn.Embedding(padding_idx=idx)`: it is
    /// looked up as usual but its gradient is always zero. (PyTorch also zeroes
    /// the row at creation; loaded weights keep whatever the file holds.)
    pub fn with_padding_idx(mut self, idx: usize) -> Embedding {
        self.padding_idx = Some(idx);
        self
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
        let out = Tensor::embedding(ids, &self.weight)?;
        match self.padding_idx {
            // Padding positions read the same row from a detached copy, so no gradient reaches it.
            Some(pad) if self.weight.requires_grad() => {
                let is_pad = ids.eq(&Tensor::full(pad as f64, &[], ids.dtype(), ids.device())?)?.unsqueeze(-1)?;
                Tensor::where_cond(&is_pad, &Tensor::embedding(ids, &self.weight.detach())?, &out)
            }
            _ => Ok(out),
        }
    }
}

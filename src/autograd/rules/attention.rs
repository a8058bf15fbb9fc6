//! Backward rule of scaled dot-product attention: the blockwise
//! FlashAttention backward, recomputing score tiles from the saved
//! log-sum-exp. The mask is a constant here (no gradient).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

pub struct AttentionBackward {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub mask: Option<Tensor>,
    pub causal: bool,
    pub scale: f64,
    /// `[B, H, Lq]` log-sum-exp of each query row's scores.
    pub lse: Tensor,
}
impl BackwardRule for AttentionBackward {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.q, &self.k, &self.v]
    }
    fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (dq, dk, dv) = self.q.scaled_dot_product_attention_backward(
            &self.k,
            &self.v,
            self.mask.as_ref(),
            self.causal,
            self.scale,
            out,
            &self.lse,
            g,
        )?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    }
}

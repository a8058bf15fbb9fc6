//! Backward rule of scaled dot-product attention: the blockwise
//! FlashAttention backward, recomputing score tiles from the saved
//! log-sum-exp. The mask is a constant here (no gradient).

use crate::autograd::BackwardRule;
use crate::{Result, Tensor};

/// Saved state of one attention call.
pub struct AttentionBackward {
    /// Queries `[B, H, Lq, D]`.
    pub q: Tensor,
    /// Keys `[B, H, Lk, D]`.
    pub k: Tensor,
    /// Values `[B, H, Lk, Dv]`.
    pub v: Tensor,
    /// The additive mask, if any (a constant: it gets no gradient).
    pub mask: Option<Tensor>,
    /// Whether query `i` saw only keys `j <= i`.
    pub causal: bool,
    /// The score scale the forward used.
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

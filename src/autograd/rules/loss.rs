//! Backward rules of the losses; each calls the loss's fused backward kernel.

use crate::autograd::BackwardRule;
use crate::tensor::ops::loss::{self, CrossEntropyOptions, Reduction};
use crate::{Result, Tensor};

/// mse_loss: `d/dpred = 2 (pred - target) g`, the target's is its negation.
pub struct MseLossBackward {
    pub pred: Tensor,
    pub target: Tensor,
    pub reduction: Reduction,
}
impl BackwardRule for MseLossBackward {
    fn name(&self) -> &'static str {
        "mse_loss"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.pred, &self.target]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let d_pred = loss::mse_loss_backward(&self.pred, &self.target, g, self.reduction)?;
        let d_target = if self.target.requires_grad() { Some(d_pred.neg()?) } else { None };
        Ok(vec![self.pred.requires_grad().then_some(d_pred), d_target])
    }
}

/// bce_with_logits: gradients to the logits, the targets and `pos_weight`.
pub struct BceWithLogitsBackward {
    pub logits: Tensor,
    pub targets: Tensor,
    pub pos_weight: Option<Tensor>,
    pub reduction: Reduction,
}
impl BackwardRule for BceWithLogitsBackward {
    fn name(&self) -> &'static str {
        "bce_with_logits"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.logits, &self.targets];
        v.extend(self.pos_weight.as_ref());
        v
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let need = [self.logits.requires_grad(), self.targets.requires_grad(), self.pos_weight.as_ref().is_some_and(|w| w.requires_grad())];
        let [dx, dy, dw] = loss::bce_with_logits_backward(&self.logits, &self.targets, self.pos_weight.as_ref(), g, self.reduction, need)?;
        let mut grads = vec![dx, dy];
        if self.pos_weight.is_some() {
            grads.push(dw);
        }
        Ok(grads)
    }
}

/// cross_entropy: `softmax - smoothed one-hot` per sample; integer targets get none.
pub struct CrossEntropyBackward {
    pub logits: Tensor,
    pub targets: Tensor,
    /// Per-sample log-sum-exp saved by the forward pass.
    pub log_sum_exp: Tensor,
    pub options: CrossEntropyOptions,
}
impl BackwardRule for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.logits, &self.targets]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(loss::cross_entropy_backward(&self.logits, &self.targets, &self.log_sum_exp, g, &self.options)?), None])
    }
}

/// cosine_similarity of `a` and `b` along `dim` (of their broadcast shape).
pub struct CosineSimilarityBackward {
    pub a: Tensor,
    pub b: Tensor,
    pub dim: usize,
    pub eps: f64,
}
impl BackwardRule for CosineSimilarityBackward {
    fn name(&self) -> &'static str {
        "cosine_similarity"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (da, db) = loss::cosine_similarity_backward(&self.a, &self.b, self.dim, self.eps, g)?;
        Ok(vec![Some(da), Some(db)])
    }
}

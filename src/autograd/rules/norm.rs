//! Backward rules of the normalisations: each calls one dedicated kernel
//! (`*_norm_backward`) that computes the input, weight and bias gradients
//! together from the statistics saved by the forward.

use crate::autograd::BackwardRule;
use crate::tensor::ops::norm::NormGradients;
use crate::{Result, Tensor};

/// The op's tensor inputs: the input, then weight and bias when present.
fn present<'a>(input: &'a Tensor, weight: &'a Option<Tensor>, bias: &'a Option<Tensor>) -> Vec<&'a Tensor> {
    [Some(input), weight.as_ref(), bias.as_ref()].into_iter().flatten().collect()
}

/// The gradients in the order of [`present`].
fn ordered(g: NormGradients, weight: &Option<Tensor>, bias: &Option<Tensor>) -> Vec<Option<Tensor>> {
    let mut v = vec![Some(g.input)];
    if weight.is_some() {
        v.push(Some(g.weight));
    }
    if bias.is_some() {
        v.push(Some(g.bias));
    }
    v
}

/// Saved state of group norm and group norm + SiLU.
pub struct GroupNormBackward {
    /// The op's input.
    pub input: Tensor,
    /// The affine weight, if any.
    pub weight: Option<Tensor>,
    /// The affine bias, if any.
    pub bias: Option<Tensor>,
    /// `[N, groups]`.
    pub mean: Tensor,
    /// `[N, groups]`, `1/sqrt(var + eps)`.
    pub rstd: Tensor,
    /// Number of channel groups.
    pub num_groups: usize,
    /// Whether the forward was `group_norm_silu`.
    pub silu: bool,
}
impl BackwardRule for GroupNormBackward {
    fn name(&self) -> &'static str {
        if self.silu {
            "group_norm_silu"
        } else {
            "group_norm"
        }
    }
    fn inputs(&self) -> Vec<&Tensor> {
        present(&self.input, &self.weight, &self.bias)
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let grads = self.input.group_norm_backward(
            g,
            &self.mean,
            &self.rstd,
            self.num_groups,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.silu,
        )?;
        Ok(ordered(grads, &self.weight, &self.bias))
    }
}

/// Saved state of layer norm.
pub struct LayerNormBackward {
    /// The op's input.
    pub input: Tensor,
    /// The affine weight, if any.
    pub weight: Option<Tensor>,
    /// The affine bias, if any.
    pub bias: Option<Tensor>,
    /// Mean of each normalised row.
    pub mean: Tensor,
    /// `1/sqrt(var + eps)` of each normalised row.
    pub rstd: Tensor,
    /// The trailing dims normalised over.
    pub normalized_shape: Vec<usize>,
}
impl BackwardRule for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        present(&self.input, &self.weight, &self.bias)
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let grads = self.input.layer_norm_backward(g, &self.mean, &self.rstd, &self.normalized_shape, self.weight.as_ref())?;
        Ok(ordered(grads, &self.weight, &self.bias))
    }
}

/// Saved state of batch norm.
pub struct BatchNormBackward {
    /// The op's input.
    pub input: Tensor,
    /// The affine weight, if any.
    pub weight: Option<Tensor>,
    /// The affine bias, if any.
    pub bias: Option<Tensor>,
    /// `[C]`: the batch mean in training, the running mean in evaluation.
    pub mean: Tensor,
    /// `[C]` `1/sqrt(var + eps)` of the statistics used.
    pub rstd: Tensor,
    /// Whether the batch statistics were used (the gradient flows through them).
    pub training: bool,
}
impl BackwardRule for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        present(&self.input, &self.weight, &self.bias)
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let grads = self.input.batch_norm_backward(g, &self.mean, &self.rstd, self.weight.as_ref(), self.training)?;
        Ok(ordered(grads, &self.weight, &self.bias))
    }
}

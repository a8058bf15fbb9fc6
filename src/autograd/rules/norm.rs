//! Backward rules of the normalisations: each calls one dedicated kernel
//! (`*_norm_backward`) that computes the input, weight and bias gradients
//! together from the statistics saved by the forward.

use crate::autograd::per_sample::rows_per_sample;
use crate::autograd::BackwardRule;
use crate::tensor::ops::norm::NormGradients;
use crate::{Error, Result, Tensor};

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

/// Per-sample gradients of a normalisation whose statistics are per row of
/// its input (group and layer norm, batch norm on running statistics): its
/// backward kernel run on each sample's block of `m` leading rows, where
/// `stats_per_row` statistics belong to each row. The input gradients are
/// those blocks concatenated (each sample's equals the batched one's, as the
/// rows do not interact), and the affine gradients are stacked per sample
/// for the parameter-side weight and bias and summed for the others.
fn norm_per_sample(
    name: &str,
    input: &Tensor,
    weight: &Option<Tensor>,
    bias: &Option<Tensor>,
    batch: usize,
    param_side: &[bool],
    backward: impl Fn(usize, usize) -> Result<NormGradients>,
) -> Result<Vec<Option<Tensor>>> {
    if param_side[0] {
        return Err(Error::msg(format!("per-sample gradients: op {name}: the input depends on the parameters alone")));
    }
    let m = rows_per_sample(input, batch, name)?;
    let (mut dx, mut dw, mut db) = (Vec::with_capacity(batch), Vec::with_capacity(batch), Vec::with_capacity(batch));
    for b in 0..batch {
        let g = backward(b * m, m)?;
        dx.push(g.input);
        dw.push(g.weight);
        db.push(g.bias);
    }
    let mut grads = vec![input.requires_grad().then(|| Tensor::cat(&dx, 0)).transpose()?];
    let mut next = 1;
    for (param, parts) in [(weight, dw), (bias, db)] {
        let Some(p) = param else { continue };
        let stacked = Tensor::stack(&parts, 0)?;
        grads.push(if param_side[next] {
            Some(stacked)
        } else if p.requires_grad() {
            Some(stacked.sum(&[0], false)?)
        } else {
            None
        });
        next += 1;
    }
    Ok(grads)
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
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(norm_per_sample(self.name(), &self.input, &self.weight, &self.bias, batch, param_side, |start, len| {
            self.input.narrow(0, start, len)?.group_norm_backward(
                &g.narrow(0, start, len)?,
                &self.mean.narrow(0, start, len)?,
                &self.rstd.narrow(0, start, len)?,
                self.num_groups,
                self.weight.as_ref(),
                self.bias.as_ref(),
                self.silu,
            )
        }))
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
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        // The statistics are one per normalised row; a leading row holds `rows_per_lead` of them.
        let rows_per_lead = self.mean.numel() / self.input.shape().first().copied().unwrap_or(1).max(1);
        Some(norm_per_sample(self.name(), &self.input, &self.weight, &self.bias, batch, param_side, |start, len| {
            let (s, l) = (start * rows_per_lead, len * rows_per_lead);
            self.input.narrow(0, start, len)?.layer_norm_backward(
                &g.narrow(0, start, len)?,
                &self.mean.narrow(0, s, l)?,
                &self.rstd.narrow(0, s, l)?,
                &self.normalized_shape,
                self.weight.as_ref(),
            )
        }))
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
    fn mixes_samples(&self) -> bool {
        self.training
    }
    /// Evaluation mode only (the running statistics are constants); in
    /// training the engine stops at [`BackwardRule::mixes_samples`] first.
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        if self.training {
            return None;
        }
        Some(norm_per_sample(self.name(), &self.input, &self.weight, &self.bias, batch, param_side, |start, len| {
            self.input.narrow(0, start, len)?.batch_norm_backward(
                &g.narrow(0, start, len)?,
                &self.mean,
                &self.rstd,
                self.weight.as_ref(),
                false,
            )
        }))
    }
}

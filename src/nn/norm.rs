//! Normalisation layers: `nn.GroupNorm`, `nn.LayerNorm`, `nn.BatchNorm2d`.

use crate::autograd::no_grad;
use crate::nn::init::Init;
use crate::nn::store::ParamPath;
use crate::{DType, Device, Error, Result, Tensor};

/// `nn.GroupNorm(num_groups, num_channels, eps, affine)`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    /// Groups the channels are split into.
    pub num_groups: usize,
    /// Added to the variance.
    pub eps: f64,
    /// `[C]`, ones at creation (when affine).
    pub weight: Option<Tensor>,
    /// `[C]`, zeros at creation (when affine).
    pub bias: Option<Tensor>,
}

impl GroupNorm {
    /// Create `weight` (ones) and `bias` (zeros) under `vs` when `affine`.
    pub fn new(vs: &ParamPath, num_groups: usize, num_channels: usize, eps: f64, affine: bool) -> Result<GroupNorm> {
        if num_groups == 0 || num_channels % num_groups != 0 {
            return Err(Error::msg(format!("group norm `{}`: {num_channels} channels do not split into {num_groups} groups", vs.prefix())));
        }
        let (weight, bias) = affine_params(vs, &[num_channels], affine)?;
        Ok(GroupNorm { num_groups, eps, weight, bias })
    }

    /// Normalise `x` (`[N, C, *]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm(self.num_groups, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }

    /// `silu(forward(x))` in one fused pass (the pair in every diffusers ResNet block).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm_silu(self.num_groups, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// `nn.LayerNorm(normalized_shape, eps, elementwise_affine)`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// The trailing dims normalised together.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Shaped `normalized_shape`, ones at creation (when affine).
    pub weight: Option<Tensor>,
    /// Shaped `normalized_shape`, zeros at creation (when affine).
    pub bias: Option<Tensor>,
}

impl LayerNorm {
    /// Create `weight` (ones) and `bias` (zeros) shaped `normalized_shape` under `vs` when `affine`.
    pub fn new(vs: &ParamPath, normalized_shape: &[usize], eps: f64, affine: bool) -> Result<LayerNorm> {
        let (weight, bias) = affine_params(vs, normalized_shape, affine)?;
        Ok(LayerNorm { normalized_shape: normalized_shape.to_vec(), eps, weight, bias })
    }

    /// Normalise the trailing `normalized_shape` dims of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.normalized_shape, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// `weight` = 1 and `bias` = 0 of `shape`, or neither.
fn affine_params(vs: &ParamPath, shape: &[usize], affine: bool) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !affine {
        return Ok((None, None));
    }
    Ok((Some(vs.var("weight", shape, Init::ONES)?), Some(vs.var("bias", shape, Init::ZEROS)?)))
}

/// `nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats=True)`:
/// batch statistics in training (updating the running ones in place),
/// running statistics in evaluation. The running statistics and the batch
/// counter are buffers, saved under torch's names.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch in the running statistics; `None` is torch's
    /// `momentum=None`, a cumulative average (1 / batches seen).
    pub momentum: Option<f64>,
    /// `[C]`, ones at creation (when affine).
    pub weight: Option<Tensor>,
    /// `[C]`, zeros at creation (when affine).
    pub bias: Option<Tensor>,
    /// `[C]`, zeros at creation.
    pub running_mean: Tensor,
    /// `[C]`, ones at creation.
    pub running_var: Tensor,
    /// Scalar i64: training batches seen.
    pub num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    /// torch's defaults are eps 1e-5 and momentum `Some(0.1)`.
    pub fn new(vs: &ParamPath, num_features: usize, eps: f64, momentum: Option<f64>, affine: bool) -> Result<BatchNorm2d> {
        let (weight, bias) = affine_params(vs, &[num_features], affine)?;
        let dtype = vs.store().dtype();
        let running_mean = vs.buffer("running_mean", Tensor::zeros(&[num_features], dtype, Device::Cpu)?)?;
        let running_var = vs.buffer("running_var", Tensor::ones(&[num_features], dtype, Device::Cpu)?)?;
        let num_batches_tracked = vs.buffer("num_batches_tracked", Tensor::zeros(&[], DType::I64, Device::Cpu)?)?;
        Ok(BatchNorm2d { eps, momentum, weight, bias, running_mean, running_var, num_batches_tracked })
    }

    /// Normalise `x` (`[N, C, H, W]`); `train` uses and updates batch statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.rank() != 4 {
            return Err(Error::bad_shape("batch_norm2d", format!("input must be [N, C, H, W], got {:?}", x.shape())));
        }
        let momentum = if train {
            let batches = no_grad(|| -> Result<f64> {
                let n = self.num_batches_tracked.to_scalar_f64()? + 1.0;
                self.num_batches_tracked.assign(&Tensor::scalar(n as i64).to_device(self.num_batches_tracked.device())?)?;
                Ok(n)
            })?;
            self.momentum.unwrap_or(1.0 / batches)
        } else {
            0.0
        };
        x.batch_norm(Some(&self.running_mean), Some(&self.running_var), self.weight.as_ref(), self.bias.as_ref(), train, momentum, self.eps)
    }

    /// `relu(norm(cat(parts, 1)))`: this normalisation and a ReLU over the
    /// channel-wise concatenation of `parts` (a DenseNet layer's input). In
    /// eval mode it is one fused pass reading the parts in place; in training
    /// the concatenation, normalisation and ReLU run one by one.
    pub fn forward_cat_relu(&self, parts: &[Tensor], train: bool) -> Result<Tensor> {
        if train {
            let x = if parts.len() == 1 { parts[0].clone() } else { Tensor::cat(parts, 1)? };
            return self.forward(&x, true)?.relu();
        }
        let (scale, shift) = self.eval_scale_shift()?;
        Tensor::cat_channel_affine(parts, &scale, &shift, true)
    }

    /// The eval-mode normalisation as a per-channel affine map `x·scale + shift`:
    /// `scale = weight / √(running_var + eps)`, `shift = bias − running_mean·scale`
    /// (differentiable in `weight` and `bias`), for folding into the op before it.
    pub fn eval_scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let rstd = self.running_var.add_scalar(self.eps)?.rsqrt()?;
        let scale = match &self.weight {
            Some(w) => w.mul(&rstd)?,
            None => rstd,
        };
        let shift = self.running_mean.mul(&scale)?.neg()?;
        let shift = match &self.bias {
            Some(b) => b.add(&shift)?,
            None => shift,
        };
        Ok((scale, shift))
    }
}

//! `nn.Conv2d` over NCHW tensors.

use crate::nn::init::Init;
use crate::nn::norm::BatchNorm2d;
use crate::nn::store::ParamPath;
use crate::tensor::ops::conv::{Conv2dEpilogue, Conv2dParams};
use crate::{Error, Result, Tensor};

/// A 2-d convolution; `weight` is `[out_channels, in_channels / groups, k, k]` as in PyTorch.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kernel, kernel]`.
    pub weight: Tensor,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    pub params: Conv2dParams,
}

impl Conv2d {
    /// Create `weight` (and `bias`) under `vs` with PyTorch's default init
    /// (kaiming_uniform_ with a = √5; bias uniform in ±1/√fan_in).
    pub fn new(
        vs: &ParamPath,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        params: Conv2dParams,
        bias: bool,
    ) -> Result<Conv2d> {
        if params.groups == 0 || in_channels % params.groups != 0 || out_channels % params.groups != 0 {
            return Err(Error::msg(format!(
                "conv2d `{}`: {in_channels} input and {out_channels} output channels must both divide into {} groups",
                vs.prefix(),
                params.groups
            )));
        }
        let shape = [out_channels, in_channels / params.groups, kernel_size, kernel_size];
        let weight = vs.var("weight", &shape, Init::default_weight())?;
        let fan_in = shape[1] * kernel_size * kernel_size;
        let bias = if bias { Some(vs.var("bias", &[out_channels], Init::default_bias(fan_in))?) } else { None };
        Ok(Conv2d { weight, bias, params })
    }

    /// Input channels (all groups).
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1] * self.params.groups
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The convolution of `x` (`[N, in_channels, H, W]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.params)
    }

    /// `relu?(norm(conv(x)) + residual)`: this convolution, then `norm`, then
    /// the optional skip connection and ReLU. In eval mode (`train` false) the
    /// normalisation is a per-channel affine map folded into one fused
    /// convolution (one pass over the output instead of three or four); in
    /// training it needs the batch's statistics, so the ops run one by one.
    pub fn forward_batch_norm(&self, x: &Tensor, norm: &BatchNorm2d, train: bool, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        if train {
            let y = norm.forward(&self.forward(x)?, true)?;
            let y = match residual {
                Some(r) => y.add(r)?,
                None => y,
            };
            return if relu { y.relu() } else { Ok(y) };
        }
        let (scale, mut shift) = norm.eval_scale_shift()?;
        if let Some(bias) = &self.bias {
            shift = bias.mul(&scale)?.add(&shift)?;
        }
        let epilogue = Conv2dEpilogue { scale: Some(&scale), shift: Some(&shift), residual, relu };
        x.conv2d_fused(&self.weight, epilogue, self.params)
    }
}

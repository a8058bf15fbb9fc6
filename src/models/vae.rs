//! diffusers' `AutoencoderKL`: the encoder maps an image to the mean and
//! log-variance of a Gaussian over latents (through `quant_conv`), the decoder
//! maps a latent back (through `post_quant_conv`). Names follow diffusers.

use crate::models::blocks::{Downsample2D, ResnetBlock2D, SpatialSelfAttention, Upsample2D};
use crate::nn::{Conv2d, GroupNorm, ParamPath};
use crate::tensor::ops::conv::Conv2dParams;
use crate::{Error, Result, Rng, Tensor};
use serde::{Deserialize, Serialize};

/// The keys of diffusers' `AutoencoderKL` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_sample")]
    pub sample_size: usize,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<usize> {
    vec![64]
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_sample() -> usize {
    32
}
fn d_scale() -> f64 {
    0.18215
}

impl VaeConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let c: VaeConfig = serde_json::from_str(text).map_err(|e| Error::msg(format!("VAE config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::msg("VAE config: block type lists and block_out_channels differ in length"));
        }
        if self.down_block_types.iter().any(|t| t != "DownEncoderBlock2D") || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
            return Err(Error::msg("VAE config: only DownEncoderBlock2D / UpDecoderBlock2D blocks are supported"));
        }
        if self.act_fn != "silu" {
            return Err(Error::msg(format!("VAE config: act_fn `{}` is not supported", self.act_fn)));
        }
        Ok(())
    }

    /// Spatial downsampling factor image → latent.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<SpatialSelfAttention>,
}

impl MidBlock {
    fn new(vs: &ParamPath, ch: usize, groups: usize, attention: bool) -> Result<Self> {
        let r = |j: usize| ResnetBlock2D::new(&vs.pp("resnets").pp(j), ch, ch, None, groups, 1e-6);
        Ok(MidBlock {
            resnets: [r(0)?, r(1)?],
            attention: attention.then(|| SpatialSelfAttention::new(&vs.pp("attentions").pp(0), ch, groups, 1e-6)).transpose()?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnets[1].forward(&h, None)
    }
}

/// The latent distribution the encoder outputs.
pub struct LatentDist {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl LatentDist {
    /// A sample by the reparameterisation trick: mean + exp(logvar/2)·ε (differentiable).
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        let eps = Tensor::randn(self.mean.shape(), 0.0, 1.0, self.mean.dtype(), self.mean.device(), rng)?;
        self.mean.add(&self.logvar.affine(0.5, 0.0)?.exp()?.mul(&eps)?)
    }

    /// KL divergence to N(0, I), summed over latent dims, averaged over the batch.
    pub fn kl(&self) -> Result<Tensor> {
        let per = self.mean.square()?.add(&self.logvar.exp()?)?.sub(&self.logvar)?.add_scalar(-1.0)?.mul_scalar(0.5)?;
        per.sum(&[1, 2, 3], false)?.mean_all()
    }
}

/// The KL autoencoder.
pub struct AutoencoderKL {
    config: VaeConfig,
    enc_conv_in: Conv2d,
    enc_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    enc_mid: MidBlock,
    enc_norm_out: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: MidBlock,
    dec_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    dec_norm_out: GroupNorm,
    dec_conv_out: Conv2d,
}

impl AutoencoderKL {
    pub fn new(vs: &ParamPath, config: &VaeConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let (g, lat) = (config.norm_num_groups, config.latent_channels);
        let k3 = Conv2dParams::new(1, 1);
        let e = vs.pp("encoder");
        let mut enc_blocks = Vec::new();
        let mut out_ch = ch[0];
        for (i, &block_ch) in ch.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = block_ch;
            let bv = e.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| ResnetBlock2D::new(&bv.pp("resnets").pp(j), if j == 0 { in_ch } else { out_ch }, out_ch, None, g, 1e-6))
                .collect::<Result<Vec<_>>>()?;
            let down = (i + 1 != n).then(|| Downsample2D::new(&bv.pp("downsamplers").pp(0), out_ch, 0)).transpose()?;
            enc_blocks.push((resnets, down));
        }
        let d = vs.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_blocks = Vec::new();
        let mut out_ch = rev[0];
        for (i, &block_ch) in rev.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = block_ch;
            let bv = d.pp("up_blocks").pp(i);
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| ResnetBlock2D::new(&bv.pp("resnets").pp(j), if j == 0 { in_ch } else { out_ch }, out_ch, None, g, 1e-6))
                .collect::<Result<Vec<_>>>()?;
            let up = (i + 1 != n).then(|| Upsample2D::new(&bv.pp("upsamplers").pp(0), out_ch)).transpose()?;
            dec_blocks.push((resnets, up));
        }
        let one = Conv2dParams::default();
        Ok(AutoencoderKL {
            config: config.clone(),
            enc_conv_in: Conv2d::new(&e.pp("conv_in"), config.in_channels, ch[0], 3, k3, true)?,
            enc_blocks,
            enc_mid: MidBlock::new(&e.pp("mid_block"), ch[n - 1], g, config.mid_block_add_attention)?,
            enc_norm_out: GroupNorm::new(&e.pp("conv_norm_out"), g, ch[n - 1], 1e-6, true)?,
            enc_conv_out: Conv2d::new(&e.pp("conv_out"), ch[n - 1], 2 * lat, 3, k3, true)?,
            quant_conv: config.use_quant_conv.then(|| Conv2d::new(&vs.pp("quant_conv"), 2 * lat, 2 * lat, 1, one, true)).transpose()?,
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| Conv2d::new(&vs.pp("post_quant_conv"), lat, lat, 1, one, true))
                .transpose()?,
            dec_conv_in: Conv2d::new(&d.pp("conv_in"), lat, ch[n - 1], 3, k3, true)?,
            dec_mid: MidBlock::new(&d.pp("mid_block"), ch[n - 1], g, config.mid_block_add_attention)?,
            dec_blocks,
            dec_norm_out: GroupNorm::new(&d.pp("conv_norm_out"), g, ch[0], 1e-6, true)?,
            dec_conv_out: Conv2d::new(&d.pp("conv_out"), ch[0], config.out_channels, 3, k3, true)?,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The latent distribution of images [B, in_channels, H, W] in [-1, 1].
    pub fn encode(&self, x: &Tensor) -> Result<LatentDist> {
        crate::autograd::on_workers(|| {
            if x.rank() != 4 || x.shape()[1] != self.config.in_channels {
                return Err(Error::bad_shape(
                    "vae encode",
                    format!("expected [B, {}, H, W], got {:?}", self.config.in_channels, x.shape()),
                ));
            }
            let mut h = self.enc_conv_in.forward(x)?;
            for (resnets, down) in &self.enc_blocks {
                for r in resnets {
                    h = r.forward(&h, None)?;
                }
                if let Some(d) = down {
                    h = d.forward(&h)?;
                }
            }
            h = self.enc_mid.forward(&h)?;
            h = self.enc_conv_out.forward(&self.enc_norm_out.forward_silu(&h)?)?;
            if let Some(q) = &self.quant_conv {
                h = q.forward(&h)?;
            }
            let lat = self.config.latent_channels;
            Ok(LatentDist { mean: h.narrow(1, 0, lat)?, logvar: h.narrow(1, lat, lat)?.clamp(-30.0, 20.0)? })
        })
    }

    /// Images from (unscaled) latents [B, latent_channels, h, w].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        crate::autograd::on_workers(|| {
            if z.rank() != 4 || z.shape()[1] != self.config.latent_channels {
                return Err(Error::bad_shape(
                    "vae decode",
                    format!("expected [B, {}, h, w], got {:?}", self.config.latent_channels, z.shape()),
                ));
            }
            let mut h = match &self.post_quant_conv {
                Some(p) => p.forward(z)?,
                None => z.clone(),
            };
            h = self.dec_conv_in.forward(&h)?;
            h = self.dec_mid.forward(&h)?;
            for (resnets, up) in &self.dec_blocks {
                for r in resnets {
                    h = r.forward(&h, None)?;
                }
                if let Some(u) = up {
                    h = u.forward(&h, None)?;
                }
            }
            self.dec_conv_out.forward(&self.dec_norm_out.forward_silu(&h)?)
        })
    }
}

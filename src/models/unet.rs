//! diffusers' `UNet2DConditionModel` (the denoiser of Stable Diffusion 1.x/2.x
//! and RoentGen), configured by its own `config.json`; parameter names follow
//! diffusers' module tree (`down_blocks.1.attentions.0.proj_in.weight`, …).

use crate::models::blocks::{Downsample2D, ResnetBlock2D, Transformer2D, TransformerSpec, Upsample2D};
use crate::nn::{Conv2d, GroupNorm, Linear, ParamPath};
use crate::tensor::ops::conv::Conv2dParams;
use crate::{DType, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// An int or a per-block list in a diffusers config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn expand(&self, n: usize, key: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::msg(format!("config `{key}` has {} entries for {n} blocks", v.len()))),
        }
    }
}

/// The keys of diffusers' `UNet2DConditionModel` config that SD-1.x/2.x use.
/// Unknown keys are ignored; known features we do not implement are rejected
/// with a clear error (see [`UNetConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_sample")]
    pub sample_size: usize,
    #[serde(default = "d_four")]
    pub in_channels: usize,
    #[serde(default = "d_four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_false_block")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: usize,
    #[serde(default = "d_one_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// diffusers' legacy name: for SD-1.x/2.x configs this is the number of heads.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "d_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
}

fn d_sample() -> usize {
    64
}
fn d_four() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_one() -> usize {
    1
}
fn d_three() -> usize {
    3
}
fn d_down() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_false_block() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn d_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> usize {
    2
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_cross() -> usize {
    1280
}
fn d_one_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn d_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_shift() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}

impl UNetConfig {
    /// Parse a diffusers `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: UNetConfig = serde_json::from_str(text).map_err(|e| Error::msg(format!("UNet config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Stable Diffusion 1.5's UNet.
    pub fn sd15() -> Self {
        let mut c: UNetConfig = serde_json::from_str("{}").expect("defaults");
        c.cross_attention_dim = 768;
        c
    }

    /// Reject configs using features this implementation does not have.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let bad = |what: String| Err(Error::msg(format!("UNet config: {what} is not supported")));
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::msg(format!(
                "UNet config: {n} block_out_channels but {} down and {} up block types",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return bad(format!("down block type `{t}`"));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return bad(format!("up block type `{t}`"));
            }
        }
        if !matches!(self.mid_block_type.as_deref(), Some("UNetMidBlock2DCrossAttn")) {
            return bad(format!("mid_block_type {:?}", self.mid_block_type));
        }
        if self.act_fn != "silu" {
            return bad(format!("act_fn `{}`", self.act_fn));
        }
        if self.resnet_time_scale_shift != "default" {
            return bad(format!("resnet_time_scale_shift `{}`", self.resnet_time_scale_shift));
        }
        if self.class_embed_type.is_some() || self.addition_embed_type.is_some() || self.num_class_embeds.is_some() {
            return bad("class or addition embeddings".into());
        }
        if self.dual_cross_attention {
            return bad("dual_cross_attention".into());
        }
        if self.time_embedding_type != "positional" || self.conv_in_kernel != 3 || self.conv_out_kernel != 3 {
            return bad("a non-default time embedding or conv kernel".into());
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            return Err(Error::msg(format!(
                "UNet config: block_out_channels {:?} not divisible by norm_num_groups {}",
                self.block_out_channels, self.norm_num_groups
            )));
        }
        self.heads()?;
        Ok(())
    }

    /// Heads per block: `num_attention_heads` if given, else diffusers' legacy `attention_head_dim`.
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads"),
            None => self.attention_head_dim.expand(n, "attention_head_dim"),
        }
    }
}

enum DownBlock {
    Plain { resnets: Vec<ResnetBlock2D>, down: Option<Downsample2D> },
    CrossAttn { resnets: Vec<ResnetBlock2D>, attentions: Vec<Transformer2D>, down: Option<Downsample2D> },
}

enum UpBlock {
    Plain { resnets: Vec<ResnetBlock2D>, up: Option<Upsample2D> },
    CrossAttn { resnets: Vec<ResnetBlock2D>, attentions: Vec<Transformer2D>, up: Option<Upsample2D> },
}

/// The conditional UNet.
pub struct UNet2DConditionModel {
    config: UNetConfig,
    time_linear_1: Linear,
    time_linear_2: Linear,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_resnets: Vec<ResnetBlock2D>,
    mid_attentions: Vec<Transformer2D>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// Sinusoidal timestep features as diffusers' `get_timestep_embedding` (max period 10000).
pub fn timestep_embedding(timesteps: &[f64], dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let mut out = vec![0f32; timesteps.len() * dim];
    for (i, &t) in timesteps.iter().enumerate() {
        for j in 0..half {
            // diffusers computes the frequencies in f32; so do we.
            let exponent = (-(10000f32.ln()) * j as f32 / (half as f32 - freq_shift as f32)).exp();
            let arg = t as f32 * exponent;
            let (s, c) = (arg.sin(), arg.cos());
            let row = &mut out[i * dim..];
            if flip_sin_to_cos {
                row[j] = c;
                row[half + j] = s;
            } else {
                row[j] = s;
                row[half + j] = c;
            }
        }
    }
    Tensor::from_vec(out, &[timesteps.len(), dim])
}

impl UNet2DConditionModel {
    pub fn new(vs: &ParamPath, config: &UNetConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let heads = config.heads()?;
        let tlayers = config.transformer_layers_per_block.expand(n, "transformer_layers_per_block")?;
        let only_cross = config.only_cross_attention.expand(n, "only_cross_attention")?;
        let spec = |i: usize| TransformerSpec {
            heads: heads[i],
            cross_dim: config.cross_attention_dim,
            layers: tlayers[i],
            groups,
            use_linear_projection: config.use_linear_projection,
            only_cross_attention: only_cross[i],
        };
        let k3 = Conv2dParams::new(1, 1);
        let tv = vs.pp("time_embedding");
        let time_linear_1 = Linear::new(&tv.pp("linear_1"), ch[0], temb, true)?;
        let time_linear_2 = Linear::new(&tv.pp("linear_2"), temb, temb, true)?;
        let conv_in = Conv2d::new(&vs.pp("conv_in"), config.in_channels, ch[0], 3, k3, true)?;

        let mut down_blocks = Vec::new();
        let mut out_ch = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let (in_ch, last) = (out_ch, i + 1 == n);
            out_ch = ch[i];
            let bv = vs.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| ResnetBlock2D::new(&bv.pp("resnets").pp(j), if j == 0 { in_ch } else { out_ch }, out_ch, Some(temb), groups, eps))
                .collect::<Result<Vec<_>>>()?;
            let down = (!last).then(|| Downsample2D::new(&bv.pp("downsamplers").pp(0), out_ch, config.downsample_padding)).transpose()?;
            down_blocks.push(if kind == "CrossAttnDownBlock2D" {
                let attentions = (0..config.layers_per_block)
                    .map(|j| Transformer2D::new(&bv.pp("attentions").pp(j), out_ch, spec(i)))
                    .collect::<Result<Vec<_>>>()?;
                DownBlock::CrossAttn { resnets, attentions, down }
            } else {
                DownBlock::Plain { resnets, down }
            });
        }

        let mv = vs.pp("mid_block");
        let mid_ch = ch[n - 1];
        let mid_resnets = (0..2)
            .map(|j| ResnetBlock2D::new(&mv.pp("resnets").pp(j), mid_ch, mid_ch, Some(temb), groups, eps))
            .collect::<Result<Vec<_>>>()?;
        let mid_attentions = vec![Transformer2D::new(&mv.pp("attentions").pp(0), mid_ch, spec(n - 1))?];

        let mut up_blocks = Vec::new();
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out_ch = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let last = i + 1 == n;
            let bv = vs.pp("up_blocks").pp(i);
            let layers = config.layers_per_block + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let skip = if j + 1 == layers { in_ch } else { out_ch };
                    let res_in = if j == 0 { prev_out } else { out_ch };
                    ResnetBlock2D::new(&bv.pp("resnets").pp(j), res_in + skip, out_ch, Some(temb), groups, eps)
                })
                .collect::<Result<Vec<_>>>()?;
            let up = (!last).then(|| Upsample2D::new(&bv.pp("upsamplers").pp(0), out_ch)).transpose()?;
            let block_index = n - 1 - i;
            up_blocks.push(if kind == "CrossAttnUpBlock2D" {
                let attentions = (0..layers)
                    .map(|j| Transformer2D::new(&bv.pp("attentions").pp(j), out_ch, spec(block_index)))
                    .collect::<Result<Vec<_>>>()?;
                UpBlock::CrossAttn { resnets, attentions, up }
            } else {
                UpBlock::Plain { resnets, up }
            });
        }

        Ok(UNet2DConditionModel {
            config: config.clone(),
            time_linear_1,
            time_linear_2,
            conv_in,
            down_blocks,
            mid_resnets,
            mid_attentions,
            up_blocks,
            conv_norm_out: GroupNorm::new(&vs.pp("conv_norm_out"), groups, ch[0], eps, true)?,
            conv_out: Conv2d::new(&vs.pp("conv_out"), ch[0], config.out_channels, 3, k3, true)?,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The time embedding [B, 4·C0] for timesteps (one per batch item, or one for all).
    pub fn time_embedding(&self, timesteps: &[f64], batch: usize, dtype: DType, device: crate::Device) -> Result<Tensor> {
        let ts: Vec<f64> = match timesteps.len() {
            1 => vec![timesteps[0]; batch],
            n if n == batch => timesteps.to_vec(),
            n => return Err(Error::bad_shape("unet", format!("{n} timesteps for a batch of {batch}"))),
        };
        let t = timestep_embedding(&ts, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift as f64)?
            .to_dtype(dtype)?
            .to_device(device)?;
        self.time_linear_2.forward(&self.time_linear_1.forward(&t)?.silu()?)
    }

    /// Predict the noise (or v) for latents `sample` [B, C, H, W] at `timesteps`
    /// given the text encoder's states `context` [B, L, cross_attention_dim].
    pub fn forward(&self, sample: &Tensor, timesteps: &[f64], context: &Tensor) -> Result<Tensor> {
        crate::autograd::on_workers(|| {
            if sample.rank() != 4 || sample.shape()[1] != self.config.in_channels {
                return Err(Error::bad_shape(
                    "unet",
                    format!("sample must be [B, {}, H, W], got {:?}", self.config.in_channels, sample.shape()),
                ));
            }
            if context.rank() != 3 || context.shape()[2] != self.config.cross_attention_dim || context.shape()[0] != sample.shape()[0] {
                return Err(Error::bad_shape(
                    "unet",
                    format!(
                        "encoder_hidden_states must be [{}, L, {}], got {:?}",
                        sample.shape()[0],
                        self.config.cross_attention_dim,
                        context.shape()
                    ),
                ));
            }
            let emb = self.time_embedding(timesteps, sample.shape()[0], sample.dtype(), sample.device())?;
            let x = if self.config.center_input_sample { sample.affine(2.0, -1.0)? } else { sample.clone() };
            let mut h = self.conv_in.forward(&x)?;
            let mut skips = vec![h.clone()];
            for block in &self.down_blocks {
                match block {
                    DownBlock::Plain { resnets, down } => {
                        for r in resnets {
                            h = r.forward(&h, Some(&emb))?;
                            skips.push(h.clone());
                        }
                        if let Some(d) = down {
                            h = d.forward(&h)?;
                            skips.push(h.clone());
                        }
                    }
                    DownBlock::CrossAttn { resnets, attentions, down } => {
                        for (r, a) in resnets.iter().zip(attentions) {
                            h = a.forward(&r.forward(&h, Some(&emb))?, context)?;
                            skips.push(h.clone());
                        }
                        if let Some(d) = down {
                            h = d.forward(&h)?;
                            skips.push(h.clone());
                        }
                    }
                }
            }
            h = self.mid_resnets[0].forward(&h, Some(&emb))?;
            h = self.mid_attentions[0].forward(&h, context)?;
            h = self.mid_resnets[1].forward(&h, Some(&emb))?;
            for block in &self.up_blocks {
                let (resnets, attentions, up) = match block {
                    UpBlock::Plain { resnets, up } => (resnets, None, up),
                    UpBlock::CrossAttn { resnets, attentions, up } => (resnets, Some(attentions), up),
                };
                for (j, r) in resnets.iter().enumerate() {
                    let skip = skips.pop().ok_or_else(|| Error::msg("unet: skip connections exhausted"))?;
                    h = r.forward(&Tensor::cat(&[h, skip], 1)?, Some(&emb))?;
                    if let Some(atts) = attentions {
                        h = atts[j].forward(&h, context)?;
                    }
                }
                if let Some(u) = up {
                    // Upsample to the next skip's size so odd latent sizes work (diffusers' upsample_size).
                    let size = skips.last().map(|s| [s.shape()[2], s.shape()[3]]);
                    h = u.forward(&h, size)?;
                }
            }
            self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
        })
    }
}

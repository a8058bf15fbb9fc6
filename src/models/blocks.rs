//! Building blocks shared by the diffusers UNet and VAE, following diffusers'
//! module tree so parameter names map one to one: `ResnetBlock2D`,
//! `Attention` (`to_q`, `to_k`, `to_v`, `to_out.0`), `BasicTransformerBlock`
//! with a GEGLU feed-forward, `Transformer2DModel`, `Downsample2D`, `Upsample2D`.

use crate::models::clip_text::{merge_heads, split_heads};
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, ParamPath};
use crate::tensor::ops::attention::scaled_dot_product_attention;
use crate::tensor::ops::conv::Conv2dParams;
use crate::{Error, Result, Tensor};

/// diffusers' `ResnetBlock2D` (time_embedding_norm "default", output scale 1).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(vs: &ParamPath, in_ch: usize, out_ch: usize, temb: Option<usize>, groups: usize, eps: f64) -> Result<Self> {
        let k3 = Conv2dParams::new(1, 1);
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(&vs.pp("norm1"), groups, in_ch, eps, true)?,
            conv1: Conv2d::new(&vs.pp("conv1"), in_ch, out_ch, 3, k3, true)?,
            time_emb_proj: temb.map(|t| Linear::new(&vs.pp("time_emb_proj"), t, out_ch, true)).transpose()?,
            norm2: GroupNorm::new(&vs.pp("norm2"), groups, out_ch, eps, true)?,
            conv2: Conv2d::new(&vs.pp("conv2"), out_ch, out_ch, 3, k3, true)?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::new(&vs.pp("conv_shortcut"), in_ch, out_ch, 1, Conv2dParams::default(), true))
                .transpose()?,
        })
    }

    /// `temb` is the time embedding [B, temb]; the block applies SiLU before its projection.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&t.silu()?)?;
            h = h.add(&t.unsqueeze(-1)?.unsqueeze(-1)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip.add(&h)
    }
}

/// diffusers' `Attention` processor: projections, multi-head scaled dot-product, output projection.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    pub fn new(
        vs: &ParamPath,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let ctx = context_dim.unwrap_or(query_dim);
        Ok(Attention {
            to_q: Linear::new(&vs.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::new(&vs.pp("to_k"), ctx, inner, qkv_bias)?,
            to_v: Linear::new(&vs.pp("to_v"), ctx, inner, qkv_bias)?,
            to_out: Linear::new(&vs.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
            scale: 1.0 / (dim_head as f64).sqrt(),
        })
    }

    /// `x` [B, Lq, query_dim]; `context` [B, Lk, ctx] (self-attention when `None`).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = split_heads(&self.to_q.forward(x)?, self.heads)?;
        let k = split_heads(&self.to_k.forward(ctx)?, self.heads)?;
        let v = split_heads(&self.to_v.forward(ctx)?, self.heads)?;
        let a = scaled_dot_product_attention(&q, &k, &v, None, false, Some(self.scale))?;
        self.to_out.forward(&merge_heads(&a)?)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm with a residual.
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(vs: &ParamPath, dim: usize, heads: usize, dim_head: usize, cross_dim: usize, only_cross_attention: bool) -> Result<Self> {
        let inner_ff = 4 * dim;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::new(&vs.pp("norm1"), &[dim], 1e-5, true)?,
            attn1: Attention::new(&vs.pp("attn1"), dim, only_cross_attention.then_some(cross_dim), heads, dim_head, false)?,
            norm2: LayerNorm::new(&vs.pp("norm2"), &[dim], 1e-5, true)?,
            attn2: Attention::new(&vs.pp("attn2"), dim, Some(cross_dim), heads, dim_head, false)?,
            norm3: LayerNorm::new(&vs.pp("norm3"), &[dim], 1e-5, true)?,
            ff_proj: Linear::new(&vs.pp("ff").pp("net").pp(0).pp("proj"), dim, 2 * inner_ff, true)?,
            ff_out: Linear::new(&vs.pp("ff").pp("net").pp(2), inner_ff, dim, true)?,
            only_cross_attention,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let n = self.norm1.forward(x)?;
        let x = self.attn1.forward(&n, self.only_cross_attention.then_some(context))?.add(x)?;
        let x = self.attn2.forward(&self.norm2.forward(&x)?, Some(context))?.add(&x)?;
        // GEGLU: the projection's first half is the value, the second half its gate.
        let h = self.ff_proj.forward(&self.norm3.forward(&x)?)?;
        self.ff_out.forward(&h.geglu()?)?.add(&x)
    }
}

/// diffusers' `Transformer2DModel` for continuous (image) inputs.
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

enum Projection {
    Linear(Linear),
    Conv(Conv2d),
}

/// Settings of a `Transformer2DModel`.
#[derive(Clone, Copy, Debug)]
pub struct TransformerSpec {
    pub heads: usize,
    pub cross_dim: usize,
    pub layers: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
}

impl Transformer2D {
    pub fn new(vs: &ParamPath, channels: usize, spec: TransformerSpec) -> Result<Self> {
        if spec.heads == 0 || channels % spec.heads != 0 {
            return Err(Error::msg(format!("{}: {channels} channels do not split into {} attention heads", vs.prefix(), spec.heads)));
        }
        let dim_head = channels / spec.heads;
        let inner = spec.heads * dim_head;
        let proj = |name: &str, i: usize, o: usize| -> Result<Projection> {
            Ok(if spec.use_linear_projection {
                Projection::Linear(Linear::new(&vs.pp(name), i, o, true)?)
            } else {
                Projection::Conv(Conv2d::new(&vs.pp(name), i, o, 1, Conv2dParams::default(), true)?)
            })
        };
        let blocks = (0..spec.layers)
            .map(|l| {
                BasicTransformerBlock::new(
                    &vs.pp("transformer_blocks").pp(l),
                    inner,
                    spec.heads,
                    dim_head,
                    spec.cross_dim,
                    spec.only_cross_attention,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2D {
            norm: GroupNorm::new(&vs.pp("norm"), spec.groups, channels, 1e-6, true)?,
            proj_in: proj("proj_in", channels, inner)?,
            blocks,
            proj_out: proj("proj_out", inner, channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, _c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let n = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.shape()[1];
            t.permute(&[0, 2, 3, 1])?.reshape(&[b, h * w, c])
        };
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&n)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&n)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let to_image = |t: &Tensor| -> Result<Tensor> {
            let c = t.shape()[2];
            t.reshape(&[b, h, w, c])?.permute(&[0, 3, 1, 2])
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&t)?.contiguous()?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&t)?)?,
        };
        out.add(x)
    }
}

/// diffusers' `Downsample2D` with a conv: stride-2 3×3. With `padding` 0 (the
/// VAE), the input is first padded by one on the right and bottom.
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vs: &ParamPath, channels: usize, padding: usize) -> Result<Self> {
        let params = Conv2dParams::new(2, padding);
        Ok(Downsample2D { conv: Conv2d::new(&vs.pp("conv"), channels, channels, 3, params, true)?, pad_right_bottom: padding == 0 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
            let zc = Tensor::zeros(&[b, c, h, 1], x.dtype(), x.device())?;
            let x = Tensor::cat(&[x.clone(), zc], 3)?;
            let zr = Tensor::zeros(&[b, c, 1, w + 1], x.dtype(), x.device())?;
            let x = Tensor::cat(&[x, zr], 2)?;
            return self.conv.forward(&x);
        }
        self.conv.forward(x)
    }
}

/// diffusers' `Upsample2D` with a conv: nearest ×2 (or to a given size), then 3×3.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vs: &ParamPath, channels: usize) -> Result<Self> {
        Ok(Upsample2D { conv: Conv2d::new(&vs.pp("conv"), channels, channels, 3, Conv2dParams::new(1, 1), true)? })
    }

    pub fn forward(&self, x: &Tensor, size: Option<[usize; 2]>) -> Result<Tensor> {
        let size = size.unwrap_or([x.shape()[2] * 2, x.shape()[3] * 2]);
        self.conv.forward(&x.upsample_nearest2d(size)?)
    }
}

/// The VAE's mid-block attention: one head over all channels, GroupNorm first, residual.
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

impl SpatialSelfAttention {
    pub fn new(vs: &ParamPath, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(SpatialSelfAttention {
            group_norm: GroupNorm::new(&vs.pp("group_norm"), groups, channels, eps, true)?,
            attn: Attention::new(vs, channels, None, 1, channels, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let t = self.group_norm.forward(x)?.reshape(&[b, c, h * w])?.transpose(1, 2)?;
        let a = self.attn.forward(&t, None)?;
        a.transpose(1, 2)?.reshape(&[b, c, h, w])?.add(x)
    }
}

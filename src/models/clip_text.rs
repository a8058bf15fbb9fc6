//! CLIPTextModel (transformers): token + position embeddings, pre-LayerNorm
//! transformer with a causal mask and quick-GELU MLPs, final LayerNorm, and
//! the pooled output at the end-of-text position. Parameter names are those of
//! a Stable Diffusion `text_encoder/` folder (`text_model.` prefix); files
//! saved without the prefix (newer transformers) load as well.

use crate::nn::{Embedding, LayerNorm, Linear, ParamPath};
use crate::tensor::ops::attention::scaled_dot_product_attention;
use crate::{DType, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The keys of a transformers `CLIPTextConfig` that the model uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "eos")]
    pub eos_token_id: i64,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn ln_eps() -> f64 {
    1e-5
}
fn eos() -> i64 {
    2
}

impl ClipTextConfig {
    /// The text encoder of Stable Diffusion 1.x (openai/clip-vit-large-patch14).
    pub fn sd15() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
            bos_token_id: Some(0),
            pad_token_id: Some(1),
        }
    }
}

/// Apply a transformers activation by its config name.
pub(crate) fn activation(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "quick_gelu" => x.quick_gelu(),
        "gelu" => x.gelu(),
        "gelu_new" | "gelu_pytorch_tanh" => x.gelu_tanh(),
        "relu" => x.relu(),
        "silu" | "swish" => x.silu(),
        other => Err(Error::msg(format!("unsupported activation `{other}` in config"))),
    }
}

struct ClipLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Split [B, L, H·D] into heads [B, H, L, D].
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    x.reshape(&[b, l, heads, c / heads])?.permute(&[0, 2, 1, 3])
}

/// Merge heads [B, H, L, D] back into [B, L, H·D].
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    x.permute(&[0, 2, 1, 3])?.reshape(&[b, l, h * d])
}

/// Outputs of a text encoder.
pub struct TextEncoderOutput {
    /// [B, L, hidden]
    pub last_hidden_state: Tensor,
    /// [B, hidden]
    pub pooler_output: Tensor,
}

/// The CLIP text transformer.
pub struct ClipTextModel {
    config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Create the parameters under `vs` (the `text_model.` prefix is added here).
    pub fn new(vs: &ParamPath, config: &ClipTextConfig) -> Result<Self> {
        let tm = vs.pp("text_model");
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        let emb = tm.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let lv = tm.pp("encoder").pp("layers").pp(i);
                let at = lv.pp("self_attn");
                Ok(ClipLayer {
                    layer_norm1: LayerNorm::new(&lv.pp("layer_norm1"), &[d], eps, true)?,
                    q_proj: Linear::new(&at.pp("q_proj"), d, d, true)?,
                    k_proj: Linear::new(&at.pp("k_proj"), d, d, true)?,
                    v_proj: Linear::new(&at.pp("v_proj"), d, d, true)?,
                    out_proj: Linear::new(&at.pp("out_proj"), d, d, true)?,
                    layer_norm2: LayerNorm::new(&lv.pp("layer_norm2"), &[d], eps, true)?,
                    fc1: Linear::new(&lv.pp("mlp").pp("fc1"), d, config.intermediate_size, true)?,
                    fc2: Linear::new(&lv.pp("mlp").pp("fc2"), config.intermediate_size, d, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipTextModel {
            config: config.clone(),
            token_embedding: Embedding::new(&emb.pp("token_embedding"), config.vocab_size, d)?,
            position_embedding: Embedding::new(&emb.pp("position_embedding"), config.max_position_embeddings, d)?,
            layers,
            final_layer_norm: LayerNorm::new(&tm.pp("final_layer_norm"), &[d], eps, true)?,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encode token ids [B, L] (i64).
    pub fn forward(&self, input_ids: &Tensor) -> Result<TextEncoderOutput> {
        crate::autograd::on_workers(|| {
            if input_ids.rank() != 2 || input_ids.dtype() != DType::I64 {
                return Err(Error::bad_shape(
                    "clip_text",
                    format!("input_ids must be i64 [B, L], got {:?} {:?}", input_ids.dtype(), input_ids.shape()),
                ));
            }
            let (b, l) = (input_ids.shape()[0], input_ids.shape()[1]);
            if l > self.config.max_position_embeddings {
                return Err(Error::bad_shape(
                    "clip_text",
                    format!("{l} tokens exceed max_position_embeddings {}", self.config.max_position_embeddings),
                ));
            }
            let positions = Tensor::arange(l, DType::I64, input_ids.device())?;
            let mut h = self.token_embedding.forward(input_ids)?.add(&self.position_embedding.forward(&positions)?)?;
            let heads = self.config.num_attention_heads;
            let scale = 1.0 / ((self.config.hidden_size / heads) as f64).sqrt();
            for layer in &self.layers {
                let x = layer.layer_norm1.forward(&h)?;
                let (q, k, v) = (
                    split_heads(&layer.q_proj.forward(&x)?, heads)?,
                    split_heads(&layer.k_proj.forward(&x)?, heads)?,
                    split_heads(&layer.v_proj.forward(&x)?, heads)?,
                );
                let a = merge_heads(&scaled_dot_product_attention(&q, &k, &v, None, true, Some(scale))?)?;
                h = h.add(&layer.out_proj.forward(&a)?)?;
                let x = layer.layer_norm2.forward(&h)?;
                let x = layer.fc2.forward(&activation(&self.config.hidden_act, &layer.fc1.forward(&x)?)?)?;
                h = h.add(&x)?;
            }
            let last = self.final_layer_norm.forward(&h)?;
            // transformers: with the legacy eos id 2 the EOS is the largest id (argmax); otherwise the first EOS.
            let ids = input_ids.to_vec::<i64>()?;
            let eos_positions: Vec<i64> = ids
                .chunks(l)
                .map(|row| {
                    if self.config.eos_token_id == 2 {
                        let mut best = 0;
                        for (i, &v) in row.iter().enumerate() {
                            if v > row[best] {
                                best = i;
                            }
                        }
                        best as i64
                    } else {
                        row.iter().position(|&v| v == self.config.eos_token_id).unwrap_or(0) as i64
                    }
                })
                .collect();
            let flat = last.reshape(&[b * l, self.config.hidden_size])?;
            let index: Vec<i64> = eos_positions.iter().enumerate().map(|(i, &p)| i as i64 * l as i64 + p).collect();
            let pooled = flat.index_select(0, &Tensor::from_vec(index, &[b])?.to_device(input_ids.device())?)?;
            Ok(TextEncoderOutput { last_hidden_state: last, pooler_output: pooled })
        })
    }
}

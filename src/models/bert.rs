//! BertModel (transformers): word + position + token-type embeddings with
//! LayerNorm, post-LayerNorm encoder layers with a key-padding mask, and the
//! tanh pooler on the first token. CXR-BERT is a BERT; the alignment encoder
//! of the privacy stage uses this.

use crate::models::clip_text::{activation, merge_heads, split_heads, TextEncoderOutput};
use crate::nn::{Embedding, LayerNorm, Linear, ParamPath};
use crate::tensor::ops::attention::scaled_dot_product_attention;
use crate::{DType, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The keys of a transformers `BertConfig` that the model uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
}

fn two() -> usize {
    2
}
fn gelu() -> String {
    "gelu".into()
}
fn ln_eps() -> f64 {
    1e-12
}

struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The BERT encoder with its pooler.
pub struct BertModel {
    config: BertConfig,
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    pooler: Linear,
}

impl BertModel {
    pub fn new(vs: &ParamPath, config: &BertConfig) -> Result<Self> {
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        let emb = vs.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let lv = vs.pp("encoder").pp("layer").pp(i);
                let sa = lv.pp("attention").pp("self");
                let ao = lv.pp("attention").pp("output");
                Ok(BertLayer {
                    query: Linear::new(&sa.pp("query"), d, d, true)?,
                    key: Linear::new(&sa.pp("key"), d, d, true)?,
                    value: Linear::new(&sa.pp("value"), d, d, true)?,
                    attn_out: Linear::new(&ao.pp("dense"), d, d, true)?,
                    attn_norm: LayerNorm::new(&ao.pp("LayerNorm"), &[d], eps, true)?,
                    intermediate: Linear::new(&lv.pp("intermediate").pp("dense"), d, config.intermediate_size, true)?,
                    output: Linear::new(&lv.pp("output").pp("dense"), config.intermediate_size, d, true)?,
                    output_norm: LayerNorm::new(&lv.pp("output").pp("LayerNorm"), &[d], eps, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            config: config.clone(),
            word_embeddings: Embedding::new(&emb.pp("word_embeddings"), config.vocab_size, d)?
                .with_padding_idx(config.pad_token_id as usize),
            position_embeddings: Embedding::new(&emb.pp("position_embeddings"), config.max_position_embeddings, d)?,
            token_type_embeddings: Embedding::new(&emb.pp("token_type_embeddings"), config.type_vocab_size, d)?,
            embeddings_norm: LayerNorm::new(&emb.pp("LayerNorm"), &[d], eps, true)?,
            layers,
            pooler: Linear::new(&vs.pp("pooler").pp("dense"), d, d, true)?,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Encode token ids [B, L] (i64) with a 0/1 attention mask [B, L] (1 = real token).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<TextEncoderOutput> {
        crate::autograd::on_workers(|| {
            if input_ids.rank() != 2 || input_ids.dtype() != DType::I64 {
                return Err(Error::bad_shape(
                    "bert",
                    format!("input_ids must be i64 [B, L], got {:?} {:?}", input_ids.dtype(), input_ids.shape()),
                ));
            }
            let (b, l) = (input_ids.shape()[0], input_ids.shape()[1]);
            if l > self.config.max_position_embeddings {
                return Err(Error::bad_shape(
                    "bert",
                    format!("{l} tokens exceed max_position_embeddings {}", self.config.max_position_embeddings),
                ));
            }
            let dev = input_ids.device();
            let positions = Tensor::arange(l, DType::I64, dev)?;
            let token_types = Tensor::zeros(&[b, l], DType::I64, dev)?;
            let h = self
                .word_embeddings
                .forward(input_ids)?
                .add(&self.position_embeddings.forward(&positions)?)?
                .add(&self.token_type_embeddings.forward(&token_types)?)?;
            let mut h = self.embeddings_norm.forward(&h)?;
            let dtype = h.dtype();
            // transformers adds (1 - mask) * finfo.min to the scores of padded keys.
            let additive = match attention_mask {
                Some(m) => {
                    if m.shape() != [b, l] {
                        return Err(Error::ShapeMismatch { op: "bert attention_mask", lhs: m.shape().to_vec(), rhs: vec![b, l] });
                    }
                    let keep = m.to_dtype(dtype)?;
                    let min = if dtype == DType::F64 { f64::MIN } else { f32::MIN as f64 };
                    Some(keep.affine(-min, min)?.reshape(&[b, 1, 1, l])?)
                }
                None => None,
            };
            let heads = self.config.num_attention_heads;
            let scale = 1.0 / ((self.config.hidden_size / heads) as f64).sqrt();
            for layer in &self.layers {
                let (q, k, v) = (
                    split_heads(&layer.query.forward(&h)?, heads)?,
                    split_heads(&layer.key.forward(&h)?, heads)?,
                    split_heads(&layer.value.forward(&h)?, heads)?,
                );
                let a = merge_heads(&scaled_dot_product_attention(&q, &k, &v, additive.as_ref(), false, Some(scale))?)?;
                h = layer.attn_norm.forward(&layer.attn_out.forward(&a)?.add(&h)?)?;
                let x = activation(&self.config.hidden_act, &layer.intermediate.forward(&h)?)?;
                h = layer.output_norm.forward(&layer.output.forward(&x)?.add(&h)?)?;
            }
            let first = h.narrow(1, 0, 1)?.squeeze(1)?;
            let pooled = self.pooler.forward(&first)?.tanh()?;
            Ok(TextEncoderOutput { last_hidden_state: h, pooler_output: pooled })
        })
    }
}

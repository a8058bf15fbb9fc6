//! The image–text alignment model behind s_align: a ResNet image tower whose
//! `fc` is the image projection, a BERT text tower whose `[CLS]` state goes
//! through a linear text projection, and CLIP's learned temperature.
//! s_align is the cosine similarity of the two projected embeddings.
//!
//! Parameter names: `image_encoder.*` (torchvision ResNet; `image_encoder.fc`
//! projects), `text_encoder.*` (transformers BertModel, so CXR-BERT or any
//! BERT checkpoint loads by name), `text_projection.{weight,bias}`,
//! `logit_scale` (log of the inverse temperature, as in CLIP).

use crate::models::bert::{BertConfig, BertModel};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::nn::{Init, Linear, ParamPath};
use crate::{DType, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// CLIP's initial temperature 0.07, as the log of its inverse.
pub const CLIP_LOGIT_SCALE_INIT: f64 = 2.659_260_036_932_778;
/// CLIP clamps the inverse temperature at 100 so the logits cannot blow up.
pub const CLIP_MAX_LOGIT_SCALE: f64 = 100.0;

/// `{"image": {…resnet…}, "text": {…bert…}, "projection_dim": 128}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignConfig {
    /// The image tower; its `num_classes` is replaced by `projection_dim`.
    pub image: ResNetConfig,
    /// The text tower (a transformers `BertConfig`).
    pub text: BertConfig,
    /// Width of the shared embedding space.
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    /// Initial `logit_scale` (log inverse temperature).
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init: f64,
}

fn default_projection_dim() -> usize {
    128
}
fn default_logit_scale() -> f64 {
    CLIP_LOGIT_SCALE_INIT
}

/// The two towers, their projections and the temperature.
pub struct AlignModel {
    config: AlignConfig,
    image_encoder: ResNet,
    text_encoder: BertModel,
    text_projection: Linear,
    /// Log inverse temperature, a scalar parameter.
    pub logit_scale: Tensor,
}

impl AlignModel {
    /// Create the parameters under `vs`.
    pub fn new(vs: &ParamPath, config: &AlignConfig) -> Result<Self> {
        if config.projection_dim == 0 {
            return Err(Error::msg("align model: projection_dim must be at least 1"));
        }
        let mut image_cfg = config.image.clone();
        image_cfg.num_classes = config.projection_dim;
        Ok(AlignModel {
            config: config.clone(),
            image_encoder: ResNet::new(&vs.pp("image_encoder"), &image_cfg)?,
            text_encoder: BertModel::new(&vs.pp("text_encoder"), &config.text)?,
            text_projection: Linear::new(&vs.pp("text_projection"), config.text.hidden_size, config.projection_dim, true)?,
            logit_scale: vs.var("logit_scale", &[], Init::Const(config.logit_scale_init))?,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &AlignConfig {
        &self.config
    }

    /// Projected, unnormalised image embeddings [N, projection_dim] of images [N, C, H, W].
    pub fn image_embeddings(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.image_encoder.forward(images, train)?.logits)
    }

    /// Projected, unnormalised text embeddings [B, projection_dim] from token ids and the attention mask (i64 [B, L]).
    pub fn text_embeddings(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let out = self.text_encoder.forward(input_ids, Some(attention_mask))?;
        let cls = out.last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        self.text_projection.forward(&cls)
    }

    /// The inverse temperature exp(logit_scale), clamped at CLIP's 100, as a scalar tensor.
    pub fn temperature_scale(&self) -> Result<Tensor> {
        self.logit_scale.clamp(f64::NEG_INFINITY, CLIP_MAX_LOGIT_SCALE.ln())?.exp()
    }

    /// CLIP's symmetric contrastive loss over a batch of matching pairs (row i of
    /// each is a pair): cross entropy of the scaled cosine-similarity matrix
    /// against the diagonal, image→text and text→image averaged.
    pub fn clip_loss(&self, image_emb: &Tensor, text_emb: &Tensor) -> Result<Tensor> {
        let n = image_emb.shape()[0];
        if text_emb.shape()[0] != n || n == 0 {
            return Err(Error::ShapeMismatch { op: "clip_loss", lhs: image_emb.shape().to_vec(), rhs: text_emb.shape().to_vec() });
        }
        let logits = l2_normalize(image_emb)?.matmul(&l2_normalize(text_emb)?.t()?)?.mul(&self.temperature_scale()?)?;
        let targets = Tensor::arange(n, DType::I64, logits.device())?;
        let image_to_text = logits.cross_entropy(&targets, 0.0)?;
        let text_to_image = logits.t()?.contiguous()?.cross_entropy(&targets, 0.0)?;
        image_to_text.add(&text_to_image)?.mul_scalar(0.5)
    }
}

/// Rows of `x` [N, D] scaled to unit L2 norm (a tiny floor keeps a zero row finite).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.mul(&x.square()?.sum(&[-1], true)?.add_scalar(1e-12)?.rsqrt()?)
}

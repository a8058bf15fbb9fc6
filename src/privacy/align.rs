//! s_align: how well a synthetic image matches its prompt, as the cosine
//! similarity of the alignment model's image and text embeddings. The filter
//! keeps, per prompt, the surviving sample with the highest s_align.
//!
//! The folder carries its own tokenizer (`tokenizer.json`), so a model trained
//! with one vocabulary (the shipped uncased BERT, or CXR-BERT's) is always read
//! with it.

use super::scorer_folder::{self, InputSpec, ScorerKind, WEIGHTS_FILE};
use crate::data::Image;
use crate::models::align::{l2_normalize, AlignConfig, AlignModel};
use crate::models::bert::BertConfig;
use crate::models::resnet::ResNetConfig;
use crate::models::tokenizer::BertTokenizer;
use crate::nn::ParamStore;
use crate::{no_grad, DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The tokenizer file inside an alignment folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// How reports become tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Tokens per report, `[CLS]` and `[SEP]` included (longer reports are truncated).
    pub max_len: usize,
}

/// `config.json` of an alignment folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignFolderConfig {
    /// Always [`ScorerKind::Align`].
    pub kind: ScorerKind,
    /// The two towers and the projection.
    pub architecture: AlignConfig,
    /// The image tower's input contract.
    pub input: InputSpec,
    /// The text tower's tokenisation.
    pub text: TextSpec,
}

impl AlignFolderConfig {
    /// BioViL-like sizes: ResNet-50 at 256 px and a BERT-base text tower over the shipped vocabulary.
    pub fn paper() -> AlignFolderConfig {
        AlignFolderConfig {
            kind: ScorerKind::Align,
            architecture: AlignConfig {
                image: ResNetConfig::resnet50(128),
                text: bert_config(30522, 768, 12, 12, 512),
                projection_dim: 128,
                logit_scale_init: crate::models::align::CLIP_LOGIT_SCALE_INIT,
            },
            input: InputSpec::imagenet(crate::data::contract::PAPER_REID_SIZE),
            text: TextSpec { max_len: 128 },
        }
    }
}

/// A transformers `BertConfig` with the usual intermediate width (4 × hidden) and GELU.
pub fn bert_config(vocab_size: usize, hidden: usize, layers: usize, heads: usize, max_positions: usize) -> BertConfig {
    BertConfig {
        vocab_size,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: 4 * hidden,
        max_position_embeddings: max_positions,
        type_vocab_size: 2,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
    }
}

const EMBED_BATCH: usize = 32;

/// The alignment model with its input contract and tokenizer.
pub struct AlignScorer {
    config: AlignFolderConfig,
    store: ParamStore,
    model: AlignModel,
    tokenizer: BertTokenizer,
    tokenizer_path: PathBuf,
}

impl AlignScorer {
    /// A freshly initialised model (parameters drawn from `seed`) reading text with `tokenizer_path`.
    pub fn new(config: AlignFolderConfig, tokenizer_path: &Path, seed: u64) -> Result<AlignScorer> {
        config.input.contract()?;
        if config.architecture.image.in_channels != config.input.channels {
            return Err(Error::msg(format!(
                "align config: the image tower takes {} channels but the input contract gives {}",
                config.architecture.image.in_channels, config.input.channels
            )));
        }
        if config.text.max_len < 2 || config.text.max_len > config.architecture.text.max_position_embeddings {
            return Err(Error::msg(format!(
                "align config: text.max_len {} must lie in 2..={} (the text tower's max_position_embeddings)",
                config.text.max_len, config.architecture.text.max_position_embeddings
            )));
        }
        let tokenizer = BertTokenizer::from_file(tokenizer_path)?;
        let store = ParamStore::new(DType::F32, Device::Cpu, seed);
        let model = AlignModel::new(&store.root(), &config.architecture)?;
        Ok(AlignScorer { config, store, model, tokenizer, tokenizer_path: tokenizer_path.to_path_buf() })
    }

    /// Loads `dir/config.json`, `dir/tokenizer.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<AlignScorer> {
        let config: AlignFolderConfig = scorer_folder::read_config(dir, ScorerKind::Align)?;
        let scorer = AlignScorer::new(config, &dir.join(TOKENIZER_FILE), 0)
            .map_err(|e| Error::file(dir.join(scorer_folder::CONFIG_FILE), e.to_string()))?;
        scorer_folder::load_weights(&scorer.store, &dir.join(WEIGHTS_FILE))?;
        Ok(scorer)
    }

    /// Writes `config.json`, `tokenizer.json` and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let target = dir.join(TOKENIZER_FILE);
        if self.tokenizer_path != target {
            let bytes = std::fs::read(&self.tokenizer_path).map_err(|e| Error::io(&self.tokenizer_path, e))?;
            crate::io::write_atomic_bytes(&target, &bytes)?;
        }
        scorer_folder::save_weights(&self.store, &dir.join(WEIGHTS_FILE))?;
        scorer_folder::write_config(dir, &self.config)
    }

    /// The folder configuration.
    pub fn config(&self) -> &AlignFolderConfig {
        &self.config
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The model (for training).
    pub fn model(&self) -> &AlignModel {
        &self.model
    }

    /// Token ids and attention masks `[B, max_len]` of `texts`.
    pub fn tokenize(&self, texts: &[&str]) -> Result<(Tensor, Tensor)> {
        self.tokenizer.encode_batch(texts, self.config.text.max_len)
    }

    /// Unit-norm image embeddings `[N, projection_dim]` of images of any size (evaluation mode).
    pub fn embed_images(&self, images: &[Image]) -> Result<Tensor> {
        if images.is_empty() {
            return Err(Error::msg("align embed_images: no images"));
        }
        no_grad(|| {
            let parts = images
                .chunks(EMBED_BATCH)
                .map(|c| l2_normalize(&self.model.image_embeddings(&self.config.input.batch(c)?, false)?))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        })
    }

    /// Unit-norm text embeddings `[B, projection_dim]`.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::msg("align embed_texts: no texts"));
        }
        no_grad(|| {
            let parts = texts
                .chunks(EMBED_BATCH)
                .map(|c| {
                    let (ids, mask) = self.tokenize(c)?;
                    l2_normalize(&self.model.text_embeddings(&ids, &mask)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        })
    }

    /// s_align of each (image, text) pair: the cosine similarity of their embeddings.
    pub fn score(&self, images: &[Image], texts: &[&str]) -> Result<Vec<f32>> {
        if images.len() != texts.len() {
            return Err(Error::msg(format!("align score: {} images but {} texts", images.len(), texts.len())));
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        cosine_rows(&self.embed_images(images)?, &self.embed_texts(texts)?)
    }
}

/// Row-wise dot products of two `[N, D]` tensors of unit rows (their cosine similarities).
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    if a.shape() != b.shape() || a.rank() != 2 {
        return Err(Error::ShapeMismatch { op: "cosine_rows", lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    no_grad(|| a.mul(b)?.sum(&[-1], false)?.to_vec_f32())
}

//! s_reid: the siamese re-identification network as a scorer. A pair's score
//! is the network's probability that both images show the same patient; the
//! filter drops a synthetic image whose score against the real image of its
//! prompt reaches δ.
//!
//! Embeddings are computed once per image ([`ReidScorer::embed`]) and paired
//! afterwards ([`ReidScorer::score_embeddings`]), so a real image scored against
//! its N_c samples runs through the ResNet once.

use super::scorer_folder::{self, InputSpec, ScorerKind, WEIGHTS_FILE};
use crate::data::Image;
use crate::models::resnet::ResNetConfig;
use crate::models::siamese::{SiameseConfig, SiameseReid};
use crate::nn::ParamStore;
use crate::{no_grad, DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `config.json` of a re-identification folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReidFolderConfig {
    /// Always [`ScorerKind::Reid`].
    pub kind: ScorerKind,
    /// The siamese network.
    pub architecture: SiameseConfig,
    /// What the network expects its pixels to be.
    pub input: InputSpec,
}

impl ReidFolderConfig {
    /// The paper's network: ResNet-50 trunk, 128-d embedding, 256 px, ImageNet normalisation.
    pub fn paper() -> ReidFolderConfig {
        ReidFolderConfig {
            kind: ScorerKind::Reid,
            architecture: SiameseConfig { backbone: ResNetConfig::resnet50(128), embedding_dim: 128 },
            input: InputSpec::imagenet(crate::data::contract::PAPER_REID_SIZE),
        }
    }
}

/// Images scored per forward pass.
const SCORE_BATCH: usize = 32;

/// A loaded (or in-training) re-identification network with its input contract.
pub struct ReidScorer {
    config: ReidFolderConfig,
    store: ParamStore,
    network: SiameseReid,
}

impl ReidScorer {
    /// A freshly initialised network (parameters drawn from `seed`).
    pub fn new(config: ReidFolderConfig, seed: u64) -> Result<ReidScorer> {
        config.input.contract()?;
        if config.architecture.backbone.in_channels != config.input.channels {
            return Err(Error::msg(format!(
                "reid config: the backbone takes {} channels but the input contract gives {}",
                config.architecture.backbone.in_channels, config.input.channels
            )));
        }
        let store = ParamStore::new(DType::F32, Device::Cpu, seed);
        let network = SiameseReid::new(&store.root(), &config.architecture)?;
        Ok(ReidScorer { config, store, network })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<ReidScorer> {
        let config: ReidFolderConfig = scorer_folder::read_config(dir, ScorerKind::Reid)?;
        let scorer = ReidScorer::new(config, 0).map_err(|e| Error::file(dir.join(scorer_folder::CONFIG_FILE), e.to_string()))?;
        scorer_folder::load_weights(&scorer.store, &dir.join(WEIGHTS_FILE))?;
        Ok(scorer)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (which must exist).
    pub fn save(&self, dir: &Path) -> Result<()> {
        scorer_folder::save_weights(&self.store, &dir.join(WEIGHTS_FILE))?;
        scorer_folder::write_config(dir, &self.config)
    }

    /// The folder configuration.
    pub fn config(&self) -> &ReidFolderConfig {
        &self.config
    }

    /// The input contract.
    pub fn input(&self) -> &InputSpec {
        &self.config.input
    }

    /// The parameters (for the optimizer and checkpoints).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The network (for training).
    pub fn network(&self) -> &SiameseReid {
        &self.network
    }

    /// Embeddings [N, embedding_dim] of images of any size (evaluation mode, batched).
    pub fn embed(&self, imgs: &[Image]) -> Result<Tensor> {
        if imgs.is_empty() {
            return Err(Error::msg("reid embed: no images"));
        }
        no_grad(|| {
            let parts = imgs
                .chunks(SCORE_BATCH)
                .map(|chunk| self.network.embed(&self.config.input.batch(chunk)?, false))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        })
    }

    /// Same-patient probabilities of the pairs (row i of `ea`, row i of `eb`).
    pub fn score_embeddings(&self, ea: &Tensor, eb: &Tensor) -> Result<Vec<f32>> {
        if ea.shape() != eb.shape() || ea.rank() != 2 {
            return Err(Error::ShapeMismatch { op: "reid score_embeddings", lhs: ea.shape().to_vec(), rhs: eb.shape().to_vec() });
        }
        no_grad(|| self.network.head_logit(ea, eb)?.sigmoid()?.flatten(0, -1)?.to_vec_f32())
    }

    /// Same-patient probabilities of the pairs (a[i], b[i]); images of any size.
    pub fn score_pairs(&self, a: &[Image], b: &[Image]) -> Result<Vec<f32>> {
        if a.len() != b.len() {
            return Err(Error::msg(format!("reid score_pairs: {} images against {}", a.len(), b.len())));
        }
        if a.is_empty() {
            return Ok(Vec::new());
        }
        self.score_embeddings(&self.embed(a)?, &self.embed(b)?)
    }
}

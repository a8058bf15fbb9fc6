//! Retrieval of the real image nearest to an unconditional sample: a ResNet
//! whose `fc` gives a 128-d embedding on the unit sphere, trained with a
//! contrastive loss over hard pairs (pairs that still violate their margin)
//! drawn from the batch and from a cross-batch memory of recent embeddings
//! (Wang et al., "Cross-Batch Memory for Embedding Learning", 2020), and
//! searched by Euclidean distance.

use super::scorer_folder::{self, InputSpec, ScorerKind, WEIGHTS_FILE};
use crate::data::Image;
use crate::models::align::l2_normalize;
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::nn::ParamStore;
use crate::{no_grad, DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;

/// `config.json` of a retrieval folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalFolderConfig {
    /// Always [`ScorerKind::Retrieval`].
    pub kind: ScorerKind,
    /// The ResNet; `num_classes` is the embedding width.
    pub architecture: ResNetConfig,
    /// What the network expects its pixels to be.
    pub input: InputSpec,
}

impl RetrievalFolderConfig {
    /// ResNet-50 with a 128-d embedding at 256 px, ImageNet normalisation.
    pub fn paper() -> RetrievalFolderConfig {
        RetrievalFolderConfig {
            kind: ScorerKind::Retrieval,
            architecture: ResNetConfig::resnet50(128),
            input: InputSpec::imagenet(crate::data::contract::PAPER_REID_SIZE),
        }
    }
}

const EMBED_BATCH: usize = 32;

/// The embedding network with its input contract.
pub struct RetrievalNet {
    config: RetrievalFolderConfig,
    store: ParamStore,
    network: ResNet,
}

impl RetrievalNet {
    /// A freshly initialised network (parameters drawn from `seed`).
    pub fn new(config: RetrievalFolderConfig, seed: u64) -> Result<RetrievalNet> {
        config.input.contract()?;
        if config.architecture.in_channels != config.input.channels {
            return Err(Error::msg(format!(
                "retrieval config: the ResNet takes {} channels but the input contract gives {}",
                config.architecture.in_channels, config.input.channels
            )));
        }
        let store = ParamStore::new(DType::F32, Device::Cpu, seed);
        let network = ResNet::new(&store.root(), &config.architecture)?;
        Ok(RetrievalNet { config, store, network })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<RetrievalNet> {
        let config: RetrievalFolderConfig = scorer_folder::read_config(dir, ScorerKind::Retrieval)?;
        let net = RetrievalNet::new(config, 0).map_err(|e| Error::file(dir.join(scorer_folder::CONFIG_FILE), e.to_string()))?;
        scorer_folder::load_weights(&net.store, &dir.join(WEIGHTS_FILE))?;
        Ok(net)
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        scorer_folder::save_weights(&self.store, &dir.join(WEIGHTS_FILE))?;
        scorer_folder::write_config(dir, &self.config)
    }

    /// The folder configuration.
    pub fn config(&self) -> &RetrievalFolderConfig {
        &self.config
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Unit-norm embeddings of a prepared batch `[N, C, H, W]` (records gradients when training).
    pub fn forward(&self, batch: &Tensor, train: bool) -> Result<Tensor> {
        l2_normalize(&self.network.forward(batch, train)?.logits)
    }

    /// Unit-norm embeddings of images of any size, one row each (evaluation mode).
    pub fn embed(&self, imgs: &[Image]) -> Result<Vec<Vec<f32>>> {
        let dim = self.config.architecture.num_classes;
        no_grad(|| {
            let mut rows = Vec::with_capacity(imgs.len());
            for chunk in imgs.chunks(EMBED_BATCH) {
                let flat = self.forward(&self.config.input.batch(chunk)?, false)?.to_vec_f32()?;
                rows.extend(flat.chunks_exact(dim).map(<[f32]>::to_vec));
            }
            Ok(rows)
        })
    }
}

/// Euclidean distance of two equal-length vectors.
pub fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// A gallery of real images embedded once, searched by Euclidean distance.
pub struct RetrievalIndex {
    net: RetrievalNet,
    gallery: Vec<Vec<f32>>,
}

impl RetrievalIndex {
    /// Loads the network in `model_dir` and embeds the gallery.
    pub fn build(model_dir: &Path, gallery: &[Image]) -> Result<RetrievalIndex> {
        RetrievalIndex::from_net(RetrievalNet::load(model_dir)?, gallery)
    }

    /// Embeds the gallery with an already loaded network.
    pub fn from_net(net: RetrievalNet, gallery: &[Image]) -> Result<RetrievalIndex> {
        if gallery.is_empty() {
            return Err(Error::msg("retrieval index: the gallery is empty"));
        }
        let gallery = net.embed(gallery)?;
        Ok(RetrievalIndex { net, gallery })
    }

    /// The gallery's embeddings.
    pub fn gallery(&self) -> &[Vec<f32>] {
        &self.gallery
    }

    /// For each query, its `k` nearest gallery images as (gallery index, distance), nearest first.
    pub fn nearest(&self, queries: &[Image], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let embedded = self.net.embed(queries)?;
        Ok(embedded.iter().map(|q| self.nearest_to_embedding(q, k)).collect())
    }

    /// The `k` nearest gallery images of one embedding.
    pub fn nearest_to_embedding(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = self.gallery.iter().enumerate().map(|(i, g)| (i, euclidean(query, g))).collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Margins of the contrastive loss, on Euclidean distances of unit vectors (in [0, 2]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveMargins {
    /// Same-patient pairs are pulled in until closer than this.
    pub positive: f64,
    /// Different-patient pairs are pushed out until farther than this.
    pub negative: f64,
}

impl Default for ContrastiveMargins {
    /// pytorch-metric-learning's ContrastiveLoss defaults.
    fn default() -> Self {
        ContrastiveMargins { positive: 0.0, negative: 1.0 }
    }
}

/// Recent embeddings (detached) and their patient labels, oldest dropped first.
pub struct CrossBatchMemory {
    capacity: usize,
    entries: VecDeque<(Vec<f32>, usize)>,
}

impl CrossBatchMemory {
    /// A memory of at most `capacity` embeddings.
    pub fn new(capacity: usize) -> CrossBatchMemory {
        CrossBatchMemory { capacity, entries: VecDeque::with_capacity(capacity) }
    }

    /// Embeddings held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a batch's embeddings `[B, D]` (values only) with their labels.
    pub fn push(&mut self, embeddings: &Tensor, labels: &[usize]) -> Result<()> {
        if self.capacity == 0 {
            return Ok(());
        }
        let dim = embeddings.shape()[1];
        let flat = no_grad(|| embeddings.detach().to_vec_f32())?;
        for (row, &label) in flat.chunks_exact(dim).zip(labels) {
            if self.entries.len() == self.capacity {
                self.entries.pop_front();
            }
            self.entries.push_back((row.to_vec(), label));
        }
        Ok(())
    }

    /// The memory as a `[K, D]` tensor and its labels (`None` when empty).
    pub fn as_tensor(&self) -> Result<Option<(Tensor, Vec<usize>)>> {
        let Some((first, _)) = self.entries.front() else { return Ok(None) };
        let dim = first.len();
        let data: Vec<f32> = self.entries.iter().flat_map(|(e, _)| e.iter().copied()).collect();
        let labels = self.entries.iter().map(|(_, l)| *l).collect();
        Ok(Some((Tensor::from_vec(data, &[self.entries.len(), dim])?, labels)))
    }
}

/// The contrastive loss of a batch, with its mining counts.
pub struct ContrastiveLoss {
    /// Scalar loss (records gradients through the batch embeddings).
    pub loss: Tensor,
    /// Hard positive pairs used.
    pub positives: usize,
    /// Hard negative pairs used.
    pub negatives: usize,
}

/// Contrastive loss over the hard pairs between the batch `embeddings` [B, D] (unit
/// rows, with gradients) and both the batch itself and the memory. A positive pair
/// is hard when farther apart than the positive margin, a negative pair when closer
/// than the negative margin; each group's loss is averaged over its hard pairs
/// (pairs that already satisfy their margin add nothing and dilute nothing).
pub fn contrastive_loss(
    embeddings: &Tensor,
    labels: &[usize],
    memory: &CrossBatchMemory,
    margins: ContrastiveMargins,
) -> Result<ContrastiveLoss> {
    let b = embeddings.shape()[0];
    if labels.len() != b {
        return Err(Error::msg(format!("contrastive loss: {b} embeddings but {} labels", labels.len())));
    }
    let (reference, ref_labels) = match memory.as_tensor()? {
        Some((m, ml)) => (Tensor::cat(&[embeddings.clone(), m], 0)?, [labels, &ml[..]].concat()),
        None => (embeddings.clone(), labels.to_vec()),
    };
    let n = ref_labels.len();
    let cos = embeddings.matmul(&reference.t()?)?;
    // ‖a − b‖ of unit vectors; the floor keeps sqrt's gradient finite at coincident points.
    let dist = cos.affine(-2.0, 2.0)?.clamp(1e-8, 4.0)?.sqrt()?;
    let values = no_grad(|| dist.to_vec_f32())?;
    let (mut pos_mask, mut neg_mask) = (vec![0f32; b * n], vec![0f32; b * n]);
    let (mut positives, mut negatives) = (0usize, 0usize);
    for i in 0..b {
        for j in 0..n {
            if j == i {
                continue;
            }
            let d = values[i * n + j] as f64;
            if labels[i] == ref_labels[j] {
                if d > margins.positive {
                    pos_mask[i * n + j] = 1.0;
                    positives += 1;
                }
            } else if d < margins.negative {
                neg_mask[i * n + j] = 1.0;
                negatives += 1;
            }
        }
    }
    let pos_mask = Tensor::from_vec(pos_mask, &[b, n])?;
    let neg_mask = Tensor::from_vec(neg_mask, &[b, n])?;
    let pos = dist.add_scalar(-margins.positive)?.relu()?.mul(&pos_mask)?.sum_all()?.mul_scalar(1.0 / positives.max(1) as f64)?;
    let neg = dist.affine(-1.0, margins.negative)?.relu()?.mul(&neg_mask)?.sum_all()?.mul_scalar(1.0 / negatives.max(1) as f64)?;
    Ok(ContrastiveLoss { loss: pos.add(&neg)?, positives, negatives })
}

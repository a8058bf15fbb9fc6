//! `privdistill train-retrieval`: the embedding network that finds, for an
//! unconditional sample (which has no prompt and so no real image to compare
//! with), the nearest real image. A ResNet maps each image to a 128-d unit
//! vector; training draws batches of several patients with several images
//! each (augmented views, so a patient with one image still gives a positive
//! pair), and minimises the contrastive loss over hard pairs from the batch and
//! a cross-batch memory. Early stopping on validation mAP@R; the test split
//! reports mAP@R and Precision@1 (leave-one-out over test images).

use crate::data::{Augment, Split};
use crate::eval::metrics::{retrieval_metrics, RetrievalMetrics};
use crate::models::resnet::ResNetConfig;
use crate::nn::{AdamW, AdamWConfig, Optimizer};
use crate::pipeline::progress;
use crate::pipeline::scorer_stage::EpochRun;
use crate::privacy::dataset::{ImageBank, SplitDataset};
use crate::privacy::retrieval::{contrastive_loss, euclidean, ContrastiveMargins, CrossBatchMemory, RetrievalFolderConfig, RetrievalNet};
use crate::privacy::scorer_folder::{InputSpec, ScorerKind, METRICS_FILE};
use crate::{Error, Result, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `train-retrieval`; the defaults are the full-size recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainRetrievalConfig {
    /// The real dataset (with splits).
    pub data: PathBuf,
    /// The scorer folder to write.
    pub out: PathBuf,
    /// The ResNet; `num_classes` is the embedding width (128).
    pub backbone: ResNetConfig,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patients per batch.
    pub patients_per_batch: usize,
    /// Images (augmented views) per patient in a batch.
    pub images_per_patient: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// At most this many epochs.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation mAP@R.
    pub patience: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Margins of the contrastive loss.
    pub margins: ContrastiveMargins,
    /// Embeddings kept in the cross-batch memory (0 turns it off).
    pub memory_size: usize,
    /// Augment each view.
    pub augment: bool,
    /// Seeds initialisation, batch draws and augmentation.
    pub seed: u64,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
}

impl Default for TrainRetrievalConfig {
    fn default() -> Self {
        let paper = RetrievalFolderConfig::paper();
        TrainRetrievalConfig {
            data: PathBuf::from("work/real"),
            out: PathBuf::from("work/retrieval"),
            backbone: paper.architecture,
            image_size: paper.input.size,
            patients_per_batch: 16,
            images_per_patient: 2,
            steps_per_epoch: 500,
            max_epochs: 100,
            patience: 5,
            lr: 1e-4,
            margins: ContrastiveMargins::default(),
            memory_size: 4096,
            augment: true,
            seed: 0,
            resume: false,
        }
    }
}

impl TrainRetrievalConfig {
    /// The demo preset: a one-block-per-stage ResNet with 16 base planes at 64 px, about 20 s on 2 cores.
    pub fn demo(data: &Path, out: &Path) -> Self {
        TrainRetrievalConfig {
            data: data.to_path_buf(),
            out: out.to_path_buf(),
            backbone: ResNetConfig { layers: [1, 1, 1, 1], num_classes: 128, in_channels: 3, width_per_group: 64, base_planes: 16 },
            image_size: 64,
            patients_per_batch: 8,
            images_per_patient: 2,
            steps_per_epoch: 20,
            max_epochs: 6,
            patience: 3,
            lr: 1e-3,
            memory_size: 256,
            ..Default::default()
        }
    }

    /// The folder config this training writes.
    pub fn folder_config(&self) -> RetrievalFolderConfig {
        RetrievalFolderConfig {
            kind: ScorerKind::Retrieval,
            architecture: self.backbone.clone(),
            input: InputSpec::imagenet(self.image_size),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.patients_per_batch < 2 || self.images_per_patient < 2 {
            return Err(Error::msg("train-retrieval: a batch needs at least 2 patients with at least 2 images each"));
        }
        if self.steps_per_epoch == 0 || self.max_epochs == 0 || self.patience == 0 {
            return Err(Error::msg("train-retrieval: steps_per_epoch, max_epochs and patience must be at least 1"));
        }
        if self.image_size < 32 {
            return Err(Error::msg(format!("train-retrieval: image_size {} is too small for a ResNet (at least 32)", self.image_size)));
        }
        Ok(())
    }
}

/// What `train-retrieval` reports (also written to `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainRetrievalSummary {
    /// The scorer folder written.
    pub out: PathBuf,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation mAP@R of each epoch.
    pub val_map_at_r: Vec<f64>,
    /// Test mAP@R, Precision@1 and the number of queries (test images whose patient has another).
    pub test: RetrievalMetrics,
    /// Mean hard positive and negative pairs per step in the last epoch.
    pub hard_pairs_per_step: (f64, f64),
    /// Wall time of this run.
    pub wall_seconds: f64,
}

/// Leave-one-out mAP@R and Precision@1 of `indices` by patient, with the network in evaluation mode.
pub fn evaluate(net: &RetrievalNet, data: &SplitDataset, bank: &ImageBank, indices: &[usize]) -> Result<RetrievalMetrics> {
    let embeddings = net.embed(&bank.gather(indices))?;
    let labels = data.patient_labels(indices);
    retrieval_metrics(&labels, |i, j| euclidean(&embeddings[i], &embeddings[j]) as f64)
        .map_err(|e| Error::file(&data.manifest.path, format!("retrieval evaluation: {e} (the split has no patient with 2 images)")))
}

/// Trains the retrieval network and writes its folder.
pub fn run(cfg: &TrainRetrievalConfig) -> Result<TrainRetrievalSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let data = SplitDataset::load(&cfg.data)?;
    let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &data.train {
        by_patient.entry(data.manifest.records[i].patient.as_str()).or_default().push(i);
    }
    let patients: Vec<(usize, Vec<usize>)> = by_patient.into_values().enumerate().collect();
    if patients.len() < cfg.patients_per_batch {
        return Err(Error::file(
            &data.manifest.path,
            format!("train split: {} patients, fewer than patients_per_batch = {}", patients.len(), cfg.patients_per_batch),
        ));
    }
    let all: Vec<usize> = (0..data.manifest.len()).collect();
    let bank = ImageBank::load(&data.manifest, &all, cfg.image_size)?;

    let net = RetrievalNet::new(cfg.folder_config(), cfg.seed)?;
    let mut optimizer =
        AdamW::new(net.store().trainable_parameters(), AdamWConfig { lr: cfg.lr, weight_decay: 0.0, ..Default::default() })?;
    let mut run =
        EpochRun::open(&cfg.out, cfg, cfg.resume, cfg.patience, "val_map_at_r", &["backbone", "image_size"], net.store(), &mut optimizer)?;

    let augment = cfg.augment.then(Augment::chest_xray);
    // The memory only holds embeddings of this run's steps; after a resume it refills within a few steps.
    let mut memory = CrossBatchMemory::new(cfg.memory_size);
    let bar = progress::bar((cfg.max_epochs * cfg.steps_per_epoch) as u64, "train-retrieval");
    bar.set_position((run.first_epoch * cfg.steps_per_epoch) as u64);
    let (mut epochs_run, mut hard_pairs) = (run.first_epoch, (0.0, 0.0));
    for epoch in run.epochs(cfg.max_epochs) {
        let epoch_rng = Rng::new(cfg.seed).fork(1 + epoch as u64);
        let (mut pos_total, mut neg_total) = (0usize, 0usize);
        for step in 0..cfg.steps_per_epoch {
            let mut rng = epoch_rng.fork(step as u64);
            let mut order: Vec<usize> = (0..patients.len()).collect();
            rng.shuffle(&mut order);
            let (mut views, mut labels) = (Vec::new(), Vec::new());
            for &p in &order[..cfg.patients_per_batch] {
                let (label, images) = &patients[p];
                let mut pick = images.clone();
                rng.shuffle(&mut pick);
                for k in 0..cfg.images_per_patient {
                    let img = bank.get(pick[k % pick.len()]);
                    views.push(match &augment {
                        Some(aug) => aug.apply(img, cfg.image_size, &mut rng.fork(1000 + views.len() as u64)),
                        None => img.clone(),
                    });
                    labels.push(*label);
                }
            }
            let embeddings = net.forward(&net.config().input.batch_of_squares(&views)?, true)?;
            let loss = contrastive_loss(&embeddings, &labels, &memory, cfg.margins)?;
            let grads = loss.loss.backward()?;
            optimizer.step(&grads)?;
            memory.push(&embeddings, &labels)?;
            pos_total += loss.positives;
            neg_total += loss.negatives;
            bar.inc(1);
            bar.set_message(format!("epoch {} loss {:.4}", epoch + 1, loss.loss.to_scalar_f64()?));
        }
        hard_pairs = (pos_total as f64 / cfg.steps_per_epoch as f64, neg_total as f64 / cfg.steps_per_epoch as f64);
        let val = evaluate(&net, &data, &bank, data.indices(Split::Val))?;
        epochs_run = epoch + 1;
        if run.end_epoch(epoch, cfg.steps_per_epoch, val.map_at_r, None, net.store(), &optimizer)? {
            break;
        }
    }
    bar.finish_and_clear();
    run.restore_best(net.store())?;

    let test = evaluate(&net, &data, &bank, data.indices(Split::Test))?;
    net.save(&cfg.out)?;
    let summary = TrainRetrievalSummary {
        out: cfg.out.clone(),
        epochs: epochs_run,
        best_epoch: run.stopping.best_epoch,
        val_map_at_r: run.history.clone(),
        test,
        hard_pairs_per_step: hard_pairs,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    crate::io::write_atomic_json(cfg.out.join(METRICS_FILE), &summary)?;
    run.remove_checkpoint()?;
    Ok(summary)
}

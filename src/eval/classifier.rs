//! The downstream classifier: a multi-label DenseNet trained on one dataset
//! (real, synthetic or distilled) and tested on the real test split, as
//! Privacy Distillation measures the usefulness of synthetic data.
//!
//! Training follows LibAUC's CheXpert recipe: first binary cross-entropy per
//! label (AdamW), then the AUC-M loss with the PESG optimizer
//! ([`crate::eval::aucm`]). Synthetic records carry the labels of the real
//! record of their prompt (`prompt_index` into the real manifest) when they
//! have none of their own. The test reports per-label ROC AUC with percentile
//! bootstrap intervals, and the mean over labels with its own interval.
//!
//! A trained classifier is a folder: `config.json` ([`ClassifierCard`]),
//! `model.safetensors` (torchvision DenseNet names) and `metrics.json`.

use crate::data::{Augment, BatchLoader, Contract, LoaderConfig, Manifest, Split};
use crate::eval::aucm::{AucmLoss, Pesg, PesgConfig};
use crate::eval::features::{load_store, FeatureExtractor};
use crate::eval::metrics::{bootstrap_ci, roc_auc, roc_auc_ci, roc_curve, Estimate, RocPoint};
use crate::io::safetensors::save_safetensors;
use crate::io::write_atomic_json;
use crate::models::densenet::{DenseNet, DenseNetConfig};
use crate::nn::{AdamW, AdamWConfig, Optimizer, ParamStore};
use crate::{no_grad, DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// CheXpert's five competition pathologies, the paper's downstream labels.
pub const CHEXPERT_FIVE: [&str; 5] = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"];

/// How the classifier is built, trained and tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// The architecture; `num_classes` is replaced by the number of labels and `in_channels` must be 1.
    pub densenet: DenseNetConfig,
    /// Square input side (the classifier contract: grey, [-1024, 1024]).
    pub image_size: usize,
    /// Start from these weights (e.g. torchxrayvision's DenseNet-121 converted by
    /// `tests/fixtures/convert_torchxrayvision.py`): every tensor whose name and shape match is loaded,
    /// the rest (the classifier head, sized for other labels) keeps its initialisation.
    pub pretrained: Option<PathBuf>,
    /// Labels to learn; `None` picks them (CheXpert's five when present, else every label with
    /// `min_positives` positives and negatives in training and two of each class in the test split).
    pub labels: Option<Vec<String>>,
    /// Smallest positive (and negative) count a label needs to be picked.
    pub min_positives: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Cross-entropy epochs (AdamW).
    pub ce_epochs: usize,
    /// AdamW settings of the cross-entropy stage.
    pub ce_optimizer: AdamWConfig,
    /// AUC-M epochs (PESG); 0 skips the stage.
    pub aucm_epochs: usize,
    /// PESG settings.
    pub pesg: PesgConfig,
    /// Random crops, rotations, flips and intensity jitter in training.
    pub augment: bool,
    /// Bootstrap resamples for the AUC intervals.
    pub bootstrap: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Seed of initialisation, shuffling, augmentation and bootstrap.
    pub seed: u64,
}

impl Default for ClassifierConfig {
    /// The paper-size classifier: DenseNet-121 at 224×224.
    fn default() -> Self {
        ClassifierConfig {
            densenet: DenseNetConfig::densenet121(1, 1),
            image_size: 224,
            pretrained: None,
            labels: None,
            min_positives: 10,
            batch_size: 32,
            ce_epochs: 5,
            ce_optimizer: AdamWConfig { lr: 1e-4, weight_decay: 1e-5, ..AdamWConfig::default() },
            aucm_epochs: 3,
            pesg: PesgConfig::default(),
            augment: true,
            bootstrap: 1000,
            workers: 2,
            seed: 0,
        }
    }
}

impl ClassifierConfig {
    /// A small DenseNet (blocks 2-2-2-2, growth 12) at 64×64 for the offline demo.
    pub fn demo() -> Self {
        ClassifierConfig {
            densenet: DenseNetConfig {
                growth_rate: 12,
                block_config: vec![2, 2, 2, 2],
                num_init_features: 24,
                bn_size: 2,
                num_classes: 1,
                in_channels: 1,
            },
            image_size: 64,
            batch_size: 32,
            ce_epochs: 6,
            ce_optimizer: AdamWConfig { lr: 2e-3, weight_decay: 1e-5, ..AdamWConfig::default() },
            aucm_epochs: 2,
            pesg: PesgConfig { decay_epochs: vec![1], ..PesgConfig::default() },
            bootstrap: 200,
            ..ClassifierConfig::default()
        }
    }

    fn contract(&self) -> Contract {
        Contract::Classifier { size: self.image_size }
    }
}

/// Records with 0/1 targets for a fixed list of labels.
#[derive(Clone, Debug)]
pub struct LabelledSet {
    /// The dataset.
    pub manifest: Arc<Manifest>,
    /// The records used.
    pub indices: Vec<usize>,
    /// Targets of each used record, by manifest index, in label order.
    pub targets: HashMap<usize, Vec<f32>>,
}

impl LabelledSet {
    /// The records `indices` of `manifest` with their `labels`; a record without labels takes those of
    /// `real.records[prompt_index]` (synthetic data). A label missing from both is an error naming the line.
    pub fn new(manifest: Arc<Manifest>, indices: Vec<usize>, labels: &[String], real: Option<&Manifest>) -> Result<LabelledSet> {
        let mut targets = HashMap::new();
        for &i in &indices {
            let rec = &manifest.records[i];
            let line = manifest.lines.get(i).copied().unwrap_or(i + 1);
            let source = match (&rec.labels, rec.prompt_index, real) {
                (Some(l), ..) => l,
                (None, Some(p), Some(real)) => real.records.get(p as usize).and_then(|r| r.labels.as_ref()).ok_or_else(|| {
                    Error::file(
                        &manifest.path,
                        format!("line {line}: field `prompt_index`: {p} has no labelled record in {}", real.path.display()),
                    )
                })?,
                _ => {
                    return Err(Error::file(
                        &manifest.path,
                        format!("line {line}: field `labels` is missing and there is no `prompt_index` into a labelled real manifest"),
                    ))
                }
            };
            let t = labels
                .iter()
                .map(|name| {
                    source.get(name).map(|&v| f32::from(v == 1)).ok_or_else(|| {
                        Error::file(
                            &manifest.path,
                            format!("line {line}: field `labels`: label `{name}` is missing — every record needs every chosen label"),
                        )
                    })
                })
                .collect::<Result<Vec<f32>>>()?;
            targets.insert(i, t);
        }
        Ok(LabelledSet { manifest, indices, targets })
    }

    /// The records of one split of a dataset (all records when `split` is `None`).
    pub fn of_split(manifest: Arc<Manifest>, split: Option<Split>, labels: &[String], real: Option<&Manifest>) -> Result<LabelledSet> {
        let indices = match split {
            Some(s) => manifest.indices_in(s),
            None => (0..manifest.len()).collect(),
        };
        if indices.is_empty() {
            let what = split.map_or("any".to_string(), |s| format!("the {s}"));
            return Err(Error::file(&manifest.path, format!("no records in {what} split (run `privdistill data split` first?)")));
        }
        LabelledSet::new(manifest, indices, labels, real)
    }

    /// Positive count of label `k`.
    pub fn positives(&self, k: usize) -> usize {
        self.indices.iter().filter(|i| self.targets[i][k] > 0.5).count()
    }

    /// Keep the first `n` records after a seeded shuffle (capping a synthetic set).
    pub fn capped(mut self, n: usize, seed: u64) -> LabelledSet {
        if self.indices.len() > n {
            crate::Rng::new(seed).shuffle(&mut self.indices);
            self.indices.truncate(n);
            self.indices.sort_unstable();
        }
        self
    }

    fn target_batch(&self, indices: &[usize]) -> Result<Tensor> {
        let c = self.targets.values().next().map_or(0, Vec::len);
        let data: Vec<f32> = indices.iter().flat_map(|i| self.targets[i].iter().copied()).collect();
        Tensor::from_vec(data, &[indices.len(), c])
    }
}

/// The labels to learn: CheXpert's five where the data have them, else every label with at least
/// `min_positives` positives and as many negatives among `train`, and two of each class among `test`,
/// most frequent first.
pub fn select_labels(real: &Manifest, train: &[usize], test: &[usize], min_positives: usize) -> Result<Vec<String>> {
    let count = |idx: &[usize], name: &str| idx.iter().filter(|&&i| real.records[i].has_label(name)).count();
    let names = real.label_names();
    let usable = |name: &str| {
        let (p, tp) = (count(train, name), count(test, name));
        // Two of each class in the test split at least, or the AUC rests on a single image.
        p >= min_positives && train.len() - p >= min_positives && tp >= 2 && test.len() - tp >= 2
    };
    let chexpert: Vec<String> = CHEXPERT_FIVE.iter().filter(|n| names.iter().any(|m| m == *n)).map(|n| n.to_string()).collect();
    let mut chosen: Vec<String> = if chexpert.is_empty() {
        names.into_iter().filter(|n| usable(n)).collect()
    } else {
        chexpert.into_iter().filter(|n| usable(n)).collect()
    };
    chosen.sort_by_key(|n| std::cmp::Reverse(count(train, n)));
    if chosen.is_empty() {
        return Err(Error::file(
            &real.path,
            format!("no label has {min_positives} positives and negatives in the train split and two of each class in the test split"),
        ));
    }
    Ok(chosen)
}

/// `config.json` of a classifier folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierCard {
    /// Always `"densenet"`.
    pub architecture: String,
    /// The network's constructor arguments (`num_classes` = number of labels).
    pub densenet: DenseNetConfig,
    /// Output order.
    pub labels: Vec<String>,
    /// The classifier contract's side.
    pub image_size: usize,
    /// What the inputs are, in words.
    pub contract: String,
}

/// A trained (or loaded) classifier.
pub struct Classifier {
    /// Its parameters and buffers.
    pub store: ParamStore,
    /// The network.
    pub net: DenseNet,
    /// Architecture, labels and contract.
    pub card: ClassifierCard,
}

/// Loss per epoch, for the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainingLog {
    /// Mean BCE of each cross-entropy epoch.
    pub ce_loss: Vec<f64>,
    /// Mean AUC-M loss of each PESG epoch.
    pub aucm_loss: Vec<f64>,
    /// Training images.
    pub images: usize,
    /// Wall time of training.
    pub seconds: f64,
}

/// One label's test result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelResult {
    /// The pathology.
    pub name: String,
    /// Positive test images.
    pub positives: usize,
    /// Negative test images.
    pub negatives: usize,
    /// `None` when the test split lacks a class.
    pub auc: Option<Estimate>,
    /// The ROC curve (empty when the AUC is undefined).
    pub roc: Vec<RocPoint>,
}

/// Test results on the real test split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierMetrics {
    /// Per-label results, in output order.
    pub labels: Vec<LabelResult>,
    /// Mean AUC over labels with a defined AUC, with a bootstrap interval over test images.
    pub mean_auc: Option<Estimate>,
    /// Images in the test set.
    pub test_images: usize,
}

impl Classifier {
    /// A freshly initialised classifier for `labels`.
    pub fn new(cfg: &ClassifierConfig, labels: Vec<String>) -> Result<Classifier> {
        if cfg.densenet.in_channels != 1 {
            return Err(Error::msg("classifier: the contract is grey, so densenet.in_channels must be 1"));
        }
        let densenet = DenseNetConfig { num_classes: labels.len(), ..cfg.densenet.clone() };
        let store = ParamStore::new(DType::F32, Device::Cpu, cfg.seed);
        let net = DenseNet::new(&store.root(), &densenet)?;
        if let Some(path) = &cfg.pretrained {
            load_pretrained(&store, path)?;
        }
        let card = ClassifierCard {
            architecture: "densenet".into(),
            densenet,
            labels,
            image_size: cfg.image_size,
            contract: "grey, centre-cropped square, values in [-1024, 1024] (torchxrayvision convention)".into(),
        };
        Ok(Classifier { store, net, card })
    }

    /// Load a classifier folder (`config.json` + `model.safetensors`).
    pub fn load(folder: &Path) -> Result<Classifier> {
        let cfg_path = folder.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let card: ClassifierCard = serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let store = ParamStore::new(DType::F32, Device::Cpu, 0);
        let net = DenseNet::new(&store.root(), &card.densenet)?;
        load_store(&store, &folder.join("model.safetensors"))?;
        Ok(Classifier { store, net, card })
    }

    /// Write `config.json` and `model.safetensors` into `folder`.
    pub fn save(&self, folder: &Path) -> Result<()> {
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        save_safetensors(folder.join("model.safetensors"), self.store.state_dict(), None)?;
        write_atomic_json(folder.join("config.json"), &self.card)
    }

    fn contract(&self) -> Contract {
        Contract::Classifier { size: self.card.image_size }
    }

    /// Train with cross-entropy, then AUC-M + PESG.
    /// `bar` shows progress (its length is set here; the caller finishes it).
    pub fn train(&mut self, cfg: &ClassifierConfig, set: &LabelledSet, bar: &indicatif::ProgressBar) -> Result<TrainingLog> {
        let start = std::time::Instant::now();
        let labels = self.card.labels.len();
        if set.indices.len() < 2 {
            return Err(Error::file(&set.manifest.path, "the classifier needs at least 2 training images"));
        }
        let batch_size = cfg.batch_size.min(set.indices.len()).max(2);
        let loader_cfg = |epoch: u64| {
            let mut l = LoaderConfig::new(batch_size, cfg.contract());
            l.augment = cfg.augment.then(Augment::chest_xray);
            l.shuffle = true;
            l.seed = cfg.seed;
            l.epoch = epoch;
            l.workers = cfg.workers.max(1);
            // BatchNorm needs more than one sample per batch.
            l.drop_last = true;
            l
        };
        let batches = set.indices.len() / batch_size;
        bar.set_length((batches * (cfg.ce_epochs + cfg.aucm_epochs)) as u64);
        let mut log = TrainingLog { images: set.indices.len(), ..TrainingLog::default() };
        let mut adam = AdamW::new(self.store.trainable_parameters(), cfg.ce_optimizer)?;
        for epoch in 0..cfg.ce_epochs {
            let mut total = 0.0;
            for batch in BatchLoader::new(set.manifest.clone(), set.indices.clone(), loader_cfg(epoch as u64)).map_err(data_err)? {
                let batch = batch.map_err(data_err)?;
                let targets = set.target_batch(&batch.indices)?;
                let loss = self.net.forward(&batch.images, true)?.logits.bce_with_logits(&targets, None)?;
                total += loss.to_scalar_f64()?;
                adam.step(&loss.backward()?)?;
                bar.inc(1);
                bar.set_message(format!("BCE {:.4}", loss.to_scalar_f64()?));
            }
            log.ce_loss.push(total / batches.max(1) as f64);
        }
        if cfg.aucm_epochs > 0 {
            let imratio: Vec<f64> = (0..labels).map(|k| set.positives(k) as f64 / set.indices.len() as f64).collect();
            let aucm = AucmLoss::new(cfg.pesg.margin, imratio).map_err(|e| Error::file(&set.manifest.path, e.to_string()))?;
            let mut pesg = Pesg::new(self.store.trainable_parameters(), &aucm, cfg.pesg.clone())?;
            for epoch in 0..cfg.aucm_epochs {
                let mut total = 0.0;
                let seed_epoch = (cfg.ce_epochs + epoch) as u64;
                for batch in BatchLoader::new(set.manifest.clone(), set.indices.clone(), loader_cfg(seed_epoch)).map_err(data_err)? {
                    let batch = batch.map_err(data_err)?;
                    let targets = set.target_batch(&batch.indices)?;
                    let scores = self.net.forward(&batch.images, true)?.logits.sigmoid()?;
                    let loss = aucm.forward(&scores, &targets)?;
                    total += loss.to_scalar_f64()?;
                    pesg.step(&loss.backward()?)?;
                    bar.inc(1);
                    bar.set_message(format!("AUC-M {:.4}", loss.to_scalar_f64()?));
                }
                log.aucm_loss.push(total / batches.max(1) as f64);
                pesg.end_epoch(epoch + 1)?;
            }
        }
        log.seconds = start.elapsed().as_secs_f64();
        Ok(log)
    }

    /// Probabilities `[records][labels]` for the records of `set`, in its order.
    pub fn predict(&self, manifest: &Arc<Manifest>, indices: &[usize], batch_size: usize, workers: usize) -> Result<Vec<Vec<f64>>> {
        let mut cfg = LoaderConfig::new(batch_size.max(1), self.contract());
        cfg.workers = workers.max(1);
        let mut out = Vec::with_capacity(indices.len());
        let c = self.card.labels.len();
        for batch in BatchLoader::new(manifest.clone(), indices.to_vec(), cfg).map_err(data_err)? {
            let batch = batch.map_err(data_err)?;
            let p = no_grad(|| self.net.forward(&batch.images, false)?.logits.sigmoid())?.to_vec_f32()?;
            out.extend(p.chunks_exact(c).map(|row| row.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>()));
        }
        Ok(out)
    }

    /// Per-label AUC (bootstrap intervals) and ROC curves on `test`, and the mean AUC.
    pub fn evaluate(&self, test: &LabelledSet, resamples: usize, seed: u64, workers: usize) -> Result<ClassifierMetrics> {
        let scores = self.predict(&test.manifest, &test.indices, 32, workers)?;
        let mut results = Vec::new();
        let mut defined = Vec::new();
        for (k, name) in self.card.labels.iter().enumerate() {
            let s: Vec<f64> = scores.iter().map(|r| r[k]).collect();
            let l: Vec<bool> = test.indices.iter().map(|i| test.targets[i][k] > 0.5).collect();
            let positives = l.iter().filter(|&&v| v).count();
            let both = positives > 0 && positives < l.len();
            let auc = if both { Some(roc_auc_ci(&s, &l, resamples, 0.95, seed.wrapping_add(k as u64))?) } else { None };
            let roc = if both { roc_curve(&s, &l)? } else { Vec::new() };
            let negatives = l.len() - positives;
            if both {
                defined.push((s, l));
            }
            results.push(LabelResult { name: name.clone(), positives, negatives, auc, roc });
        }
        let mean_auc = if defined.is_empty() {
            None
        } else {
            let stat = |idx: &[usize]| -> Result<f64> {
                let mut sum = 0.0;
                for (s, l) in &defined {
                    let ss: Vec<f64> = idx.iter().map(|&i| s[i]).collect();
                    let ll: Vec<bool> = idx.iter().map(|&i| l[i]).collect();
                    sum += roc_auc(&ss, &ll)?;
                }
                Ok(sum / defined.len() as f64)
            };
            Some(bootstrap_ci(test.indices.len(), resamples, 0.95, seed ^ 0x5eed, stat)?)
        };
        Ok(ClassifierMetrics { labels: results, mean_auc, test_images: test.indices.len() })
    }

    /// Write `metrics.json` next to the model.
    pub fn save_metrics(folder: &Path, metrics: &ClassifierMetrics, log: &TrainingLog) -> Result<()> {
        write_atomic_json(folder.join("metrics.json"), &serde_json::json!({ "test": metrics, "training": log }))
    }

    /// This classifier's pooled features as a FID feature extractor (consumes the classifier).
    pub fn into_feature_extractor(self, source: impl Into<String>) -> FeatureExtractor {
        let contract = self.contract();
        FeatureExtractor::from_network(self.net, self.store, contract, source)
    }
}

/// Load every tensor of `path` whose name and shape match a tensor of `store`; errors when none does
/// (the file is then for another architecture).
fn load_pretrained(store: &ParamStore, path: &Path) -> Result<()> {
    let file = crate::io::SafeTensorsFile::open(path)?;
    let missing = store.load_matching(|name, shape| {
        if !file.contains(name) || file.info(name)?.1 != shape {
            return Ok(None);
        }
        file.get_checked(name, shape, file.info(name)?.0).map(Some)
    })?;
    if missing.len() == store.state_dict().len() {
        return Err(Error::file(
            path,
            "no tensor matches the classifier's names and shapes — is this a DenseNet of the same configuration?",
        ));
    }
    Ok(())
}

fn data_err(e: crate::data::DataError) -> Error {
    Error::msg(e.to_string())
}

//! The `evaluate` stage: how close the synthetic, filtered and distilled data
//! are to the real data (FID, KID, precision/recall on DenseNet features),
//! how diverse each set is (MS-SSIM), and how useful each is for training a
//! chest X-ray classifier tested on real images (per-pathology AUC).
//!
//! Reads the real dataset (with its patient-level splits) and the optional
//! synthetic, filtered and distilled datasets; writes under `out`
//! (`work/eval/`): `classifier-{real,synthetic,distilled}/` (model folders
//! with `metrics.json`) and `evaluation.json` ([`EvaluateSummary`]). With
//! `resume`, a classifier whose folder already holds its `metrics.json` for
//! the same settings is loaded instead of retrained.

use crate::data::{Image, Manifest, Split};
use crate::eval::classifier::{select_labels, Classifier, ClassifierConfig, ClassifierMetrics, LabelledSet, TrainingLog};
use crate::eval::features::FeatureExtractor;
use crate::eval::fid::{fid, kid, Features, FrechetDistance, Kid, KidSettings};
use crate::eval::msssim::ms_ssim_diversity;
use crate::eval::prdc::{prdc, Prdc};
use crate::io::hash::sha256_path;
use crate::io::write_atomic_json;
use crate::pipeline::progress;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Settings of the evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateConfig {
    /// The real dataset (its train and test splits are used).
    pub real: PathBuf,
    /// D_synth: every sample of the model trained on real data.
    pub synth: Option<PathBuf>,
    /// D_filtered: the samples kept by the filter.
    pub filtered: Option<PathBuf>,
    /// D_distill: samples of the distilled model.
    pub distill: Option<PathBuf>,
    /// torchxrayvision DenseNet-121 weights converted to safetensors; without them the features of the
    /// classifier trained on the real training split are used.
    pub features_weights: Option<PathBuf>,
    /// The downstream classifier.
    pub classifier: ClassifierConfig,
    /// Synthetic training sets are capped at this many images; `None` caps them at the size of the real
    /// training split, so every classifier sees as many images as the real one.
    pub synthetic_cap: Option<usize>,
    /// KID subsets.
    pub kid: KidSettings,
    /// Neighbourhood size of precision/recall.
    pub prdc_k: usize,
    /// Random pairs for MS-SSIM diversity.
    pub msssim_pairs: usize,
    /// Batch size of feature extraction.
    pub batch_size: usize,
    /// Output folder (`work/eval`).
    pub out: PathBuf,
    /// Reuse classifiers already trained with the same settings.
    pub resume: bool,
    /// Seed of subset draws, caps and bootstrap resamples.
    pub seed: u64,
}

impl Default for EvaluateConfig {
    /// Paper-size settings over the standard work directory.
    fn default() -> Self {
        EvaluateConfig {
            real: "work/real".into(),
            synth: None,
            filtered: None,
            distill: None,
            features_weights: None,
            classifier: ClassifierConfig::default(),
            synthetic_cap: None,
            kid: KidSettings::default(),
            prdc_k: 3,
            msssim_pairs: 500,
            batch_size: 32,
            out: "work/eval".into(),
            resume: false,
            seed: 0,
        }
    }
}

/// Paper-size settings over the datasets of the work directory `work`.
pub fn for_work(work: &Path) -> EvaluateConfig {
    EvaluateConfig {
        real: work.join("real"),
        synth: Some(work.join("synth")),
        filtered: Some(work.join("filtered")),
        distill: Some(work.join("synth-distill")),
        out: work.join("eval"),
        ..EvaluateConfig::default()
    }
}

/// The demo preset over `work`: the small classifier at 64×64, fewer KID subsets and MS-SSIM pairs, and
/// classifiers reused when a rerun finds them trained with the same settings and data.
pub fn demo(work: &Path) -> EvaluateConfig {
    EvaluateConfig {
        classifier: ClassifierConfig::demo(),
        kid: KidSettings { subsets: 50, max_subset_size: 500, seed: 0 },
        msssim_pairs: 100,
        resume: true,
        ..for_work(work)
    }
}

/// Distances of one dataset to the real training split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fidelity {
    /// Fréchet distance and its parts.
    pub fid: FrechetDistance,
    /// KID (`None` when a set is too small).
    pub kid: Option<Kid>,
    /// Precision, recall, density, coverage (`None` when a set has k or fewer samples).
    pub prdc: Option<Prdc>,
}

/// What the evaluation found about one dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetEvaluation {
    /// The dataset folder.
    pub path: PathBuf,
    /// SHA-256 of the folder (manifest and images).
    pub sha256: String,
    /// Records in the manifest.
    pub images: usize,
    /// Against the real training split (for `real`: its test split against its training split).
    pub fidelity: Option<Fidelity>,
    /// Mean pairwise MS-SSIM.
    pub ms_ssim: Option<f64>,
    /// Downstream classifier trained on this dataset (real: its training split), tested on the real test split.
    pub classifier: Option<ClassifierResult>,
}

/// A trained classifier's folder, training log and test metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierResult {
    /// The classifier folder.
    pub folder: PathBuf,
    /// Losses and time of training.
    pub training: TrainingLog,
    /// Results on the real test split.
    pub test: ClassifierMetrics,
}

/// `evaluation.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluateSummary {
    /// The settings used.
    pub settings: EvaluateConfig,
    /// Where the features came from, in words.
    pub features_source: String,
    /// Pathologies of the classifier.
    pub labels: Vec<String>,
    /// By name: `real`, `synthetic`, `filtered`, `distilled`.
    pub datasets: BTreeMap<String, DatasetEvaluation>,
    /// Wall time of the stage.
    pub seconds: f64,
}

fn load_manifest(path: &Path) -> Result<Arc<Manifest>> {
    Manifest::load(path).map(Arc::new).map_err(|e| Error::msg(e.to_string()))
}

/// Load up to `limit` images of a dataset at one size (the first image's shorter side, at most 256).
fn load_images(m: &Manifest, indices: &[usize]) -> Result<Vec<Image>> {
    use rayon::prelude::*;
    let images = indices.par_iter().map(|&i| m.load_image(i).map_err(|e| Error::msg(e.to_string()))).collect::<Result<Vec<Image>>>()?;
    let side = images.first().map_or(0, |i| i.width.min(i.height).min(256));
    Ok(images.into_iter().map(|i| if i.width == side && i.height == side { i } else { i.resize_center_crop(side) }).collect())
}

/// A stable fingerprint of what a classifier's training depends on.
fn training_key(cfg: &ClassifierConfig, labels: &[String], data_hash: &str, n: usize) -> String {
    let text = serde_json::json!({ "config": cfg, "labels": labels, "data": data_hash, "images": n }).to_string();
    crate::io::hash::sha256_bytes(text.as_bytes())
}

fn train_or_resume(
    cfg: &EvaluateConfig,
    name: &str,
    train: &LabelledSet,
    test: &LabelledSet,
    labels: &[String],
    data_hash: &str,
) -> Result<(Classifier, ClassifierResult)> {
    let folder = cfg.out.join(format!("classifier-{name}"));
    let key = training_key(&cfg.classifier, labels, data_hash, train.indices.len());
    let metrics_path = folder.join("metrics.json");
    if cfg.resume {
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            if let Ok(saved) = serde_json::from_str::<SavedMetrics>(&text) {
                if saved.key == key {
                    let model = Classifier::load(&folder)?;
                    return Ok((model, ClassifierResult { folder, training: saved.training, test: saved.test }));
                }
            }
        }
    }
    let mut model = Classifier::new(&cfg.classifier, labels.to_vec())?;
    let bar = progress::bar(0, &format!("classifier {name}"));
    let training = model.train(&cfg.classifier, train, &bar)?;
    bar.finish_and_clear();
    let test_metrics = model.evaluate(test, cfg.classifier.bootstrap, cfg.seed, cfg.classifier.workers)?;
    model.save(&folder)?;
    write_atomic_json(&metrics_path, &SavedMetrics { key, training: training.clone(), test: test_metrics.clone() })?;
    Ok((model, ClassifierResult { folder, training, test: test_metrics }))
}

/// `metrics.json` of a classifier folder.
#[derive(Serialize, Deserialize)]
struct SavedMetrics {
    /// Fingerprint of settings and training data, for `resume`.
    key: String,
    training: TrainingLog,
    test: ClassifierMetrics,
}

/// Run the evaluation and write `evaluation.json`.
pub fn run(cfg: &EvaluateConfig) -> Result<EvaluateSummary> {
    let start = std::time::Instant::now();
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let real = load_manifest(&cfg.real)?;
    let (train_idx, test_idx) = (real.indices_in(Split::Train), real.indices_in(Split::Test));
    if train_idx.is_empty() || test_idx.is_empty() {
        return Err(Error::file(&real.path, "field `split`: the evaluation needs train and test records (run `privdistill data split`)"));
    }
    let labels = match &cfg.classifier.labels {
        Some(l) if !l.is_empty() => l.clone(),
        _ => select_labels(&real, &train_idx, &test_idx, cfg.classifier.min_positives)?,
    };
    let real_hash = sha256_path(&cfg.real)?;
    let train_set = LabelledSet::new(real.clone(), train_idx.clone(), &labels, None)?;
    let test_set = LabelledSet::new(real.clone(), test_idx.clone(), &labels, None)?;

    // 1. The classifier on real data: the reference AUC, and the offline feature network.
    let (real_model, real_result) = train_or_resume(cfg, "real", &train_set, &test_set, &labels, &real_hash)?;
    let extractor = match &cfg.features_weights {
        Some(w) => FeatureExtractor::torchxrayvision(w, None)?,
        None => real_model.into_feature_extractor(format!(
            "pooled features of our own DenseNet classifier trained on the real training split ({} images; no \
             torchxrayvision weights were given), so these FIDs compare the datasets of this report with each other, \
             not with published FIDs",
            train_idx.len()
        )),
    };
    let features = |m: &Arc<Manifest>, idx: Vec<usize>, what: &str| -> Result<Features> {
        let bar = progress::bar(idx.len().div_ceil(cfg.batch_size.max(1)) as u64, &format!("features {what}"));
        let f = extractor.extract(m, idx, cfg.batch_size, cfg.classifier.workers);
        bar.finish_and_clear();
        f
    };
    let real_train_features = features(&real, train_idx.clone(), "real")?;
    let fidelity = |f: &Features| -> Result<Fidelity> {
        let kid = kid(&real_train_features, f, &cfg.kid).ok();
        let prdc = prdc(&real_train_features, f, cfg.prdc_k).ok();
        Ok(Fidelity { fid: fid(&real_train_features, f)?, kid, prdc })
    };
    let diversity = |m: &Manifest, idx: &[usize]| -> Result<Option<f64>> {
        if idx.len() < 2 {
            return Ok(None);
        }
        ms_ssim_diversity(&load_images(m, idx)?, cfg.msssim_pairs, cfg.seed).map(Some)
    };

    let mut datasets = BTreeMap::new();
    let real_test_features = features(&real, test_idx.clone(), "real test")?;
    datasets.insert(
        "real".to_string(),
        DatasetEvaluation {
            path: cfg.real.clone(),
            sha256: real_hash.clone(),
            images: real.len(),
            fidelity: Some(fidelity(&real_test_features)?),
            ms_ssim: diversity(&real, &train_idx)?,
            classifier: Some(real_result),
        },
    );

    // 2. Each synthetic dataset: fidelity, diversity and (synthetic, distilled) downstream usefulness.
    let cap = cfg.synthetic_cap.unwrap_or(train_idx.len());
    for (name, path, train_classifier) in
        [("synthetic", &cfg.synth, true), ("filtered", &cfg.filtered, false), ("distilled", &cfg.distill, true)]
    {
        let Some(path) = path else { continue };
        let m = load_manifest(path)?;
        let all: Vec<usize> = (0..m.len()).collect();
        let sha256 = sha256_path(path)?;
        let f = features(&m, all.clone(), name)?;
        let classifier = if train_classifier {
            let set = LabelledSet::new(m.clone(), all.clone(), &labels, Some(&real))?.capped(cap, cfg.seed);
            Some(train_or_resume(cfg, name, &set, &test_set, &labels, &sha256)?.1)
        } else {
            None
        };
        datasets.insert(
            name.to_string(),
            DatasetEvaluation {
                path: path.clone(),
                sha256,
                images: m.len(),
                fidelity: Some(fidelity(&f)?),
                ms_ssim: diversity(&m, &all)?,
                classifier,
            },
        );
    }
    let summary = EvaluateSummary {
        settings: cfg.clone(),
        features_source: extractor.source.clone(),
        labels,
        datasets,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_atomic_json(cfg.out.join("evaluation.json"), &summary)?;
    Ok(summary)
}

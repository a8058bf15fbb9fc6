//! `privdistill train-align`: the image and text encoders behind s_align,
//! trained contrastively on the real image/report pairs of the training split
//! (CLIP's symmetric loss with a learned temperature). Pretrained towers can
//! be supplied by file: a BERT or CXR-BERT checkpoint under transformers
//! names for the text tower (with its tokenizer), a torchvision ResNet
//! state_dict for the image tower; training then fine-tunes them (or, with
//! `max_epochs = 0`, only packages them).
//!
//! Validation and test report how well s_align separates matching pairs from
//! mismatched ones (each image against the report of another image with a
//! different text): the AUC, the two means, and image→text top-1 accuracy.

use crate::data::{Augment, Image, Split};
use crate::eval::metrics::{roc_auc, roc_auc_ci, Estimate};
use crate::models::align::AlignConfig;
use crate::models::bert::BertConfig;
use crate::models::resnet::ResNetConfig;
use crate::nn::{AdamW, AdamWConfig, Optimizer};
use crate::pipeline::progress;
use crate::pipeline::scorer_stage::EpochRun;
use crate::privacy::align::{bert_config, AlignFolderConfig, AlignScorer, TextSpec};
use crate::privacy::dataset::{ImageBank, SplitDataset};
use crate::privacy::scorer_folder::{self, InputSpec, ScorerKind, METRICS_FILE};
use crate::{no_grad, Error, Result, Rng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `train-align`; the defaults are the full-size recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainAlignConfig {
    /// The real dataset (with splits and report texts).
    pub data: PathBuf,
    /// The scorer folder to write.
    pub out: PathBuf,
    /// The image tower (ResNet-50); its `fc` becomes the image projection.
    pub image_backbone: ResNetConfig,
    /// The text tower (a transformers BertConfig; BERT-base by default).
    pub text_encoder: BertConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
    /// Image input side in pixels.
    pub image_size: usize,
    /// Tokens per report.
    pub max_len: usize,
    /// The WordPiece `tokenizer.json` (default: the shipped uncased BERT vocabulary).
    pub tokenizer: Option<PathBuf>,
    /// Pretrained text-tower weights (BERT / CXR-BERT safetensors, transformers names).
    pub text_weights: Option<PathBuf>,
    /// Pretrained image-tower weights (torchvision ResNet safetensors).
    pub image_weights: Option<PathBuf>,
    /// Pairs per step.
    pub batch_size: usize,
    /// AdamW's learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// At most this many epochs (0: package the given or initial weights untrained).
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation AUC.
    pub patience: usize,
    /// Augment the images.
    pub augment: bool,
    /// Bootstrap resamples for the test AUC interval.
    pub bootstrap_resamples: usize,
    /// Seeds initialisation, batch order and augmentation.
    pub seed: u64,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
}

impl Default for TrainAlignConfig {
    fn default() -> Self {
        let paper = AlignFolderConfig::paper();
        TrainAlignConfig {
            data: PathBuf::from("work/real"),
            out: PathBuf::from("work/align"),
            image_backbone: paper.architecture.image,
            text_encoder: paper.architecture.text,
            projection_dim: paper.architecture.projection_dim,
            image_size: paper.input.size,
            max_len: paper.text.max_len,
            tokenizer: None,
            text_weights: None,
            image_weights: None,
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 0.01,
            max_epochs: 50,
            patience: 5,
            augment: true,
            bootstrap_resamples: 1000,
            seed: 0,
            resume: false,
        }
    }
}

impl TrainAlignConfig {
    /// The demo preset: a one-block-per-stage ResNet (16 base planes, 64 px) and a
    /// 2-layer, 64-wide BERT over the shipped vocabulary, about 30 s on 2 cores.
    pub fn demo(data: &Path, out: &Path) -> Self {
        TrainAlignConfig {
            data: data.to_path_buf(),
            out: out.to_path_buf(),
            image_backbone: ResNetConfig { layers: [1, 1, 1, 1], num_classes: 128, in_channels: 3, width_per_group: 64, base_planes: 16 },
            text_encoder: bert_config(30522, 64, 2, 2, 64),
            projection_dim: 64,
            image_size: 64,
            max_len: 64,
            batch_size: 32,
            lr: 3e-4,
            max_epochs: 8,
            patience: 3,
            bootstrap_resamples: 500,
            ..Default::default()
        }
    }

    /// The folder config this training writes.
    pub fn folder_config(&self) -> AlignFolderConfig {
        AlignFolderConfig {
            kind: ScorerKind::Align,
            architecture: AlignConfig {
                image: self.image_backbone.clone(),
                text: self.text_encoder.clone(),
                projection_dim: self.projection_dim,
                logit_scale_init: crate::models::align::CLIP_LOGIT_SCALE_INIT,
            },
            input: InputSpec::imagenet(self.image_size),
            text: TextSpec { max_len: self.max_len },
        }
    }

    fn tokenizer_path(&self) -> PathBuf {
        self.tokenizer.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/bert-tokenizer/tokenizer.json"))
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size < 2 || self.patience == 0 {
            return Err(Error::msg(
                "train-align: batch_size must be at least 2 (the loss contrasts pairs within a batch) and patience at least 1",
            ));
        }
        if self.image_size < 32 {
            return Err(Error::msg(format!("train-align: image_size {} is too small for a ResNet (at least 32)", self.image_size)));
        }
        Ok(())
    }
}

/// How well s_align tells matching from mismatched image/report pairs.
#[derive(Clone, Debug, Serialize)]
pub struct AlignEvaluation {
    /// Matching pairs scored (images with a report).
    pub pairs: usize,
    /// Mean s_align of the matching pairs.
    pub matched_mean: f64,
    /// Mean s_align of the mismatched pairs.
    pub mismatched_mean: f64,
    /// AUC of matching against mismatched, with its bootstrap 95 % interval.
    pub auc: Estimate,
    /// Fraction of images whose own report scores highest among the split's distinct reports.
    pub image_to_text_top1: f64,
}

/// What the pretrained weight files provided.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PretrainedLoad {
    /// The text-tower file, if any.
    pub text_weights: Option<PathBuf>,
    /// Text-tower entries the file lacked (kept at their initial values).
    pub text_missing: Vec<String>,
    /// The image-tower file, if any.
    pub image_weights: Option<PathBuf>,
    /// Image-tower entries the file lacked or shaped differently (e.g. the projection `fc`).
    pub image_missing: Vec<String>,
}

/// What `train-align` reports (also written to `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainAlignSummary {
    /// The scorer folder written.
    pub out: PathBuf,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose weights were kept (0: the initial or pretrained weights).
    pub best_epoch: usize,
    /// Mean CLIP loss of each epoch.
    pub train_loss: Vec<f64>,
    /// Validation AUC (matching vs mismatched) of each epoch.
    pub val_auc: Vec<f64>,
    /// Training pairs (images with a report).
    pub train_pairs: usize,
    /// The test split's evaluation.
    pub test: AlignEvaluation,
    /// What pretrained files provided.
    pub pretrained: PretrainedLoad,
    /// Wall time of this run.
    pub wall_seconds: f64,
}

fn text_of(data: &SplitDataset, i: usize) -> Option<&str> {
    data.manifest.records[i].text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// Scores each image of `indices` (those with a report) against its report and against
/// the report of another image with a different text. With `resamples` = 0 the AUC
/// comes without an interval (`lo` = `hi` = the value).
pub fn evaluate(
    scorer: &AlignScorer,
    data: &SplitDataset,
    bank: &ImageBank,
    indices: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<AlignEvaluation> {
    let with_text: Vec<usize> = indices.iter().copied().filter(|&i| text_of(data, i).is_some()).collect();
    let mut distinct: Vec<&str> = with_text.iter().filter_map(|&i| text_of(data, i)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(Error::file(&data.manifest.path, "align evaluation: the split needs at least 2 different reports"));
    }
    let images = scorer.embed_images(&bank.gather(&with_text))?;
    let texts = scorer.embed_texts(&distinct)?;
    let sims = no_grad(|| images.matmul(&texts.t()?)?.to_vec_f32())?;
    let (n_text, mut rng) = (distinct.len(), Rng::new(seed));
    let (mut scores, mut labels, mut top1) = (Vec::new(), Vec::new(), 0usize);
    for (row, &i) in with_text.iter().enumerate() {
        let own = distinct.binary_search(&text_of(data, i).expect("filtered")).expect("listed");
        let row_sims = &sims[row * n_text..(row + 1) * n_text];
        let mut other = rng.below(n_text - 1);
        if other >= own {
            other += 1;
        }
        scores.extend([row_sims[own] as f64, row_sims[other] as f64]);
        labels.extend([true, false]);
        let best = (0..n_text).max_by(|&a, &b| row_sims[a].total_cmp(&row_sims[b]).then(b.cmp(&a))).expect("two texts");
        top1 += usize::from(best == own);
    }
    let mean = |want: bool| {
        let v: Vec<f64> = scores.iter().zip(&labels).filter(|(_, &l)| l == want).map(|(s, _)| *s).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    Ok(AlignEvaluation {
        pairs: with_text.len(),
        matched_mean: mean(true),
        mismatched_mean: mean(false),
        auc: if resamples == 0 {
            let value = roc_auc(&scores, &labels)?;
            Estimate { value, lo: value, hi: value, level: 0.95, resamples: 0 }
        } else {
            roc_auc_ci(&scores, &labels, resamples, 0.95, seed)?
        },
        image_to_text_top1: top1 as f64 / with_text.len() as f64,
    })
}

/// Loads the pretrained towers named in `cfg` into `scorer`.
fn load_pretrained(cfg: &TrainAlignConfig, scorer: &AlignScorer) -> Result<PretrainedLoad> {
    let mut report =
        PretrainedLoad { text_weights: cfg.text_weights.clone(), image_weights: cfg.image_weights.clone(), ..Default::default() };
    let towers =
        [(&cfg.text_weights, "text_encoder", &mut report.text_missing), (&cfg.image_weights, "image_encoder", &mut report.image_missing)];
    for (file, prefix, missing) in towers {
        let Some(file) = file else { continue };
        let total = scorer.store().state_dict().iter().filter(|(n, _)| n.starts_with(&format!("{prefix}."))).count();
        *missing = scorer_folder::load_weights_with_prefix(scorer.store(), file, prefix, true)?;
        if missing.len() == total {
            return Err(Error::file(
                file,
                format!("none of its tensors matches the {prefix} tower by name and shape — is it the right checkpoint for the config?"),
            ));
        }
    }
    Ok(report)
}

/// Trains the alignment encoders and writes their folder.
pub fn run(cfg: &TrainAlignConfig) -> Result<TrainAlignSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let data = SplitDataset::load(&cfg.data)?;
    let train: Vec<usize> = data.train.iter().copied().filter(|&i| text_of(&data, i).is_some()).collect();
    if train.len() < cfg.batch_size {
        return Err(Error::file(
            &data.manifest.path,
            format!("train split: {} images with a report (field `text`), fewer than batch_size = {}", train.len(), cfg.batch_size),
        ));
    }
    let all: Vec<usize> = (0..data.manifest.len()).collect();
    let bank = ImageBank::load(&data.manifest, &all, cfg.image_size)?;

    let scorer = AlignScorer::new(cfg.folder_config(), &cfg.tokenizer_path(), cfg.seed)?;
    let pretrained = load_pretrained(cfg, &scorer)?;
    let adam = AdamWConfig { lr: cfg.lr, weight_decay: cfg.weight_decay, ..Default::default() };
    let mut optimizer = AdamW::new(scorer.store().trainable_parameters(), adam)?;
    let mut run = EpochRun::open(
        &cfg.out,
        cfg,
        cfg.resume,
        cfg.patience,
        "val_auc",
        &["image_backbone", "text_encoder", "projection_dim", "image_size"],
        scorer.store(),
        &mut optimizer,
    )?;

    let augment = cfg.augment.then(Augment::chest_xray);
    let steps_per_epoch = train.len() / cfg.batch_size;
    let bar = progress::bar((cfg.max_epochs * steps_per_epoch) as u64, "train-align");
    bar.set_position((run.first_epoch * steps_per_epoch) as u64);
    let mut epochs_run = run.first_epoch;
    for epoch in run.epochs(cfg.max_epochs) {
        let epoch_rng = Rng::new(cfg.seed).fork(1 + epoch as u64);
        let mut order = train.clone();
        epoch_rng.fork(0).shuffle(&mut order);
        let mut loss_sum = 0.0;
        for (step, batch) in order.chunks_exact(cfg.batch_size).enumerate() {
            let step_rng = epoch_rng.fork(1 + step as u64);
            let views: Vec<Image> = batch
                .iter()
                .enumerate()
                .map(|(k, &i)| match &augment {
                    Some(aug) => aug.apply(bank.get(i), cfg.image_size, &mut step_rng.fork(k as u64)),
                    None => bank.get(i).clone(),
                })
                .collect();
            let texts: Vec<&str> = batch.iter().map(|&i| text_of(&data, i).expect("filtered")).collect();
            let (ids, mask) = scorer.tokenize(&texts)?;
            let model = scorer.model();
            let image_emb = model.image_embeddings(&scorer.config().input.batch_of_squares(&views)?, true)?;
            let text_emb = model.text_embeddings(&ids, &mask)?;
            let loss = model.clip_loss(&image_emb, &text_emb)?;
            let grads = loss.backward()?;
            optimizer.step(&grads)?;
            let value = loss.to_scalar_f64()?;
            loss_sum += value;
            bar.inc(1);
            bar.set_message(format!("epoch {} loss {value:.4}", epoch + 1));
        }
        let mean_loss = loss_sum / steps_per_epoch.max(1) as f64;
        let val = evaluate(&scorer, &data, &bank, data.indices(Split::Val), 0, cfg.seed)?;
        epochs_run = epoch + 1;
        if run.end_epoch(epoch, steps_per_epoch, val.auc.value, Some(mean_loss), scorer.store(), &optimizer)? {
            break;
        }
    }
    bar.finish_and_clear();
    run.restore_best(scorer.store())?;

    let test = evaluate(&scorer, &data, &bank, data.indices(Split::Test), cfg.bootstrap_resamples, cfg.seed)?;
    scorer.save(&cfg.out)?;
    let summary = TrainAlignSummary {
        out: cfg.out.clone(),
        epochs: epochs_run,
        best_epoch: run.stopping.best_epoch,
        train_loss: run.train_loss.clone(),
        val_auc: run.history.clone(),
        train_pairs: train.len(),
        test,
        pretrained,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    crate::io::write_atomic_json(cfg.out.join(METRICS_FILE), &summary)?;
    run.remove_checkpoint()?;
    Ok(summary)
}

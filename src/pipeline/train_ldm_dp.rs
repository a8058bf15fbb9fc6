//! `privdistill train-ldm-dp`: differentially private fine-tuning of a model
//! folder's UNet on a dataset with DP-SGD (PrivImage's stage 4, DPDM's
//! recipe): Poisson-subsampled batches, per-sample gradients clipped to `C`,
//! Gaussian noise `σC` on their sum, `K` diffusion-noise draws per record
//! averaged before clipping, an optional EMA of the weights.
//!
//! The VAE and text encoder stay frozen and run once (as in `train-ldm`,
//! whose caching this reuses); only the UNet is private. A selected record's
//! `K` copies are adjacent rows of the micro-batch, so every activation is
//! sample-major, as [`Tensor::backward_per_sample`] requires. A large Poisson
//! batch is split into chunks of at most `max_physical_batch` records whose
//! clipped gradient sums add up — the result does not depend on the split
//! other than through the order of random draws.
//!
//! Randomness of step k: the batch is `PoissonSampler(seed).sample(k)`,
//! latents, timesteps, diffusion noise and prompt dropout come from
//! `Rng::new(seed).fork(k)` and the privacy noise from its own stream
//! forked by k — all pure functions of (seed, step), so the step number in
//! the checkpoint is the complete random state and a resumed run is byte-
//! identical to an uninterrupted one.
//!
//! The output is a complete diffusers model folder (EMA weights if
//! configured) plus `dp.json`: q, σ, C, K, steps and N, which the privacy
//! accountant turns into ε (this stage does not).

use crate::diffusion::objective::{diffusion_loss, ObjectiveConfig};
use crate::diffusion::schedule::NoiseSchedule;
use crate::io::{write_atomic_json, Checkpoint, CheckpointMeta};
use crate::nn::{AdamW, AdamWConfig, Ema, EmaConfig, LrSchedule, Optimizer};
use crate::pipeline::progress;
use crate::pipeline::train_ldm::{
    draw_latents, encode_latent_distributions, encode_texts, prompt_table, resolve_parts, tokenize, warn_truncated, write_model_folder,
    TrainLdmConfig,
};
use crate::pipeline::train_vae::{check_fingerprint, load_manifest, resume_fingerprint, sample_curve, select_records, CHECKPOINT_FILE};
use crate::privacy::dp::sgd::{clip_and_sum, noise_and_normalise, ClipStats, DpSgdConfig, PoissonSampler};
use crate::{no_grad, Error, Gradients, Result, Rng, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file in the model folder recording the DP-SGD mechanism's parameters.
pub const DP_FILE: &str = "dp.json";

/// Seed salt of the privacy-noise stream (distinct from the data stream).
const NOISE_STREAM: u64 = 0xD9_5EED_0F_F00D;

/// The checkpoint tensor of (step, loss) rows.
const LOSSES_TENSOR: &str = "progress.losses";

/// Settings of `train-ldm-dp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainLdmDpConfig {
    /// Dataset folder (or manifest) of the sensitive image/report pairs.
    pub data: PathBuf,
    /// Splits to train on (empty = every record); N is their record count.
    pub splits: Vec<String>,
    /// The pretrained diffusers model folder to fine-tune (its UNet, VAE,
    /// text encoder, tokenizer and scheduler).
    pub init: PathBuf,
    /// Output model folder.
    pub out: PathBuf,
    /// Square image side; the latent side is this over the VAE's downscale.
    pub image_size: usize,
    /// `q`: the probability that a record joins a step's batch.
    pub sample_rate: f64,
    /// `σ`: noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// `C`: the per-sample gradient norm bound.
    pub max_grad_norm: f64,
    /// `K`: diffusion-noise draws per selected record per step.
    pub noise_multiplicity: usize,
    /// Optimizer steps (each one Poisson batch).
    pub steps: u64,
    /// Records per forward/backward pass (memory cap); a larger Poisson
    /// batch is processed in chunks whose clipped sums are added.
    pub max_physical_batch: usize,
    /// AdamW settings (`lr` is the base rate of the schedule).
    pub optimizer: AdamWConfig,
    /// Learning-rate schedule over optimizer steps.
    pub lr_schedule: LrSchedule,
    /// Keep an exponential moving average of the weights and save it.
    pub ema: Option<EmaConfig>,
    /// Probability of replacing a record's prompt by the empty prompt.
    pub cfg_dropout: f64,
    /// Seed of the sampler, the diffusion noise and the privacy noise.
    pub seed: u64,
    /// Steps between checkpoints (0 = only when stopping early).
    pub checkpoint_every: u64,
    /// Continue from `out/checkpoint.safetensors` if there is one.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps in this run, as an interruption would.
    pub stop_after: Option<u64>,
}

impl Default for TrainLdmDpConfig {
    /// DPDM/PrivImage-like settings for a Stable Diffusion-sized UNet at
    /// 512×512: C = 1, σ = 1 (calibrate σ to the target ε with the
    /// accountant), q = 0.02, K = 8, 2000 steps, Adam at 1e-4, EMA 0.999.
    fn default() -> Self {
        TrainLdmDpConfig {
            data: "work/real".into(),
            splits: vec!["train".into()],
            init: "work/ldm-pretrained".into(),
            out: "work/ldm-dp".into(),
            image_size: 512,
            sample_rate: 0.02,
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            noise_multiplicity: 8,
            steps: 2000,
            max_physical_batch: 8,
            optimizer: AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            lr_schedule: LrSchedule::Constant,
            ema: Some(EmaConfig { decay: 0.999, ..Default::default() }),
            cfg_dropout: 0.1,
            seed: 0,
            checkpoint_every: 100,
            resume: true,
            stop_after: None,
        }
    }
}

impl TrainLdmDpConfig {
    /// The demo preset: fine-tune the demo model folder `init` on the
    /// shipped 64×64 data, sized for about 90 s on two cores.
    pub fn demo(data: impl Into<PathBuf>, init: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        TrainLdmDpConfig {
            data: data.into(),
            init: init.into(),
            out: out.into(),
            image_size: 64,
            sample_rate: 0.04,
            noise_multiplicity: 2,
            steps: 40,
            max_physical_batch: 16,
            optimizer: AdamWConfig { lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            ema: None,
            checkpoint_every: 20,
            ..Default::default()
        }
    }

    /// The DP-SGD mechanism these settings describe.
    pub fn mechanism(&self) -> DpSgdConfig {
        DpSgdConfig {
            max_grad_norm: self.max_grad_norm,
            noise_multiplier: self.noise_multiplier,
            sample_rate: self.sample_rate,
            noise_multiplicity: self.noise_multiplicity,
            seed: self.seed,
        }
    }

    fn validate(&self) -> Result<()> {
        self.mechanism().validate().map_err(|e| Error::msg(format!("train-ldm-dp: {e}")))?;
        if self.steps == 0 || self.max_physical_batch == 0 {
            return Err(Error::msg("train-ldm-dp: steps and max_physical_batch must be positive"));
        }
        if !(0.0..=1.0).contains(&self.cfg_dropout) {
            return Err(Error::msg(format!("train-ldm-dp: cfg_dropout must lie in [0, 1], got {}", self.cfg_dropout)));
        }
        Ok(())
    }
}

/// What `train-ldm-dp` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainLdmDpSummary {
    /// The model folder written (complete unless `interrupted`).
    pub out: PathBuf,
    /// Optimizer steps trained in total.
    pub steps: u64,
    /// `q`.
    pub sample_rate: f64,
    /// `σ`.
    pub noise_multiplier: f64,
    /// `C`.
    pub max_grad_norm: f64,
    /// `K`.
    pub noise_multiplicity: usize,
    /// N: the records the sampler drew from.
    pub records: usize,
    /// Mean Poisson batch size over all steps (expected: qN).
    pub mean_batch: f64,
    /// Share of per-sample gradients that were clipped, over all steps.
    pub clipped_fraction: f64,
    /// Mean loss over the last 20 non-empty steps.
    pub final_loss: f64,
    /// (step, loss) pairs of non-empty steps, at most 100.
    pub loss_curve: Vec<(u64, f64)>,
    /// Selected records per second of training in this run (each used K times).
    pub samples_per_second: f64,
    /// Wall time of this run.
    pub wall_seconds: f64,
    /// Whether the run stopped at `stop_after` before the last step (no model folder yet).
    pub interrupted: bool,
    /// The step this run started from (0 unless resumed).
    pub resumed_from: u64,
}

/// Progress carried in the checkpoint besides the weights.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// (step, mean loss) of every non-empty step so far (saved as a tensor:
    /// JSON would not give the floats back bit for bit).
    #[serde(skip)]
    losses: Vec<(u64, f64)>,
    /// Records selected over all steps so far.
    selected: u64,
    /// Clipping statistics over all steps so far.
    clip: ClipStats,
}

/// Mean of the last `k` losses.
fn tail_loss(losses: &[(u64, f64)], k: usize) -> f64 {
    let tail = &losses[losses.len().saturating_sub(k)..];
    if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().map(|p| p.1).sum::<f64>() / tail.len() as f64
    }
}

/// At most `points` of the (step, loss) pairs, the last included.
fn thin_curve(losses: &[(u64, f64)], points: usize) -> Vec<(u64, f64)> {
    let values: Vec<f64> = losses.iter().map(|p| p.1).collect();
    sample_curve(&values, 0, points).into_iter().map(|(i, v)| (losses[i as usize].0, v)).collect()
}

/// Fine-tune with DP-SGD and write the model folder and `dp.json`.
pub fn run(cfg: &TrainLdmDpConfig) -> Result<TrainLdmDpSummary> {
    let started = Instant::now();
    cfg.validate()?;
    if !cfg.init.is_dir() {
        return Err(Error::file(&cfg.init, "train-ldm-dp: `init` must be a pretrained diffusers model folder"));
    }
    let base = TrainLdmConfig {
        data: cfg.data.clone(),
        splits: cfg.splits.clone(),
        out: cfg.out.clone(),
        vae: cfg.init.clone(),
        init: Some(cfg.init.clone()),
        image_size: cfg.image_size,
        seed: cfg.seed,
        ..Default::default()
    };
    let parts = resolve_parts(&base)?;
    let vae_config = parts.vae.config().clone();
    let down = vae_config.downscale();
    if cfg.image_size == 0 || cfg.image_size % down != 0 {
        return Err(Error::msg(format!(
            "train-ldm-dp: image_size {} must be a positive multiple of the VAE's downscale {down}",
            cfg.image_size
        )));
    }
    let manifest = load_manifest(&cfg.data)?;
    let records = select_records(&manifest, &cfg.splits)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;

    let (prompts, prompt_ids) = prompt_table(&manifest, &records);
    let (token_ids, truncated) = tokenize(&parts.tokenizer, &prompts)?;
    warn_truncated(truncated, prompts.len() - 1, parts.tokenizer.context_length() - 2);
    let (means, logvars) = encode_latent_distributions(&parts.vae, &manifest, &records, cfg.image_size)?;
    let text_states = no_grad(|| encode_texts(&parts.text, &token_ids, 32))?;

    let schedule = NoiseSchedule::new(&parts.scheduler)?;
    let objective = ObjectiveConfig { min_snr_gamma: None };
    let trained: Vec<(String, Tensor)> =
        parts.unet_store.trainable_parameters().into_iter().map(|(n, t)| (format!("unet.{n}"), t)).collect();
    let params: Vec<Tensor> = trained.iter().map(|(_, t)| t.clone()).collect();
    let mut opt = AdamW::new(trained.clone(), cfg.optimizer)?;
    let mut ema = cfg.ema.map(|c| Ema::new(&trained, c)).transpose()?;
    let mechanism = cfg.mechanism();
    let n = records.len();
    let sampler = PoissonSampler::new(n, cfg.sample_rate, cfg.seed)?;
    let expected_batch = sampler.expected_batch();
    let k = cfg.noise_multiplicity;

    let fingerprint = resume_fingerprint(cfg)?;
    let ckpt_path = cfg.out.join(CHECKPOINT_FILE);
    let mut start = 0u64;
    let mut progress_state = Progress::default();
    if cfg.resume && ckpt_path.is_file() {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_fingerprint(&ckpt_path, &ckpt.meta.config, &fingerprint)?;
        for (name, target) in &trained {
            no_grad(|| target.assign(ckpt.get(&format!("param.{name}"))?))?;
        }
        opt.load_state_tensors(&|n| Ok(ckpt.tensors.get(&format!("optim.{n}")).cloned()))?;
        if let Some(e) = ema.as_mut() {
            let step = ckpt.meta.extra.get("ema_step").and_then(Value::as_u64).unwrap_or(0);
            e.load(step, &|n| Ok(ckpt.tensors.get(&format!("ema.{n}")).cloned()))?;
        }
        let saved = ckpt.meta.extra.get("progress").cloned().unwrap_or(Value::Null);
        progress_state = serde_json::from_value(saved).map_err(|e| Error::file(&ckpt_path, format!("checkpoint progress: {e}")))?;
        if let Some(t) = ckpt.tensors.get(LOSSES_TENSOR) {
            progress_state.losses = t.to_vec_f64()?.chunks_exact(2).map(|p| (p[0] as u64, p[1])).collect();
        }
        start = ckpt.meta.step;
    }
    let save_checkpoint = |step: u64, state: &Progress, opt: &AdamW, ema: &Option<Ema>| -> Result<()> {
        let mut meta = CheckpointMeta { step, config: fingerprint.clone(), ..Default::default() };
        // The random state is (seed, step): the step above is all a resume needs.
        meta.extra.insert("progress".into(), serde_json::to_value(state).map_err(|e| Error::msg(e.to_string()))?);
        let mut ckpt = Checkpoint::new(meta);
        ckpt.insert_group("param.", trained.iter().map(|(n, t)| (n.as_str(), t)));
        ckpt.insert_group("optim.", opt.state_tensors()?);
        if !state.losses.is_empty() {
            let flat: Vec<f64> = state.losses.iter().flat_map(|&(s, l)| [s as f64, l]).collect();
            ckpt.insert(LOSSES_TENSOR, Tensor::from_vec(flat, &[state.losses.len(), 2])?);
        }
        if let Some(e) = ema {
            ckpt.meta.extra.insert("ema_step".into(), serde_json::json!(e.optimization_step()));
            ckpt.insert_group("ema.", e.averages());
        }
        ckpt.save(&ckpt_path)
    };

    let bar = progress::bar(cfg.steps, "train-ldm-dp");
    bar.set_position(start);
    let stop_at = cfg.stop_after.map_or(cfg.steps, |s| (start + s).min(cfg.steps));
    let run_start = start;
    let selected_before = progress_state.selected;
    let train_started = Instant::now();
    for step in start..stop_at {
        let mut rng = Rng::new(cfg.seed).fork(step);
        let mut noise_rng = Rng::new(cfg.seed ^ NOISE_STREAM).fork(step);
        let batch = sampler.sample(step);
        let mut clipped_sum = Gradients::default();
        let mut step_clip = ClipStats::default();
        let mut loss_sum = 0.0;
        for chunk in batch.chunks(cfg.max_physical_batch) {
            // Each record's K copies are adjacent rows: the batch stays sample-major.
            let rows: Vec<usize> = chunk.iter().flat_map(|&p| std::iter::repeat_n(p, k)).collect();
            let latents = draw_latents(&means, &logvars, &rows, &vae_config, &mut rng)?;
            let chosen: Vec<i64> = chunk
                .iter()
                .flat_map(|&p| {
                    let prompt = if rng.uniform() < cfg.cfg_dropout { 0 } else { prompt_ids[p] as i64 };
                    std::iter::repeat_n(prompt, k)
                })
                .collect();
            let context = text_states.index_select(0, &Tensor::from_vec(chosen, &[rows.len()])?)?;
            let loss = diffusion_loss(&parts.unet, &schedule, &latents, &context, &mut rng, objective)?;
            let value = loss.to_scalar_f64()?;
            if !value.is_finite() {
                return Err(Error::msg(format!(
                    "train-ldm-dp: the loss became {value} at step {step} — stopping (lower the learning rate)"
                )));
            }
            loss_sum += value * chunk.len() as f64;
            // The row mean times the records is the sum over records of each one's mean over its K draws.
            let per_record_sum = loss.affine(chunk.len() as f64, 0.0)?;
            let per_sample = per_record_sum.backward_per_sample(chunk.len(), &params)?;
            let (sum, stats) = clip_and_sum(&per_sample, &params, cfg.max_grad_norm)?;
            drop(per_sample);
            clipped_sum.accumulate(sum)?;
            step_clip = step_clip.merge(&stats);
        }
        let grads = noise_and_normalise(&clipped_sum, &params, &mechanism, &mut noise_rng, expected_batch)?;
        drop(clipped_sum);
        opt.set_learning_rate(cfg.lr_schedule.lr(cfg.optimizer.lr, step));
        opt.step(&grads)?;
        if let Some(e) = ema.as_mut() {
            e.update()?;
        }
        if !batch.is_empty() {
            progress_state.losses.push((step, loss_sum / batch.len() as f64));
        }
        progress_state.selected += batch.len() as u64;
        progress_state.clip = progress_state.clip.merge(&step_clip);
        let done = step + 1;
        bar.set_position(done);
        bar.set_message(format!(
            "loss {:.4}, batch {}, clipped {:.0}%",
            tail_loss(&progress_state.losses, 10),
            batch.len(),
            100.0 * step_clip.clipped_fraction()
        ));
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done < cfg.steps {
            save_checkpoint(done, &progress_state, &opt, &ema)?;
        }
    }
    bar.finish_and_clear();
    let train_seconds = train_started.elapsed().as_secs_f64().max(1e-9);
    let mut summary = TrainLdmDpSummary {
        out: cfg.out.clone(),
        steps: stop_at,
        sample_rate: cfg.sample_rate,
        noise_multiplier: cfg.noise_multiplier,
        max_grad_norm: cfg.max_grad_norm,
        noise_multiplicity: k,
        records: n,
        mean_batch: if stop_at == 0 { 0.0 } else { progress_state.selected as f64 / stop_at as f64 },
        clipped_fraction: progress_state.clip.clipped_fraction(),
        final_loss: tail_loss(&progress_state.losses, 20),
        loss_curve: thin_curve(&progress_state.losses, 100),
        samples_per_second: (progress_state.selected - selected_before) as f64 / train_seconds,
        wall_seconds: 0.0,
        interrupted: stop_at < cfg.steps,
        resumed_from: run_start,
    };
    if summary.interrupted {
        save_checkpoint(stop_at, &progress_state, &opt, &ema)?;
        summary.wall_seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    // The averaged weights are the model.
    if let Some(e) = &ema {
        e.copy_to_params()?;
    }
    let dp_path = cfg.out.join(DP_FILE);
    if dp_path.exists() {
        std::fs::remove_file(&dp_path).map_err(|e| Error::io(&dp_path, e))?;
    }
    write_model_folder(&parts, &cfg.out, cfg.image_size)?;
    write_atomic_json(&dp_path, &dp_record(cfg, &summary))?;
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path).map_err(|e| Error::io(&ckpt_path, e))?;
    }
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The contents of `dp.json`: what the accountant needs (q, σ, steps, N, and
/// C, K for the record), and what the run observed.
fn dp_record(cfg: &TrainLdmDpConfig, summary: &TrainLdmDpSummary) -> Value {
    serde_json::json!({
        "mechanism": "dp-sgd (Poisson subsampling, per-sample clipping, Gaussian noise)",
        "sample_rate": cfg.sample_rate,
        "noise_multiplier": cfg.noise_multiplier,
        "max_grad_norm": cfg.max_grad_norm,
        "noise_multiplicity": cfg.noise_multiplicity,
        "steps": summary.steps,
        "records": summary.records,
        "mean_batch": summary.mean_batch,
        "clipped_fraction": summary.clipped_fraction,
        "seed": cfg.seed,
        "data": cfg.data,
        "splits": cfg.splits,
    })
}

/// Read `dp.json` of a model folder written by `train-ldm-dp`.
pub fn read_dp_record(model: &Path) -> Result<Value> {
    let path = model.join(DP_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))
}

//! `privdistill train-vae`: train an `AutoencoderKL` on a dataset's images
//! (L1 reconstruction + KL, and optionally a patch discriminator after a
//! warm-up), estimate the latent scaling factor (1 / std of the latents) and
//! write a diffusers VAE folder (`config.json` with `scaling_factor`,
//! `diffusion_pytorch_model.safetensors`). The demo needs it because no
//! pretrained VAE can be downloaded; a user with SD weights skips it.
//!
//! The loss is LDM's autoencoder objective divided by the pixel count:
//! mean |x − x̂| + kl_weight · KL / (C·H·W), KL summed over latent elements.
//!
//! Each step's batch and noise are functions of (seed, step), so a resumed
//! run (`resume`, from `checkpoint.safetensors` in the output folder)
//! continues bit for bit as if it had not stopped.

use crate::data::contract::Contract;
use crate::data::loader::load_sample_into;
use crate::data::{Manifest, Split};
use crate::io::{write_atomic_json, Checkpoint, CheckpointMeta};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::nn::{clip_grad_norm, AdamW, AdamWConfig, Conv2d, Conv2dParams, Optimizer, ParamPath, ParamStore};
use crate::pipeline::model_folder::{config_json, Part};
use crate::pipeline::progress;
use crate::{no_grad, DType, Device, Error, Result, Rng, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The checkpoint file inside a stage's output folder while it trains.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// The optional patch discriminator (a PatchGAN as in LDM's autoencoder training).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscriminatorConfig {
    /// Whether to train with it at all.
    pub enabled: bool,
    /// The step from which the adversarial loss is used.
    pub start_step: u64,
    /// Weight of the generator's adversarial loss.
    pub weight: f64,
    /// Channels of the first layer (doubled per layer).
    pub channels: usize,
    /// Stride-2 layers.
    pub layers: usize,
    /// Learning rate of the discriminator.
    pub lr: f64,
}

impl Default for DiscriminatorConfig {
    /// LDM's setting: on after a long warm-up, weight 0.5, 64 channels, 3 layers.
    fn default() -> Self {
        DiscriminatorConfig { enabled: true, start_step: 50_001, weight: 0.5, channels: 64, layers: 3, lr: 4.5e-6 }
    }
}

/// Settings of `train-vae`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainVaeConfig {
    /// Dataset folder (or manifest).
    pub data: PathBuf,
    /// Splits to train on (empty = every record).
    pub splits: Vec<String>,
    /// Output VAE folder.
    pub out: PathBuf,
    /// A diffusers `AutoencoderKL` config.json; `None` = Stable Diffusion's
    /// architecture with one (grey) input channel.
    pub config: Option<PathBuf>,
    /// Square image side the VAE trains at.
    pub image_size: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// AdamW settings.
    pub optimizer: AdamWConfig,
    /// Weight of the KL term (LDM: 1e-6, relative to a per-pixel sum).
    pub kl_weight: f64,
    /// Clip the gradient norm to this (none if `None`).
    pub max_grad_norm: Option<f64>,
    /// The adversarial part.
    pub discriminator: DiscriminatorConfig,
    /// Images encoded to estimate the scaling factor.
    pub scale_images: usize,
    /// Seed of initialisation, batch order and noise.
    pub seed: u64,
    /// Steps between checkpoints (0 = only when stopping).
    pub checkpoint_every: u64,
    /// Continue from the checkpoint in `out` if there is one.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps in this run, as an interruption would.
    pub stop_after: Option<u64>,
}

impl Default for TrainVaeConfig {
    fn default() -> Self {
        TrainVaeConfig {
            data: "work/real".into(),
            splits: vec!["train".into()],
            out: "work/vae".into(),
            config: None,
            image_size: 512,
            batch_size: 8,
            steps: 100_000,
            optimizer: AdamWConfig { lr: 4.5e-6, beta1: 0.5, beta2: 0.9, eps: 1e-8, weight_decay: 0.0 },
            kl_weight: 1e-6,
            max_grad_norm: None,
            discriminator: DiscriminatorConfig::default(),
            scale_images: 1024,
            seed: 0,
            checkpoint_every: 1000,
            resume: true,
            stop_after: None,
        }
    }
}

impl TrainVaeConfig {
    /// The demo preset: the demo VAE (weights/demo/vae) at 64×64, sized for
    /// about a minute on two cores.
    pub fn demo(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        TrainVaeConfig {
            data: data.into(),
            out: out.into(),
            config: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/demo/vae/config.json")),
            image_size: 64,
            batch_size: 8,
            steps: 240,
            optimizer: AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 },
            discriminator: DiscriminatorConfig { enabled: false, ..Default::default() },
            scale_images: 256,
            checkpoint_every: 100,
            ..Default::default()
        }
    }
}

/// What `train-vae` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainVaeSummary {
    /// The VAE folder written.
    pub out: PathBuf,
    /// Steps trained in total.
    pub steps: u64,
    /// The step this run started from (0 unless resumed).
    pub resumed_from: u64,
    /// Mean L1 reconstruction error (in [-1, 1] units) over the last steps.
    pub final_reconstruction_l1: f64,
    /// Mean KL per image over the last steps.
    pub final_kl: f64,
    /// 1 / std of the latents, saved as `scaling_factor`.
    pub scaling_factor: f64,
    /// (step, loss) pairs, at most 100.
    pub loss_curve: Vec<(u64, f64)>,
    /// Training images per second in this run.
    pub images_per_second: f64,
    /// Wall time of this run.
    pub wall_seconds: f64,
    /// Whether the run stopped early at `stop_after` (no VAE written yet).
    pub interrupted: bool,
}

// ----- helpers shared with train-ldm ----------------------------------------

/// Parse split names (empty = all).
pub(crate) fn parse_splits(names: &[String]) -> Result<Vec<Split>> {
    names.iter().map(|n| Split::parse(n).ok_or_else(|| Error::msg(format!("splits: `{n}` is not one of train, val, test")))).collect()
}

/// Indices of the manifest records in `splits` (all when empty), or an error saying why there are none.
pub(crate) fn select_records(manifest: &Manifest, splits: &[String]) -> Result<Vec<usize>> {
    let wanted = parse_splits(splits)?;
    let chosen: Vec<usize> =
        (0..manifest.len()).filter(|&i| wanted.is_empty() || manifest.records[i].split.is_some_and(|s| wanted.contains(&s))).collect();
    if chosen.is_empty() {
        let any_split = manifest.records.iter().any(|r| r.split.is_some());
        let hint = if any_split {
            ""
        } else {
            " — the manifest has no `split` field: run `privdistill data split` or set splits = [] to use every record"
        };
        return Err(Error::file(&manifest.path, format!("no records in splits {splits:?}{hint}")));
    }
    Ok(chosen)
}

/// Load a dataset, with data-layer errors turned into the library's.
pub(crate) fn load_manifest(data: &Path) -> Result<Manifest> {
    Manifest::load(data).map_err(|e| Error::msg(e.to_string()))
}

/// The records (positions into `n` items) of optimizer step `step`: a fresh
/// seeded permutation every epoch, consumed `batch` at a time, so a step's
/// batch is a function of (seed, step) alone.
pub(crate) fn batch_positions(n: usize, batch: usize, step: u64, seed: u64) -> Vec<usize> {
    let order_rng = Rng::new(seed).fork(0x0BA7_C4E5);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    (0..batch as u64)
        .map(|k| {
            let pos = step * batch as u64 + k;
            let (epoch, within) = (pos / n as u64, (pos % n as u64) as usize);
            if cached.as_ref().map(|(e, _)| *e) != Some(epoch) {
                let mut order: Vec<usize> = (0..n).collect();
                order_rng.fork(epoch).shuffle(&mut order);
                cached = Some((epoch, order));
            }
            cached.as_ref().expect("just set").1[within]
        })
        .collect()
}

/// The training images of a stage, decoded to the LDM contract once (in
/// parallel) and kept in memory.
pub(crate) struct PixelCache {
    per_image: usize,
    contract: Contract,
    pixels: Vec<Vec<f32>>,
}

impl PixelCache {
    /// Decode `indices` of `manifest` at `size`×`size` with `channels` channels in [-1, 1].
    pub(crate) fn load(manifest: &Manifest, indices: &[usize], size: usize, channels: usize) -> Result<PixelCache> {
        use rayon::prelude::*;
        let contract = Contract::Ldm { size, channels };
        contract.validate().map_err(|e| Error::msg(e.to_string()))?;
        let per_image = channels * size * size;
        let pixels = indices
            .par_iter()
            .map(|&i| {
                let mut out = vec![0f32; per_image];
                load_sample_into(manifest, i, &contract, None, Rng::new(0), &mut out).map_err(|e| Error::msg(e.to_string()))?;
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PixelCache { per_image, contract, pixels })
    }

    /// Number of images.
    pub(crate) fn len(&self) -> usize {
        self.pixels.len()
    }

    /// A batch `[B, C, S, S]` of the images at `positions`.
    pub(crate) fn batch(&self, positions: &[usize]) -> Result<Tensor> {
        let mut data = Vec::with_capacity(positions.len() * self.per_image);
        for &p in positions {
            data.extend_from_slice(&self.pixels[p]);
        }
        let (c, s) = (self.contract.channels(), self.contract.size());
        Tensor::from_vec(data, &[positions.len(), c, s, s])
    }
}

/// The run settings that must match for a checkpoint to be resumed (all but
/// `resume`, `stop_after`, `checkpoint_every` and `out`, which do not change
/// what is computed), as JSON.
pub(crate) fn resume_fingerprint<T: Serialize>(config: &T) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(config).map_err(|e| Error::msg(format!("config: {e}")))?;
    if let Some(m) = v.as_object_mut() {
        for key in ["resume", "stop_after", "checkpoint_every", "out"] {
            m.remove(key);
        }
    }
    Ok(v)
}

/// Fail unless the checkpoint was written by a run with the same settings.
pub(crate) fn check_fingerprint(path: &Path, saved: &serde_json::Value, current: &serde_json::Value) -> Result<()> {
    if saved == current {
        return Ok(());
    }
    let differing: Vec<String> = match (saved.as_object(), current.as_object()) {
        (Some(a), Some(b)) => b.keys().filter(|k| a.get(*k) != b.get(*k)).cloned().collect(),
        _ => vec!["(all)".into()],
    };
    Err(Error::file(
        path,
        format!("the checkpoint was written with different settings ({differing:?}) — resume with the same config, or delete the checkpoint to start over"),
    ))
}

/// Sample (step, value) pairs, at most `points`, always including the last.
pub(crate) fn sample_curve(losses: &[f64], first_step: u64, points: usize) -> Vec<(u64, f64)> {
    if losses.is_empty() {
        return Vec::new();
    }
    let stride = losses.len().div_ceil(points.max(1)).max(1);
    let mut out: Vec<(u64, f64)> = losses.iter().enumerate().step_by(stride).map(|(i, &l)| (first_step + i as u64, l)).collect();
    let last = losses.len() - 1;
    if out.last().map(|p| p.0) != Some(first_step + last as u64) {
        out.push((first_step + last as u64, losses[last]));
    }
    out
}

/// Mean of the last `k` values.
pub(crate) fn tail_mean(v: &[f64], k: usize) -> f64 {
    let tail = &v[v.len().saturating_sub(k)..];
    if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

/// Stable Diffusion's VAE architecture with one input and output channel.
pub fn sd_vae_grey() -> VaeConfig {
    let mut c: VaeConfig = serde_json::from_str("{}").expect("defaults parse");
    c.in_channels = 1;
    c.out_channels = 1;
    c.block_out_channels = vec![128, 256, 512, 512];
    c.down_block_types = vec!["DownEncoderBlock2D".into(); 4];
    c.up_block_types = vec!["UpDecoderBlock2D".into(); 4];
    c.layers_per_block = 2;
    c.sample_size = 512;
    c
}

// ----- the discriminator -------------------------------------------------

/// PatchGAN: stride-2 4×4 convolutions with leaky ReLU, then a 4×4 map of logits.
struct PatchDiscriminator {
    layers: Vec<Conv2d>,
}

impl PatchDiscriminator {
    fn new(vs: &ParamPath, in_channels: usize, cfg: &DiscriminatorConfig) -> Result<Self> {
        let mut layers = Vec::new();
        let mut ch = in_channels;
        for i in 0..cfg.layers {
            let out = cfg.channels << i;
            layers.push(Conv2d::new(&vs.pp("main").pp(i), ch, out, 4, Conv2dParams::new(2, 1), true)?);
            ch = out;
        }
        layers.push(Conv2d::new(&vs.pp("main").pp(cfg.layers), ch, 1, 4, Conv2dParams::new(1, 1), true)?);
        Ok(PatchDiscriminator { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i != last {
                h = h.leaky_relu(0.2)?;
            }
        }
        Ok(h)
    }
}

// ----- the stage -----------------------------------------------------------

fn vae_config_source(cfg: &TrainVaeConfig) -> Result<(VaeConfig, serde_json::Value)> {
    match &cfg.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
            let config = VaeConfig::from_json(&text).map_err(|e| Error::file(path, e.to_string()))?;
            Ok((config, value))
        }
        None => {
            let c = sd_vae_grey();
            let v = serde_json::to_value(&c).map_err(|e| Error::msg(e.to_string()))?;
            Ok((c, v))
        }
    }
}

fn validate(cfg: &TrainVaeConfig, vae: &VaeConfig) -> Result<()> {
    if cfg.batch_size == 0 || cfg.steps == 0 {
        return Err(Error::msg("train-vae: batch_size and steps must be positive"));
    }
    let down = vae.downscale();
    if cfg.image_size == 0 || cfg.image_size % down != 0 {
        return Err(Error::msg(format!(
            "train-vae: image_size {} must be a positive multiple of the VAE's downscale {down}",
            cfg.image_size
        )));
    }
    if !matches!(vae.in_channels, 1 | 3) {
        return Err(Error::msg(format!("train-vae: the VAE's in_channels must be 1 or 3, got {}", vae.in_channels)));
    }
    Ok(())
}

/// Train the VAE and write its folder.
pub fn run(cfg: &TrainVaeConfig) -> Result<TrainVaeSummary> {
    let started = Instant::now();
    let (vae_config, config_source) = vae_config_source(cfg)?;
    validate(cfg, &vae_config)?;
    let manifest = load_manifest(&cfg.data)?;
    let indices = select_records(&manifest, &cfg.splits)?;
    let pixels = PixelCache::load(&manifest, &indices, cfg.image_size, vae_config.in_channels)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;

    let store = ParamStore::new(DType::F32, Device::Cpu, cfg.seed);
    let vae = AutoencoderKL::new(&store.root(), &vae_config)?;
    let mut opt = AdamW::new(store.trainable_parameters(), cfg.optimizer)?;
    let disc_store = ParamStore::new(DType::F32, Device::Cpu, cfg.seed ^ 0xD15C);
    let disc = if cfg.discriminator.enabled {
        Some(PatchDiscriminator::new(&disc_store.root(), vae_config.out_channels, &cfg.discriminator)?)
    } else {
        None
    };
    let mut disc_opt = AdamW::new(
        disc_store.trainable_parameters(),
        AdamWConfig { lr: cfg.discriminator.lr, beta1: 0.5, beta2: 0.9, eps: 1e-8, weight_decay: 0.0 },
    )?;

    let fingerprint = resume_fingerprint(cfg)?;
    let ckpt_path = cfg.out.join(CHECKPOINT_FILE);
    let mut start = 0u64;
    let mut losses: Vec<f64> = Vec::new();
    let mut kls: Vec<f64> = Vec::new();
    if cfg.resume && ckpt_path.is_file() {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_fingerprint(&ckpt_path, &ckpt.meta.config, &fingerprint)?;
        store.load_from(|name, _| ckpt.get(&format!("param.{name}")).cloned())?;
        opt.load_state_tensors(&|n| Ok(ckpt.tensors.get(&format!("optim.{n}")).cloned()))?;
        disc_store.load_from(|name, _| ckpt.get(&format!("disc.{name}")).cloned())?;
        disc_opt.load_state_tensors(&|n| Ok(ckpt.tensors.get(&format!("disc_optim.{n}")).cloned()))?;
        start = ckpt.meta.step;
        losses = serde_json::from_value(ckpt.meta.extra.get("losses").cloned().unwrap_or_default()).unwrap_or_default();
        kls = serde_json::from_value(ckpt.meta.extra.get("kls").cloned().unwrap_or_default()).unwrap_or_default();
    }
    let save_checkpoint = |step: u64, losses: &[f64], kls: &[f64], opt: &AdamW, disc_opt: &AdamW| -> Result<()> {
        let mut meta = CheckpointMeta { step, config: fingerprint.clone(), ..Default::default() };
        meta.extra.insert("losses".into(), serde_json::json!(losses));
        meta.extra.insert("kls".into(), serde_json::json!(kls));
        let mut ckpt = Checkpoint::new(meta);
        ckpt.insert_group("param.", store.state_dict());
        ckpt.insert_group("optim.", opt.state_tensors()?);
        ckpt.insert_group("disc.", disc_store.state_dict());
        ckpt.insert_group("disc_optim.", disc_opt.state_tensors()?);
        ckpt.save(&ckpt_path)
    };

    let bar = progress::bar(cfg.steps, "train-vae");
    bar.set_position(start);
    let pixel_count = (vae_config.in_channels * cfg.image_size * cfg.image_size) as f64;
    let params: Vec<Tensor> = store.trainable_parameters().into_iter().map(|(_, t)| t).collect();
    let stop_at = cfg.stop_after.map_or(cfg.steps, |k| (start + k).min(cfg.steps));
    let run_start = start;
    for step in start..stop_at {
        let mut rng = Rng::new(cfg.seed).fork(step);
        let positions = batch_positions(pixels.len(), cfg.batch_size, step, cfg.seed);
        let x = pixels.batch(&positions)?;
        let dist = vae.encode(&x)?;
        let z = dist.sample(&mut rng)?;
        let y = vae.decode(&z)?;
        let rec = y.sub(&x)?.abs()?.mean_all()?;
        let kl = dist.kl()?;
        let mut loss = rec.add(&kl.mul_scalar(cfg.kl_weight / pixel_count)?)?;
        let adversarial = disc.as_ref().filter(|_| step >= cfg.discriminator.start_step);
        if let Some(d) = adversarial {
            loss = loss.add(&d.forward(&y)?.mean_all()?.mul_scalar(-cfg.discriminator.weight)?)?;
        }
        let value = loss.to_scalar_f64()?;
        if !value.is_finite() {
            return Err(Error::msg(format!(
                "train-vae: the loss became {value} at step {step} — stopping; the last good checkpoint is kept in {} (lower the learning rate)",
                ckpt_path.display()
            )));
        }
        let mut grads = loss.backward()?;
        if let Some(max) = cfg.max_grad_norm {
            clip_grad_norm(&mut grads, &params, max)?;
        }
        opt.set_learning_rate(cfg.optimizer.lr);
        opt.step(&grads)?;
        if let Some(d) = adversarial {
            // Hinge loss on real images and (detached) reconstructions.
            let real = d.forward(&x)?.neg()?.add_scalar(1.0)?.relu()?.mean_all()?;
            let fake = d.forward(&y.detach())?.add_scalar(1.0)?.relu()?.mean_all()?;
            let d_loss = real.add(&fake)?.mul_scalar(0.5)?;
            disc_opt.step(&d_loss.backward()?)?;
        }
        losses.push(rec.to_scalar_f64()?);
        kls.push(kl.to_scalar_f64()?);
        bar.set_position(step + 1);
        bar.set_message(format!("L1 {:.4}", tail_mean(&losses, 10)));
        let done = step + 1;
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done < cfg.steps {
            save_checkpoint(done, &losses, &kls, &opt, &disc_opt)?;
        }
    }
    bar.finish_and_clear();
    let trained_now = stop_at - run_start;
    let wall = started.elapsed().as_secs_f64();
    let images_per_second = (trained_now * cfg.batch_size as u64) as f64 / wall.max(1e-9);
    if stop_at < cfg.steps {
        save_checkpoint(stop_at, &losses, &kls, &opt, &disc_opt)?;
        return Ok(TrainVaeSummary {
            out: cfg.out.clone(),
            steps: stop_at,
            resumed_from: run_start,
            final_reconstruction_l1: tail_mean(&losses, 20),
            final_kl: tail_mean(&kls, 20),
            scaling_factor: f64::NAN,
            loss_curve: sample_curve(&losses, 0, 100),
            images_per_second,
            wall_seconds: wall,
            interrupted: true,
        });
    }

    let scaling_factor = estimate_scaling_factor(&vae, &pixels, cfg.scale_images, cfg.batch_size.max(16), cfg.seed)?;
    let mut written = vae_config.clone();
    written.scaling_factor = scaling_factor;
    written.sample_size = cfg.image_size;
    let json = config_json(&written, Part::Vae, Some(&config_source))?;
    crate::io::save_safetensors(cfg.out.join("diffusion_pytorch_model.safetensors"), store.state_dict(), None)?;
    let summary = TrainVaeSummary {
        out: cfg.out.clone(),
        steps: cfg.steps,
        resumed_from: run_start,
        final_reconstruction_l1: tail_mean(&losses, 20),
        final_kl: tail_mean(&kls, 20),
        scaling_factor,
        loss_curve: sample_curve(&losses, 0, 100),
        images_per_second,
        wall_seconds: started.elapsed().as_secs_f64(),
        interrupted: false,
    };
    // config.json last: a VAE folder with a config is complete.
    write_atomic_json(cfg.out.join("config.json"), &json)?;
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path).map_err(|e| Error::io(&ckpt_path, e))?;
    }
    Ok(summary)
}

/// 1 / std of sampled latents over up to `max_images` training images.
fn estimate_scaling_factor(vae: &AutoencoderKL, pixels: &PixelCache, max_images: usize, batch: usize, seed: u64) -> Result<f64> {
    let n = pixels.len().min(max_images.max(1));
    let mut rng = Rng::new(seed).fork(u64::MAX);
    let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0f64);
    no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch) {
            let positions: Vec<usize> = (start..(start + batch).min(n)).collect();
            let z = vae.encode(&pixels.batch(&positions)?)?.sample(&mut rng)?;
            for v in z.to_vec_f64()? {
                sum += v;
                sum_sq += v * v;
                count += 1.0;
            }
        }
        Ok(())
    })?;
    let mean = sum / count;
    let std = (sum_sq / count - mean * mean).max(0.0).sqrt();
    if !(std.is_finite() && std > 1e-8) {
        return Err(Error::msg(format!("train-vae: the latents have std {std}; cannot set a scaling factor (did training diverge?)")));
    }
    Ok(1.0 / std)
}

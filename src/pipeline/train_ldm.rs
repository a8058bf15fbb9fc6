//! `privdistill train-ldm`: train the UNet of a text-to-image latent
//! diffusion model on a dataset's image/report pairs and write a diffusers
//! model folder.
//!
//! The VAE is always frozen; the CLIP text encoder is frozen unless
//! `train_text_encoder` (as RoentGen trains it). Frozen encoders run once:
//! every training image's latent distribution (mean, log-variance) and every
//! prompt's text states are computed before the first step and kept in
//! memory; each step samples its latents from the cached distribution with
//! that step's random stream.
//!
//! Every random draw of step k comes from `Rng::new(seed).fork(k)` and the
//! batch of step k from a per-epoch permutation of `seed`, so `resume`
//! (from `checkpoint.safetensors` in the output folder, written atomically
//! every `checkpoint_every` steps) continues bit for bit as if uninterrupted.
//! A non-finite loss stops the run with an error and leaves the last good
//! checkpoint in place.

use crate::data::Manifest;
use crate::diffusion::objective::{diffusion_loss, ObjectiveConfig};
use crate::diffusion::sampler::SamplerKind;
use crate::diffusion::schedule::{NoiseSchedule, SchedulerConfig};
use crate::io::{Checkpoint, CheckpointMeta};
use crate::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::nn::{clip_grad_norm, AdamW, AdamWConfig, Ema, EmaConfig, LrSchedule, Optimizer, ParamStore};
use crate::pipeline::model_folder::{
    config_json, load_text_encoder, load_tokenizer, load_vae, part_dir, read_scheduler_config, sampler_of_class, scheduler_json,
    FolderContents, ModelFolder, Part, PartWeights,
};
use crate::pipeline::progress;
use crate::pipeline::train_vae::{
    batch_positions, check_fingerprint, load_manifest, resume_fingerprint, sample_curve, select_records, tail_mean, PixelCache,
    CHECKPOINT_FILE,
};
use crate::{no_grad, DType, Device, Error, Gradients, Result, Rng, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of `train-ldm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainLdmConfig {
    /// Dataset folder (or manifest) of image/report pairs.
    pub data: PathBuf,
    /// Splits to train on (empty = every record).
    pub splits: Vec<String>,
    /// Output model folder.
    pub out: PathBuf,
    /// The (frozen) VAE: a VAE folder or a model folder.
    pub vae: PathBuf,
    /// A diffusers model folder to fine-tune: its UNet, and by default its
    /// text encoder, tokenizer and scheduler.
    pub init: Option<PathBuf>,
    /// A UNet config.json to train from scratch when `init` is not set
    /// (`None`: Stable Diffusion 1.5's UNet).
    pub unet_config: Option<PathBuf>,
    /// Text encoder weights: a text encoder folder or a model folder
    /// (default: `init`'s).
    pub text_encoder: Option<PathBuf>,
    /// Without text encoder weights: a CLIP text config.json for a fresh,
    /// seeded random encoder (the offline demo, where no pretrained CLIP exists).
    pub text_encoder_config: Option<PathBuf>,
    /// Train the text encoder too (RoentGen); frozen by default.
    pub train_text_encoder: bool,
    /// A `tokenizer.json` or tokenizer folder (default: `init`'s, else the shipped CLIP tokenizer).
    pub tokenizer: Option<PathBuf>,
    /// A `scheduler_config.json` or a folder holding one (default: `init`'s,
    /// else Stable Diffusion's PNDM schedule).
    pub scheduler: Option<PathBuf>,
    /// Square image side; the latent side is this over the VAE's downscale.
    pub image_size: usize,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// AdamW settings (`lr` is the base rate of the schedule).
    pub optimizer: AdamWConfig,
    /// Learning-rate schedule over optimizer steps.
    pub lr_schedule: LrSchedule,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: Option<f64>,
    /// Keep an exponential moving average of the weights and save it.
    pub ema: Option<EmaConfig>,
    /// Probability of replacing a prompt by the empty prompt (classifier-free guidance).
    pub cfg_dropout: f64,
    /// min-SNR-γ loss weighting.
    pub min_snr_gamma: Option<f64>,
    /// Seed of initialisation, batch order and noise.
    pub seed: u64,
    /// Steps between checkpoints (0 = only when stopping early).
    pub checkpoint_every: u64,
    /// Continue from `out/checkpoint.safetensors` if there is one.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps in this run, as an interruption would.
    pub stop_after: Option<u64>,
}

impl Default for TrainLdmConfig {
    /// Stable Diffusion 1.5-sized training at 512×512 (paper-like settings).
    fn default() -> Self {
        TrainLdmConfig {
            data: "work/real".into(),
            splits: vec!["train".into()],
            out: "work/ldm-real".into(),
            vae: "work/vae".into(),
            init: None,
            unet_config: None,
            text_encoder: None,
            text_encoder_config: None,
            train_text_encoder: false,
            tokenizer: None,
            scheduler: None,
            image_size: 512,
            batch_size: 8,
            gradient_accumulation: 4,
            steps: 100_000,
            optimizer: AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 },
            lr_schedule: LrSchedule::ConstantWithWarmup { warmup_steps: 500 },
            max_grad_norm: Some(1.0),
            ema: Some(EmaConfig { decay: 0.9999, ..Default::default() }),
            cfg_dropout: 0.1,
            min_snr_gamma: None,
            seed: 0,
            checkpoint_every: 1000,
            resume: true,
            stop_after: None,
        }
    }
}

impl TrainLdmConfig {
    /// The demo preset: the demo UNet from scratch on 64×64 images with the
    /// demo VAE and a seeded random demo CLIP text encoder (frozen), sized for
    /// about two minutes on two cores.
    pub fn demo(data: impl Into<PathBuf>, vae: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/demo");
        TrainLdmConfig {
            data: data.into(),
            vae: vae.into(),
            out: out.into(),
            unet_config: Some(demo.join("unet/config.json")),
            text_encoder_config: Some(demo.join("text_encoder/config.json")),
            image_size: 64,
            batch_size: 16,
            gradient_accumulation: 1,
            steps: 110,
            optimizer: AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            lr_schedule: LrSchedule::ConstantWithWarmup { warmup_steps: 10 },
            ema: None,
            checkpoint_every: 50,
            ..Default::default()
        }
    }
}

/// What `train-ldm` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainLdmSummary {
    /// The model folder written (complete unless `interrupted`).
    pub out: PathBuf,
    /// Optimizer steps trained in total.
    pub steps: u64,
    /// The step this run started from (0 unless resumed).
    pub resumed_from: u64,
    /// Mean loss over the last steps.
    pub final_loss: f64,
    /// (step, loss) pairs, at most 100.
    pub loss_curve: Vec<(u64, f64)>,
    /// Training images (records) used.
    pub train_images: usize,
    /// Prompts longer than the text encoder's limit (truncated).
    pub truncated_prompts: usize,
    /// Training images per second in this run (encoding included in the wall time, not in this rate).
    pub images_per_second: f64,
    /// Wall time of this run.
    pub wall_seconds: f64,
    /// Whether the run stopped at `stop_after` before the last step (no model folder yet).
    pub interrupted: bool,
}

/// Read a stage config: `file` (TOML, or JSON by extension) over the
/// defaults of `base`'s type, else `base` itself; then `key=value` overrides.
/// A key the config does not know — at any depth, including inside nested
/// settings such as `optimizer` — is an error naming it.
pub fn configure<T: Serialize + DeserializeOwned>(file: Option<&Path>, base: T, overrides: &[String]) -> Result<T> {
    let (text, path) = match file {
        Some(p) if p.extension().is_some_and(|e| e == "json") => {
            let v: Value = crate::pipeline::config::load_config(p)?;
            (toml::to_string(&v).map_err(|e| Error::file(p, e.to_string()))?, p.to_path_buf())
        }
        Some(p) => (std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?, p.to_path_buf()),
        None => (toml::to_string(&base).map_err(|e| Error::msg(format!("config: {e}")))?, PathBuf::from("(defaults)")),
    };
    let text = crate::pipeline::config::apply_overrides(&text, overrides, &path)?;
    let parsed: T = crate::pipeline::config::parse_config(&text, &path.with_extension("toml"))?;
    let given: toml::Table = toml::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
    let understood = toml::Table::try_from(&parsed).map_err(|e| Error::msg(format!("config: {e}")))?;
    if let Some(key) = unknown_key(&given, &understood, "") {
        return Err(Error::file(&path, format!("unknown option `{key}` — check its spelling against the documented settings")));
    }
    Ok(parsed)
}

/// The first key of `given` that `understood` (the parsed config written back) lacks, as a dotted path.
fn unknown_key(given: &toml::Table, understood: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in given {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match (v, understood.get(k)) {
            (_, None) => return Some(path),
            (toml::Value::Table(g), Some(toml::Value::Table(u))) => {
                if let Some(p) = unknown_key(g, u, &path) {
                    return Some(p);
                }
            }
            _ => {}
        }
    }
    None
}

/// Token ids of every text, and how many were cut to the context length.
pub(crate) fn tokenize(tokenizer: &ClipTokenizer, texts: &[&str]) -> Result<(Vec<Vec<i64>>, usize)> {
    let limit = tokenizer.context_length() - 2;
    let mut truncated = 0;
    let ids = texts
        .iter()
        .map(|t| {
            if tokenizer.count_tokens(t)? > limit {
                truncated += 1;
            }
            tokenizer.encode(t)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((ids, truncated))
}

/// One warning for all truncated prompts.
pub(crate) fn warn_truncated(truncated: usize, total: usize, limit: usize) {
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} of {total} prompts are longer than the text encoder's {} tokens ({limit} + start and end) and were truncated",
            limit + 2
        );
    }
}

/// Text states [N, L, D] of token-id rows, in batches.
pub(crate) fn encode_texts(encoder: &ClipTextModel, ids: &[Vec<i64>], batch: usize) -> Result<Tensor> {
    let len = ids.first().map_or(0, Vec::len);
    let mut parts = Vec::new();
    for chunk in ids.chunks(batch.max(1)) {
        let flat: Vec<i64> = chunk.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, &[chunk.len(), len])?;
        parts.push(encoder.forward(&t)?.last_hidden_state);
    }
    Tensor::cat(&parts, 0)
}

/// Scaled latents from VAE samples: (z − shift) · scaling_factor.
pub(crate) fn scale_latents(z: &Tensor, vae: &VaeConfig) -> Result<Tensor> {
    let z = match vae.shift_factor {
        Some(s) => z.add_scalar(-s)?,
        None => z.clone(),
    };
    z.mul_scalar(vae.scaling_factor)
}

fn read_json_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

fn parse_json<T: DeserializeOwned>(path: &Path, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| Error::file(path, e.to_string()))
}

/// The distinct prompts of `records` (the empty prompt first) and each record's index into them.
pub(crate) fn prompt_table<'a>(manifest: &'a Manifest, records: &[usize]) -> (Vec<&'a str>, Vec<usize>) {
    let mut prompt_of_text: HashMap<&str, usize> = HashMap::new();
    let mut prompts: Vec<&str> = vec![""];
    prompt_of_text.insert("", 0);
    let prompt_ids: Vec<usize> = records
        .iter()
        .map(|&i| {
            let t = manifest.records[i].text.as_deref().unwrap_or("");
            *prompt_of_text.entry(t).or_insert_with(|| {
                prompts.push(t);
                prompts.len() - 1
            })
        })
        .collect();
    (prompts, prompt_ids)
}

/// The frozen VAE's latent distributions (means, log-variances) of every
/// record in `records`, decoded at `image_size` and encoded once, in order.
pub(crate) fn encode_latent_distributions(
    vae: &AutoencoderKL,
    manifest: &Manifest,
    records: &[usize],
    image_size: usize,
) -> Result<(Tensor, Tensor)> {
    let pixels = PixelCache::load(manifest, records, image_size, vae.config().in_channels)?;
    let encode_bar = progress::bar(records.len() as u64, "encode");
    let encoded = no_grad(|| -> Result<(Tensor, Tensor)> {
        let (mut m, mut l) = (Vec::new(), Vec::new());
        for start in (0..pixels.len()).step_by(16) {
            let positions: Vec<usize> = (start..(start + 16).min(pixels.len())).collect();
            let d = vae.encode(&pixels.batch(&positions)?)?;
            m.push(d.mean);
            l.push(d.logvar);
            encode_bar.inc(positions.len() as u64);
        }
        Ok((Tensor::cat(&m, 0)?, Tensor::cat(&l, 0)?))
    })?;
    encode_bar.finish_and_clear();
    Ok(encoded)
}

/// Scaled latents of the records at `positions`, each sampled from its
/// cached distribution with `rng` (one normal draw per latent element).
pub(crate) fn draw_latents(means: &Tensor, logvars: &Tensor, positions: &[usize], vae: &VaeConfig, rng: &mut Rng) -> Result<Tensor> {
    let index = Tensor::from_vec(positions.iter().map(|&p| p as i64).collect::<Vec<i64>>(), &[positions.len()])?;
    let mean = means.index_select(0, &index)?;
    let logvar = logvars.index_select(0, &index)?;
    let eps = Tensor::randn(mean.shape(), 0.0, 1.0, mean.dtype(), mean.device(), rng)?;
    let z = mean.add(&logvar.affine(0.5, 0.0)?.exp()?.mul(&eps)?)?;
    scale_latents(&z, vae)
}

/// Write `parts` (their current weights) as a diffusers model folder at `out`
/// whose VAE config records the trained `image_size`.
pub(crate) fn write_model_folder(parts: &Parts, out: &Path, image_size: usize) -> Result<()> {
    let mut vae_written = parts.vae.config().clone();
    vae_written.sample_size = image_size;
    let contents = FolderContents {
        unet: PartWeights {
            config: config_json(parts.unet.config(), Part::Unet, Some(&parts.unet_json))?,
            tensors: parts.unet_store.state_dict(),
        },
        vae: PartWeights { config: config_json(&vae_written, Part::Vae, Some(&parts.vae_json))?, tensors: parts.vae_store.state_dict() },
        text_encoder: PartWeights {
            config: config_json(parts.text.config(), Part::TextEncoder, Some(&parts.text_json))?,
            tensors: parts.text_store.state_dict(),
        },
        tokenizer: parts.tokenizer_source.clone(),
        scheduler: scheduler_json(&parts.scheduler, parts.sampler)?,
    };
    ModelFolder::write(out, &contents)?;
    Ok(())
}

/// The parts a run trains with, resolved from the config.
pub(crate) struct Parts {
    pub(crate) vae: AutoencoderKL,
    pub(crate) vae_store: ParamStore,
    pub(crate) vae_json: Value,
    pub(crate) unet: UNet2DConditionModel,
    pub(crate) unet_store: ParamStore,
    pub(crate) unet_json: Value,
    pub(crate) text: ClipTextModel,
    pub(crate) text_store: ParamStore,
    pub(crate) text_json: Value,
    pub(crate) tokenizer: ClipTokenizer,
    pub(crate) tokenizer_source: PathBuf,
    pub(crate) scheduler: SchedulerConfig,
    pub(crate) sampler: SamplerKind,
}

/// Load or build the VAE, UNet, text encoder, tokenizer and scheduler a run uses, and check they fit together.
pub(crate) fn resolve_parts(cfg: &TrainLdmConfig) -> Result<Parts> {
    let init = cfg.init.as_ref().map(ModelFolder::open).transpose()?;
    if let Some(f) = &init {
        for w in &f.warnings {
            eprintln!("warning: {w}");
        }
    }
    // VAE (always frozen).
    let vae_dir = part_dir(&cfg.vae, Part::Vae)?;
    let vae_cfg_path = vae_dir.join("config.json");
    let vae_json = read_json_value(&vae_cfg_path)?;
    let vae_config: VaeConfig = parse_json(&vae_cfg_path, &vae_json)?;
    vae_config.validate().map_err(|e| Error::file(&vae_cfg_path, e.to_string()))?;
    let vae_store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let vae = load_vae(&vae_dir, &vae_config, &vae_store, false)?;

    // UNet: fine-tuned from `init`, or fresh from a config.
    let unet_store = ParamStore::new(DType::F32, Device::Cpu, cfg.seed);
    let (unet, unet_json) = match (&init, &cfg.unet_config) {
        (Some(f), _) => {
            if cfg.unet_config.is_some() {
                eprintln!("warning: unet_config is ignored: the UNet comes from init {}", f.dir.display());
            }
            let json = read_json_value(&f.part(Part::Unet).join("config.json"))?;
            (f.load_unet(&unet_store, true)?, json)
        }
        (None, Some(path)) => {
            let json = read_json_value(path)?;
            let config: UNetConfig = parse_json(path, &json)?;
            config.validate().map_err(|e| Error::file(path, e.to_string()))?;
            (UNet2DConditionModel::new(&unet_store.root(), &config)?, json)
        }
        (None, None) => {
            let config = UNetConfig::sd15();
            let json = serde_json::to_value(&config).map_err(|e| Error::msg(e.to_string()))?;
            (UNet2DConditionModel::new(&unet_store.root(), &config)?, json)
        }
    };

    // Text encoder: given weights, init's, or a seeded fresh one.
    let text_store = ParamStore::new(DType::F32, Device::Cpu, cfg.seed ^ 0x7E47);
    let trainable = cfg.train_text_encoder;
    let te_source = cfg.text_encoder.clone().or_else(|| init.as_ref().map(|f| f.dir.clone()));
    let (text, text_json) = match (&te_source, &cfg.text_encoder_config) {
        (Some(dir), _) => {
            let dir = part_dir(dir, Part::TextEncoder)?;
            let path = dir.join("config.json");
            let json = read_json_value(&path)?;
            let config: ClipTextConfig = parse_json(&path, &json)?;
            (load_text_encoder(&dir, &config, &text_store, trainable)?, json)
        }
        (None, Some(path)) => {
            let json = read_json_value(path)?;
            let config: ClipTextConfig = parse_json(path, &json)?;
            let root = if trainable { text_store.root() } else { text_store.root().frozen() };
            (ClipTextModel::new(&root, &config)?, json)
        }
        (None, None) => {
            return Err(Error::msg(
                "train-ldm: no text encoder — set `init` (a diffusers folder), `text_encoder` (weights) or \
                 `text_encoder_config` (a fresh seeded encoder, as the offline demo does)",
            ))
        }
    };

    // Tokenizer and scheduler.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip-tokenizer/tokenizer.json");
    let tok_source = cfg.tokenizer.clone().or_else(|| init.as_ref().map(|f| f.part(Part::Tokenizer)));
    let (tokenizer, tokenizer_source) = match tok_source {
        Some(path) => {
            let (tok, note) = load_tokenizer(&path)?;
            if let Some(n) = &note {
                eprintln!("note: {n}");
            }
            let source = if note.is_some() { shipped } else { tok.path().to_path_buf() };
            (tok, source)
        }
        None => (ClipTokenizer::from_file(&shipped)?, shipped),
    };
    let sched_source = cfg.scheduler.clone().or_else(|| init.as_ref().map(|f| f.dir.clone()));
    let (scheduler, sampler) = match sched_source {
        Some(path) => {
            let file = if path.is_dir() { part_dir(&path, Part::Scheduler)?.join(Part::Scheduler.config_file()) } else { path };
            let (config, warnings) = read_scheduler_config(&file)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let class = read_json_value(&file)?.get("_class_name").and_then(Value::as_str).map(String::from);
            (config, sampler_of_class(class.as_deref()))
        }
        None => (SchedulerConfig::stable_diffusion(), SamplerKind::Pndm),
    };

    // The parts must fit together.
    let uc = unet.config();
    if uc.cross_attention_dim != text.config().hidden_size {
        return Err(Error::msg(format!(
            "train-ldm: the UNet's cross_attention_dim {} does not match the text encoder's hidden_size {}",
            uc.cross_attention_dim,
            text.config().hidden_size
        )));
    }
    if uc.in_channels != vae_config.latent_channels || uc.out_channels != vae_config.latent_channels {
        return Err(Error::msg(format!(
            "train-ldm: the UNet's in/out channels {}/{} do not match the VAE's latent_channels {}",
            uc.in_channels, uc.out_channels, vae_config.latent_channels
        )));
    }
    if tokenizer.context_length() > text.config().max_position_embeddings {
        return Err(Error::msg(format!(
            "train-ldm: the tokenizer's context length {} exceeds the text encoder's max_position_embeddings {}",
            tokenizer.context_length(),
            text.config().max_position_embeddings
        )));
    }
    Ok(Parts {
        vae,
        vae_store,
        vae_json,
        unet,
        unet_store,
        unet_json,
        text,
        text_store,
        text_json,
        tokenizer,
        tokenizer_source,
        scheduler,
        sampler,
    })
}

fn validate(cfg: &TrainLdmConfig) -> Result<()> {
    if cfg.batch_size == 0 || cfg.steps == 0 || cfg.gradient_accumulation == 0 {
        return Err(Error::msg("train-ldm: batch_size, gradient_accumulation and steps must be positive"));
    }
    if !(0.0..=1.0).contains(&cfg.cfg_dropout) {
        return Err(Error::msg(format!("train-ldm: cfg_dropout must lie in [0, 1], got {}", cfg.cfg_dropout)));
    }
    Ok(())
}

/// The optimizer's names: UNet parameters under `unet.`, text encoder ones under `text_encoder.`.
fn trained_parameters(parts: &Parts, train_text: bool) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> =
        parts.unet_store.trainable_parameters().into_iter().map(|(n, t)| (format!("unet.{n}"), t)).collect();
    if train_text {
        params.extend(parts.text_store.trainable_parameters().into_iter().map(|(n, t)| (format!("text_encoder.{n}"), t)));
    }
    params
}

/// Train and write the model folder.
pub fn run(cfg: &TrainLdmConfig) -> Result<TrainLdmSummary> {
    let started = Instant::now();
    validate(cfg)?;
    let parts = resolve_parts(cfg)?;
    let vae_config = parts.vae.config().clone();
    let down = vae_config.downscale();
    if cfg.image_size == 0 || cfg.image_size % down != 0 {
        return Err(Error::msg(format!(
            "train-ldm: image_size {} must be a positive multiple of the VAE's downscale {down}",
            cfg.image_size
        )));
    }
    let manifest = load_manifest(&cfg.data)?;
    let records = select_records(&manifest, &cfg.splits)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;

    // Prompts: one entry per distinct text, plus the empty prompt.
    let (prompts, prompt_ids) = prompt_table(&manifest, &records);
    let (token_ids, truncated) = tokenize(&parts.tokenizer, &prompts)?;
    warn_truncated(truncated, prompts.len() - 1, parts.tokenizer.context_length() - 2);

    // Frozen encoders run once.
    let (means, logvars) = encode_latent_distributions(&parts.vae, &manifest, &records, cfg.image_size)?;
    let cached_text = if cfg.train_text_encoder { None } else { Some(no_grad(|| encode_texts(&parts.text, &token_ids, 32))?) };

    let schedule = NoiseSchedule::new(&parts.scheduler)?;
    let objective = ObjectiveConfig { min_snr_gamma: cfg.min_snr_gamma };
    let trained = trained_parameters(&parts, cfg.train_text_encoder);
    let param_tensors: Vec<Tensor> = trained.iter().map(|(_, t)| t.clone()).collect();
    let mut opt = AdamW::new(trained.clone(), cfg.optimizer)?;
    let mut ema = cfg.ema.map(|c| Ema::new(&trained, c)).transpose()?;

    let fingerprint = resume_fingerprint(cfg)?;
    let ckpt_path = cfg.out.join(CHECKPOINT_FILE);
    let mut start = 0u64;
    let mut losses: Vec<f64> = Vec::new();
    if cfg.resume && ckpt_path.is_file() {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_fingerprint(&ckpt_path, &ckpt.meta.config, &fingerprint)?;
        let by_name: HashMap<&str, &Tensor> = trained.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, target) in &by_name {
            let saved = ckpt.get(&format!("param.{name}"))?;
            crate::no_grad(|| target.assign(saved))?;
        }
        opt.load_state_tensors(&|n| Ok(ckpt.tensors.get(&format!("optim.{n}")).cloned()))?;
        if let Some(e) = ema.as_mut() {
            let step = ckpt.meta.extra.get("ema_step").and_then(Value::as_u64).unwrap_or(0);
            e.load(step, &|n| Ok(ckpt.tensors.get(&format!("ema.{n}")).cloned()))?;
        }
        start = ckpt.meta.step;
        losses = serde_json::from_value(ckpt.meta.extra.get("losses").cloned().unwrap_or_default()).unwrap_or_default();
    }
    let save_checkpoint = |step: u64, losses: &[f64], opt: &AdamW, ema: &Option<Ema>| -> Result<()> {
        let mut meta = CheckpointMeta { step, config: fingerprint.clone(), ..Default::default() };
        meta.extra.insert("losses".into(), serde_json::json!(losses));
        let mut ckpt = Checkpoint::new(meta);
        ckpt.insert_group("param.", trained.iter().map(|(n, t)| (n.as_str(), t)));
        ckpt.insert_group("optim.", opt.state_tensors()?);
        if let Some(e) = ema {
            ckpt.meta.extra.insert("ema_step".into(), serde_json::json!(e.optimization_step()));
            ckpt.insert_group("ema.", e.averages());
        }
        ckpt.save(&ckpt_path)
    };

    let n = records.len();
    let images_per_step = (cfg.batch_size * cfg.gradient_accumulation) as u64;
    let bar = progress::bar(cfg.steps, "train-ldm");
    bar.set_position(start);
    let stop_at = cfg.stop_after.map_or(cfg.steps, |k| (start + k).min(cfg.steps));
    let run_start = start;
    let train_started = Instant::now();
    for step in start..stop_at {
        let mut rng = Rng::new(cfg.seed).fork(step);
        let mut grads = Gradients::default();
        let mut step_loss = 0.0;
        for micro in 0..cfg.gradient_accumulation {
            let micro_index = step * cfg.gradient_accumulation as u64 + micro as u64;
            let positions = batch_positions(n, cfg.batch_size, micro_index, cfg.seed);
            let latents = draw_latents(&means, &logvars, &positions, &vae_config, &mut rng)?;
            let chosen: Vec<i64> =
                positions.iter().map(|&p| if rng.uniform() < cfg.cfg_dropout { 0 } else { prompt_ids[p] as i64 }).collect();
            let context = match &cached_text {
                Some(states) => states.index_select(0, &Tensor::from_vec(chosen.clone(), &[chosen.len()])?)?,
                None => {
                    let rows: Vec<Vec<i64>> = chosen.iter().map(|&c| token_ids[c as usize].clone()).collect();
                    encode_texts(&parts.text, &rows, rows.len())?
                }
            };
            let loss = diffusion_loss(&parts.unet, &schedule, &latents, &context, &mut rng, objective)?;
            let value = loss.to_scalar_f64()?;
            if !value.is_finite() {
                let kept = if ckpt_path.is_file() {
                    format!("the last good checkpoint is kept in {}", ckpt_path.display())
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                return Err(Error::msg(format!(
                    "train-ldm: the loss became {value} at step {step} — stopping; {kept} (lower the learning rate or enable max_grad_norm)"
                )));
            }
            step_loss += value / cfg.gradient_accumulation as f64;
            grads.accumulate(loss.backward()?)?;
        }
        if cfg.gradient_accumulation > 1 {
            grads.scale(1.0 / cfg.gradient_accumulation as f64)?;
        }
        if let Some(max) = cfg.max_grad_norm {
            clip_grad_norm(&mut grads, &param_tensors, max)?;
        }
        opt.set_learning_rate(cfg.lr_schedule.lr(cfg.optimizer.lr, step));
        opt.step(&grads)?;
        if let Some(e) = ema.as_mut() {
            e.update()?;
        }
        losses.push(step_loss);
        let done = step + 1;
        bar.set_position(done);
        let rate = ((done - run_start) * images_per_step) as f64 / train_started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("loss {:.4}, {rate:.1} img/s", tail_mean(&losses, 10)));
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done < cfg.steps {
            save_checkpoint(done, &losses, &opt, &ema)?;
        }
    }
    bar.finish_and_clear();
    let images_per_second = ((stop_at - run_start) * images_per_step) as f64 / train_started.elapsed().as_secs_f64().max(1e-9);
    let mut summary = TrainLdmSummary {
        out: cfg.out.clone(),
        steps: stop_at,
        resumed_from: run_start,
        final_loss: tail_mean(&losses, 20),
        loss_curve: sample_curve(&losses, 0, 100),
        train_images: n,
        truncated_prompts: truncated,
        images_per_second,
        wall_seconds: 0.0,
        interrupted: stop_at < cfg.steps,
    };
    if summary.interrupted {
        save_checkpoint(stop_at, &losses, &opt, &ema)?;
        summary.wall_seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    // The averaged weights are the model (the live ones are not needed any more).
    if let Some(e) = &ema {
        e.copy_to_params()?;
    }
    write_model_folder(&parts, &cfg.out, cfg.image_size)?;
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path).map_err(|e| Error::io(&ckpt_path, e))?;
    }
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

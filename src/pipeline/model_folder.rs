//! The model folder: a diffusers `StableDiffusionPipeline` folder
//! (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! `scheduler/`), read and written by reference parameter names, so a real
//! Stable Diffusion 1.5 folder works wherever one of ours does and ours loads
//! in diffusers.
//!
//! [`ModelFolder::open`] checks every part and reads its config (one clear
//! error per missing or unreadable part); the `load_*` methods build a model
//! into a [`ParamStore`] from memory-mapped safetensors, failing with the
//! parameter's name when the config does not match the weights.
//! [`ModelFolder::write`] writes each file atomically and `model_index.json`
//! last, so a folder that has `model_index.json` is complete.

use crate::diffusion::sampler::SamplerKind;
use crate::diffusion::schedule::{NoiseSchedule, SchedulerConfig};
use crate::io::hash::sha256_dir;
use crate::io::safetensors::{save_safetensors, SafeTensorsFile};
use crate::io::{write_atomic_bytes, write_atomic_json};
use crate::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::nn::{ParamPath, ParamStore};
use crate::{Error, Result, Tensor};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The file whose presence marks a complete model folder.
pub const MODEL_INDEX: &str = "model_index.json";
/// The diffusers version our configs claim to be written by (the oldest one
/// whose `AutoencoderKL` knows every key we write).
pub const DIFFUSERS_VERSION: &str = "0.27.0";

/// One part of a model folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `unet/`: the denoiser.
    Unet,
    /// `vae/`: the autoencoder.
    Vae,
    /// `text_encoder/`: the CLIP text transformer.
    TextEncoder,
    /// `tokenizer/`: the CLIP BPE tokenizer.
    Tokenizer,
    /// `scheduler/`: the noise schedule.
    Scheduler,
}

impl Part {
    /// Every part, in the order they are written.
    pub const ALL: [Part; 5] = [Part::Unet, Part::Vae, Part::TextEncoder, Part::Tokenizer, Part::Scheduler];

    /// The sub-folder's name.
    pub fn dir_name(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::Vae => "vae",
            Part::TextEncoder => "text_encoder",
            Part::Tokenizer => "tokenizer",
            Part::Scheduler => "scheduler",
        }
    }

    /// The config file inside the part's folder.
    pub fn config_file(self) -> &'static str {
        match self {
            Part::Scheduler => "scheduler_config.json",
            Part::Tokenizer => "tokenizer_config.json",
            _ => "config.json",
        }
    }

    /// Weight files accepted, in order of preference (none for configs-only parts).
    pub fn weight_files(self) -> &'static [&'static str] {
        match self {
            Part::Unet | Part::Vae => &["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"],
            Part::TextEncoder => &["model.safetensors", "model.fp16.safetensors"],
            Part::Tokenizer | Part::Scheduler => &[],
        }
    }

    /// The weight file we write.
    pub fn weight_file(self) -> Option<&'static str> {
        self.weight_files().first().copied()
    }

    /// The `[library, class]` entry of `model_index.json`.
    fn index_entry(self) -> [&'static str; 2] {
        match self {
            Part::Unet => ["diffusers", "UNet2DConditionModel"],
            Part::Vae => ["diffusers", "AutoencoderKL"],
            Part::TextEncoder => ["transformers", "CLIPTextModel"],
            Part::Tokenizer => ["transformers", "CLIPTokenizer"],
            Part::Scheduler => ["diffusers", "PNDMScheduler"],
        }
    }
}

/// Where a part lives given `dir`: `dir` itself when it is the part's own
/// folder (it holds the part's config), or `dir/<part>` when `dir` is a model folder.
pub fn part_dir(dir: &Path, part: Part) -> Result<PathBuf> {
    let inner = dir.join(part.dir_name());
    if inner.join(part.config_file()).is_file() {
        return Ok(inner);
    }
    if dir.join(part.config_file()).is_file() && part != Part::Tokenizer {
        return Ok(dir.to_path_buf());
    }
    if part == Part::Tokenizer && (dir.join("tokenizer.json").is_file() || inner.join("tokenizer.json").is_file()) {
        return Ok(if inner.is_dir() { inner } else { dir.to_path_buf() });
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "no such folder"));
    }
    Err(Error::file(
        dir,
        format!(
            "no {} found: expected {}/{} (a model folder) or {} here (a {} folder)",
            part.dir_name(),
            part.dir_name(),
            part.config_file(),
            part.config_file(),
            part.dir_name()
        ),
    ))
}

/// The weights file of the part in `part_dir`.
pub fn weights_path(part_dir: &Path, part: Part) -> Result<PathBuf> {
    for name in part.weight_files() {
        let p = part_dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let bin = if part == Part::TextEncoder { "pytorch_model.bin" } else { "diffusion_pytorch_model.bin" };
    let hint = if part_dir.join(bin).is_file() {
        format!(
            " — only PyTorch pickle weights ({bin}) are here; convert them once with \
             `safetensors.torch.save_file(torch.load('{bin}'), '{}')`",
            part.weight_files()[0]
        )
    } else {
        String::new()
    };
    Err(Error::file(part_dir, format!("{} weights are missing: expected {}{hint}", part.dir_name(), part.weight_files()[0])))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("line {}: not valid JSON: {e}", e.line())))
}

/// Keys of a diffusers scheduler config that do not change DDPM/DDIM/PNDM
/// sampling as we implement it, or that only other schedulers read.
const SCHEDULER_KEYS_IGNORED: &[&str] = &[
    "sample_max_value",
    "dynamic_thresholding_ratio",
    "use_karras_sigmas",
    "interpolation_type",
    "sigma_min",
    "sigma_max",
    "timestep_type",
    "final_sigmas_type",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "algorithm_type",
    "solver_order",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "lambda_min_clipped",
    "variance_type",
];

/// Read `scheduler_config.json`: keys our samplers implement are used,
/// features that would change sampling (thresholding, zero-SNR rescaling)
/// are refused, and any other key is reported in the returned warnings.
pub fn read_scheduler_config(path: &Path) -> Result<(SchedulerConfig, Vec<String>)> {
    let value = read_json(path)?;
    let Value::Object(map) = &value else { return Err(Error::file(path, "the scheduler config must be a JSON object")) };
    for key in ["thresholding", "rescale_betas_zero_snr"] {
        if map.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(Error::file(path, format!("`{key}: true` is not supported by privdistill's samplers — set it to false")));
        }
    }
    let known: Vec<String> = serde_json::to_value(SchedulerConfig::default())
        .ok()
        .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default();
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with('_') && !known.iter().any(|n| n == k))
        .filter(|k| !SCHEDULER_KEYS_IGNORED.contains(k) && !["thresholding", "rescale_betas_zero_snr"].contains(k))
        .collect();
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        warnings.push(format!("{}: unknown scheduler keys {unknown:?} are ignored", path.display()));
    }
    let config: SchedulerConfig = serde_json::from_value(value.clone()).map_err(|e| Error::file(path, format!("scheduler config: {e}")))?;
    NoiseSchedule::new(&config).map_err(|e| Error::file(path, e.to_string()))?;
    Ok((config, warnings))
}

/// The sampler a scheduler class name stands for (PNDM when unknown, as SD ships).
pub fn sampler_of_class(class_name: Option<&str>) -> SamplerKind {
    match class_name {
        Some("DDIMScheduler") => SamplerKind::Ddim,
        Some("DDPMScheduler") => SamplerKind::Ddpm,
        _ => SamplerKind::Pndm,
    }
}

/// The diffusers scheduler class of a sampler.
pub fn class_of_sampler(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Pndm => "PNDMScheduler",
        SamplerKind::Ddim => "DDIMScheduler",
        SamplerKind::Ddpm => "DDPMScheduler",
    }
}

/// Load every parameter of `store` from the safetensors file `path` by name.
/// A CLIP text encoder also loads from files without the `text_model.`
/// prefix. Missing parameters and shape mismatches are errors that name the
/// parameter and say the config may not be the weights'.
pub fn load_store(store: &ParamStore, path: &Path, what: &str) -> Result<()> {
    let file = SafeTensorsFile::open(path)?;
    let missing = store
        .load_matching(|name, shape| {
            let bare = name.strip_prefix("text_model.").unwrap_or(name);
            for candidate in [name, bare] {
                if file.contains(candidate) {
                    let (dtype, found) = file.info(candidate)?;
                    if found != shape {
                        return Err(Error::msg(format!(
                            "the weights hold shape {found:?} but the {what} config makes {shape:?} — the config does not match the weights"
                        )));
                    }
                    return file.get_checked(candidate, shape, dtype).map(Some);
                }
            }
            Ok(None)
        })
        .map_err(|e| Error::file(path, e.to_string()))?;
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(4).map(String::as_str).collect();
        return Err(Error::file(
            path,
            format!(
                "{} of the {what}'s {} parameters are missing from the weights, e.g. {shown:?} — the config does not match the weights",
                missing.len(),
                store.state_dict().len()
            ),
        ));
    }
    Ok(())
}

/// Parse a part's config into `T`, naming the file on error.
fn parse_config<T: serde::de::DeserializeOwned>(path: &Path, value: &Value) -> Result<T> {
    serde_json::from_value(value.clone()).map_err(|e| Error::file(path, e.to_string()))
}

/// An opened model folder: every part's config, checked.
#[derive(Clone, Debug)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// `unet/config.json`.
    pub unet_config: UNetConfig,
    /// `vae/config.json`.
    pub vae_config: VaeConfig,
    /// `text_encoder/config.json`.
    pub text_encoder_config: ClipTextConfig,
    /// `scheduler/scheduler_config.json`.
    pub scheduler_config: SchedulerConfig,
    /// The scheduler's `_class_name` (which sampler the folder samples with by default).
    pub scheduler_class: Option<String>,
    /// Notes about keys ignored while reading (print them once).
    pub warnings: Vec<String>,
}

impl ModelFolder {
    /// Check that `dir` is a complete model folder and read its configs.
    pub fn open(dir: impl AsRef<Path>) -> Result<ModelFolder> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::file(&dir, "model folder not found"));
        }
        if !dir.join(MODEL_INDEX).is_file() {
            return Err(Error::file(
                &dir,
                format!(
                    "{MODEL_INDEX} is missing — not a complete diffusers model folder (a folder being written gets it last; \
                     train or export the model again)"
                ),
            ));
        }
        read_json(&dir.join(MODEL_INDEX))?;
        for part in Part::ALL {
            let sub = dir.join(part.dir_name());
            if !sub.is_dir() {
                return Err(Error::file(
                    &dir,
                    format!(
                        "part `{}/` is missing — a model folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/",
                        part.dir_name()
                    ),
                ));
            }
            if part != Part::Tokenizer && !sub.join(part.config_file()).is_file() {
                return Err(Error::file(&sub, format!("{} is missing", part.config_file())));
            }
            if part.weight_file().is_some() {
                weights_path(&sub, part)?;
            }
        }
        let unet_path = dir.join("unet/config.json");
        let unet_config: UNetConfig = parse_config(&unet_path, &read_json(&unet_path)?)?;
        unet_config.validate().map_err(|e| Error::file(&unet_path, e.to_string()))?;
        let vae_path = dir.join("vae/config.json");
        let vae_config: VaeConfig = parse_config(&vae_path, &read_json(&vae_path)?)?;
        vae_config.validate().map_err(|e| Error::file(&vae_path, e.to_string()))?;
        let te_path = dir.join("text_encoder/config.json");
        let text_encoder_config: ClipTextConfig = parse_config(&te_path, &read_json(&te_path)?)?;
        let sched_path = dir.join("scheduler/scheduler_config.json");
        let (scheduler_config, warnings) = read_scheduler_config(&sched_path)?;
        let scheduler_class = read_json(&sched_path)?.get("_class_name").and_then(Value::as_str).map(String::from);
        if unet_config.cross_attention_dim != text_encoder_config.hidden_size {
            return Err(Error::file(
                &unet_path,
                format!(
                    "cross_attention_dim {} does not match the text encoder's hidden_size {} — the parts are from different models",
                    unet_config.cross_attention_dim, text_encoder_config.hidden_size
                ),
            ));
        }
        if unet_config.in_channels != vae_config.latent_channels {
            return Err(Error::file(
                &unet_path,
                format!(
                    "in_channels {} does not match the VAE's latent_channels {} — the parts are from different models",
                    unet_config.in_channels, vae_config.latent_channels
                ),
            ));
        }
        Ok(ModelFolder { dir, unet_config, vae_config, text_encoder_config, scheduler_config, scheduler_class, warnings })
    }

    /// The folder of `part`.
    pub fn part(&self, part: Part) -> PathBuf {
        self.dir.join(part.dir_name())
    }

    /// Build the UNet in the empty `store` and load its weights.
    pub fn load_unet(&self, store: &ParamStore, trainable: bool) -> Result<UNet2DConditionModel> {
        load_unet(&self.part(Part::Unet), &self.unet_config, store, trainable)
    }

    /// Build the VAE in the empty `store` and load its weights.
    pub fn load_vae(&self, store: &ParamStore, trainable: bool) -> Result<AutoencoderKL> {
        load_vae(&self.part(Part::Vae), &self.vae_config, store, trainable)
    }

    /// Build the text encoder in the empty `store` and load its weights.
    pub fn load_text_encoder(&self, store: &ParamStore, trainable: bool) -> Result<ClipTextModel> {
        load_text_encoder(&self.part(Part::TextEncoder), &self.text_encoder_config, store, trainable)
    }

    /// The tokenizer (see [`load_tokenizer`]).
    pub fn tokenizer(&self) -> Result<(ClipTokenizer, Option<String>)> {
        load_tokenizer(&self.part(Part::Tokenizer))
    }

    /// The training noise schedule.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.scheduler_config)
    }

    /// The sampler `scheduler/` names (PNDM for SD's folders).
    pub fn default_sampler(&self) -> SamplerKind {
        sampler_of_class(self.scheduler_class.as_deref())
    }

    /// SHA-256 of the folder's content ([`sha256_dir`]): what synthetic
    /// manifests record as `model`.
    pub fn content_hash(&self) -> Result<String> {
        sha256_dir(&self.dir)
    }

    /// Write a model folder at `dir` from `contents`: each file atomically,
    /// `model_index.json` last (an existing one is removed first, so the
    /// folder reads as incomplete while it is rewritten).
    pub fn write(dir: &Path, contents: &FolderContents) -> Result<ModelFolder> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let index = dir.join(MODEL_INDEX);
        if index.exists() {
            std::fs::remove_file(&index).map_err(|e| Error::io(&index, e))?;
        }
        for (part, weights) in [(Part::Unet, &contents.unet), (Part::Vae, &contents.vae), (Part::TextEncoder, &contents.text_encoder)] {
            let sub = dir.join(part.dir_name());
            std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
            write_atomic_json(sub.join(part.config_file()), &weights.config)?;
            let file = part.weight_file().expect("a weighted part");
            save_safetensors(sub.join(file), weights.tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(format_metadata()))?;
        }
        write_tokenizer(&dir.join(Part::Tokenizer.dir_name()), &contents.tokenizer)?;
        let sched = dir.join(Part::Scheduler.dir_name());
        std::fs::create_dir_all(&sched).map_err(|e| Error::io(&sched, e))?;
        write_atomic_json(sched.join(Part::Scheduler.config_file()), &contents.scheduler)?;
        let scheduler_class = contents.scheduler.get("_class_name").and_then(Value::as_str).unwrap_or("PNDMScheduler");
        write_atomic_json(&index, &model_index(scheduler_class))?;
        ModelFolder::open(dir)
    }
}

/// safetensors metadata diffusers and transformers expect (`format: pt`).
fn format_metadata() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("format".to_string(), "pt".to_string())])
}

/// `model_index.json` of a Stable Diffusion pipeline without a safety checker.
pub fn model_index(scheduler_class: &str) -> Value {
    let mut m = Map::new();
    m.insert("_class_name".into(), json!("StableDiffusionPipeline"));
    m.insert("_diffusers_version".into(), json!(DIFFUSERS_VERSION));
    m.insert("feature_extractor".into(), json!([null, null]));
    m.insert("image_encoder".into(), json!([null, null]));
    m.insert("requires_safety_checker".into(), json!(false));
    m.insert("safety_checker".into(), json!([null, null]));
    for part in Part::ALL {
        let [lib, class] = part.index_entry();
        let class = if part == Part::Scheduler { scheduler_class } else { class };
        m.insert(part.dir_name().into(), json!([lib, class]));
    }
    Value::Object(m)
}

/// A weighted part to write: its config JSON and its tensors by reference name.
#[derive(Clone, Debug)]
pub struct PartWeights {
    /// The `config.json` content.
    pub config: Value,
    /// The tensors, by the reference implementation's names.
    pub tensors: Vec<(String, Tensor)>,
}

/// Everything [`ModelFolder::write`] writes.
#[derive(Clone, Debug)]
pub struct FolderContents {
    /// `unet/`.
    pub unet: PartWeights,
    /// `vae/`.
    pub vae: PartWeights,
    /// `text_encoder/`.
    pub text_encoder: PartWeights,
    /// A Hugging Face `tokenizer.json` (file, or a folder holding one); its
    /// vocabulary and merges are also written as `vocab.json` + `merges.txt`
    /// for transformers' `CLIPTokenizer`.
    pub tokenizer: PathBuf,
    /// The `scheduler_config.json` content (with `_class_name`).
    pub scheduler: Value,
}

/// A config struct as diffusers/transformers JSON: the struct's keys plus
/// `_class_name` and `_diffusers_version` (diffusers) or `architectures` and
/// `model_type` (transformers), and any `extra` keys of the source config.
pub fn config_json<T: serde::Serialize>(config: &T, part: Part, source: Option<&Value>) -> Result<Value> {
    let mut map = match source {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let Value::Object(ours) = serde_json::to_value(config).map_err(|e| Error::msg(format!("{} config: {e}", part.dir_name())))? else {
        return Err(Error::msg(format!("{} config does not serialise to an object", part.dir_name())));
    };
    map.extend(ours);
    match part {
        Part::TextEncoder => {
            map.insert("architectures".into(), json!(["CLIPTextModel"]));
            map.insert("model_type".into(), json!("clip_text_model"));
        }
        Part::Unet | Part::Vae | Part::Scheduler => {
            if part != Part::Scheduler || !map.contains_key("_class_name") {
                map.insert("_class_name".into(), json!(if part == Part::Scheduler { "PNDMScheduler" } else { part.index_entry()[1] }));
            }
            map.insert("_diffusers_version".into(), json!(DIFFUSERS_VERSION));
        }
        Part::Tokenizer => {}
    }
    Ok(Value::Object(map))
}

/// The `scheduler_config.json` of `config` for diffusers' `class` scheduler.
pub fn scheduler_json(config: &SchedulerConfig, kind: SamplerKind) -> Result<Value> {
    let mut v = config_json(config, Part::Scheduler, None)?;
    v["_class_name"] = json!(class_of_sampler(kind));
    Ok(v)
}

/// The path models are built under: the root of `store`, frozen unless `trainable`.
fn root(store: &ParamStore, trainable: bool) -> ParamPath {
    if trainable {
        store.root()
    } else {
        store.root().frozen()
    }
}

/// Build a UNet from `config` in `store` (which must be empty: loading fills
/// every entry) and load the weights in `part_dir`.
pub fn load_unet(part_dir: &Path, config: &UNetConfig, store: &ParamStore, trainable: bool) -> Result<UNet2DConditionModel> {
    let unet = UNet2DConditionModel::new(&root(store, trainable), config)?;
    load_store(store, &weights_path(part_dir, Part::Unet)?, "UNet")?;
    Ok(unet)
}

/// Build a VAE from `config` in the empty `store` and load the weights in `part_dir`.
pub fn load_vae(part_dir: &Path, config: &VaeConfig, store: &ParamStore, trainable: bool) -> Result<AutoencoderKL> {
    let vae = AutoencoderKL::new(&root(store, trainable), config)?;
    load_store(store, &weights_path(part_dir, Part::Vae)?, "VAE")?;
    Ok(vae)
}

/// Build a CLIP text encoder from `config` in the empty `store` and load the weights in `part_dir`.
pub fn load_text_encoder(part_dir: &Path, config: &ClipTextConfig, store: &ParamStore, trainable: bool) -> Result<ClipTextModel> {
    let model = ClipTextModel::new(&root(store, trainable), config)?;
    load_store(store, &weights_path(part_dir, Part::TextEncoder)?, "text encoder")?;
    Ok(model)
}

/// The CLIP tokenizer of a `tokenizer/` folder (or a `tokenizer.json` file).
/// A folder with only the slow tokenizer's files (`vocab.json` + `merges.txt`,
/// as SD-1.5 ships) falls back to the shipped CLIP tokenizer, which has the
/// same vocabulary; the second value then says so.
pub fn load_tokenizer(path: &Path) -> Result<(ClipTokenizer, Option<String>)> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("tokenizer.json"))
    } else {
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
    };
    let pad = pad_token(&dir);
    let (mut tok, note) = if file.is_file() {
        (ClipTokenizer::from_file(&file)?, None)
    } else if dir.join("vocab.json").is_file() {
        (
            ClipTokenizer::shipped()?,
            Some(format!("{}: no tokenizer.json; using the shipped CLIP tokenizer (the vocabulary of SD 1.x/2.x)", dir.display())),
        )
    } else {
        return Err(Error::file(&dir, "tokenizer.json is missing (a Hugging Face fast-tokenizer file is needed)"));
    };
    if pad.as_deref() == Some("!") {
        tok = tok.with_pad_id(0);
    }
    Ok((tok, note))
}

/// The pad token named by a tokenizer folder's `special_tokens_map.json` or `tokenizer_config.json`.
fn pad_token(dir: &Path) -> Option<String> {
    ["special_tokens_map.json", "tokenizer_config.json"].iter().find_map(|f| {
        let v = read_json(&dir.join(f)).ok()?;
        match v.get("pad_token")? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
            _ => None,
        }
    })
}

/// Write `tokenizer/`: `tokenizer.json` as given, plus `vocab.json`,
/// `merges.txt`, `special_tokens_map.json` and `tokenizer_config.json` for
/// transformers' slow `CLIPTokenizer` (what diffusers' pipeline loads).
pub fn write_tokenizer(out: &Path, source: &Path) -> Result<()> {
    let file = if source.is_dir() { source.join("tokenizer.json") } else { source.to_path_buf() };
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| Error::file(&file, format!("not valid JSON: {e}")))?;
    let model = value.get("model").ok_or_else(|| Error::file(&file, "no `model` section"))?;
    let vocab = model.get("vocab").ok_or_else(|| Error::file(&file, "`model.vocab` is missing (not a BPE tokenizer?)"))?;
    let merges = model.get("merges").and_then(Value::as_array).ok_or_else(|| Error::file(&file, "`model.merges` is missing"))?;
    let mut merges_txt = String::from("#version: 0.2\n");
    for m in merges {
        match m {
            Value::String(s) => merges_txt.push_str(s),
            Value::Array(pair) if pair.len() == 2 => {
                merges_txt.push_str(pair[0].as_str().unwrap_or_default());
                merges_txt.push(' ');
                merges_txt.push_str(pair[1].as_str().unwrap_or_default());
            }
            other => return Err(Error::file(&file, format!("unexpected merge entry {other}"))),
        }
        merges_txt.push('\n');
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_atomic_bytes(out.join("tokenizer.json"), &bytes)?;
    write_atomic_json(out.join("vocab.json"), vocab)?;
    write_atomic_bytes(out.join("merges.txt"), merges_txt.as_bytes())?;
    let special = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"
    });
    write_atomic_json(out.join("special_tokens_map.json"), &special)?;
    let mut config = special.clone();
    config["model_max_length"] = json!(77);
    config["tokenizer_class"] = json!("CLIPTokenizer");
    config["do_lower_case"] = json!(true);
    config["clean_up_tokenization_spaces"] = json!(true);
    write_atomic_json(out.join("tokenizer_config.json"), &config)
}

/// Copy the files of a model folder's parts (and nothing else) to `out`,
/// each atomically, `model_index.json` last.
pub fn copy_parts(src: &ModelFolder, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let index = out.join(MODEL_INDEX);
    if index.exists() {
        std::fs::remove_file(&index).map_err(|e| Error::io(&index, e))?;
    }
    for part in Part::ALL {
        let from = src.part(part);
        let to = out.join(part.dir_name());
        std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        let entries = std::fs::read_dir(&from).map_err(|e| Error::io(&from, e))?;
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&from, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = entry.file_type().map(|t| t.is_file()).unwrap_or(false) && !(name.starts_with('.') && name.ends_with(".tmp"));
            // Pickled weights are never copied: only safetensors are shared.
            if keep && !name.ends_with(".bin") && !name.ends_with(".ckpt") {
                names.push(entry.path());
            }
        }
        names.sort();
        for path in names {
            let target = to.join(path.file_name().expect("a file"));
            crate::io::write_atomic(&target, |w| {
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                std::io::copy(&mut f, w).map_err(|e| Error::io(&path, e))?;
                Ok(())
            })?;
        }
    }
    let source_index = read_json(&src.dir.join(MODEL_INDEX))?;
    let mut index_value = model_index(src.scheduler_class.as_deref().unwrap_or("PNDMScheduler"));
    if let (Some(v), Some(ours)) = (source_index.get("_diffusers_version"), index_value.as_object_mut()) {
        ours.insert("_diffusers_version".into(), v.clone());
    }
    write_atomic_json(&index, &index_value)
}

//! `privdistill export`: write a model folder for sharing — the diffusers
//! layout `StableDiffusionPipeline.from_pretrained` loads (only the parts'
//! configs, safetensors weights and tokenizer files are copied, never
//! checkpoints or pickles), plus a model card `README.md` whose fields the
//! caller passes in (training data, δ, counts, R_reid, metrics).

use crate::io::{write_atomic_bytes, write_atomic_json};
use crate::pipeline::model_folder::{copy_parts, ModelFolder};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Settings of `export`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// The model folder to share.
    pub model: PathBuf,
    /// Where to write the shared folder (must differ from `model`).
    pub out: PathBuf,
    /// The model card's title.
    pub title: String,
    /// Model card fields (data, delta, counts, R_reid, metrics, …), shown in
    /// order and also saved as `privdistill_card.json`.
    pub card: Map<String, Value>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            model: "work/ldm-distill".into(),
            out: "work/export".into(),
            title: "Privacy-distilled chest X-ray diffusion model".into(),
            card: Map::new(),
        }
    }
}

impl ExportConfig {
    /// The demo preset: the distilled model of a work directory, with the given card fields.
    pub fn demo(model: impl Into<PathBuf>, out: impl Into<PathBuf>, card: Map<String, Value>) -> Self {
        ExportConfig { model: model.into(), out: out.into(), card, ..Default::default() }
    }
}

/// A JSON value for a Markdown table cell.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().filter(|f| f.fract() != 0.0).map_or_else(|| n.to_string(), |f| format!("{f:.4}")),
        other => other.to_string(),
    };
    s.replace('|', "\\|").replace('\n', " ")
}

/// The model card text.
pub fn model_card(title: &str, folder: &ModelFolder, hash: &str, card: &Map<String, Value>) -> String {
    let mut s = String::new();
    s.push_str("---\nlibrary_name: diffusers\npipeline_tag: text-to-image\ntags:\n- privacy-distillation\n- medical-imaging\n- chest-x-ray\n---\n\n");
    s.push_str(&format!("# {title}\n\n"));
    s.push_str(
        "A text-to-image latent diffusion model in the diffusers `StableDiffusionPipeline` layout, made with \
         [privdistill](https://arxiv.org/abs/2306.01322) (Privacy Distillation, Fernandez et al. 2023): it was trained only on \
         synthetic images that a re-identification network judged not to identify any real patient.\n\n",
    );
    s.push_str("```python\nfrom diffusers import StableDiffusionPipeline\npipe = StableDiffusionPipeline.from_pretrained(\"path/to/this/folder\")\n");
    s.push_str("image = pipe(\"Bilateral consolidation.\", guidance_scale=4.0).images[0]\n```\n\n");
    if !card.is_empty() {
        s.push_str("## Provenance and evaluation\n\n| field | value |\n|---|---|\n");
        for (k, v) in card {
            s.push_str(&format!("| {} | {} |\n", cell(&Value::String(k.clone())), cell(v)));
        }
        s.push('\n');
    }
    let image = folder.unet_config.sample_size * folder.vae_config.downscale();
    s.push_str("## Model\n\n");
    s.push_str(&format!("- image size: {image}×{image}, {} channel(s)\n", folder.vae_config.out_channels));
    s.push_str(&format!(
        "- UNet blocks: {:?}, cross-attention dim {}\n",
        folder.unet_config.block_out_channels, folder.unet_config.cross_attention_dim
    ));
    s.push_str(&format!(
        "- text encoder: CLIP, {} layers, width {}\n",
        folder.text_encoder_config.num_hidden_layers, folder.text_encoder_config.hidden_size
    ));
    s.push_str(&format!("- scheduler: {}\n", folder.scheduler_class.as_deref().unwrap_or("PNDMScheduler")));
    s.push_str(&format!("- content hash of the source folder (SHA-256): `{hash}`\n\n"));
    s.push_str("Synthetic images are not a substitute for clinical data; do not use this model for diagnosis.\n");
    s
}

/// Copy the model's parts to `out` and write the model card.
pub fn run(cfg: &ExportConfig) -> Result<()> {
    let folder = ModelFolder::open(&cfg.model)?;
    let same = match (cfg.model.canonicalize(), cfg.out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::file(&cfg.out, "export: the output folder is the model folder itself — choose another --out"));
    }
    let hash = folder.content_hash()?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    write_atomic_bytes(cfg.out.join("README.md"), model_card(&cfg.title, &folder, &hash, &cfg.card).as_bytes())?;
    write_atomic_json(cfg.out.join("privdistill_card.json"), &cfg.card)?;
    // The parts last: copy_parts writes model_index.json after every other file.
    copy_parts(&folder, &cfg.out)?;
    ModelFolder::open(&cfg.out)?;
    Ok(())
}

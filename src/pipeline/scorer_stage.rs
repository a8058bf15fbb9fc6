//! What the scorer stages (`train-reid`, `train-retrieval`, `train-align`,
//! `audit`) share at the command line: the arguments that pick a config (the
//! default, the demo preset, or a TOML file, then `--set` overrides and the
//! paths), and writing the summary to the folder's `metrics.json`.

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Command-line arguments of a scorer stage.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StageArgs {
    /// A TOML (or JSON) config; its keys override the default (or `--demo`) values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from the demo preset (a small network sized for the built-in demo) instead of the paper's recipe.
    #[arg(long)]
    pub demo: bool,
    /// The input dataset folder (its manifest must carry a patient-level split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the output folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override one config key, e.g. `--set max_epochs=20` (repeatable; dotted keys for nested tables).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl StageArgs {
    /// `--data` or the stage's default input.
    pub fn data_or(&self, default: &str) -> PathBuf {
        self.data.clone().unwrap_or_else(|| PathBuf::from(default))
    }

    /// `--out` or the stage's default output.
    pub fn out_or(&self, default: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(default))
    }

    /// The config: `base`, then the file's keys, then `--set`, then `--data`/`--out`/`--resume`
    /// (written to the keys `data`, `out` and `resume`).
    pub fn resolve<T: Serialize + DeserializeOwned>(&self, base: &T) -> Result<T> {
        let mut overrides = self.overrides.clone();
        for (key, value) in [("data", &self.data), ("out", &self.out)] {
            if let Some(p) = value {
                overrides.push(path_override(key, p));
            }
        }
        if self.resume {
            overrides.push("resume=true".into());
        }
        configure(base, self.config.as_deref(), &overrides)
    }
}

/// A `key="path"` override (the path quoted as a TOML string, whatever it looks like).
pub fn path_override(key: &str, path: &Path) -> String {
    format!("{key}={}", toml::Value::String(path.to_string_lossy().into_owned()))
}

/// `base` with the keys of `file` (if any) laid over it, then the `key=value` overrides.
pub fn configure<T: Serialize + DeserializeOwned>(base: &T, file: Option<&Path>, overrides: &[String]) -> Result<T> {
    let mut doc: toml::Table = toml::Table::try_from(base).map_err(|e| Error::msg(format!("config: cannot encode the defaults: {e}")))?;
    let source = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("<defaults>"));
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let layer: toml::Table = if path.extension().is_some_and(|e| e == "json") {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("line {}: {e}", e.line())))?;
            toml::Table::try_from(value).map_err(|e| Error::file(path, e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| Error::file(path, one_line(&e.to_string())))?
        };
        merge(&mut doc, layer);
    }
    let text = toml::to_string(&doc).map_err(|e| Error::msg(format!("config: {e}")))?;
    let text = crate::pipeline::config::apply_overrides(&text, overrides, &source)?;
    crate::pipeline::config::parse_config(&text, &source)
}

/// Lays `layer` over `base`, table by table.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn one_line(msg: &str) -> String {
    msg.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(" ")
}

/// Creates the output folder (and its parents).
pub fn create_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

//! What the scorer stages (`train-reid`, `train-retrieval`, `train-align`,
//! `audit`) share: at the command line, the arguments that pick a config (the
//! default, the demo preset, or a TOML file, then `--set` overrides and the
//! paths); in training, the epoch bookkeeping ([`EpochRun`]).

use crate::io::CheckpointMeta;
use crate::nn::{AdamW, ParamStore};
use crate::privacy::scorer_folder::{self, EarlyStopping, CHECKPOINT_FILE};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Range;
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

/// The epoch bookkeeping the scorer trainers share: resuming from the output
/// folder's checkpoint (refusing one trained with a different architecture or
/// input), the validation history, early stopping, and a checkpoint after
/// every epoch, so an interrupted run continues exactly where it stopped.
pub struct EpochRun {
    checkpoint: PathBuf,
    config: serde_json::Value,
    metric: &'static str,
    /// Early stopping on the validation metric.
    pub stopping: EarlyStopping,
    /// The validation metric of every finished epoch.
    pub history: Vec<f64>,
    /// The mean training loss of every finished epoch, for trainers that report it.
    pub train_loss: Vec<f64>,
    /// The first epoch this run trains: 0, or where a resumed run stopped.
    pub first_epoch: usize,
}

impl EpochRun {
    /// Opens the bookkeeping of a stage writing to `out` with config `cfg`, whose
    /// validation metric is saved under `metric`. With `resume` and a checkpoint in
    /// `out`, the weights, optimizer and early-stopping state are restored, unless the
    /// checkpoint's config differs from `cfg` in one of the keys `must_match`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        out: &Path,
        cfg: &impl Serialize,
        resume: bool,
        patience: usize,
        metric: &'static str,
        must_match: &[&str],
        store: &ParamStore,
        optimizer: &mut AdamW,
    ) -> Result<EpochRun> {
        create_out_dir(out)?;
        let config = serde_json::to_value(cfg).map_err(|e| Error::msg(e.to_string()))?;
        let mut run = EpochRun {
            checkpoint: out.join(CHECKPOINT_FILE),
            config,
            metric,
            stopping: EarlyStopping::new(patience),
            history: Vec::new(),
            train_loss: Vec::new(),
            first_epoch: 0,
        };
        if resume && run.checkpoint.is_file() {
            let meta = scorer_folder::load_checkpoint(&run.checkpoint, store, optimizer, &mut run.stopping)?;
            if let Some(key) = must_match.iter().find(|k| meta.config.get(**k) != run.config.get(**k)) {
                return Err(Error::file(
                    &run.checkpoint,
                    format!("the checkpoint was trained with another `{key}` — remove it or use the same config"),
                ));
            }
            let series = |name: &str| serde_json::from_value(meta.extra.get(name).cloned().unwrap_or_default()).unwrap_or_default();
            run.first_epoch = meta.epoch as usize;
            run.history = series(metric);
            run.train_loss = series("train_loss");
        }
        Ok(run)
    }

    /// The epochs left to train: none if the resumed run had already stopped early.
    pub fn epochs(&self, max_epochs: usize) -> Range<usize> {
        let stopped = self.stopping.best.is_some() && self.stopping.stale >= self.stopping.patience;
        self.first_epoch..if stopped { self.first_epoch } else { max_epochs }
    }

    /// Records epoch `epoch`'s validation value (and mean training loss, if the trainer
    /// tracks one), saves the checkpoint, and says whether to stop early.
    pub fn end_epoch(
        &mut self,
        epoch: usize,
        steps_per_epoch: usize,
        value: f64,
        train_loss: Option<f64>,
        store: &ParamStore,
        optimizer: &AdamW,
    ) -> Result<bool> {
        self.history.push(value);
        self.train_loss.extend(train_loss);
        let stop = self.stopping.update(epoch + 1, value, store)?;
        let mut meta = CheckpointMeta {
            step: ((epoch + 1) * steps_per_epoch) as u64,
            epoch: (epoch + 1) as u64,
            config: self.config.clone(),
            ..Default::default()
        };
        meta.extra.insert("early_stopping".into(), self.stopping.to_json());
        meta.extra.insert(self.metric.into(), serde_json::json!(self.history));
        if train_loss.is_some() {
            meta.extra.insert("train_loss".into(), serde_json::json!(self.train_loss));
        }
        scorer_folder::save_checkpoint(&self.checkpoint, store, optimizer, &self.stopping, meta)?;
        Ok(stop)
    }

    /// Puts the best epoch's weights back into `store`.
    pub fn restore_best(&self, store: &ParamStore) -> Result<()> {
        self.stopping.restore_best(store)
    }

    /// Removes the checkpoint once the finished network is saved.
    pub fn remove_checkpoint(&self) -> Result<()> {
        if self.checkpoint.exists() {
            std::fs::remove_file(&self.checkpoint).map_err(|e| Error::io(&self.checkpoint, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{AdamWConfig, Init};
    use crate::{DType, Device};

    #[derive(Serialize)]
    struct Cfg {
        image_size: usize,
        lr: f64,
    }

    fn store() -> (ParamStore, AdamW) {
        let store = ParamStore::new(DType::F32, Device::Cpu, 0);
        store.root().var("w", &[3], Init::Const(1.0)).unwrap();
        let optimizer = AdamW::new(store.trainable_parameters(), AdamWConfig::default()).unwrap();
        (store, optimizer)
    }

    #[test]
    fn an_interrupted_run_resumes_with_its_history_and_refuses_another_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Cfg { image_size: 32, lr: 1e-3 };
        let (s, mut opt) = store();
        let mut run = EpochRun::open(dir.path(), &cfg, true, 2, "val_auc", &["image_size"], &s, &mut opt).unwrap();
        assert_eq!((run.first_epoch, run.epochs(5)), (0, 0..5));
        assert!(!run.end_epoch(0, 10, 0.6, Some(0.9), &s, &opt).unwrap());
        assert!(!run.end_epoch(1, 10, 0.7, Some(0.8), &s, &opt).unwrap());
        drop(run); // interrupted here: the checkpoint stays

        // A fresh process resumes after epoch 2 with the histories and the early-stopping state.
        let (s, mut opt) = store();
        let mut run = EpochRun::open(dir.path(), &cfg, true, 2, "val_auc", &["image_size"], &s, &mut opt).unwrap();
        assert_eq!((run.first_epoch, run.epochs(5)), (2, 2..5));
        assert_eq!((run.history.clone(), run.train_loss.clone()), (vec![0.6, 0.7], vec![0.9, 0.8]));
        assert_eq!(run.stopping.best_epoch, 2);
        // Two epochs without improvement: stop; a resumed run then trains no more epochs.
        assert!(!run.end_epoch(2, 10, 0.65, Some(0.7), &s, &opt).unwrap());
        assert!(run.end_epoch(3, 10, 0.5, Some(0.6), &s, &opt).unwrap());
        let (s, mut opt) = store();
        let run = EpochRun::open(dir.path(), &cfg, true, 2, "val_auc", &["image_size"], &s, &mut opt).unwrap();
        assert!(run.epochs(5).is_empty());

        // Without `resume` the checkpoint is ignored; with another image size it is refused, naming the key.
        let fresh = EpochRun::open(dir.path(), &cfg, false, 2, "val_auc", &["image_size"], &s, &mut opt).unwrap();
        assert_eq!((fresh.first_epoch, fresh.history.len()), (0, 0));
        let other = Cfg { image_size: 64, ..cfg };
        let err = EpochRun::open(dir.path(), &other, true, 2, "val_auc", &["image_size"], &s, &mut opt).err().expect("refused");
        assert!(err.to_string().contains("`image_size`"), "{err}");
        // Only the keys named must match: another learning rate resumes unless `lr` is one of them.
        let new_lr = Cfg { lr: 5e-4, image_size: 32 };
        assert!(EpochRun::open(dir.path(), &new_lr, true, 2, "val_auc", &["image_size"], &s, &mut opt).is_ok());
        assert!(EpochRun::open(dir.path(), &new_lr, true, 2, "val_auc", &["lr"], &s, &mut opt).is_err());
        run.remove_checkpoint().unwrap();
        assert!(!dir.path().join(CHECKPOINT_FILE).exists());
    }
}

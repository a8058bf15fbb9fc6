//! The scorer network folder shared by `work/reid/`, `work/retrieval/` and
//! `work/align/`: `config.json` (which network, its architecture and its input
//! contract), `model.safetensors` (weights under the reference names),
//! `metrics.json` (test metrics) and, while training, `checkpoint.safetensors`.
//!
//! Also the pieces every scorer and its training stage share: turning images
//! into a batch under the folder's input contract, loading and saving weights
//! with errors that say which file and which parameter disagree, training
//! checkpoints, and early stopping with the best weights kept.

use crate::data::{contract, Contract, Image};
use crate::io::{save_safetensors, Checkpoint, CheckpointMeta, SafeTensorsFile};
use crate::nn::{Optimizer, ParamStore};
use crate::{no_grad, Error, Result, Tensor};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The architecture and input contract, as JSON.
pub const CONFIG_FILE: &str = "config.json";
/// The trained weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The test metrics (the training stage's summary).
pub const METRICS_FILE: &str = "metrics.json";
/// The resumable training state.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Which network a scorer folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScorerKind {
    /// The siamese re-identification network (s_reid).
    Reid,
    /// The embedding network for nearest-neighbour retrieval of real images.
    Retrieval,
    /// The image–text alignment encoders (s_align).
    Align,
}

impl ScorerKind {
    /// The name written in `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScorerKind::Reid => "reid",
            ScorerKind::Retrieval => "retrieval",
            ScorerKind::Align => "align",
        }
    }

    /// The command that trains this kind of folder.
    pub fn trainer(self) -> &'static str {
        match self {
            ScorerKind::Reid => "train-reid",
            ScorerKind::Retrieval => "train-retrieval",
            ScorerKind::Align => "train-align",
        }
    }
}

/// How pixel values in [0, 1] are mapped before the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalisation {
    /// torchvision's ImageNet mean/std per channel (3 channels).
    Imagenet,
    /// [-1, 1] (1 or 3 channels).
    Symmetric,
    /// torchxrayvision's [-1024, 1024] (1 channel).
    Xrv,
}

/// A scorer's input contract: square size, channels, normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Side of the square input (256 in the paper).
    pub size: usize,
    /// Channels the network takes.
    pub channels: usize,
    /// Value mapping.
    pub normalisation: Normalisation,
}

impl InputSpec {
    /// Three channels with ImageNet normalisation at `size` (the re-identification recipe).
    pub fn imagenet(size: usize) -> InputSpec {
        InputSpec { size, channels: 3, normalisation: Normalisation::Imagenet }
    }

    /// The data layer's contract for this spec; errors on combinations it does not define.
    pub fn contract(&self) -> Result<Contract> {
        let c = match (self.normalisation, self.channels) {
            (Normalisation::Imagenet, 3) => Contract::Reid { size: self.size },
            (Normalisation::Symmetric, 1 | 3) => Contract::Ldm { size: self.size, channels: self.channels },
            (Normalisation::Xrv, 1) => Contract::Classifier { size: self.size },
            (n, c) => return Err(Error::msg(format!("input contract: {n:?} normalisation with {c} channels is not defined"))),
        };
        c.validate().map_err(|e| Error::msg(e.to_string()))?;
        Ok(c)
    }

    /// A batch `[N, C, size, size]` from images of any size (resize + centre crop, then normalise), in parallel.
    pub fn batch(&self, images: &[Image]) -> Result<Tensor> {
        let contract = self.contract()?;
        let planars = images.par_iter().map(|img| contract.apply(img)).collect::<std::result::Result<Vec<_>, _>>().map_err(data_error)?;
        contract::stack(&planars).map_err(data_error)
    }

    /// A batch from images that already have this spec's size (e.g. augmented views).
    pub fn batch_of_squares(&self, squares: &[Image]) -> Result<Tensor> {
        let contract = self.contract()?;
        if let Some(bad) = squares.iter().find(|i| i.width != self.size || i.height != self.size) {
            return Err(Error::msg(format!(
                "input batch: a {}×{} image where {}×{} was expected",
                bad.width, bad.height, self.size, self.size
            )));
        }
        let planars: Vec<_> = squares.par_iter().map(|img| contract.normalise(img)).collect();
        contract::stack(&planars).map_err(data_error)
    }
}

/// A data-layer error as the library's error (its message already names the file and field).
pub fn data_error(e: crate::data::DataError) -> Error {
    match e {
        crate::data::DataError::Tensor(inner) => inner,
        other => Error::msg(other.to_string()),
    }
}

/// Reads `dir/config.json` as `T` after checking that the folder exists and holds a `kind` scorer.
pub fn read_config<T: DeserializeOwned>(dir: &Path, kind: ScorerKind) -> Result<T> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!("no {} scorer folder here — train one with `privdistill {}` or give the right path", kind.as_str(), kind.trainer()),
        ));
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("line {}: {e}", e.line())))?;
    let found = value.get("kind").and_then(|k| k.as_str()).unwrap_or("<missing>");
    if found != kind.as_str() {
        return Err(Error::file(
            &path,
            format!("field `kind`: is `{found}`, expected `{}` — this folder holds another network", kind.as_str()),
        ));
    }
    serde_json::from_value(value).map_err(|e| Error::file(&path, e.to_string()))
}

/// Writes `config.json` into `dir` atomically.
pub fn write_config<T: Serialize>(dir: &Path, config: &T) -> Result<()> {
    crate::io::write_atomic_json(dir.join(CONFIG_FILE), config)
}

/// Loads `file` into every parameter and buffer of `store`, by name. Errors
/// name the file and the first disagreeing parameter, and point at the config.
pub fn load_weights(store: &ParamStore, file: &Path) -> Result<()> {
    load_weights_with_prefix(store, file, "", false).map(|_| ())
}

/// Loads tensors of `file` named `<name>` (or `<strip><name>`) into the entries of `store`
/// under `prefix` (`prefix.<name>`). With `partial`, entries the file lacks or holds
/// with another shape keep their values and are returned; otherwise they are an error.
pub fn load_weights_with_prefix(store: &ParamStore, file: &Path, prefix: &str, partial: bool) -> Result<Vec<String>> {
    if !file.is_file() {
        return Err(Error::file(file, "the weights file is missing — has the network finished training?"));
    }
    let st = SafeTensorsFile::open(file)?;
    let wanted = |name: &str| -> Option<String> {
        if prefix.is_empty() {
            Some(name.to_string())
        } else {
            name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')).map(str::to_string)
        }
    };
    let missing = store
        .load_matching(|name, shape| {
            let Some(local) = wanted(name) else { return Ok(None) };
            // transformers checkpoints of a bare BertModel sometimes keep the `bert.` of the task model.
            for candidate in [local.clone(), format!("bert.{local}")] {
                if st.contains(&candidate) {
                    let (dtype, found) = st.info(&candidate)?;
                    if partial && found != shape {
                        // A pretrained tower's own head (e.g. torchvision's 1000-class `fc`) is not ours.
                        return Ok(None);
                    }
                    return st.get_checked(&candidate, shape, dtype).map(Some);
                }
            }
            Ok(None)
        })
        .map_err(|e| Error::file(file, format!("{e} — does config.json describe these weights?")))?;
    let missing: Vec<String> = missing.into_iter().filter(|n| wanted(n).is_some() && !n.ends_with("num_batches_tracked")).collect();
    if !partial && !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        return Err(Error::file(
            file,
            format!("{} parameters are missing, e.g. {shown:?} — the weights do not match config.json", missing.len()),
        ));
    }
    Ok(missing)
}

/// Writes every parameter and buffer of `store` to `file` (atomically).
pub fn save_weights(store: &ParamStore, file: &Path) -> Result<()> {
    save_safetensors(file, store.state_dict(), None)
}

/// Deep copies of every parameter and buffer (for keeping the best weights while training goes on).
pub fn snapshot(store: &ParamStore) -> Result<Vec<(String, Tensor)>> {
    no_grad(|| store.state_dict().into_iter().map(|(n, t)| Ok((n, deep_copy(&t)?))).collect())
}

/// Writes `snapshot` back into `store`.
pub fn restore_snapshot(store: &ParamStore, snapshot: &[(String, Tensor)]) -> Result<()> {
    let map: std::collections::HashMap<&str, &Tensor> = snapshot.iter().map(|(n, t)| (n.as_str(), t)).collect();
    store.load_from(|name, _| map.get(name).map(|t| (*t).clone()).ok_or_else(|| Error::msg(format!("snapshot lacks `{name}`"))))
}

/// A fresh copy of `t` with its own storage (any dtype: integer buffers included).
fn deep_copy(t: &Tensor) -> Result<Tensor> {
    let copy = Tensor::zeros(t.shape(), t.dtype(), t.device())?;
    copy.assign(t)?;
    Ok(copy)
}

/// Early stopping on a validation metric (higher is better), keeping the best weights.
#[derive(Default)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The best validation value so far.
    pub best: Option<f64>,
    /// The epoch (1-based) that reached it.
    pub best_epoch: usize,
    /// Epochs since the last improvement.
    pub stale: usize,
    /// The weights at the best epoch.
    pub best_weights: Option<Vec<(String, Tensor)>>,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without improvement.
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping { patience, ..Default::default() }
    }

    /// Records epoch `epoch`'s value; keeps a snapshot of `store` when it improves.
    /// Returns whether training should stop.
    pub fn update(&mut self, epoch: usize, value: f64, store: &ParamStore) -> Result<bool> {
        if self.best.is_none_or(|b| value > b) {
            self.best = Some(value);
            self.best_epoch = epoch;
            self.stale = 0;
            self.best_weights = Some(snapshot(store)?);
        } else {
            self.stale += 1;
        }
        Ok(self.stale >= self.patience)
    }

    /// Puts the best weights back into `store` (no-op if none were kept).
    pub fn restore_best(&self, store: &ParamStore) -> Result<()> {
        match &self.best_weights {
            Some(w) => restore_snapshot(store, w),
            None => Ok(()),
        }
    }

    /// The state for a checkpoint's `extra`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "best": self.best, "best_epoch": self.best_epoch, "stale": self.stale })
    }

    /// Restores the counters from a checkpoint's `extra` and the best weights from its `best.` group.
    pub fn load(&mut self, value: Option<&serde_json::Value>, checkpoint: &Checkpoint) -> Result<()> {
        if let Some(v) = value {
            self.best = v.get("best").and_then(|b| b.as_f64());
            self.best_epoch = v.get("best_epoch").and_then(|b| b.as_u64()).unwrap_or(0) as usize;
            self.stale = v.get("stale").and_then(|b| b.as_u64()).unwrap_or(0) as usize;
        }
        let best: Vec<(String, Tensor)> = checkpoint.group("best.").map(|(n, t)| (n.to_string(), t.clone())).collect();
        self.best_weights = if best.is_empty() { None } else { Some(best) };
        Ok(())
    }
}

/// Saves the training state: parameters (`param.`), optimizer state (`optim.`),
/// the best weights so far (`best.`) and `meta`.
pub fn save_checkpoint(
    path: &Path,
    store: &ParamStore,
    optimizer: &dyn Optimizer,
    stopping: &EarlyStopping,
    meta: CheckpointMeta,
) -> Result<()> {
    let mut ck = Checkpoint::new(meta);
    ck.insert_group("param.", store.state_dict());
    ck.insert_group("optim.", optimizer.state_tensors()?);
    if let Some(best) = &stopping.best_weights {
        ck.insert_group("best.", best.iter());
    }
    ck.save(path)
}

/// Loads a checkpoint written by [`save_checkpoint`] into `store`, `optimizer` and `stopping`; returns its meta.
pub fn load_checkpoint(
    path: &Path,
    store: &ParamStore,
    optimizer: &mut dyn Optimizer,
    stopping: &mut EarlyStopping,
) -> Result<CheckpointMeta> {
    let ck = Checkpoint::load(path)?;
    store.load_from(|name, _| ck.get(&format!("param.{name}")).cloned()).map_err(|e| Error::file(path, e.to_string()))?;
    optimizer
        .load_state_tensors(&|name| Ok(ck.tensors.get(&format!("optim.{name}")).cloned()))
        .map_err(|e| Error::file(path, e.to_string()))?;
    stopping.load(ck.meta.extra.get("early_stopping"), &ck)?;
    Ok(ck.meta)
}

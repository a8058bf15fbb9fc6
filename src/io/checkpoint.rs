//! Training checkpoints: named tensors plus the JSON state needed to resume
//! (step, epoch, position in the data order, RNG, config), in one
//! safetensors file written atomically.
//!
//! The tensors are grouped by name prefix, by convention `param.<name>` for
//! parameters and `optim.<state>.<name>` for optimizer state (e.g.
//! `optim.exp_avg.<name>`); [`Checkpoint::insert_group`] and
//! [`Checkpoint::group`] add and read a group. The state is stored as JSON
//! under the `privdistill.checkpoint` key of the file's `__metadata__`, so
//! any safetensors tool can inspect a checkpoint.
//!
//! Loading maps the file: tensors come back bit-exact and are read from
//! disk only as they are used.

use super::safetensors::{missing_tensor_message, save_safetensors, NamedTensor, SafeTensorsFile};
use crate::{Error, Result, Rng, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `__metadata__` key holding the checkpoint state as JSON.
pub const CHECKPOINT_KEY: &str = "privdistill.checkpoint";
/// Version of the state layout; bumped on incompatible changes.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version of this struct ([`CHECKPOINT_FORMAT`] when written).
    pub format: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// Completed passes over the data.
    pub epoch: u64,
    /// Position within the current epoch's data order (examples consumed).
    pub data_position: u64,
    /// The generator state, so noise and shuffles continue the same stream.
    pub rng: Rng,
    /// The run's configuration, free-form.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Other resumable state (schedules, optimizer scalars, EMA counters), by name.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for CheckpointMeta {
    fn default() -> Self {
        CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            step: 0,
            epoch: 0,
            data_position: 0,
            rng: Rng::new(0),
            config: serde_json::Value::Null,
            extra: BTreeMap::new(),
        }
    }
}

/// Named tensors and resume state.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Resume state, stored as JSON in the file's `__metadata__`.
    pub meta: CheckpointMeta,
    /// All tensors by full name (prefix included).
    pub tensors: BTreeMap<String, Tensor>,
    /// The file it was loaded from, for error messages.
    source: Option<PathBuf>,
}

impl Checkpoint {
    /// An empty checkpoint with the given state.
    pub fn new(meta: CheckpointMeta) -> Checkpoint {
        Checkpoint { meta, tensors: BTreeMap::new(), source: None }
    }

    /// Add (or replace) one tensor under its full name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Add every tensor of `tensors` under `prefix` + its name (e.g. prefix
    /// `"param."` or `"optim.exp_avg."`).
    pub fn insert_group<N: NamedTensor>(&mut self, prefix: &str, tensors: impl IntoIterator<Item = N>) {
        for n in tensors {
            self.tensors.insert(format!("{prefix}{}", n.name()), n.tensor().clone());
        }
    }

    /// The tensors whose names start with `prefix`, with the prefix removed, in name order.
    pub fn group<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Tensor)> + 'a {
        self.tensors
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .map_while(move |(name, t)| name.strip_prefix(prefix).map(|rest| (rest, t)))
    }

    /// The tensor of full name `name`, or an error listing close names.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            let msg = missing_tensor_message(name, self.tensors.keys().map(String::as_str));
            match &self.source {
                Some(path) => Error::file(path, msg),
                None => Error::msg(format!("checkpoint: {msg}")),
            }
        })
    }

    /// Write the checkpoint to `path` atomically: either the previous file
    /// stays or the complete new one replaces it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let state = serde_json::to_string(&self.meta).map_err(|e| Error::file(path, format!("cannot encode checkpoint state: {e}")))?;
        let metadata = HashMap::from([(CHECKPOINT_KEY.to_string(), state)]);
        save_safetensors(path, &self.tensors, Some(metadata))
    }

    /// Load a checkpoint written by [`Checkpoint::save`]. Tensors are mapped
    /// from the file (bit-exact, read lazily).
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let file = SafeTensorsFile::open(path)?;
        let meta = meta_of(&file)?;
        let tensors = file.get_all()?.into_iter().collect();
        Ok(Checkpoint { meta, tensors, source: Some(file.path().to_path_buf()) })
    }

    /// Only the state of the checkpoint at `path` (its header is all that is read).
    pub fn load_meta(path: impl AsRef<Path>) -> Result<CheckpointMeta> {
        meta_of(&SafeTensorsFile::open(path)?)
    }
}

fn meta_of(file: &SafeTensorsFile) -> Result<CheckpointMeta> {
    let path = file.path();
    let state = file.metadata().get(CHECKPOINT_KEY).ok_or_else(|| {
        Error::file(
            path,
            format!("not a privdistill checkpoint: its __metadata__ has no {CHECKPOINT_KEY:?} entry (checkpoints are written by Checkpoint::save)"),
        )
    })?;
    let meta: CheckpointMeta = serde_json::from_str(state)
        .map_err(|e| Error::file(path, format!("checkpoint state under __metadata__ {CHECKPOINT_KEY:?} is unreadable: {e}")))?;
    if meta.format > CHECKPOINT_FORMAT {
        return Err(Error::file(
            path,
            format!(
                "checkpoint format {} is newer than this privdistill understands ({CHECKPOINT_FORMAT}) — use a newer privdistill to resume it",
                meta.format
            ),
        ));
    }
    Ok(meta)
}

//! The parameter store: every parameter and buffer of a model, keyed by the
//! dotted name PyTorch's `state_dict()` gives it, so that a checkpoint written
//! by diffusers or transformers loads by name and ours loads there.
//!
//! Layers create their tensors through a [`ParamPath`], which spells the name
//! the way the module tree does: `vs.pp("down_blocks").pp(0).pp("resnets")`
//! hands out `down_blocks.0.resnets.<leaf>`.

use crate::autograd::no_grad;
use crate::nn::init::Init;
use crate::{DType, Device, Error, Result, Rng, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What an entry of the store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A learnable parameter. `trainable` selects it for the optimizer.
    Param {
        /// Whether the optimizer updates it.
        trainable: bool,
    },
    /// State saved with the model but not learned by gradient descent
    /// (BatchNorm's running statistics and batch counter).
    Buffer,
}

/// One parameter of the store, as [`ParamStore::iter`] lists it.
#[derive(Clone, Debug)]
pub struct NamedParam {
    /// The `state_dict` name.
    pub name: String,
    /// The tensor the layers compute with (a variable when it records gradients).
    pub tensor: Tensor,
    /// Whether the optimizer updates it.
    pub trainable: bool,
}

struct Entry {
    name: String,
    tensor: Tensor,
    kind: EntryKind,
}

struct StoreInner {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    rng: Rng,
}

/// Parameters and buffers of a model in creation order, shared by every
/// [`ParamPath`] cut from it (cloning the store clones a handle).
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<StoreInner>>,
    dtype: DType,
    device: Device,
    source: Option<Arc<ParamSource>>,
}

/// Where [`ParamStore::with_source`] takes a parameter from: `Some(tensor)` by name, given the shape the layer wants.
type ParamSource = dyn Fn(&str, &[usize]) -> Result<Option<Tensor>> + Send + Sync;

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        write!(f, "ParamStore[{} entries, {:?}, {:?}]", inner.entries.len(), self.dtype, self.device)
    }
}

/// Whether `name` is `prefix` itself or lies below it (`prefix.` …); the empty prefix holds everything.
fn under_prefix(name: &str, prefix: &str) -> bool {
    prefix.is_empty() || name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

impl ParamStore {
    /// An empty store whose parameters get `dtype` on `device`, initialised
    /// from the random stream of `seed` in creation order.
    pub fn new(dtype: DType, device: Device, seed: u64) -> ParamStore {
        let inner = StoreInner { entries: Vec::new(), index: HashMap::new(), rng: Rng::new(seed) };
        ParamStore { inner: Arc::new(Mutex::new(inner)), dtype, device, source: None }
    }

    /// A store whose parameters, as layers create them, are the tensors
    /// `source(name, shape)` returns, adopted as they are: tensors of a
    /// memory-mapped [`crate::io::safetensors::SafeTensorsFile`] stay mapped
    /// (no copy of the weights, pages read when first used). A tensor of
    /// another dtype or device is converted; a parameter the source does not
    /// have (`None`) is initialised from the random stream of `seed`. Mapped
    /// storage is read-only: build the model under [`ParamPath::frozen`], or
    /// expect an in-place update (an optimizer step) to fail. Buffers are
    /// copied as in [`ParamPath::buffer`]; load them with [`ParamStore::load_matching`].
    pub fn with_source(
        dtype: DType,
        device: Device,
        seed: u64,
        source: impl Fn(&str, &[usize]) -> Result<Option<Tensor>> + Send + Sync + 'static,
    ) -> ParamStore {
        ParamStore { source: Some(Arc::new(source)), ..ParamStore::new(dtype, device, seed) }
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner.lock().expect("parameter store lock poisoned")
    }

    /// The dtype new parameters get.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device new parameters live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The path with no prefix.
    pub fn root(&self) -> ParamPath {
        ParamPath { store: self.clone(), prefix: Vec::new(), trainable: true }
    }

    /// `root().pp(segment)`.
    pub fn pp(&self, segment: impl ToString) -> ParamPath {
        self.root().pp(segment)
    }

    fn insert(&self, name: String, tensor: Tensor, kind: EntryKind) -> Result<Tensor> {
        let mut inner = self.lock();
        if inner.index.contains_key(&name) {
            return Err(Error::msg(format!("parameter store: `{name}` is created twice (two layers share one path?)")));
        }
        let at = inner.entries.len();
        inner.index.insert(name.clone(), at);
        inner.entries.push(Entry { name, tensor: tensor.clone(), kind });
        Ok(tensor)
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        let inner = self.lock();
        let e = &inner.entries[*inner.index.get(name)?];
        matches!(e.kind, EntryKind::Param { .. }).then(|| e.tensor.clone())
    }

    /// The buffer called `name`.
    pub fn get_buffer(&self, name: &str) -> Option<Tensor> {
        let inner = self.lock();
        let e = &inner.entries[*inner.index.get(name)?];
        (e.kind == EntryKind::Buffer).then(|| e.tensor.clone())
    }

    /// What `name` is, if the store has it.
    pub fn kind(&self, name: &str) -> Option<EntryKind> {
        let inner = self.lock();
        inner.index.get(name).map(|&i| inner.entries[i].kind)
    }

    /// The parameters in creation order (a snapshot: entries created later are not seen).
    pub fn iter(&self) -> std::vec::IntoIter<NamedParam> {
        let inner = self.lock();
        let params: Vec<NamedParam> = inner
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::Param { trainable } => Some(NamedParam { name: e.name.clone(), tensor: e.tensor.clone(), trainable }),
                EntryKind::Buffer => None,
            })
            .collect();
        params.into_iter()
    }

    /// Every parameter, trainable or not, by name (like `module.named_parameters()`).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.iter().map(|p| (p.name, p.tensor)).collect()
    }

    /// The parameters the optimizer should update.
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        self.iter().filter(|p| p.trainable).map(|p| (p.name, p.tensor)).collect()
    }

    /// The buffers by name, in creation order.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let inner = self.lock();
        inner.entries.iter().filter(|e| e.kind == EntryKind::Buffer).map(|e| (e.name.clone(), e.tensor.clone())).collect()
    }

    /// Parameters and buffers by their `state_dict` names, in creation order:
    /// what a checkpoint saves.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let inner = self.lock();
        inner.entries.iter().map(|e| (e.name.clone(), e.tensor.clone())).collect()
    }

    /// Number of parameter elements (buffers excluded).
    pub fn num_parameters(&self) -> usize {
        self.iter().map(|p| p.tensor.numel()).sum()
    }

    /// Mark the parameters at or below `prefix` (`""` = all) as updated by the
    /// optimizer or not, and return how many there are.
    ///
    /// Freezing here only removes them from [`ParamStore::trainable_parameters`]:
    /// backward still computes their gradients. A parameter created under
    /// [`ParamPath::frozen`] records none, and cannot be made trainable later.
    pub fn set_trainable(&self, prefix: &str, trainable: bool) -> Result<usize> {
        let mut inner = self.lock();
        let mut count = 0;
        for e in inner.entries.iter_mut().filter(|e| under_prefix(&e.name, prefix)) {
            if let EntryKind::Param { trainable: t } = &mut e.kind {
                if trainable && !e.tensor.requires_grad() {
                    return Err(Error::msg(format!(
                        "parameter `{}` was created frozen and records no gradients; create it through a trainable path to train it",
                        e.name
                    )));
                }
                *t = trainable;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Overwrite every parameter and buffer with the tensor `source(name, shape)`
    /// returns (cast to the entry's dtype and device). Fails on the first entry
    /// the source cannot provide or whose shape differs, naming it.
    pub fn load_from(&self, source: impl Fn(&str, &[usize]) -> Result<Tensor>) -> Result<()> {
        let missing = self.load_matching(|name, shape| source(name, shape).map(Some))?;
        debug_assert!(missing.is_empty());
        Ok(())
    }

    /// Like [`ParamStore::load_from`], but the source may answer `None` for an
    /// entry, which then keeps its value; returns the names left untouched.
    pub fn load_matching(&self, source: impl Fn(&str, &[usize]) -> Result<Option<Tensor>>) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        // A snapshot, so the source may itself look into the store.
        for (name, target) in self.state_dict() {
            let provided = source(&name, target.shape()).map_err(|e| Error::msg(format!("loading `{name}`: {e}")))?;
            match provided {
                Some(src) => copy_into(&name, &target, &src)?,
                None => missing.push(name),
            }
        }
        Ok(missing)
    }
}

/// Copy `src` into the parameter `target` in place, after checking its shape.
pub(crate) fn copy_into(name: &str, target: &Tensor, src: &Tensor) -> Result<()> {
    if src.shape() != target.shape() {
        return Err(Error::msg(format!(
            "`{name}`: the source holds shape {:?} but the model expects {:?} (is the config the checkpoint's?)",
            src.shape(),
            target.shape()
        )));
    }
    no_grad(|| {
        let src = src.to_dtype(target.dtype())?.to_device(target.device())?;
        target.assign(&src)
    })
    .map_err(|e| Error::msg(format!("`{name}`: {e}")))
}

/// A position in the module tree: the prefix new parameters get.
#[derive(Clone)]
pub struct ParamPath {
    store: ParamStore,
    prefix: Vec<String>,
    trainable: bool,
}

impl std::fmt::Debug for ParamPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParamPath[{:?}{}]", self.prefix.join("."), if self.trainable { "" } else { ", frozen" })
    }
}

impl ParamPath {
    /// The path one level down: `segment` is a field name or a list index.
    pub fn pp(&self, segment: impl ToString) -> ParamPath {
        let mut prefix = self.prefix.clone();
        prefix.push(segment.to_string());
        ParamPath { store: self.store.clone(), prefix, trainable: self.trainable }
    }

    /// The same path, but parameters created through it (and below it) are
    /// plain tensors that record no gradients and that the optimizer skips:
    /// for the frozen VAE and text encoder.
    pub fn frozen(&self) -> ParamPath {
        ParamPath { store: self.store.clone(), prefix: self.prefix.clone(), trainable: false }
    }

    /// Whether parameters created here are trainable.
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// The store this path creates into.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The dotted prefix (empty at the root).
    pub fn prefix(&self) -> String {
        self.prefix.join(".")
    }

    /// The full name of `leaf` under this path.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix())
        }
    }

    /// Create the parameter `leaf` with `shape`, initialised by `init` from the store's random stream.
    pub fn var(&self, leaf: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let name = self.name(leaf);
        if let Some(source) = &self.store.source {
            if let Some(t) = source(&name, shape).map_err(|e| Error::msg(format!("loading `{name}`: {e}")))? {
                if t.shape() != shape {
                    return Err(Error::msg(format!(
                        "`{name}`: the source holds shape {:?} but the model expects {shape:?} (is the config the checkpoint's?)",
                        t.shape()
                    )));
                }
                let t = no_grad(|| t.detach().to_dtype(self.store.dtype)?.to_device(self.store.device))?;
                let tensor = if self.trainable { t.to_variable() } else { t };
                return self.store.insert(name, tensor, EntryKind::Param { trainable: self.trainable });
            }
        }
        let value = {
            let mut inner = self.store.lock();
            init.tensor(shape, self.store.dtype, self.store.device, &mut inner.rng)
        }
        .map_err(|e| Error::msg(format!("initialising `{name}`: {e}")))?;
        let tensor = if self.trainable { value.to_variable() } else { value };
        self.store.insert(name, tensor, EntryKind::Param { trainable: self.trainable })
    }

    /// Register the buffer `leaf` with its initial value (moved to the store's
    /// device, dtype kept: `num_batches_tracked` is i64 as in PyTorch).
    pub fn buffer(&self, leaf: &str, initial: Tensor) -> Result<Tensor> {
        // A private copy: a buffer is updated in place and must not alias the caller's tensor.
        let value = no_grad(|| copy_tensor(&initial.to_device(self.store.device)?))?;
        self.store.insert(self.name(leaf), value, EntryKind::Buffer)
    }
}

/// A fresh contiguous copy of `t` with its own storage, for any dtype.
fn copy_tensor(t: &Tensor) -> Result<Tensor> {
    let copy = Tensor::zeros(t.shape(), t.dtype(), t.device())?;
    copy.assign(t)?;
    Ok(copy)
}

//! The image features FID, KID and precision/recall are computed on: the
//! globally pooled 1024-d features of torchxrayvision's chest X-ray
//! DenseNet-121 (`densenet121-res224-all`, converted to safetensors by
//! `tests/fixtures/convert_torchxrayvision.py`) under its input contract (grey,
//! [-1024, 1024], 224×224), or — offline, when no such weights are given — the
//! pooled features of our own DenseNet classifier trained on the real training
//! split, under that classifier's contract. The source is carried along so
//! the report can say which one it used.

use crate::data::{BatchLoader, Contract, LoaderConfig, Manifest};
use crate::eval::fid::Features;
use crate::io::safetensors::SafeTensorsFile;
use crate::models::densenet::{DenseNet, DenseNetConfig};
use crate::nn::ParamStore;
use crate::{no_grad, DType, Device, Error, Result};
use std::path::Path;
use std::sync::Arc;

/// torchxrayvision's `densenet121-res224-all` outputs 18 pathologies.
pub const TORCHXRAYVISION_OUTPUTS: usize = 18;

/// A DenseNet whose pooled features describe images, with the input contract they need.
pub struct FeatureExtractor {
    net: DenseNet,
    // Keeps the parameters alive for the network.
    _store: ParamStore,
    contract: Contract,
    /// Where the features come from, in words (for the report).
    pub source: String,
}

/// Load every tensor of `store` from a safetensors file by name; extra tensors in the file (torchxrayvision's
/// `op_threshs`) are ignored, missing ones (other than BatchNorm batch counters) are an error naming the file.
pub fn load_store(store: &ParamStore, path: &Path) -> Result<()> {
    let file = SafeTensorsFile::open(path)?;
    let missing =
        store.load_matching(
            |name, shape| {
                if file.contains(name) {
                    file.get_checked(name, shape, file.info(name)?.0).map(Some)
                } else {
                    Ok(None)
                }
            },
        )?;
    let missing: Vec<&String> = missing.iter().filter(|n| !n.ends_with("num_batches_tracked")).collect();
    if let Some(first) = missing.first() {
        return Err(Error::file(
            path,
            format!("{} tensors the network needs are missing, e.g. `{first}` — is this file for this architecture?", missing.len()),
        ));
    }
    Ok(())
}

impl FeatureExtractor {
    /// torchxrayvision's DenseNet-121 from converted weights (`config` overrides the architecture, for tests
    /// with a small network of the same family).
    pub fn torchxrayvision(weights: &Path, config: Option<DenseNetConfig>) -> Result<FeatureExtractor> {
        let config = config.unwrap_or_else(|| DenseNetConfig::densenet121(TORCHXRAYVISION_OUTPUTS, 1));
        if config.in_channels != 1 {
            return Err(Error::file(weights, "torchxrayvision networks take one grey channel (in_channels = 1)"));
        }
        let store = ParamStore::new(DType::F32, Device::Cpu, 0);
        let net = DenseNet::new(&store.root().frozen(), &config)?;
        load_store(&store, weights)?;
        Ok(FeatureExtractor {
            net,
            _store: store,
            contract: Contract::Fid,
            source: format!("torchxrayvision DenseNet-121 features ({}), grey 224×224 in [-1024, 1024]", weights.display()),
        })
    }

    /// A network already built (our classifier), with its contract and a description.
    pub fn from_network(net: DenseNet, store: ParamStore, contract: Contract, source: impl Into<String>) -> FeatureExtractor {
        FeatureExtractor { net, _store: store, contract, source: source.into() }
    }

    /// The input contract.
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// Width of the features.
    pub fn dim(&self) -> usize {
        self.net.config().feature_dim()
    }

    /// Pooled features of the records `indices` of `manifest` (evaluation mode, no augmentation).
    pub fn extract(&self, manifest: &Arc<Manifest>, indices: Vec<usize>, batch_size: usize, workers: usize) -> Result<Features> {
        let n = indices.len();
        let mut cfg = LoaderConfig::new(batch_size.max(1), self.contract);
        cfg.workers = workers.max(1);
        let loader = BatchLoader::new(manifest.clone(), indices, cfg).map_err(|e| Error::file(&manifest.path, e.to_string()))?;
        let mut data = Vec::with_capacity(n * self.dim());
        for batch in loader {
            let batch = batch.map_err(|e| Error::msg(e.to_string()))?;
            let f = no_grad(|| self.net.features(&batch.images, false))?;
            data.extend(f.to_vec_f32()?.into_iter().map(f64::from));
        }
        Features::new(n, self.dim(), data)
    }
}

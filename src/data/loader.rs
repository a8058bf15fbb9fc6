//! A batch loader that decodes and preprocesses on worker threads, a bounded
//! number of batches ahead of the consumer, so training compute does not wait
//! on image decoding.
//!
//! Workers claim batch numbers in order; a worker does not start batch `k`
//! until the consumer has taken batch `k - window` (window = prefetch), which
//! bounds memory. Batches come out in order, and each sample's augmentation
//! draws from `Rng::new(seed).fork(epoch).fork(record index)`, so the output is
//! the same whatever the worker count.

use super::augment::Augment;
use super::contract::Contract;
use super::error::{DataError, DataResult};
use super::manifest::Manifest;
use crate::{Rng, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How to batch a dataset.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// The consumer's input contract.
    pub contract: Contract,
    /// Training augmentations; `None` for evaluation.
    pub augment: Option<Augment>,
    /// Shuffle the order each epoch (seeded).
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// Batches made ahead of the consumer.
    pub prefetch: usize,
    /// Drop a final batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl LoaderConfig {
    /// Evaluation defaults: no shuffle, no augmentation, all cores, 2 batches ahead.
    pub fn new(batch_size: usize, contract: Contract) -> LoaderConfig {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LoaderConfig { batch_size, contract, augment: None, shuffle: false, seed: 0, epoch: 0, workers, prefetch: 2, drop_last: false }
    }
}

/// One batch: `[N, C, H, W]` images and the manifest indices they came from.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub indices: Vec<usize>,
}

/// Makes one sample into `out` (`C × H × W` values): decode, augment or resize + centre crop, normalise.
pub fn load_sample_into(
    manifest: &Manifest,
    index: usize,
    contract: &Contract,
    augment: Option<&Augment>,
    mut rng: Rng,
    out: &mut [f32],
) -> DataResult<()> {
    let img = manifest.load_image(index)?;
    let size = contract.size();
    let square = match augment {
        Some(aug) => aug.apply(&img, size, &mut rng),
        None if img.width == size && img.height == size => img,
        None => img.resize_center_crop(size),
    };
    contract.normalise_into(&square, out);
    Ok(())
}

/// One batch `[N, C, H, W]`, filled sample by sample in place.
fn make_batch(manifest: &Manifest, indices: Vec<usize>, cfg: &LoaderConfig, epoch_rng: Rng) -> DataResult<Batch> {
    let (c, s) = (cfg.contract.channels(), cfg.contract.size());
    let per = c * s * s;
    let mut data = vec![0f32; indices.len() * per];
    for (&i, out) in indices.iter().zip(data.chunks_exact_mut(per)) {
        load_sample_into(manifest, i, &cfg.contract, cfg.augment.as_ref(), epoch_rng.fork(i as u64), out)?;
    }
    let images = Tensor::from_vec(data, &[indices.len(), c, s, s])?;
    Ok(Batch { images, indices })
}

struct Shared {
    stop: AtomicBool,
    next_claim: AtomicUsize,
    consumed: Mutex<usize>,
    progressed: Condvar,
}

/// Iterates over batches (in order) made by worker threads.
pub struct BatchLoader {
    rx: Option<Receiver<(usize, DataResult<Batch>)>>,
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, DataResult<Batch>>,
    next: usize,
    n_batches: usize,
}

impl BatchLoader {
    /// Starts workers over `subset`, a list of manifest indices (`(0..manifest.len()).collect()` for all).
    pub fn new(manifest: Arc<Manifest>, subset: Vec<usize>, cfg: LoaderConfig) -> DataResult<BatchLoader> {
        cfg.contract.validate()?;
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if let Some(&bad) = subset.iter().find(|&&i| i >= manifest.len()) {
            return Err(DataError::Invalid(format!("index {bad} is past the manifest's {} records", manifest.len())));
        }
        let mut order = subset;
        let epoch_rng = Rng::new(cfg.seed).fork(cfg.epoch);
        if cfg.shuffle {
            epoch_rng.fork(u64::MAX).shuffle(&mut order);
        }
        let n_batches = if cfg.drop_last { order.len() / cfg.batch_size } else { order.len().div_ceil(cfg.batch_size) };
        let window = cfg.prefetch.max(1);
        let (tx, rx) = sync_channel(window);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            next_claim: AtomicUsize::new(0),
            consumed: Mutex::new(0),
            progressed: Condvar::new(),
        });
        let order = Arc::new(order);
        let handles = (0..cfg.workers.max(1).min(n_batches.max(1)))
            .map(|_| {
                let (tx, shared, order, manifest, cfg) = (tx.clone(), shared.clone(), order.clone(), manifest.clone(), cfg.clone());
                std::thread::spawn(move || loop {
                    let k = shared.next_claim.fetch_add(1, Ordering::SeqCst);
                    if k >= n_batches || shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    {
                        let mut consumed = shared.consumed.lock().expect("loader lock poisoned");
                        while k >= *consumed + window && !shared.stop.load(Ordering::SeqCst) {
                            consumed = shared.progressed.wait(consumed).expect("loader lock poisoned");
                        }
                    }
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let indices: Vec<usize> = order[k * cfg.batch_size..((k + 1) * cfg.batch_size).min(order.len())].to_vec();
                    let batch = make_batch(&manifest, indices, &cfg, epoch_rng);
                    if tx.send((k, batch)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Ok(BatchLoader { rx: Some(rx), shared, handles, pending: BTreeMap::new(), next: 0, n_batches })
    }

    /// Number of batches this epoch.
    pub fn n_batches(&self) -> usize {
        self.n_batches
    }
}

impl Iterator for BatchLoader {
    type Item = DataResult<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.n_batches {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            match self.rx.as_ref()?.recv() {
                Ok((k, b)) => {
                    self.pending.insert(k, b);
                }
                Err(_) => return Some(Err(DataError::Invalid("data loader workers stopped early".into()))),
            }
        }
        let batch = self.pending.remove(&self.next);
        self.next += 1;
        *self.shared.consumed.lock().expect("loader lock poisoned") = self.next;
        self.shared.progressed.notify_all();
        batch
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        {
            // Under the lock, so a worker between its stop check and its wait cannot miss the wake-up.
            let _guard = self.shared.consumed.lock();
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.progressed.notify_all();
        // Dropping the receiver unblocks any worker waiting to send.
        self.rx.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

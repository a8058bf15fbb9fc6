//! Model throughput beside PyTorch, measured in the same run.
//!
//! Workloads (random weights, f32, CPU): the SD-1.5 UNet forward at batch 1
//! on a 64×64 latent; the demo UNet forward, and forward+backward+AdamW, at
//! batch 8; ResNet-50 and DenseNet-121 forward at batch 8, 224². Each is timed
//! by criterion, then our time is printed beside the PyTorch peer
//! (benches/peers/models.py) run on the same threads, with the ratio: the
//! fastest run of each over a few alternating rounds (see `report`).
//! The peer needs a Python with torch, diffusers and torchvision: set
//! PRIVDISTILL_PEER_PYTHON, or have `.venv/bin/python`; without one the
//! ratio is skipped with the reason printed. PRIVDISTILL_BENCH_SKIP_SD=1
//! skips the (slow, 3.4 GB) SD-1.5 workload; PRIVDISTILL_BENCH_ONLY=a,b runs
//! only the named workloads (demo_unet_fwd, demo_unet_train, resnet50,
//! densenet121, sd15_unet), e.g. under a profiler.
//!
//! The SD-1.5 weights are written once to
//! target/bench-data/sd15-unet-random.safetensors and then loaded zero-copy
//! (every parameter stays a view of the memory map; checked), and the peak
//! resident memory of the run is printed beside the weights' size.

use criterion::{criterion_group, Criterion};
use privdistill::io::safetensors::{save_safetensors, SafeTensorsFile};
use privdistill::models::densenet::{DenseNet, DenseNetConfig};
use privdistill::models::resnet::{ResNet, ResNetConfig};
use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
use privdistill::nn::{AdamW, AdamWConfig, Optimizer, ParamStore};
use privdistill::tensor::CpuStorage;
use privdistill::{no_grad, DType, Device, Rng, Tensor};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use privdistill::backend::cpu::host_alloc::{CachingAllocator, DEFAULT_CAPACITY};

// Freed tensor-sized blocks are reused instead of unmapped and faulted in again.
#[global_allocator]
static ALLOCATOR: CachingAllocator = CachingAllocator::new(DEFAULT_CAPACITY);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Median seconds of `n` runs of `f` after one warm-up.
/// Our fastest of `n` runs (after one warm-up).
fn best_secs(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The peer's fastest of `iters` runs (after its warm-up) and its torch
/// version, or why there is none.
fn peer(workload: &str, iters: usize) -> Result<(f64, String), String> {
    let python = std::env::var("PRIVDISTILL_PEER_PYTHON").map(PathBuf::from).unwrap_or_else(|_| root().join(".venv/bin/python"));
    if !python.exists() {
        return Err(format!("no peer Python at {} (set PRIVDISTILL_PEER_PYTHON)", python.display()));
    }
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(&python)
        .arg(root().join("benches/peers/models.py"))
        .args([workload, "--threads", &threads, "--iters", &iters.to_string()])
        .output()
        .map_err(|e| format!("running the peer: {e}"))?;
    if !out.status.success() {
        return Err(format!("peer failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("peer output {line:?}: {e}"))?;
    Ok((v["min_seconds"].as_f64().ok_or("no min_seconds")?, v["torch"].as_str().unwrap_or("?").to_string()))
}

/// Print our time beside the peer's and the ratio. The two alternate for
/// `rounds` rounds of `iters` runs each and each side's fastest run counts:
/// this machine's neighbours slow either side by 20–40 % for minutes at a
/// time, and a slowdown only ever adds time, so best-of over interleaved
/// rounds compares the two under the same conditions.
fn report(workload: &str, rounds: usize, iters: usize, mut ours: impl FnMut()) {
    let (mut best_ours, mut best_peer, mut version) = (f64::INFINITY, f64::INFINITY, String::new());
    for _ in 0..rounds {
        best_ours = best_ours.min(best_secs(iters, &mut ours));
        match peer(workload, iters) {
            Ok((theirs, v)) => (best_peer, version) = (best_peer.min(theirs), v),
            Err(why) => {
                println!("{workload}: ours {best_ours:.4} s; peer skipped: {why}");
                return;
            }
        }
    }
    println!(
        "{workload}: ours {best_ours:.4} s, PyTorch {version} {best_peer:.4} s (fastest of {rounds} alternating rounds of {iters}), \
         speed ratio {:.2}x ({} threads)",
        best_peer / best_ours,
        rayon::current_num_threads()
    );
}

/// A memory figure of /proc/self/status (`VmRSS:`, `VmHWM:`) in MB.
fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The SD-1.5 UNet with random weights loaded zero-copy from a safetensors
/// file in target/ (written once, by a child process so that its 3.4 GB of
/// generated weights never count in this process's peak memory). Panics if
/// any parameter's storage is not the memory map. Returns the model, the
/// weights' size in bytes and the store.
fn sd15_mapped() -> (UNet2DConditionModel, u64, ParamStore) {
    let path = root().join("target/bench-data/sd15-unet-random.safetensors");
    if !path.exists() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("PRIVDISTILL_BENCH_WRITE_SD15", &path)
            .status()
            .expect("running the weight writer");
        assert!(status.success(), "writing {}", path.display());
    }
    let file = std::sync::Arc::new(SafeTensorsFile::open(&path).unwrap());
    let source = file.clone();
    let store =
        ParamStore::with_source(
            DType::F32,
            Device::Cpu,
            0,
            move |name, _| {
                if source.contains(name) {
                    source.get(name).map(Some)
                } else {
                    Ok(None)
                }
            },
        );
    let sd = UNet2DConditionModel::new(&store.root().frozen(), &UNetConfig::sd15()).unwrap();
    for (name, t) in store.named_parameters() {
        let storage = t.storage();
        assert!(matches!(storage.cpu(), Some(CpuStorage::Mapped(_))), "`{name}` was copied on load, not mapped");
    }
    (sd, std::fs::metadata(&path).unwrap().len(), store)
}

/// In the child process of [`sd15_mapped`]: write random SD-1.5 weights to `path`.
fn write_sd15_weights(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    UNet2DConditionModel::new(&store.root(), &UNetConfig::sd15()).unwrap();
    save_safetensors(path, store.state_dict(), None).unwrap();
}

fn demo_unet() -> (ParamStore, UNet2DConditionModel) {
    let cfg = UNetConfig::from_json(&std::fs::read_to_string(root().join("weights/demo/unet/config.json")).unwrap()).unwrap();
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let unet = UNet2DConditionModel::new(&store.root(), &cfg).unwrap();
    (store, unet)
}

/// Whether `workload` runs: all do unless PRIVDISTILL_BENCH_ONLY names a
/// comma-separated subset (for profiling one workload at a time).
fn selected(workload: &str) -> bool {
    std::env::var("PRIVDISTILL_BENCH_ONLY").map_or(true, |only| only.split(',').any(|w| w.trim() == workload))
}

fn bench_models(c: &mut Criterion) {
    let mut g = c.benchmark_group("models");
    g.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(2));

    // Demo UNet, batch 8.
    let (store, unet) = demo_unet();
    let s = unet.config().sample_size;
    let (x, ctx) = (randn(&[8, 4, s, s], 1), randn(&[8, 77, unet.config().cross_attention_dim], 2));
    let ts: Vec<f64> = (0..8).map(|i| (i * 123 % 1000) as f64).collect();
    if selected("demo_unet_fwd") {
        g.bench_function("demo_unet_fwd_b8", |b| b.iter(|| no_grad(|| unet.forward(&x, &ts, &ctx).unwrap())));
        report("demo_unet_fwd", 3, 5, || drop(no_grad(|| unet.forward(&x, &ts, &ctx).unwrap())));
    }
    if selected("demo_unet_train") {
        let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig { lr: 1e-4, ..Default::default() }).unwrap();
        let mut train_step = || {
            let loss = unet.forward(&x, &ts, &ctx).unwrap().sub(&x).unwrap().square().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
        };
        g.bench_function("demo_unet_train_step_b8", |b| b.iter(&mut train_step));
        report("demo_unet_train", 3, 5, &mut train_step);
    }

    // ResNet-50 and DenseNet-121, batch 8, 224².
    let img = randn(&[8, 3, 224, 224], 3);
    if selected("resnet50") {
        let store = ParamStore::new(DType::F32, Device::Cpu, 0);
        let resnet = ResNet::new(&store.root(), &ResNetConfig::resnet50(1000)).unwrap();
        g.bench_function("resnet50_fwd_b8", |b| b.iter(|| no_grad(|| resnet.forward(&img, false).unwrap().logits)));
        report("resnet50", 3, 3, || drop(no_grad(|| resnet.forward(&img, false).unwrap())));
    }
    if selected("densenet121") {
        let store = ParamStore::new(DType::F32, Device::Cpu, 0);
        let densenet = DenseNet::new(&store.root(), &DenseNetConfig::densenet121(1000, 3)).unwrap();
        g.bench_function("densenet121_fwd_b8", |b| b.iter(|| no_grad(|| densenet.forward(&img, false).unwrap().logits)));
        report("densenet121", 3, 3, || drop(no_grad(|| densenet.forward(&img, false).unwrap())));
    }

    // SD-1.5 UNet, batch 1, 64×64 latent, its weights memory-mapped.
    if std::env::var("PRIVDISTILL_BENCH_SKIP_SD").is_err() && selected("sd15_unet") {
        let (sd, weights_bytes, store) = sd15_mapped();
        let rss_after_load = rss_mb("VmRSS:");
        let (x, ctx) = (randn(&[1, 4, 64, 64], 4), randn(&[1, 77, 768], 5));
        drop(no_grad(|| sd.forward(&x, &[500.0], &ctx).unwrap()));
        println!(
            "sd15_unet: {} parameters, weights {:.0} MB memory-mapped; resident after load {rss_after_load:.0} MB, \
             peak resident memory {:.0} MB (mapped weight pages included)",
            store.num_parameters(),
            weights_bytes as f64 / (1 << 20) as f64,
            rss_mb("VmHWM:")
        );
        report("sd15_unet", 2, 2, || drop(no_grad(|| sd.forward(&x, &[500.0], &ctx).unwrap())));
        g.sample_size(10).measurement_time(Duration::from_secs(1));
        g.bench_function("sd15_unet_fwd_b1_64x64", |b| b.iter(|| no_grad(|| sd.forward(&x, &[500.0], &ctx).unwrap())));
    }
    g.finish();
}

criterion_group!(benches, bench_models);

fn main() {
    if let Some(path) = std::env::var_os("PRIVDISTILL_BENCH_WRITE_SD15") {
        write_sd15_weights(std::path::Path::new(&path));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

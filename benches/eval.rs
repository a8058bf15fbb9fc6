//! Evaluation throughput beside PyTorch, measured in the same run.
//!
//! Workloads (random weights, f32, CPU, grey inputs in [-1024, 1024]):
//! - `fid_features_densenet121`: FID features of torchxrayvision's
//!   DenseNet-121 (1 channel, 18 outputs), batch 16 at 224², forward only;
//! - `fid_features_demo`: the demo classifier's features (DenseNet blocks
//!   2-2-2-2, growth 12), batch 32 at 64²;
//! - `classifier_train_densenet121`: one training step of the paper's
//!   classifier (forward, BCE, backward, AdamW), batch 8 at 224²;
//! - `classifier_train_demo`: the same for the demo classifier, batch 32 at 64²;
//! - `frechet_2048x1024`: the Fréchet distance of two sets of 2048 1024-d
//!   feature vectors (means, covariances, matrix square root), against
//!   pytorch-fid's numpy/scipy `sqrtm` route.
//!
//! Each prints images/s (or seconds) for us and for the peer
//! (benches/peers/eval.py) run on the same threads. The peer needs a Python
//! with torch, torchvision and scipy: set PRIVDISTILL_PEER_PYTHON or have
//! `.venv/bin/python`; without one the comparison is skipped with the reason.

use criterion::{criterion_group, criterion_main, Criterion};
use privdistill::eval::classifier::ClassifierConfig;
use privdistill::eval::fid::{fid, Features};
use privdistill::models::densenet::{DenseNet, DenseNetConfig};
use privdistill::nn::{AdamW, AdamWConfig, Optimizer, ParamStore};
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

fn pixels(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand(shape, -1024.0, 1024.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Median seconds of `n` runs of `f` after one warm-up.
fn median_secs(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The peer's median seconds and torch version, or why there is none.
fn peer(workload: &str, iters: usize) -> Result<(f64, String), String> {
    let python = std::env::var("PRIVDISTILL_PEER_PYTHON").map(PathBuf::from).unwrap_or_else(|_| root().join(".venv/bin/python"));
    if !python.exists() {
        return Err(format!("no peer Python at {} (set PRIVDISTILL_PEER_PYTHON)", python.display()));
    }
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(&python)
        .arg(root().join("benches/peers/eval.py"))
        .args([workload, "--threads", &threads, "--iters", &iters.to_string()])
        .output()
        .map_err(|e| format!("running the peer: {e}"))?;
    if !out.status.success() {
        return Err(format!("peer failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("peer output {line:?}: {e}"))?;
    Ok((v["seconds"].as_f64().ok_or("no seconds")?, v["torch"].as_str().unwrap_or("?").to_string()))
}

/// Print ours and the peer's throughput (`images` per call; 0 prints seconds only).
fn report(workload: &str, ours: f64, images: usize, iters: usize) {
    let rate = |s: f64| if images > 0 { format!("{:.1} images/s", images as f64 / s) } else { format!("{s:.3} s") };
    match peer(workload, iters) {
        Ok((theirs, version)) => println!(
            "{workload}: ours {} ({ours:.3} s), PyTorch {version} {} ({theirs:.3} s), speed ratio {:.2}x ({} threads)",
            rate(ours),
            rate(theirs),
            theirs / ours,
            rayon::current_num_threads()
        ),
        Err(why) => println!("{workload}: ours {}; peer skipped: {why}", rate(ours)),
    }
}

fn train_step(net: &DenseNet, opt: &mut AdamW, x: &Tensor, y: &Tensor) {
    let loss = net.forward(x, true).unwrap().logits.bce_with_logits(y, None).unwrap();
    let grads = loss.backward().unwrap();
    opt.step(&grads).unwrap();
}

fn bench_eval(c: &mut Criterion) {
    let mut g = c.benchmark_group("eval");
    g.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(2));

    // Demo feature network and classifier, 64².
    let demo_cfg = DenseNetConfig { num_classes: 3, ..ClassifierConfig::demo().densenet };
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let demo = DenseNet::new(&store.root(), &demo_cfg).unwrap();
    let x = pixels(&[32, 1, 64, 64], 1);
    g.bench_function("fid_features_demo_b32", |b| b.iter(|| no_grad(|| demo.features(&x, false).unwrap())));
    report("fid_features_demo", median_secs(5, || drop(no_grad(|| demo.features(&x, false).unwrap()))), 32, 5);
    let y = Tensor::from_vec((0..96).map(|i| f32::from(u8::from(i % 3 == 0))).collect::<Vec<f32>>(), &[32, 3]).unwrap();
    let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig { lr: 1e-3, ..Default::default() }).unwrap();
    g.bench_function("classifier_train_demo_b32", |b| b.iter(|| train_step(&demo, &mut opt, &x, &y)));
    report("classifier_train_demo", median_secs(5, || train_step(&demo, &mut opt, &x, &y)), 32, 5);

    // Paper-size networks, 224².
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let xrv = DenseNet::new(&store.root(), &DenseNetConfig::densenet121(18, 1)).unwrap();
    let x = pixels(&[16, 1, 224, 224], 3);
    report("fid_features_densenet121", median_secs(3, || drop(no_grad(|| xrv.features(&x, false).unwrap()))), 16, 3);
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let clf = DenseNet::new(&store.root(), &DenseNetConfig::densenet121(5, 1)).unwrap();
    let (x, y) = (pixels(&[8, 1, 224, 224], 4), Tensor::ones(&[8, 5], DType::F32, Device::Cpu).unwrap().mul_scalar(0.5).unwrap());
    let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig { lr: 1e-4, ..Default::default() }).unwrap();
    report("classifier_train_densenet121", median_secs(2, || train_step(&clf, &mut opt, &x, &y)), 8, 2);

    // Fréchet distance of two 2048 × 1024 feature sets.
    let mut rng = Rng::new(5);
    let a = Features::new(2048, 1024, rng.normal_vec(2048 * 1024)).unwrap();
    let b = Features::new(2048, 1024, rng.normal_vec(2048 * 1024).into_iter().map(|v| 0.9 * v + 0.1).collect()).unwrap();
    report(
        "frechet_2048x1024",
        median_secs(2, || {
            std::hint::black_box(fid(&a, &b).unwrap());
        }),
        0,
        2,
    );
    g.finish();
}

criterion_group!(benches, bench_eval);
criterion_main!(benches);

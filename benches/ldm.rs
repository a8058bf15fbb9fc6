//! Latent diffusion throughput beside diffusers, measured in the same run.
//!
//! Workloads (the demo-size LDM of weights/demo, random weights, f32, CPU):
//! - `ldm_train`: one training step at batch 16 on cached latents and text
//!   states (the frozen encoders run once, before training): noise at random
//!   timesteps, the UNet forward, ε-MSE, backward, AdamW — reported as
//!   training images per second;
//! - `ldm_sample`: 16 images by DDIM in 20 steps with classifier-free guidance
//!   (the UNet at batch 32) and the VAE decode — reported as seconds per image.
//!
//! The training step is timed by criterion; then our median of a few runs of
//! each workload (two for sampling, which takes seconds) is printed beside
//! the diffusers peer (benches/peers/ldm.py) on the same threads, with the
//! ratio. The peer needs a Python with torch and diffusers: set
//! PRIVDISTILL_PEER_PYTHON, or have `.venv/bin/python`; without one the ratio
//! is skipped with the reason printed.

use criterion::{criterion_group, criterion_main, Criterion};
use privdistill::diffusion::objective::{diffusion_loss, ObjectiveConfig};
use privdistill::diffusion::sampler::{Sampler, SamplerKind};
use privdistill::diffusion::schedule::{NoiseSchedule, SchedulerConfig};
use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
use privdistill::models::vae::{AutoencoderKL, VaeConfig};
use privdistill::nn::{AdamW, AdamWConfig, Optimizer, ParamStore};
use privdistill::{no_grad, DType, Device, Rng, Tensor};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use privdistill::backend::cpu::host_alloc::{CachingAllocator, DEFAULT_CAPACITY};

// Freed tensor-sized blocks are reused instead of unmapped and faulted in again.
#[global_allocator]
static ALLOCATOR: CachingAllocator = CachingAllocator::new(DEFAULT_CAPACITY);

const BATCH: usize = 16;
const STEPS: usize = 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
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
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

/// The peer's median seconds per iteration, or why there is none.
fn peer(workload: &str, iters: usize) -> Result<(f64, String), String> {
    let python = std::env::var("PRIVDISTILL_PEER_PYTHON").map(PathBuf::from).unwrap_or_else(|_| root().join(".venv/bin/python"));
    if !python.exists() {
        return Err(format!("no peer Python at {} (set PRIVDISTILL_PEER_PYTHON)", python.display()));
    }
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(&python)
        .arg(root().join("benches/peers/ldm.py"))
        .args([
            workload,
            "--threads",
            &threads,
            "--iters",
            &iters.to_string(),
            "--batch",
            &BATCH.to_string(),
            "--steps",
            &STEPS.to_string(),
        ])
        .output()
        .map_err(|e| format!("running the peer: {e}"))?;
    if !out.status.success() {
        return Err(format!("peer failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("peer output {line:?}: {e}"))?;
    Ok((v["seconds"].as_f64().ok_or("no seconds")?, v["torch"].as_str().unwrap_or("?").to_string()))
}

fn config<T>(path: &str, parse: impl Fn(&str) -> privdistill::Result<T>) -> T {
    parse(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

fn bench_ldm(c: &mut Criterion) {
    let mut g = c.benchmark_group("ldm");
    g.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(3));
    let threads = rayon::current_num_threads();

    let ucfg = config("weights/demo/unet/config.json", UNetConfig::from_json);
    let vcfg = config("weights/demo/vae/config.json", VaeConfig::from_json);
    let store = ParamStore::new(DType::F32, Device::Cpu, 0);
    let unet = UNet2DConditionModel::new(&store.root(), &ucfg).unwrap();
    let vae_store = ParamStore::new(DType::F32, Device::Cpu, 1);
    let vae = AutoencoderKL::new(&vae_store.root().frozen(), &vcfg).unwrap();
    let schedule = NoiseSchedule::new(&SchedulerConfig::stable_diffusion()).unwrap();
    let s = ucfg.sample_size;
    let latents = randn(&[BATCH, ucfg.in_channels, s, s], 1);
    let context = randn(&[BATCH, 77, ucfg.cross_attention_dim], 2);

    // Training step.
    let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig { lr: 1e-4, ..Default::default() }).unwrap();
    let mut step = 0u64;
    let mut train_step = || {
        step += 1;
        let loss =
            diffusion_loss(&unet, &schedule, &latents, &context, &mut Rng::new(step), ObjectiveConfig { min_snr_gamma: None }).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    };
    g.bench_function("train_step_b16", |b| b.iter(&mut train_step));
    let ours = median_secs(3, &mut train_step);
    match peer("ldm_train", 3) {
        Ok((theirs, v)) => println!(
            "ldm_train: ours {:.1} images/s ({ours:.3} s/step), diffusers on PyTorch {v} {:.1} images/s ({theirs:.3} s/step), speed ratio {:.2}x ({threads} threads)",
            BATCH as f64 / ours,
            BATCH as f64 / theirs,
            theirs / ours
        ),
        Err(why) => println!("ldm_train: ours {:.1} images/s; peer skipped: {why}", BATCH as f64 / ours),
    }

    // Sampling: DDIM, 20 steps, CFG, then decode.
    let uncond = randn(&[BATCH, 77, ucfg.cross_attention_dim], 3);
    let ctx2 = Tensor::cat(&[uncond, context.clone()], 0).unwrap();
    let sample = || {
        no_grad(|| {
            let mut sampler = Sampler::new(SamplerKind::Ddim, &schedule, STEPS, 0.0).unwrap();
            let mut x = randn(&[BATCH, ucfg.in_channels, s, s], 4);
            for t in sampler.timesteps().to_vec() {
                let out = unet.forward(&Tensor::cat(&[x.clone(), x.clone()], 0).unwrap(), &[t as f64], &ctx2).unwrap();
                let (u, c) = (out.narrow(0, 0, BATCH).unwrap(), out.narrow(0, BATCH, BATCH).unwrap());
                let eps = u.add(&c.sub(&u).unwrap().mul_scalar(4.0).unwrap()).unwrap();
                x = sampler.step(&eps, t, &x, &mut |_| unreachable!("DDIM with eta 0 draws no noise")).unwrap();
            }
            vae.decode(&x.mul_scalar(1.0 / vcfg.scaling_factor).unwrap()).unwrap()
        })
    };
    // One sampling run takes seconds: timed as the median of two runs rather than criterion's ten.
    let ours = median_secs(2, || drop(sample()));
    match peer("ldm_sample", 2) {
        Ok((theirs, v)) => println!(
            "ldm_sample: ours {:.3} s/image, diffusers on PyTorch {v} {:.3} s/image, speed ratio {:.2}x ({threads} threads)",
            ours / BATCH as f64,
            theirs / BATCH as f64,
            theirs / ours
        ),
        Err(why) => println!("ldm_sample: ours {:.3} s/image; peer skipped: {why}", ours / BATCH as f64),
    }
    g.finish();
}

criterion_group!(benches, bench_ldm);
criterion_main!(benches);

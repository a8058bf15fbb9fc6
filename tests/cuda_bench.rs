//! Throughput of the CUDA kernels the issue asks to measure: GEMM TFLOP/s,
//! group_norm+SiLU, softmax and fused AdamW in GB/s of compulsory traffic.
//! Ignored by default (they take seconds and need a GPU); run with
//! `cargo test --release --test cuda_bench -- --ignored --nocapture`.
//! Each prints `skipping <name>: <reason>` without a device.

use privdistill::backend::cuda;
use privdistill::nn::{AdamW, AdamWConfig, Optimizer};
use privdistill::{DType, Device, Rng, Tensor};
use std::time::Instant;

const GPU: Device = Device::Cuda(0);

fn gpu(test: &str) -> Option<Device> {
    match cuda::is_available(0) {
        Ok(()) => Some(GPU),
        Err(why) => {
            println!("skipping {test}: {why}");
            None
        }
    }
}

/// Wait for the device: a one-element download synchronises its stream.
fn sync(t: &Tensor) {
    t.narrow(0, 0, 1).unwrap().to_device(Device::Cpu).unwrap();
}

/// Seconds per call of `f` (after one warm-up call), synchronised on its result.
fn time(iters: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    sync(&f());
    let start = Instant::now();
    let mut last = None;
    for _ in 0..iters {
        last = Some(f());
    }
    sync(&last.expect("iters > 0"));
    start.elapsed().as_secs_f64() / iters as f64
}

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, dtype, GPU, &mut Rng::new(seed)).unwrap()
}

#[test]
#[ignore = "GPU benchmark: seconds of device time"]
fn bench_gemm() {
    let Some(_) = gpu("bench_gemm") else { return };
    let n = 4096;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (a, b) = (randn(&[n, n], dtype, 1), randn(&[n, n], dtype, 2));
        let s = time(10, || a.matmul(&b).unwrap());
        println!("gemm {n}^3 {dtype:?}: {:.1} TFLOP/s", 2.0 * (n as f64).powi(3) / s / 1e12);
    }
}

#[test]
#[ignore = "GPU benchmark: seconds of device time"]
fn bench_group_norm_silu_and_softmax() {
    let Some(_) = gpu("bench_group_norm_silu_and_softmax") else { return };
    for dtype in [DType::F32, DType::BF16] {
        let x = randn(&[16, 512, 64, 64], dtype, 3);
        let (w, b) = (randn(&[512], dtype, 4), randn(&[512], dtype, 5));
        let s = time(20, || x.group_norm_silu(32, Some(&w), Some(&b), 1e-5).unwrap());
        let bytes = 2.0 * x.numel() as f64 * dtype.size_in_bytes() as f64;
        println!("group_norm_silu {:?} {dtype:?}: {:.3} ms, {:.0} GB/s (read x + write y)", x.shape(), s * 1e3, bytes / s / 1e9);
        let y = randn(&[8192, 4096], dtype, 6);
        let s = time(20, || y.softmax(-1).unwrap());
        let bytes = 2.0 * y.numel() as f64 * dtype.size_in_bytes() as f64;
        println!("softmax {:?} {dtype:?}: {:.3} ms, {:.0} GB/s", y.shape(), s * 1e3, bytes / s / 1e9);
    }
}

#[test]
#[ignore = "GPU benchmark: seconds of device time"]
fn bench_fused_adamw() {
    let Some(_) = gpu("bench_fused_adamw") else { return };
    // ~100M f32 parameters in 200 tensors of uneven sizes.
    let params: Vec<(String, Tensor)> =
        (0..200).map(|i| (format!("p{i}"), randn(&[400_000 + 1_000 * (i % 7)], DType::F32, 10 + i as u64).to_variable())).collect();
    let total: usize = params.iter().map(|(_, p)| p.numel()).sum();
    let mut loss: Option<Tensor> = None;
    for (_, p) in &params {
        let t = p.square().unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&t).unwrap(),
            None => t,
        });
    }
    let grads = loss.unwrap().backward().unwrap();
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
    let probe = params[0].1.clone();
    let s = time(10, || {
        opt.step(&grads).unwrap();
        probe.clone()
    });
    // p, m, v read and written, g read (the gradients are contiguous, so no copy precedes the launch).
    let bytes = 7.0 * total as f64 * 4.0;
    println!("fused AdamW over {total} f32 parameters in 200 tensors: {:.3} ms, {:.0} GB/s", s * 1e3, bytes / s / 1e9);
}

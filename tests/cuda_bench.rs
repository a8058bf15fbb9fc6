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

// ----- issue 11: convolution, attention and whole models (peer: benches/peers/cuda_unet.py) -----

/// Device, driver and toolkit line printed with every figure of the issue-11 benchmarks.
fn print_environment() {
    let device = cuda::device_info(0).map(|d| format!("{} (sm_{}{})", d.name, d.compute_capability.0, d.compute_capability.1));
    let driver = cuda::driver().map(|d| d.version_string());
    println!(
        "environment: device {}, driver {}, kernels {}",
        device.unwrap_or_else(|e| e.to_string()),
        driver.unwrap_or_else(|e| e.to_string()),
        cuda::kernels::embedding()
    );
}

#[test]
#[ignore = "GPU benchmark: seconds of device time"]
fn bench_conv2d_implicit_gemm() {
    let Some(_) = gpu("bench_conv2d_implicit_gemm") else { return };
    print_environment();
    use privdistill::tensor::ops::conv::{conv2d_backward_input, conv2d_backward_weight, Conv2dParams};
    // SD-1.5 UNet 3x3 layers at 512x512 with CFG (batch 2).
    for (c, hw) in [(320usize, 64usize), (640, 32), (1280, 16)] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let x = randn(&[2, c, hw, hw], dtype, 20);
            let w = randn(&[c, c, 3, 3], dtype, 21);
            let p = Conv2dParams::new(1, 1);
            let flops = 2.0 * 2.0 * (c * c * 9 * hw * hw) as f64;
            let y = x.conv2d(&w, None, p).unwrap();
            let fwd = time(10, || x.conv2d(&w, None, p).unwrap());
            let data = time(10, || conv2d_backward_input(&y, &w, x.shape(), p).unwrap());
            let weight = time(10, || conv2d_backward_weight(&x, &y, w.shape(), p).unwrap());
            println!(
                "conv2d 3x3 {c}ch {hw}x{hw} b2 {dtype:?}: fwd {:.1}, bwd-data {:.1}, bwd-weight {:.1} TFLOP/s",
                flops / fwd / 1e12,
                flops / data / 1e12,
                flops / weight / 1e12
            );
        }
    }
}

#[test]
#[ignore = "GPU benchmark: seconds of device time"]
fn bench_flash_attention() {
    let Some(_) = gpu("bench_flash_attention") else { return };
    print_environment();
    let (b, h, n) = (2, 8, 4096);
    for d in [40usize, 64, 80, 128] {
        let (q, k, v) = (randn(&[b, h, n, d], DType::F16, 30), randn(&[b, h, n, d], DType::F16, 31), randn(&[b, h, n, d], DType::F16, 32));
        let flops = 4.0 * (b * h * n * n * d) as f64;
        let fwd = time(5, || q.scaled_dot_product_attention(&k, &v, None, false, None).unwrap());
        let (out, lse) = q.scaled_dot_product_attention_with_lse(&k, &v, None, false, None).unwrap();
        let grad = randn(&[b, h, n, d], DType::F16, 33);
        let scale = 1.0 / (d as f64).sqrt();
        let bwd = time(5, || q.scaled_dot_product_attention_backward(&k, &v, None, false, scale, &out, &lse, &grad).unwrap().0);
        println!(
            "attention f16 b{b} h{h} n{n} d{d}: fwd {:.1} TFLOP/s, bwd {:.1} TFLOP/s (bwd counted as 2.5x fwd)",
            flops / fwd / 1e12,
            2.5 * flops / bwd / 1e12
        );
    }
}

#[test]
#[ignore = "GPU benchmark: tens of seconds of device time"]
fn bench_sd15_unet_cfg_step_and_training_step() {
    let Some(dev) = gpu("bench_sd15_unet_cfg_step_and_training_step") else { return };
    print_environment();
    use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
    use privdistill::nn::ParamStore;
    {
        let store = ParamStore::new(DType::F16, dev, 0);
        let unet = UNet2DConditionModel::new(&store.root(), &UNetConfig::sd15()).unwrap();
        let x = randn(&[2, 4, 64, 64], DType::F16, 40);
        let ctx = randn(&[2, 77, 768], DType::F16, 41);
        let s = time(10, || privdistill::no_grad(|| unet.forward(&x, &[500.0, 500.0], &ctx).unwrap()));
        println!("sd15 UNet 512x512 CFG step (batch 2, f16): {:.2} ms, {:.2} it/s (goal <= 10 ms on an H100)", s * 1e3, 1.0 / s);
    }
    {
        let store = ParamStore::new(DType::F32, dev, 0);
        let unet = UNet2DConditionModel::new(&store.root(), &UNetConfig::sd15()).unwrap();
        let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig::default()).unwrap();
        let latents = randn(&[2, 4, 64, 64], DType::F32, 42);
        let noise = randn(&[2, 4, 64, 64], DType::F32, 43);
        let ctx = randn(&[2, 77, 768], DType::F32, 44);
        let noisy = latents.add(&noise).unwrap();
        let s = time(5, || {
            let loss = unet.forward(&noisy, &[17.0, 503.0], &ctx).unwrap().sub(&noise).unwrap().square().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            // A rank-1 view: `sync` narrows its argument.
            loss.reshape(&[1]).unwrap()
        });
        println!("sd15 UNet 512x512 training step (batch 2, f32, AdamW): {:.1} ms, {:.2} img/s", s * 1e3, 2.0 / s);
    }
}

#[test]
#[ignore = "GPU benchmark: tens of seconds of device time"]
fn bench_resnet50_and_densenet121() {
    let Some(dev) = gpu("bench_resnet50_and_densenet121") else { return };
    print_environment();
    use privdistill::models::densenet::{DenseNet, DenseNetConfig};
    use privdistill::models::resnet::{ResNet, ResNetConfig};
    use privdistill::nn::ParamStore;
    /// A classifier's forward (input, train) → logits.
    type Forward = Box<dyn Fn(&Tensor, bool) -> Tensor>;
    /// Builds a classifier's parameters into a store and returns its forward.
    type Build = Box<dyn Fn(&ParamStore) -> Forward>;
    let classifiers: [(&str, Build); 2] = [
        (
            "resnet50",
            Box::new(|s: &ParamStore| {
                let net = ResNet::new(&s.root(), &ResNetConfig::resnet50(1000)).unwrap();
                Box::new(move |x: &Tensor, train: bool| net.forward(x, train).unwrap().logits)
            }),
        ),
        (
            "densenet121",
            Box::new(|s: &ParamStore| {
                let net = DenseNet::new(&s.root(), &DenseNetConfig::densenet121(1000, 3)).unwrap();
                Box::new(move |x: &Tensor, train: bool| net.forward(x, train).unwrap().logits)
            }),
        ),
    ];
    for (name, build) in &classifiers {
        let store = ParamStore::new(DType::F16, dev, 0);
        let net = build(&store);
        let x = randn(&[64, 3, 224, 224], DType::F16, 50);
        let s = time(5, || privdistill::no_grad(|| net(&x, false)));
        println!("{name} inference (batch 64, f16): {:.1} img/s", 64.0 / s);
        let store = ParamStore::new(DType::F32, dev, 0);
        let net = build(&store);
        let mut opt = AdamW::new(store.trainable_parameters(), AdamWConfig::default()).unwrap();
        let x = randn(&[32, 3, 224, 224], DType::F32, 51);
        let s = time(3, || {
            let loss = net(&x, true).square().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            // A rank-1 view: `sync` narrows its argument.
            loss.reshape(&[1]).unwrap()
        });
        println!("{name} training step (batch 32, f32, AdamW): {:.1} img/s", 32.0 / s);
    }
}

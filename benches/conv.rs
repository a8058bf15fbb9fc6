//! conv2d throughput on the shapes that dominate the models: an SD-UNet 3×3
//! layer ([1, 320, 64, 64] ⊛ [320, 320, 3, 3]) and the ResNet-50 stem
//! (7×7 stride 2 on [8, 3, 224, 224]). Each case is first timed directly and
//! printed as GFLOP/s, next to a plain GEMM of the same size (the ceiling);
//! criterion then reports the same as "elem/s" (one element = one flop).
//! Run `cargo bench --bench conv -- fwd` to filter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use privdistill::tensor::ops::conv::{conv2d_backward_input, conv2d_backward_weight, Conv2dParams};
use privdistill::testing::rand_f32;
use privdistill::Tensor;
use std::time::{Duration, Instant};

struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
}

const CASES: &[Case] = &[
    Case {
        name: "sd_unet_320x64x64_k3",
        x: [1, 320, 64, 64],
        w: [320, 320, 3, 3],
        params: Conv2dParams { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 },
    },
    Case {
        name: "resnet_stem_b8_k7s2",
        x: [8, 3, 224, 224],
        w: [64, 3, 7, 7],
        params: Conv2dParams { stride: [2, 2], padding: [3, 3], dilation: [1, 1], groups: 1 },
    },
];

/// Floating-point operations of one pass (2 per multiply-add).
fn flops(case: &Case, out: &Tensor) -> u64 {
    let per_output: usize = case.w[1..].iter().product();
    2 * (out.numel() * per_output) as u64
}

/// Best of three direct timings, printed as GFLOP/s.
fn report(label: &str, flops: u64, mut f: impl FnMut()) {
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("{label:<52} {:>9.1} ms  {:>7.2} GFLOP/s", best.as_secs_f64() * 1e3, flops as f64 / best.as_secs_f64() / 1e9);
}

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    eprintln!("threads: {}", rayon::current_num_threads());
    for case in CASES {
        let (x, w) = (rand_f32(&case.x, 1), rand_f32(&case.w, 2));
        let y = x.conv2d(&w, None, case.params).unwrap();
        let dy = rand_f32(y.shape(), 3);
        let n = flops(case, &y);
        // The same flops as one plain GEMM: the ceiling the im2col formulation works against.
        let (m, k, cols) = (case.w[0], case.w[1..].iter().product::<usize>(), y.numel() / case.w[0]);
        let (a, b) = (rand_f32(&[m, k], 4), rand_f32(&[k, cols], 5));
        report(&format!("{} as one gemm {m}x{k}x{cols}", case.name), n, || drop(a.matmul(&b).unwrap()));
        drop((a, b));
        report(&format!("{} fwd", case.name), n, || drop(x.conv2d(&w, None, case.params).unwrap()));
        report(&format!("{} bwd_data", case.name), n, || drop(conv2d_backward_input(&dy, &w, x.shape(), case.params).unwrap()));
        report(&format!("{} bwd_weight", case.name), n, || drop(conv2d_backward_weight(&x, &dy, w.shape(), case.params).unwrap()));
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("fwd", case.name), |b| b.iter(|| x.conv2d(&w, None, case.params).unwrap()));
        group.bench_function(BenchmarkId::new("bwd_data", case.name), |b| {
            b.iter(|| conv2d_backward_input(&dy, &w, x.shape(), case.params).unwrap())
        });
        group.bench_function(BenchmarkId::new("bwd_weight", case.name), |b| {
            b.iter(|| conv2d_backward_weight(&x, &dy, w.shape(), case.params).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);

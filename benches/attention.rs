//! Blockwise attention on Stable-Diffusion shapes (f32, CPU): the 64×64-latent
//! self-attention (B=1, H=8, L=4096, D=40) forward, and L=1024 forward +
//! backward, with the materialised matmul–softmax–matmul composition at
//! L=1024 for comparison. Prints milliseconds and GFLOP/s.
//!
//! FLOPs follow the FlashAttention convention: forward 4·B·H·Lq·Lk·D (two
//! products), backward 2.5× the forward (five products; this kernel does
//! seven, recomputing the score tile in its dK/dV and dQ passes).
//!
//! Run: `cargo bench --bench attention` (`ATTENTION_BENCH_ITERS` sets the repetitions, default 3).

use privdistill::testing::rand_f32;
use privdistill::{no_grad, Tensor};
use std::time::Instant;

/// Best wall time of `iters` runs of `f` after one warm-up, in seconds.
fn best_of(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(what: &str, flops: f64, secs: f64) {
    println!("{what:<58} {:>9.1} ms {:>8.1} GFLOP/s", secs * 1e3, flops / secs / 1e9);
}

fn main() {
    let iters: usize = std::env::var("ATTENTION_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("rayon threads: {}", rayon::current_num_threads());
    let (b, h, d) = (1usize, 8usize, 40usize);

    let l = 4096;
    let (q, k, v) = (rand_f32(&[b, h, l, d], 1), rand_f32(&[b, h, l, d], 2), rand_f32(&[b, h, l, d], 3));
    let fwd_flops = 4.0 * (b * h * l * l * d) as f64;
    let secs = best_of(iters, || {
        no_grad(|| q.scaled_dot_product_attention(&k, &v, None, false, None).unwrap());
    });
    report(&format!("sdpa fwd      B={b} H={h} L={l} D={d}"), fwd_flops, secs);

    let l = 1024;
    let (q, k, v) = (rand_f32(&[b, h, l, d], 4), rand_f32(&[b, h, l, d], 5), rand_f32(&[b, h, l, d], 6));
    let fwd_flops = 4.0 * (b * h * l * l * d) as f64;
    let secs = best_of(iters, || {
        no_grad(|| q.scaled_dot_product_attention(&k, &v, None, false, None).unwrap());
    });
    report(&format!("sdpa fwd      B={b} H={h} L={l} D={d}"), fwd_flops, secs);

    let grad = rand_f32(&[b, h, l, d], 7);
    let (qv, kv, vv) = (q.to_variable(), k.to_variable(), v.to_variable());
    let secs = best_of(iters, || {
        let out = qv.scaled_dot_product_attention(&kv, &vv, None, false, None).unwrap();
        out.backward_with(grad.clone()).unwrap();
    });
    report(&format!("sdpa fwd+bwd  B={b} H={h} L={l} D={d}"), 3.5 * fwd_flops, secs);

    let scale = 1.0 / (d as f64).sqrt();
    let composed = |q: &Tensor, k: &Tensor, v: &Tensor| -> Tensor {
        q.matmul(&k.transpose(-2, -1).unwrap()).unwrap().affine(scale, 0.0).unwrap().softmax(-1).unwrap().matmul(v).unwrap()
    };
    let secs = best_of(iters, || {
        no_grad(|| composed(&q, &k, &v));
    });
    report(&format!("materialised matmul-softmax-matmul fwd  L={l}"), fwd_flops, secs);
    let secs = best_of(iters, || {
        composed(&qv, &kv, &vv).backward_with(grad.clone()).unwrap();
    });
    report(&format!("materialised matmul-softmax-matmul fwd+bwd  L={l}"), 3.5 * fwd_flops, secs);
}

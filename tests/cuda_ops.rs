//! GPU-vs-CPU parity of the op families of kernels/{softmax,norm,indexing,
//! pool,upsample,loss,optim,rng}.cu, forward and backward (through autograd),
//! on odd shapes (not multiples of a block), strided views and broadcasting,
//! in f32 and f64 against the CPU in the same dtype and in f16/bf16 against
//! the CPU computing in f32 on the same rounded inputs.
//!
//! Every test prints `skipping <name>: <reason>` and passes when no CUDA
//! device is usable; with a device they must pass.

use privdistill::backend::cuda;
use privdistill::nn::{clip_grad_norm, AdamW, AdamWConfig, Ema, EmaConfig, Optimizer};
use privdistill::tensor::ops::loss::{CrossEntropyOptions, Reduction};
use privdistill::testing::{assert_close, rand_f32, rand_f64};
use privdistill::{DType, Device, Rng, Tensor};

const GPU: Device = Device::Cuda(0);

/// The device, or `None` after printing why the test skips.
fn gpu(test: &str) -> Option<Device> {
    match cuda::is_available(0) {
        Ok(()) => Some(GPU),
        Err(why) => {
            println!("skipping {test}: {why}");
            None
        }
    }
}

/// Tolerances (atol = rtol) of a GPU result in `dtype` against the CPU reference.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 2e-4,
        DType::F16 => 1e-2,
        _ => 5e-2,
    }
}

/// The reference dtype on the CPU: the CPU kernels cover f32 and f64; half types compare against f32.
fn cpu_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Run `f` on `inputs` on the CPU (in the reference dtype, on the inputs rounded
/// to `dtype`) and on the GPU (in `dtype`), then backpropagate a fixed random
/// weighting of the output; assert outputs and the gradient of every float
/// input agree. Inputs that are not float (indices) are passed as they are.
#[track_caller]
fn parity(dev: Device, dtype: DType, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, what: &str) {
    let prepare = |x: &Tensor, to: DType, device: Device| -> Tensor {
        if x.dtype().is_float() {
            x.to_dtype(dtype).unwrap().to_dtype(to).unwrap().to_device(device).unwrap().to_variable()
        } else {
            x.to_device(device).unwrap()
        }
    };
    let run = |to: DType, device: Device| -> (Tensor, Vec<Option<Tensor>>) {
        let xs: Vec<Tensor> = inputs.iter().map(|x| prepare(x, to, device)).collect();
        let y = f(&xs);
        let w = rand_f64(y.shape(), 9_999).to_dtype(dtype).unwrap().to_dtype(to).unwrap().to_device(device).unwrap();
        let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = xs.iter().map(|x| if x.dtype().is_float() { grads.get(x).cloned() } else { None }).collect();
        (y, gs)
    };
    let (y_cpu, g_cpu) = run(cpu_dtype(dtype), Device::Cpu);
    let (y_gpu, g_gpu) = run(dtype, dev);
    assert_eq!(y_gpu.device(), dev, "{what}: output left the GPU");
    assert_eq!(y_gpu.dtype(), dtype, "{what}: output dtype");
    let t = tol(dtype);
    let as_ref = |x: &Tensor| x.to_device(Device::Cpu).unwrap().to_dtype(cpu_dtype(dtype)).unwrap();
    assert_close(&as_ref(&y_gpu), &y_cpu, t, t);
    for (k, (a, b)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => assert_close(&as_ref(a), b, t, t),
            (None, None) => {}
            _ => panic!("{what}: input {k} has a gradient on one device only"),
        }
    }
    println!("{what} {dtype:?}: forward and backward match");
}

const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

// ----- softmax ------------------------------------------------------------------

#[test]
fn softmax_and_log_softmax_match_cpu_along_every_axis() {
    let Some(dev) = gpu("softmax_and_log_softmax_match_cpu_along_every_axis") else { return };
    for dtype in FLOATS {
        // 301 > one block of 256; the middle axis takes the column kernel.
        let x = rand_f64(&[3, 5, 301], 1).affine(4.0, 0.0).unwrap();
        for dim in [-1isize, 1, 0] {
            parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].softmax(dim).unwrap(), &format!("softmax dim {dim}"));
            parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].log_softmax(dim).unwrap(), &format!("log_softmax dim {dim}"));
        }
        // A transposed view and large magnitudes (the maximum must be subtracted).
        let xt = rand_f64(&[37, 9], 2).affine(60.0, 0.0).unwrap();
        parity(dev, dtype, &[xt], |v| v[0].t().unwrap().softmax(-1).unwrap(), "softmax of a transposed view");
    }
}

#[test]
fn softmax_of_masked_rows_matches_cpu() {
    let Some(dev) = gpu("softmax_of_masked_rows_matches_cpu") else { return };
    // -inf entries (attention masks) and one row that is all -inf (NaN, as on the CPU and in PyTorch).
    let mut v = rand_f64(&[4, 70], 3).to_vec_f64().unwrap();
    for (i, x) in v.iter_mut().enumerate() {
        if i % 3 == 0 || i / 70 == 2 {
            *x = f64::NEG_INFINITY;
        }
    }
    let x = Tensor::from_vec(v, &[4, 70]).unwrap().to_dtype(DType::F32).unwrap();
    let cpu = x.softmax(-1).unwrap();
    let got = x.to_device(dev).unwrap().softmax(-1).unwrap();
    assert_close(&got, &cpu, 1e-6, 1e-5);
    assert!(got.to_vec_f32().unwrap()[2 * 70..3 * 70].iter().all(|x| x.is_nan()));
}

// ----- norms --------------------------------------------------------------------

#[test]
fn layer_norm_matches_cpu_with_and_without_affine() {
    let Some(dev) = gpu("layer_norm_matches_cpu_with_and_without_affine") else { return };
    for dtype in FLOATS {
        let x = rand_f64(&[3, 7, 333], 10).affine(3.0, 1.0).unwrap();
        let w = rand_f64(&[333], 11).add_scalar(1.0).unwrap();
        let b = rand_f64(&[333], 12);
        parity(dev, dtype, &[x.clone(), w, b], |v| v[0].layer_norm(&[333], Some(&v[1]), Some(&v[2]), 1e-5).unwrap(), "layer_norm affine");
        parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].layer_norm(&[7, 333], None, None, 1e-5).unwrap(), "layer_norm over two dims");
        // A permuted input view.
        let xp = rand_f64(&[19, 4, 6], 13);
        parity(
            dev,
            dtype,
            &[xp],
            |v| v[0].permute(&[1, 0, 2]).unwrap().layer_norm(&[6], None, None, 1e-6).unwrap(),
            "layer_norm of a view",
        );
    }
}

#[test]
fn group_norm_and_fused_silu_match_cpu() {
    let Some(dev) = gpu("group_norm_and_fused_silu_match_cpu") else { return };
    for dtype in FLOATS {
        // 6 channels in 3 groups, 11×13 spatial (odd), batch 2.
        let x = rand_f64(&[2, 6, 11, 13], 20).affine(2.0, 0.5).unwrap();
        let w = rand_f64(&[6], 21).add_scalar(1.0).unwrap();
        let b = rand_f64(&[6], 22);
        for silu in [false, true] {
            let what = if silu { "group_norm_silu" } else { "group_norm" };
            parity(
                dev,
                dtype,
                &[x.clone(), w.clone(), b.clone()],
                |v| {
                    if silu {
                        v[0].group_norm_silu(3, Some(&v[1]), Some(&v[2]), 1e-5).unwrap()
                    } else {
                        v[0].group_norm(3, Some(&v[1]), Some(&v[2]), 1e-5).unwrap()
                    }
                },
                what,
            );
        }
        parity(
            dev,
            dtype,
            std::slice::from_ref(&x),
            |v| v[0].group_norm_silu(2, None, None, 1e-6).unwrap(),
            "group_norm_silu without affine",
        );
        // A large group (one block strides over 8·4096 elements).
        let big = rand_f64(&[1, 8, 64, 64], 23);
        parity(dev, dtype, &[big], |v| v[0].group_norm(1, None, None, 1e-5).unwrap(), "group_norm of a large group");
    }
}

#[test]
fn batch_norm_train_and_eval_match_cpu_including_running_stats() {
    let Some(dev) = gpu("batch_norm_train_and_eval_match_cpu_including_running_stats") else { return };
    for dtype in [DType::F32, DType::F64] {
        let x = rand_f64(&[5, 3, 7, 9], 30).affine(2.0, 0.3).unwrap().to_dtype(dtype).unwrap();
        let w = rand_f64(&[3], 31).add_scalar(1.0).unwrap().to_dtype(dtype).unwrap();
        let b = rand_f64(&[3], 32).to_dtype(dtype).unwrap();
        let rm0 = rand_f64(&[3], 33).to_dtype(dtype).unwrap();
        let rv0 = rand_f64(&[3], 34).abs().unwrap().add_scalar(0.5).unwrap().to_dtype(dtype).unwrap();
        for training in [true, false] {
            let (rm_c, rv_c) = (rm0.contiguous().unwrap().affine(1.0, 0.0).unwrap(), rv0.affine(1.0, 0.0).unwrap());
            let (rm_g, rv_g) = (rm0.to_device(dev).unwrap(), rv0.to_device(dev).unwrap());
            let y_c = x.batch_norm(Some(&rm_c), Some(&rv_c), Some(&w), Some(&b), training, 0.1, 1e-5).unwrap();
            let (xg, wg, bg) = (x.to_device(dev).unwrap(), w.to_device(dev).unwrap(), b.to_device(dev).unwrap());
            let y_g = xg.batch_norm(Some(&rm_g), Some(&rv_g), Some(&wg), Some(&bg), training, 0.1, 1e-5).unwrap();
            let t = tol(dtype);
            assert_close(&y_g, &y_c, t, t);
            assert_close(&rm_g, &rm_c, t, t);
            assert_close(&rv_g, &rv_c, t, t);
        }
        // Gradients through the batch statistics, and through constants in evaluation.
        for training in [true, false] {
            let rm = rm0.clone();
            let rv = rv0.clone();
            parity(
                dev,
                dtype,
                &[x.clone(), w.clone(), b.clone(), rm, rv],
                |v| v[0].batch_norm(Some(&v[3].detach()), Some(&v[4].detach()), Some(&v[1]), Some(&v[2]), training, 0.1, 1e-5).unwrap(),
                if training { "batch_norm train" } else { "batch_norm eval" },
            );
        }
    }
    // Half types: the CPU has no half batch norm; compare with f32 on rounded inputs.
    for dtype in [DType::F16, DType::BF16] {
        let x = rand_f64(&[4, 5, 3, 3], 35);
        parity(dev, dtype, &[x], |v| v[0].batch_norm(None, None, None, None, true, 0.1, 1e-5).unwrap(), "batch_norm train, no affine");
    }
}

// ----- embedding / index_select ---------------------------------------------------

#[test]
fn embedding_and_index_select_match_cpu_with_repeated_ids() {
    let Some(dev) = gpu("embedding_and_index_select_match_cpu_with_repeated_ids") else { return };
    // Repeated ids exercise the atomic scatter-add of the backward.
    let ids = Tensor::from_vec(vec![3i64, 0, 3, 7, 3, 1, 0, 12, 12, 5, 3], &[11]).unwrap().reshape(&[1, 11]).unwrap();
    for dtype in FLOATS {
        let weight = rand_f64(&[13, 37], 40);
        parity(dev, dtype, &[ids.clone(), weight.clone()], |v| Tensor::embedding(&v[0], &v[1]).unwrap(), "embedding");
        let idx = Tensor::from_vec(vec![2i64, 2, 0, 4], &[4]).unwrap();
        let x = rand_f64(&[3, 5, 7], 41);
        parity(dev, dtype, &[x, idx.clone()], |v| v[0].index_select(1, &v[1]).unwrap(), "index_select dim 1");
    }
    // i32 ids on the GPU, and an out-of-range id is an error naming it.
    let w = rand_f32(&[4, 3], 42).to_device(dev).unwrap();
    let ids32 = Tensor::from_vec(vec![1i32, 3], &[2]).unwrap().to_device(dev).unwrap();
    assert_eq!(Tensor::embedding(&ids32, &w).unwrap().shape(), &[2, 3]);
    let bad = Tensor::from_vec(vec![4i64], &[1]).unwrap().to_device(dev).unwrap();
    let e = Tensor::embedding(&bad, &w).expect_err("id 4 of 4 rows").to_string();
    assert!(e.contains('4'), "{e}");
}

// ----- pooling and upsampling ------------------------------------------------------

#[test]
fn pooling_matches_cpu_with_padding_and_odd_sizes() {
    let Some(dev) = gpu("pooling_matches_cpu_with_padding_and_odd_sizes") else { return };
    for dtype in FLOATS {
        let x = rand_f64(&[2, 3, 13, 11], 50);
        for (k, s, p) in [([3, 3], [2, 2], [1, 1]), ([2, 3], [2, 1], [0, 1]), ([5, 5], [3, 3], [2, 2])] {
            parity(
                dev,
                dtype,
                std::slice::from_ref(&x),
                |v| v[0].max_pool2d(k, s, p).unwrap(),
                &format!("max_pool2d k{k:?} s{s:?} p{p:?}"),
            );
            parity(
                dev,
                dtype,
                std::slice::from_ref(&x),
                |v| v[0].avg_pool2d(k, s, p).unwrap(),
                &format!("avg_pool2d k{k:?} s{s:?} p{p:?}"),
            );
        }
        for out in [[1, 1], [5, 3], [13, 11], [20, 7]] {
            parity(
                dev,
                dtype,
                std::slice::from_ref(&x),
                |v| v[0].adaptive_avg_pool2d(out).unwrap(),
                &format!("adaptive_avg_pool2d {out:?}"),
            );
        }
        // A strided (permuted) input.
        let xp = rand_f64(&[3, 2, 9, 10], 51);
        parity(
            dev,
            dtype,
            &[xp],
            |v| v[0].permute(&[1, 0, 2, 3]).unwrap().max_pool2d([2, 2], [2, 2], [0, 0]).unwrap(),
            "max_pool2d of a view",
        );
    }
    // Indices equal the CPU's exactly, ties included (first maximum wins).
    let ties = rand_f64(&[1, 2, 9, 9], 52).affine(2.0, 0.0).unwrap().to_dtype(DType::I32).unwrap().to_dtype(DType::F32).unwrap();
    let (_, i_cpu) = ties.max_pool2d_with_indices([3, 3], [2, 2], [1, 1]).unwrap();
    let (_, i_gpu) = ties.to_device(dev).unwrap().max_pool2d_with_indices([3, 3], [2, 2], [1, 1]).unwrap();
    assert_eq!(i_gpu.to_vec::<i64>().unwrap(), i_cpu.to_vec::<i64>().unwrap());
}

#[test]
fn nearest_upsampling_matches_cpu() {
    let Some(dev) = gpu("nearest_upsampling_matches_cpu") else { return };
    for dtype in FLOATS {
        let x = rand_f64(&[2, 3, 5, 7], 60);
        parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].upsample_nearest2d_scale([2.0, 2.0]).unwrap(), "upsample x2");
        parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].upsample_nearest2d([11, 4]).unwrap(), "resize to 11x4");
        parity(dev, dtype, std::slice::from_ref(&x), |v| v[0].upsample_nearest2d_scale([3.0, 1.5]).unwrap(), "upsample x3, x1.5");
        parity(dev, dtype, &[x], |v| v[0].permute(&[0, 1, 3, 2]).unwrap().upsample_nearest2d([9, 9]).unwrap(), "resize of a view");
    }
}

// ----- losses ---------------------------------------------------------------------

#[test]
fn mse_and_bce_match_cpu_for_every_reduction() {
    let Some(dev) = gpu("mse_and_bce_match_cpu_for_every_reduction") else { return };
    for dtype in FLOATS {
        let p = rand_f64(&[7, 33], 70).affine(3.0, 0.0).unwrap();
        let t = rand_f64(&[7, 33], 71).affine(0.5, 0.5).unwrap();
        let pw = rand_f64(&[33], 72).affine(0.5, 1.5).unwrap();
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            parity(dev, dtype, &[p.clone(), t.clone()], |v| v[0].mse_loss_with(&v[1], reduction).unwrap(), &format!("mse {reduction:?}"));
            parity(
                dev,
                dtype,
                &[p.clone(), t.clone()],
                |v| v[0].bce_with_logits_with(&v[1], None, reduction).unwrap(),
                &format!("bce {reduction:?}"),
            );
            // pos_weight broadcast over the rows, with its own gradient.
            parity(
                dev,
                dtype,
                &[p.clone(), t.clone(), pw.clone()],
                |v| v[0].bce_with_logits_with(&v[1], Some(&v[2]), reduction).unwrap(),
                &format!("bce with pos_weight {reduction:?}"),
            );
        }
        // Transposed operands.
        parity(dev, dtype, &[p.clone(), t.clone()], |v| v[0].t().unwrap().mse_loss(&v[1].t().unwrap()).unwrap(), "mse of views");
    }
}

#[test]
fn cross_entropy_matches_cpu_with_smoothing_ignore_and_spatial_targets() {
    let Some(dev) = gpu("cross_entropy_matches_cpu_with_smoothing_ignore_and_spatial_targets") else { return };
    for dtype in FLOATS {
        let logits = rand_f64(&[9, 5], 80).affine(4.0, 0.0).unwrap();
        let targets = Tensor::from_vec(vec![0i64, 4, 2, 2, 1, 3, 0, 4, 1], &[9]).unwrap();
        for (smoothing, ignore, reduction) in
            [(0.0, None, Reduction::Mean), (0.1, None, Reduction::Sum), (0.2, Some(2i64), Reduction::Mean), (0.0, Some(4), Reduction::None)]
        {
            let opts = CrossEntropyOptions { label_smoothing: smoothing, reduction, ignore_index: ignore };
            parity(
                dev,
                dtype,
                &[logits.clone(), targets.clone()],
                |v| v[0].cross_entropy_with(&v[1], &opts).unwrap(),
                &format!("cross_entropy ε={smoothing} ignore={ignore:?} {reduction:?}"),
            );
        }
        // [N, C, H, W] logits with [N, H, W] targets.
        let logits = rand_f64(&[2, 4, 3, 5], 81);
        let targets = Tensor::from_vec((0..30).map(|i| (i * 7 % 4) as i64).collect::<Vec<_>>(), &[2, 3, 5]).unwrap();
        parity(dev, dtype, &[logits, targets], |v| v[0].cross_entropy(&v[1], 0.05).unwrap(), "cross_entropy spatial");
    }
}

// ----- optimizer, clipping, EMA -------------------------------------------------------

/// A few parameters of odd sizes, one larger than a kernel chunk.
fn params(dtype: DType, device: Device) -> Vec<(String, Tensor)> {
    [(vec![3usize, 5], 90u64), (vec![70_001], 91), (vec![1], 92), (vec![4, 4, 3], 93)]
        .into_iter()
        .enumerate()
        .map(|(i, (shape, seed))| {
            (format!("p{i}"), rand_f64(&shape, seed).to_dtype(dtype).unwrap().to_device(device).unwrap().to_variable())
        })
        .collect()
}

/// Gradients of `Σ wᵢ·pᵢ²` with fixed random weights.
fn grads_of(ps: &[(String, Tensor)], step: u64) -> privdistill::Gradients {
    let mut loss: Option<Tensor> = None;
    for (i, (_, p)) in ps.iter().enumerate() {
        let w = rand_f64(p.shape(), 1000 * step + i as u64).to_dtype(p.dtype()).unwrap().to_device(p.device()).unwrap();
        let term = p.square().unwrap().mul(&w).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    loss.unwrap().backward().unwrap()
}

#[test]
fn fused_adamw_clip_and_ema_match_cpu_over_several_steps() {
    let Some(dev) = gpu("fused_adamw_clip_and_ema_match_cpu_over_several_steps") else { return };
    for dtype in [DType::F32, DType::F64] {
        let (cpu_ps, gpu_ps) = (params(dtype, Device::Cpu), params(dtype, dev));
        let config = AdamWConfig { lr: 1e-2, weight_decay: 0.1, ..Default::default() };
        let mut opt_c = AdamW::new(cpu_ps.clone(), config).unwrap();
        let mut opt_g = AdamW::new(gpu_ps.clone(), config).unwrap();
        let ema_cfg = EmaConfig { decay: 0.9, ..Default::default() };
        let (mut ema_c, mut ema_g) = (Ema::new(&cpu_ps, ema_cfg).unwrap(), Ema::new(&gpu_ps, ema_cfg).unwrap());
        let tensors = |ps: &[(String, Tensor)]| ps.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
        for step in 1..=4 {
            let (mut gc, mut gg) = (grads_of(&cpu_ps, step), grads_of(&gpu_ps, step));
            let norm_c = clip_grad_norm(&mut gc, &tensors(&cpu_ps), 0.5).unwrap();
            let norm_g = clip_grad_norm(&mut gg, &tensors(&gpu_ps), 0.5).unwrap();
            assert!((norm_c - norm_g).abs() <= 1e-6 * norm_c, "step {step}: grad norm {norm_g} vs {norm_c}");
            opt_c.step(&gc).unwrap();
            opt_g.step(&gg).unwrap();
            ema_c.update().unwrap();
            ema_g.update().unwrap();
        }
        let t = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
        for ((_, c), (_, g)) in cpu_ps.iter().zip(&gpu_ps) {
            assert_close(g, c, t, t);
        }
        for ((_, c), (_, g)) in ema_c.averages().iter().zip(&ema_g.averages()) {
            assert_close(g, c, t, t);
        }
        for ((_, c), (_, g)) in opt_c.state_tensors().unwrap().iter().zip(&opt_g.state_tensors().unwrap()) {
            assert_close(g, c, t, t);
        }
    }
    // Half parameters: the fused kernel computes in f32; compare with the f32 CPU run on rounded values.
    for dtype in [DType::F16, DType::BF16] {
        let ref_ps: Vec<(String, Tensor)> =
            params(dtype, Device::Cpu).into_iter().map(|(n, t)| (n, t.to_dtype(DType::F32).unwrap().to_variable())).collect();
        let gpu_ps = params(dtype, dev);
        let config = AdamWConfig { lr: 1e-2, ..Default::default() };
        let (mut opt_c, mut opt_g) = (AdamW::new(ref_ps.clone(), config).unwrap(), AdamW::new(gpu_ps.clone(), config).unwrap());
        opt_c.step(&grads_of(&ref_ps, 1)).unwrap();
        opt_g.step(&grads_of(&gpu_ps, 1)).unwrap();
        for ((_, c), (_, g)) in ref_ps.iter().zip(&gpu_ps) {
            assert_close(&g.to_dtype(DType::F32).unwrap(), c, tol(dtype), tol(dtype));
        }
    }
}

// ----- Philox -------------------------------------------------------------------------

#[test]
fn philox_on_the_gpu_reproduces_the_cpu_stream() {
    let Some(dev) = gpu("philox_on_the_gpu_reproduces_the_cpu_stream") else { return };
    // Random123's known answer for a zero key and counter is word 0..4 of seed 0.
    let words = cuda::philox_words(6, 0, 0, 0).unwrap();
    let words = Tensor::from_storage(privdistill::tensor::Storage::Cuda(words), &[6]).to_vec::<i32>().unwrap();
    let expected: Vec<i32> = (0..6).map(|i| privdistill::rng::stream_word(0, i) as i32).collect();
    assert_eq!(words, expected);
    assert_eq!(words[0] as u32, 0x6627e8d5);
    for (seed, offset) in [(7u64, 0u64), (0xDEAD_BEEF_0123, 13), (42, (1u64 << 34) + 3)] {
        for dtype in [DType::F64, DType::F32, DType::F16, DType::BF16] {
            // Uniforms are exact in f64 and f32 (integer arithmetic, IEEE products). The half
            // crate's f64 -> f16/bf16 conversion is not correctly rounded (it drops low bits
            // first) while the GPU's is, so half types may differ by one ulp (2^-9, 2^-6 in [2, 4)).
            let (mut rc, mut rg) = (Rng { seed, offset }, Rng { seed, offset });
            let c = Tensor::rand(&[17, 33], -2.0, 3.0, dtype, Device::Cpu, &mut rc).unwrap();
            let g = Tensor::rand(&[17, 33], -2.0, 3.0, dtype, dev, &mut rg).unwrap();
            assert_eq!(g.device(), dev);
            match dtype {
                DType::F16 => assert_close(&g, &c, 2.0f64.powi(-9), 0.0),
                DType::BF16 => assert_close(&g, &c, 2.0f64.powi(-6), 0.0),
                _ => assert_eq!(g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap(), "uniform {dtype:?} seed {seed} offset {offset}"),
            }
            assert_eq!(rc, rg);
            // Normals go through log and cos, whose last bit may differ between libm and CUDA.
            let c = Tensor::randn(&[5, 101], 0.5, 2.0, dtype, Device::Cpu, &mut rc).unwrap();
            let g = Tensor::randn(&[5, 101], 0.5, 2.0, dtype, dev, &mut rg).unwrap();
            let t = if dtype == DType::F64 { 1e-13 } else { tol(dtype) / 10.0 };
            assert_close(&g, &c, t, t);
            assert_eq!(rc, rg);
        }
    }
}

// ----- allocator ------------------------------------------------------------------------

#[test]
fn the_caching_allocator_reuses_freed_buffers() {
    let Some(dev) = gpu("the_caching_allocator_reuses_freed_buffers") else { return };
    let before = cuda::allocator_stats(0).unwrap();
    for i in 0..20 {
        let t = Tensor::zeros(&[1_234_000 + i], DType::F32, dev).unwrap();
        drop(t);
    }
    let after = cuda::allocator_stats(0).unwrap();
    // ~4.94 MB requests all fall in the 6 MiB bucket, which no other test uses: one driver allocation.
    assert!(after.hits - before.hits >= 19, "{before:?} -> {after:?}");
    assert!(after.cached_blocks >= 1);
}

#[test]
fn cosine_similarity_matches_cpu_with_broadcasting() {
    let Some(dev) = gpu("cosine_similarity_matches_cpu_with_broadcasting") else { return };
    for dtype in FLOATS {
        let a = rand_f64(&[6, 1, 300], 100);
        let b = rand_f64(&[4, 300], 101);
        parity(dev, dtype, &[a.clone(), b.clone()], |v| v[0].cosine_similarity(&v[1], -1, 1e-8).unwrap(), "cosine_similarity broadcast");
        // Along a middle dim, and a zero row (the eps clamp).
        let z = Tensor::zeros(&[3, 5, 2], DType::F64, Device::Cpu).unwrap();
        let c = rand_f64(&[3, 5, 2], 102);
        parity(dev, dtype, &[z, c], |v| v[0].cosine_similarity(&v[1], 1, 1e-6).unwrap(), "cosine_similarity with a zero row");
    }
}

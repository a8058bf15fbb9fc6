//! GPU-vs-CPU parity of the CUDA convolution (kernels/conv.cu), fused flash
//! attention (kernels/attention.cu) and fused siamese head
//! (kernels/siamese_head.cu), forward and backward through autograd, and of
//! whole small models (the tiny SD-shaped UNet, a small ResNet) trained one
//! step on each device. f32/f64 compare against the CPU in the same dtype;
//! f16/bf16 against the CPU computing in f32 on the same rounded inputs.
//!
//! Every GPU test prints `skipping <name>: <reason>` and passes when no CUDA
//! device is usable; with a device they must pass. The NVRTC test runs
//! wherever libnvrtc loads (no GPU needed).

use privdistill::backend::cuda;
use privdistill::backend::cuda::kernels;
use privdistill::models::resnet::{ResNet, ResNetConfig};
use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
use privdistill::nn::ParamStore;
use privdistill::tensor::ops::conv::Conv2dParams;
use privdistill::testing::{assert_close, rand_f64};
use privdistill::{DType, Device, Tensor};

const GPU: Device = Device::Cuda(0);
const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
const TINY_UNET: &str = include_str!("fixtures/tiny/unet.json");

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

/// Tolerance (atol = rtol) of a GPU result in `dtype` against the CPU reference.
/// Convolutions and attention sum hundreds of products, so the half types get
/// a little more room than the elementwise suite.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-9,
        DType::F32 => 5e-4,
        DType::F16 => 2e-2,
        _ => 8e-2,
    }
}

/// The reference dtype on the CPU: half types compare against f32.
fn cpu_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Run `f` on the CPU (reference dtype, inputs rounded to `dtype`) and on the
/// GPU (in `dtype`), backpropagate a fixed random weighting of the output, and
/// assert the outputs and every float input's gradient agree.
#[track_caller]
fn parity(dev: Device, dtype: DType, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, what: &str) {
    let prepare = |x: &Tensor, to: DType, device: Device| -> Tensor {
        x.to_dtype(dtype).unwrap().to_dtype(to).unwrap().to_device(device).unwrap().to_variable()
    };
    let run = |to: DType, device: Device| -> (Tensor, Vec<Option<Tensor>>) {
        let xs: Vec<Tensor> = inputs.iter().map(|x| prepare(x, to, device)).collect();
        let y = f(&xs);
        let w = rand_f64(y.shape(), 9_999).to_dtype(dtype).unwrap().to_dtype(to).unwrap().to_device(device).unwrap();
        let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        (y, xs.iter().map(|x| grads.get(x).cloned()).collect())
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

// ----- kernels compile (no GPU needed) -------------------------------------------

#[test]
fn conv_attention_and_siamese_kernels_are_embedded_and_compile_with_nvrtc() {
    let names = kernels::module_names();
    for family in ["conv", "attention", "siamese_head"] {
        assert!(names.contains(&family), "kernel module `{family}` missing from {names:?}");
    }
    if !kernels::nvrtc_present() {
        println!("skipping the NVRTC half of conv_attention_and_siamese_kernels_are_embedded_and_compile_with_nvrtc: libnvrtc not found");
        return;
    }
    let entries = [
        ("conv", ["conv2d_gemm_fwd_f32", "conv2d_gemm_bwd_data_f64", "conv2d_mma_bwd_weight_bf16", "conv2d_bias_grad_f16"]),
        ("attention", ["attention_fwd_f16", "attention_delta_f32", "attention_bwd_kv_bf16", "attention_bwd_q_f64"]),
        ("siamese_head", ["siamese_head_fwd_f32", "siamese_head_bce_f16", "siamese_head_bwd_bf16", "siamese_head_bwd_f64"]),
    ];
    for (module, names) in entries {
        for arch in [80, 90] {
            let ptx = kernels::compile_with_nvrtc(module, arch).unwrap_or_else(|e| panic!("{e}"));
            for entry in names {
                assert!(ptx.contains(&format!(".entry {entry}(")), "NVRTC PTX of `{module}` for compute_{arch} lacks {entry}");
            }
        }
    }
}

// ----- convolution --------------------------------------------------------------

/// One convolution case: input shape, weight shape, params, bias.
struct ConvCase {
    input: [usize; 4],
    weight: [usize; 4],
    params: Conv2dParams,
    bias: bool,
    what: &'static str,
}

fn conv_cases() -> Vec<ConvCase> {
    let p = Conv2dParams::new;
    vec![
        ConvCase { input: [2, 3, 13, 11], weight: [5, 3, 3, 3], params: p(1, 1), bias: true, what: "3x3 same padding" },
        ConvCase {
            input: [1, 6, 17, 9],
            weight: [4, 3, 3, 5],
            params: Conv2dParams { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 2 },
            bias: true,
            what: "3x5 kernel, mixed stride/padding/dilation, 2 groups",
        },
        ConvCase { input: [2, 8, 10, 10], weight: [8, 1, 3, 3], params: p(2, 1).with_groups(8), bias: false, what: "depthwise stride 2" },
        ConvCase { input: [2, 70, 7, 9], weight: [33, 70, 1, 1], params: p(1, 0), bias: true, what: "1x1 pointwise (cuBLAS path)" },
        ConvCase { input: [2, 12, 9, 9], weight: [7, 12, 1, 1], params: p(2, 0), bias: false, what: "1x1 stride 2" },
        ConvCase { input: [1, 67, 9, 9], weight: [130, 67, 3, 3], params: p(1, 1), bias: true, what: "more channels than one tile" },
        ConvCase {
            input: [1, 2, 11, 11],
            weight: [3, 2, 2, 2],
            params: p(3, 0),
            bias: false,
            what: "stride above the kernel (unreached pixels)",
        },
        ConvCase { input: [3, 4, 8, 8], weight: [6, 4, 3, 3], params: p(1, 2).with_dilation(2), bias: true, what: "dilation 2" },
    ]
}

fn conv_parity(dev: Device, dtype: DType, c: &ConvCase, seed: u64) {
    let x = rand_f64(&c.input, seed);
    let w = rand_f64(&c.weight, seed + 1).affine(0.5, 0.0).unwrap();
    let params = c.params;
    if c.bias {
        let b = rand_f64(&[c.weight[0]], seed + 2);
        parity(dev, dtype, &[x, w, b], |v| v[0].conv2d(&v[1], Some(&v[2]), params).unwrap(), c.what);
    } else {
        parity(dev, dtype, &[x, w], |v| v[0].conv2d(&v[1], None, params).unwrap(), c.what);
    }
}

#[test]
fn conv2d_matches_cpu_for_every_variant_forward_and_backward() {
    let Some(dev) = gpu("conv2d_matches_cpu_for_every_variant_forward_and_backward") else { return };
    for dtype in FLOATS {
        for (i, c) in conv_cases().iter().enumerate() {
            conv_parity(dev, dtype, c, 100 + 10 * i as u64);
        }
    }
}

#[test]
fn conv2d_half_precision_matches_cpu_on_both_kernels() {
    let Some(dev) = gpu("conv2d_half_precision_matches_cpu_on_both_kernels") else { return };
    // The tensor-core kernel (default on sm_80+) and the portable tile kernel.
    for tensor_cores in [false, true] {
        cuda::set_conv_tensor_cores(tensor_cores);
        for dtype in [DType::F16, DType::BF16] {
            for (i, c) in conv_cases().iter().enumerate() {
                conv_parity(dev, dtype, c, 300 + 10 * i as u64);
            }
        }
    }
    cuda::set_conv_tensor_cores(true);
}

#[test]
fn conv2d_reads_strided_views() {
    let Some(dev) = gpu("conv2d_reads_strided_views") else { return };
    for dtype in FLOATS {
        // An NHWC tensor seen as NCHW, and a transposed weight view.
        let x = rand_f64(&[2, 9, 7, 5], 1);
        let w = rand_f64(&[3, 3, 5, 4], 2);
        parity(
            dev,
            dtype,
            &[x, w],
            |v| v[0].permute(&[0, 3, 1, 2]).unwrap().conv2d(&v[1].permute(&[3, 2, 0, 1]).unwrap(), None, Conv2dParams::new(1, 1)).unwrap(),
            "conv2d of permuted views",
        );
    }
}

// ----- attention ----------------------------------------------------------------

/// `[b, 1, 1, lk]` additive key-padding mask: the last `pad[i]` keys of batch i hidden.
fn key_padding_mask(b: usize, lk: usize, pad: &[usize]) -> Tensor {
    let mut v = vec![0.0f64; b * lk];
    for (i, &p) in pad.iter().enumerate() {
        for j in lk - p..lk {
            v[i * lk + j] = f64::NEG_INFINITY;
        }
    }
    Tensor::from_vec(v, &[b, 1, 1, lk]).unwrap()
}

#[test]
fn attention_matches_cpu_for_head_dims_masks_and_odd_lengths() {
    let Some(dev) = gpu("attention_matches_cpu_for_head_dims_masks_and_odd_lengths") else { return };
    for dtype in FLOATS {
        for (i, d) in [40usize, 64, 80, 128].into_iter().enumerate() {
            let seed = 1000 + 10 * i as u64;
            let (b, h, lq, lk) = (2, 3, 37, 53);
            let q = rand_f64(&[b, h, lq, d], seed).affine(2.0, 0.0).unwrap();
            let k = rand_f64(&[b, h, lk, d], seed + 1).affine(2.0, 0.0).unwrap();
            let v = rand_f64(&[b, h, lk, d], seed + 2);
            let qkv = [q.clone(), k.clone(), v.clone()];
            parity(
                dev,
                dtype,
                &qkv,
                |t| t[0].scaled_dot_product_attention(&t[1], &t[2], None, false, None).unwrap(),
                &format!("attention d={d}"),
            );
            parity(
                dev,
                dtype,
                &qkv,
                |t| t[0].scaled_dot_product_attention(&t[1], &t[2], None, true, None).unwrap(),
                &format!("causal attention d={d}"),
            );
            let mask = key_padding_mask(b, lk, &[0, 11]).to_dtype(dtype).unwrap();
            parity(
                dev,
                dtype,
                &qkv,
                |t| {
                    let m = mask.to_dtype(t[0].dtype()).unwrap().to_device(t[0].device()).unwrap();
                    t[0].scaled_dot_product_attention(&t[1], &t[2], Some(&m), false, Some(0.3)).unwrap()
                },
                &format!("key-padding masked attention d={d}"),
            );
        }
    }
}

#[test]
fn attention_handles_full_masks_fully_hidden_rows_and_value_dims() {
    let Some(dev) = gpu("attention_handles_full_masks_fully_hidden_rows_and_value_dims") else { return };
    for dtype in FLOATS {
        let (b, h, lq, lk, d, dv) = (1, 2, 19, 33, 64, 40);
        let q = rand_f64(&[b, h, lq, d], 1);
        let k = rand_f64(&[b, h, lk, d], 2);
        let v = rand_f64(&[b, h, lk, dv], 3);
        // A [lq, lk] mask of finite biases, with query row 4 hidden entirely.
        let mut mv = rand_f64(&[lq, lk], 4).affine(3.0, 0.0).unwrap().to_vec_f64().unwrap();
        mv[4 * lk..5 * lk].fill(f64::NEG_INFINITY);
        let mask = Tensor::from_vec(mv, &[lq, lk]).unwrap();
        parity(
            dev,
            dtype,
            &[q.clone(), k.clone(), v.clone()],
            |t| {
                let m = mask.to_dtype(t[0].dtype()).unwrap().to_device(t[0].device()).unwrap();
                t[0].scaled_dot_product_attention(&t[1], &t[2], Some(&m), true, None).unwrap()
            },
            "causal + full mask with a hidden row, dv != d",
        );
        // Inputs as [B, L, H, D] views (the layout projections produce).
        let qt = rand_f64(&[b, lq, h, d], 5);
        let kt = rand_f64(&[b, lk, h, d], 6);
        let vt = rand_f64(&[b, lk, h, d], 7);
        parity(
            dev,
            dtype,
            &[qt, kt, vt],
            |t| {
                let p = |x: &Tensor| x.permute(&[0, 2, 1, 3]).unwrap();
                p(&t[0]).scaled_dot_product_attention(&p(&t[1]), &p(&t[2]), None, false, None).unwrap()
            },
            "attention of permuted views",
        );
    }
}

#[test]
fn attention_rejects_head_dims_above_the_kernel_limit() {
    let Some(dev) = gpu("attention_rejects_head_dims_above_the_kernel_limit") else { return };
    let q = rand_f64(&[1, 1, 4, 160], 1).to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
    let err = q.scaled_dot_product_attention(&q, &q, None, false, None).unwrap_err().to_string();
    assert!(err.contains("head dims up to 128"), "{err}");
}

// ----- siamese head -------------------------------------------------------------

#[test]
fn siamese_head_matches_cpu_with_and_without_bce() {
    let Some(dev) = gpu("siamese_head_matches_cpu_with_and_without_bce") else { return };
    for dtype in FLOATS {
        for (n, d) in [(37usize, 128usize), (5, 77)] {
            let a = rand_f64(&[n, d], 1).affine(3.0, 0.0).unwrap();
            let b = rand_f64(&[n, d], 2).affine(3.0, 0.0).unwrap();
            let w = rand_f64(&[1, d], 3);
            let bias = rand_f64(&[1], 4);
            let inputs = [a, b, w, bias];
            parity(dev, dtype, &inputs, |t| Tensor::siamese_head(&t[0], &t[1], &t[2], &t[3]).unwrap(), &format!("siamese head D={d}"));
            let target = Tensor::from_vec((0..n).map(|i| (i % 3 == 0) as i64 as f64).collect::<Vec<f64>>(), &[n]).unwrap();
            parity(
                dev,
                dtype,
                &inputs,
                |t| {
                    let y = target.to_dtype(t[0].dtype()).unwrap().to_device(t[0].device()).unwrap();
                    Tensor::siamese_head_bce(&t[0], &t[1], &t[2], &t[3], &y).unwrap()
                },
                &format!("siamese head + BCE D={d}"),
            );
        }
    }
}

// ----- whole models ---------------------------------------------------------------

/// The same model built twice, on the CPU and on the GPU with the CPU's weights (f32).
fn twin_stores(dev: Device, build: impl Fn(&ParamStore)) -> (ParamStore, ParamStore) {
    let cpu = ParamStore::new(DType::F32, Device::Cpu, 7);
    build(&cpu);
    let gpu = ParamStore::new(DType::F32, dev, 7);
    build(&gpu);
    gpu.load_from(|name, _| cpu.get(name).or_else(|| cpu.get_buffer(name)).expect("same parameters").to_device(dev)).unwrap();
    (cpu, gpu)
}

/// Every trainable parameter's gradient agrees between the two stores.
#[track_caller]
fn assert_grads_close(
    cpu: &ParamStore,
    gpu: &ParamStore,
    cpu_grads: &privdistill::autograd::Gradients,
    gpu_grads: &privdistill::autograd::Gradients,
    t: f64,
) {
    let mut checked = 0;
    for ((name, pc), (_, pg)) in cpu.trainable_parameters().iter().zip(gpu.trainable_parameters().iter()) {
        let (Some(gc), Some(gg)) = (cpu_grads.get(pc), gpu_grads.get(pg)) else {
            assert!(cpu_grads.get(pc).is_none() && gpu_grads.get(pg).is_none(), "{name}: gradient on one device only");
            continue;
        };
        let gg = gg.to_device(Device::Cpu).unwrap();
        let scale = gc.to_vec_f64().unwrap().iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        assert_close(&gg.affine(1.0 / scale, 0.0).unwrap(), &gc.affine(1.0 / scale, 0.0).unwrap(), t, t);
        checked += 1;
    }
    assert!(checked > 0, "no gradient compared");
}

#[test]
fn tiny_unet_forward_and_backward_match_cpu() {
    let Some(dev) = gpu("tiny_unet_forward_and_backward_match_cpu") else { return };
    let cfg = UNetConfig::from_json(TINY_UNET).unwrap();
    let build = |s: &ParamStore| drop(UNet2DConditionModel::new(&s.root(), &cfg).unwrap());
    let (cpu, gpu_store) = twin_stores(dev, build);
    let unet_cpu = UNet2DConditionModel::new(&cpu.root(), &cfg).unwrap();
    let unet_gpu = UNet2DConditionModel::new(&gpu_store.root(), &cfg).unwrap();
    let x = rand_f64(&[2, 4, 8, 8], 1).to_dtype(DType::F32).unwrap();
    let ctx = rand_f64(&[2, 5, 32], 2).to_dtype(DType::F32).unwrap();
    let ts = [17.0, 503.0];
    let loss = |unet: &UNet2DConditionModel, device: Device| {
        let y = unet.forward(&x.to_device(device).unwrap(), &ts, &ctx.to_device(device).unwrap()).unwrap();
        let l = y.square().unwrap().mean_all().unwrap();
        (y, l.backward().unwrap())
    };
    let (y_cpu, g_cpu) = loss(&unet_cpu, Device::Cpu);
    let (y_gpu, g_gpu) = loss(&unet_gpu, dev);
    assert_close(&y_gpu.to_device(Device::Cpu).unwrap(), &y_cpu, 2e-3, 2e-3);
    assert_grads_close(&cpu, &gpu_store, &g_cpu, &g_gpu, 5e-3);
}

#[test]
fn small_resnet_training_forward_and_backward_match_cpu() {
    let Some(dev) = gpu("small_resnet_training_forward_and_backward_match_cpu") else { return };
    let cfg = ResNetConfig { layers: [1, 1, 1, 1], num_classes: 3, in_channels: 1, width_per_group: 64, base_planes: 16 };
    let build = |s: &ParamStore| drop(ResNet::new(&s.root(), &cfg).unwrap());
    let (cpu, gpu_store) = twin_stores(dev, build);
    let net_cpu = ResNet::new(&cpu.root(), &cfg).unwrap();
    let net_gpu = ResNet::new(&gpu_store.root(), &cfg).unwrap();
    let x = rand_f64(&[3, 1, 37, 37], 3).to_dtype(DType::F32).unwrap();
    let run = |net: &ResNet, device: Device| {
        let out = net.forward(&x.to_device(device).unwrap(), true).unwrap();
        let l = out.logits.square().unwrap().mean_all().unwrap();
        (out.logits, l.backward().unwrap())
    };
    let (y_cpu, g_cpu) = run(&net_cpu, Device::Cpu);
    let (y_gpu, g_gpu) = run(&net_gpu, dev);
    assert_close(&y_gpu.to_device(Device::Cpu).unwrap(), &y_cpu, 2e-3, 2e-3);
    assert_grads_close(&cpu, &gpu_store, &g_cpu, &g_gpu, 5e-3);
}

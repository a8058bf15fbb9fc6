//! The CUDA backend against the CPU reference, and its behaviour without a GPU.
//!
//! GPU tests print `skipping: <reason>` and pass when no device is usable.
//! The no-GPU tests check that every CUDA request then fails with a clear
//! error instead of a panic, and that `doctor` says why CUDA is off; they skip
//! themselves when a device is present.

use privdistill::backend::cuda::{self, kernels};
use privdistill::backend::op::{BinaryOp, CmpOp, UnaryOp};
use privdistill::testing::{assert_close, rand_f32, rand_f64};
use privdistill::{DType, Device, Tensor};

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

const UNARY: &[UnaryOp] = UnaryOp::ALL;

const BINARY: &[BinaryOp] =
    &[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Maximum, BinaryOp::Minimum];

/// Inputs inside the op's domain: positive where log/sqrt/recip/pow need it.
fn domain_input(op: UnaryOp, x: &Tensor) -> Tensor {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip | UnaryOp::Powf(_) => x.abs().unwrap().add_scalar(0.1).unwrap(),
        _ => x.affine(3.0, 0.0).unwrap(),
    }
}

// ----- GPU vs CPU -------------------------------------------------------------

#[test]
fn upload_download_round_trips_every_dtype() {
    let Some(dev) = gpu("upload_download_round_trips_every_dtype") else { return };
    let x = rand_f64(&[3, 5, 7], 1).affine(100.0, 0.0).unwrap();
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I32] {
        let host = x.to_dtype(dtype).unwrap();
        let back = host.to_device(dev).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(back.dtype(), dtype);
        assert_eq!(back.to_vec_f64().unwrap(), host.to_vec_f64().unwrap(), "{dtype:?}");
    }
    let bytes = Tensor::from_vec((0..=255u8).collect::<Vec<_>>(), &[16, 16]).unwrap();
    assert_eq!(bytes.to_device(dev).unwrap().to_vec::<u8>().unwrap(), bytes.to_vec::<u8>().unwrap());
    // A strided view on the GPU comes back in row-major order (copy_strided).
    let on_gpu = x.to_device(dev).unwrap().permute(&[2, 0, 1]).unwrap().narrow(1, 1, 2).unwrap();
    let on_cpu = x.permute(&[2, 0, 1]).unwrap().narrow(1, 1, 2).unwrap();
    assert_eq!(on_gpu.to_vec_f64().unwrap(), on_cpu.to_vec_f64().unwrap());
    let empty = Tensor::zeros(&[0, 4], DType::F32, dev).unwrap();
    assert_eq!(empty.to_vec_f32().unwrap(), Vec::<f32>::new());
}

#[test]
fn unary_matches_cpu_on_odd_and_strided_shapes() {
    let Some(dev) = gpu("unary_matches_cpu_on_odd_and_strided_shapes") else { return };
    for (i, &op) in UNARY.iter().enumerate() {
        let x = domain_input(op, &rand_f32(&[13, 7], 100 + i as u64));
        let expected = x.unary(op).unwrap();
        assert_close(&x.to_device(dev).unwrap().unary(op).unwrap(), &expected, 1e-5, 1e-5);
        // Transposed input: the kernel gathers through the strides.
        let xt = x.t().unwrap();
        assert_close(&xt.to_device(dev).unwrap().unary(op).unwrap(), &xt.unary(op).unwrap(), 1e-5, 1e-5);
        // f64 computes in f64.
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert_close(&x64.to_device(dev).unwrap().unary(op).unwrap(), &x64.unary(op).unwrap(), 1e-12, 1e-12);
    }
}

#[test]
fn unary_in_half_precision_computes_in_f32() {
    let Some(dev) = gpu("unary_in_half_precision_computes_in_f32") else { return };
    for dtype in [DType::F16, DType::BF16] {
        for (i, &op) in UNARY.iter().enumerate() {
            // Reference: the same half-rounded inputs, computed in f32 on the CPU, rounded once at the end.
            let x = domain_input(op, &rand_f32(&[5, 9], 200 + i as u64)).to_dtype(dtype).unwrap();
            let x32 = x.to_dtype(DType::F32).unwrap();
            let expected = x32.unary(op).unwrap().to_dtype(dtype).unwrap();
            let got = x.to_device(dev).unwrap().unary(op).unwrap();
            assert_eq!(got.dtype(), dtype);
            let tol = if dtype == DType::F16 { 2e-3 } else { 1.6e-2 };
            assert_close(&got, &expected, tol, tol);
        }
    }
}

#[test]
fn unary_backward_matches_cpu() {
    let Some(dev) = gpu("unary_backward_matches_cpu") else { return };
    for (i, &op) in UNARY.iter().enumerate() {
        let x = domain_input(op, &rand_f64(&[6, 11], 300 + i as u64));
        let y = x.unary(op).unwrap();
        let g = rand_f64(&[6, 11], 400 + i as u64);
        let expected = x.unary_backward(op, &y, &g).unwrap();
        let (xd, yd, gd) = (x.to_device(dev).unwrap(), y.to_device(dev).unwrap(), g.to_device(dev).unwrap());
        assert_close(&xd.unary_backward(op, &yd, &gd).unwrap(), &expected, 1e-12, 1e-12);
    }
}

#[test]
fn binary_broadcasts_like_cpu() {
    let Some(dev) = gpu("binary_broadcasts_like_cpu") else { return };
    let a = rand_f32(&[5, 1, 7], 10);
    let b = rand_f32(&[3, 1], 11).affine(0.5, 1.5).unwrap(); // positive for div and pow
    let a_pos = a.abs().unwrap().add_scalar(0.1).unwrap();
    let at = rand_f32(&[7, 3, 5], 12).permute(&[2, 1, 0]).unwrap(); // strided [5,3,7]
    for &op in BINARY {
        let lhs = if op == BinaryOp::Pow { &a_pos } else { &a };
        let expected = lhs.binary(&b, op).unwrap();
        let got = lhs.to_device(dev).unwrap().binary(&b.to_device(dev).unwrap(), op).unwrap();
        assert_eq!(got.shape(), &[5, 3, 7]);
        assert_close(&got, &expected, 1e-5, 1e-5);
        let lhs_t = if op == BinaryOp::Pow { at.abs().unwrap() } else { at.clone() };
        let expected = lhs_t.binary(&b, op).unwrap();
        let got = lhs_t.to_device(dev).unwrap().binary(&b.to_device(dev).unwrap(), op).unwrap();
        assert_close(&got, &expected, 1e-5, 1e-5);
    }
    // f64 and a half type.
    let (a64, b64) = (a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
    assert_close(&a64.to_device(dev).unwrap().mul(&b64.to_device(dev).unwrap()).unwrap(), &a64.mul(&b64).unwrap(), 1e-15, 1e-15);
    let (ah, bh) = (a.to_dtype(DType::BF16).unwrap(), b.to_dtype(DType::BF16).unwrap());
    let expected = ah.to_dtype(DType::F32).unwrap().add(&bh.to_dtype(DType::F32).unwrap()).unwrap().to_dtype(DType::BF16).unwrap();
    assert_close(&ah.to_device(dev).unwrap().add(&bh.to_device(dev).unwrap()).unwrap(), &expected, 0.0, 0.0);
}

#[test]
fn compare_matches_cpu_with_ties() {
    let Some(dev) = gpu("compare_matches_cpu_with_ties") else { return };
    // Rounded values make equal elements common.
    let a = rand_f32(&[4, 1, 6], 20).affine(3.0, 0.0).unwrap().to_dtype(DType::I32).unwrap();
    let b = rand_f32(&[5, 1], 21).affine(3.0, 0.0).unwrap().to_dtype(DType::I32).unwrap();
    for dtype in [DType::F32, DType::F64, DType::F16, DType::I64, DType::I32] {
        let (a, b) = (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
        for op in [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
            let expected = a.compare(&b, op).unwrap().to_vec::<u8>().unwrap();
            let got = a.to_device(dev).unwrap().compare(&b.to_device(dev).unwrap(), op).unwrap();
            assert_eq!(got.dtype(), DType::U8);
            assert_eq!(got.to_vec::<u8>().unwrap(), expected, "{dtype:?} {op:?}");
        }
    }
}

#[test]
fn matmul_matches_cpu_on_odd_shapes_transposes_and_batches() {
    let Some(dev) = gpu("matmul_matches_cpu_on_odd_shapes_transposes_and_batches") else { return };
    let cases: Vec<(Tensor, Tensor)> = vec![
        (rand_f32(&[17, 33], 30), rand_f32(&[33, 19], 31)),
        (rand_f32(&[3, 17, 33], 32), rand_f32(&[33, 19], 33)),
        (rand_f32(&[33, 17], 34).t().unwrap(), rand_f32(&[19, 33], 35).t().unwrap()), // both transposed
        (rand_f32(&[2, 1, 5, 7], 36), rand_f32(&[3, 7, 4], 37)),                      // batch broadcast
        (rand_f32(&[4, 6, 5], 38).narrow(2, 1, 3).unwrap(), rand_f32(&[3, 1], 39)),   // row stride > cols; n = 1
        (rand_f32(&[1, 9], 40), rand_f32(&[9, 1], 41)),
        (rand_f32(&[2, 3, 4, 5], 42).permute(&[1, 0, 2, 3]).unwrap(), rand_f32(&[5, 2], 43)), // batch not mergeable
    ];
    for (i, (a, b)) in cases.iter().enumerate() {
        let expected = a.matmul(b).unwrap();
        let got = a.to_device(dev).unwrap().matmul(&b.to_device(dev).unwrap()).unwrap();
        assert_eq!(got.shape(), expected.shape(), "case {i}");
        assert_close(&got, &expected, 1e-4, 1e-4);
        let (a64, b64) = (a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
        assert_close(&a64.to_device(dev).unwrap().matmul(&b64.to_device(dev).unwrap()).unwrap(), &a64.matmul(&b64).unwrap(), 1e-12, 1e-12);
    }
    // f16/bf16 accumulate in f32: compare with the f32 product of the rounded inputs.
    let (a, b) = (rand_f32(&[2, 13, 40], 44), rand_f32(&[40, 11], 45));
    for (dtype, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let (ah, bh) = (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
        let expected = ah.to_dtype(DType::F32).unwrap().matmul(&bh.to_dtype(DType::F32).unwrap()).unwrap();
        let got = ah.to_device(dev).unwrap().matmul(&bh.to_device(dev).unwrap()).unwrap();
        assert_eq!(got.dtype(), dtype);
        assert_close(&got, &expected, tol, tol);
    }
}

#[test]
fn casts_match_cpu() {
    let Some(dev) = gpu("casts_match_cpu") else { return };
    // Includes values outside u8/i32 ranges and negatives: integer casts saturate.
    let x = rand_f64(&[7, 9], 50).affine(400.0, 0.0).unwrap().to_dtype(DType::F32).unwrap();
    let xt = x.t().unwrap();
    let all = [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I32, DType::U8];
    for from in all {
        let src = xt.to_dtype(from).unwrap();
        let src_gpu = src.to_device(dev).unwrap();
        for to in all {
            let expected = src.to_dtype(to).unwrap().to_vec_f64().unwrap();
            let got = src_gpu.to_dtype(to).unwrap();
            assert_eq!(got.dtype(), to);
            assert_eq!(got.to_vec_f64().unwrap(), expected, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn reductions_match_cpu() {
    let Some(dev) = gpu("reductions_match_cpu") else { return };
    let x = rand_f32(&[6, 5, 300], 60).permute(&[2, 0, 1]).unwrap(); // [300,6,5] strided
    let xg = x.to_device(dev).unwrap();
    for dims in [vec![0isize], vec![1], vec![2], vec![0, 2], vec![]] {
        assert_close(&xg.sum(&dims, false).unwrap(), &x.sum(&dims, false).unwrap(), 1e-4, 1e-5);
        assert_close(&xg.max(&dims, true).unwrap(), &x.max(&dims, true).unwrap(), 0.0, 0.0);
        assert_close(&xg.min(&dims, false).unwrap(), &x.min(&dims, false).unwrap(), 0.0, 0.0);
    }
    // Ties: the first index wins, as on the CPU.
    let ties = rand_f32(&[9, 40], 61).affine(2.0, 0.0).unwrap().to_dtype(DType::I32).unwrap().to_dtype(DType::F32).unwrap();
    let tg = ties.to_device(dev).unwrap();
    for dim in [0isize, 1] {
        assert_eq!(tg.argmax(dim, false).unwrap().to_vec::<i64>().unwrap(), ties.argmax(dim, false).unwrap().to_vec::<i64>().unwrap());
        assert_eq!(tg.argmin(dim, true).unwrap().to_vec::<i64>().unwrap(), ties.argmin(dim, true).unwrap().to_vec::<i64>().unwrap());
    }
    // A long row goes through every level of the block reduction.
    let long = rand_f64(&[3, 10_000], 62);
    assert_close(&long.to_device(dev).unwrap().sum(&[1], false).unwrap(), &long.sum(&[1], false).unwrap(), 1e-10, 1e-12);
}

#[test]
fn assign_and_contiguous_match_cpu() {
    let Some(dev) = gpu("assign_and_contiguous_match_cpu") else { return };
    let cpu = Tensor::zeros(&[4, 6], DType::F32, Device::Cpu).unwrap();
    let gpu_t = Tensor::zeros(&[4, 6], DType::F32, dev).unwrap();
    let src = rand_f32(&[3, 4], 70);
    cpu.t().unwrap().narrow(0, 2, 3).unwrap().assign(&src).unwrap();
    gpu_t.t().unwrap().narrow(0, 2, 3).unwrap().assign(&src.to_device(dev).unwrap()).unwrap();
    assert_eq!(gpu_t.to_vec_f64().unwrap(), cpu.to_vec_f64().unwrap());
    let p = rand_f32(&[2, 3, 4], 71).to_device(dev).unwrap().permute(&[2, 0, 1]).unwrap().contiguous().unwrap();
    assert!(p.is_contiguous());
    assert_eq!(p.to_vec_f64().unwrap(), rand_f32(&[2, 3, 4], 71).permute(&[2, 0, 1]).unwrap().to_vec_f64().unwrap());
}

// ----- without a GPU ------------------------------------------------------------

#[test]
fn cuda_requests_without_a_device_fail_clearly() {
    let why = match cuda::is_available(0) {
        Ok(()) => {
            println!("skipping cuda_requests_without_a_device_fail_clearly: a CUDA device is present");
            return;
        }
        Err(why) => why,
    };
    assert!(!why.is_empty());
    let x = rand_f32(&[2, 3], 80);
    let attempts = [
        ("zeros", Tensor::zeros(&[2, 3], DType::F32, GPU).map(|_| ())),
        ("ones f16", Tensor::ones(&[4], DType::F16, GPU).map(|_| ())),
        ("to_device", x.to_device(GPU).map(|_| ())),
        ("to_device of a view", x.t().unwrap().to_device(GPU).map(|_| ())),
        ("to_device cuda:1", x.to_device(Device::Cuda(1)).map(|_| ())),
        ("arange", Tensor::arange(5, DType::I64, GPU).map(|_| ())),
    ];
    for (what, r) in attempts {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("CUDA unavailable") && e.contains(&why), "{what}: unclear error `{e}`");
    }
}

#[test]
fn a_device_that_does_not_exist_is_an_error() {
    let e = Tensor::zeros(&[2], DType::F32, Device::Cuda(4096)).expect_err("cuda:4096 cannot exist").to_string();
    assert!(e.contains("CUDA unavailable"), "{e}");
    assert!(cuda::is_available(4096).is_err());
}

#[test]
fn doctor_reports_cpu_and_why_cuda_is_off() {
    let report = privdistill::doctor::report();
    for part in ["privdistill ", "CPU:", "threads:", "SIMD:", "CUDA:", "kernels:", "NVRTC:"] {
        assert!(report.contains(part), "doctor report lacks `{part}`:\n{report}");
    }
    match cuda::driver() {
        Ok(d) => assert!(report.contains(&format!("{} device(s)", d.device_count)), "{report}"),
        Err(why) => assert!(report.contains(&format!("CUDA:     off — {why}")), "{report}"),
    }
    let embedding = kernels::embedding().to_string();
    assert!(report.contains(&embedding), "{report}");
}

#[test]
fn doctor_command_exits_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privdistill")).arg("doctor").output().expect("run privdistill doctor");
    assert!(out.status.success(), "doctor failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CUDA:") && text.contains("kernels:"), "{text}");
}

#[test]
fn every_kernel_family_is_embedded() {
    let names = kernels::module_names();
    for family in ["cast", "copy", "elementwise", "indexing", "loss", "norm", "optim", "pool", "reduce", "rng", "softmax", "upsample"] {
        assert!(names.contains(&family), "kernel module `{family}` missing from {names:?}");
    }
}

/// Runs wherever libnvrtc can be loaded (no GPU needed): the embedded sources
/// must compile as they are, with no include path.
#[test]
fn nvrtc_compiles_every_embedded_module() {
    if !kernels::nvrtc_present() {
        println!("skipping nvrtc_compiles_every_embedded_module: libnvrtc not found");
        return;
    }
    let expected_entries = [
        ("elementwise", "unary_f32"),
        ("elementwise", "binary_bf16"),
        ("elementwise", "compare_u8"),
        ("cast", "cast_f64_f16"),
        ("copy", "scatter_b8"),
        ("reduce", "arg_reduce_f16"),
        ("softmax", "softmax_rows_f32"),
        ("softmax", "softmax_bwd_columns_bf16"),
        ("norm", "group_norm_fwd_f16"),
        ("norm", "group_norm_bwd_f32"),
        ("norm", "layer_norm_bwd_params_f64"),
        ("norm", "batch_norm_stats_bf16"),
        ("indexing", "index_select_rows_b2"),
        ("indexing", "index_add_rows_f16"),
        ("pool", "max_pool2d_bwd_f32"),
        ("pool", "adaptive_avg_pool2d_bwd_f64"),
        ("upsample", "upsample_nearest2d_bwd_bf16"),
        ("loss", "cross_entropy_bwd_f32"),
        ("loss", "bce_with_logits_fwd_f16"),
        ("loss", "cosine_similarity_bwd_f32"),
        ("optim", "adamw_f32"),
        ("optim", "sum_squares_bf16"),
        ("optim", "ema_f64"),
        ("rng", "philox_normal_f64"),
    ];
    for name in kernels::module_names() {
        let ptx = kernels::compile_with_nvrtc(name, 80).unwrap_or_else(|e| panic!("{e}"));
        for (module, entry) in expected_entries {
            if module == name {
                assert!(ptx.contains(&format!(".entry {entry}(")), "NVRTC PTX of `{name}` lacks {entry}");
            }
        }
    }
}

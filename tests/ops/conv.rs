//! conv2d: forward against a direct convolution loop, backward kernels
//! against a direct adjoint loop and finite differences, f32 against f64.

use privdistill::tensor::ops::conv::{conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, Conv2dEpilogue, Conv2dParams};
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Output length of one axis (PyTorch's formula).
fn out_len(input: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    (input + 2 * p - d * (k - 1) - 1) / s + 1
}

/// For every (output, input, weight) index triple that a convolution multiplies
/// together, call `visit(out_index, in_index, weight_index)` with flat indices.
fn for_each_tap(x_shape: &[usize], w_shape: &[usize], p: Conv2dParams, mut visit: impl FnMut(usize, usize, usize)) {
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (co, cig, kh, kw) = (w_shape[0], w_shape[1], w_shape[2], w_shape[3]);
    let oh = out_len(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
    let ow = out_len(w, kw, p.stride[1], p.padding[1], p.dilation[1]);
    let cog = co / p.groups;
    for b in 0..n {
        for o in 0..co {
            let grp = o / cog;
            for y in 0..oh {
                for xo in 0..ow {
                    let out_index = ((b * co + o) * oh + y) * ow + xo;
                    for ci in 0..cig {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (y * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                                let iw = (xo * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let in_index = ((b * c + grp * cig + ci) * h + ih as usize) * w + iw as usize;
                                let w_index = ((o * cig + ci) * kh + ki) * kw + kj;
                                visit(out_index, in_index, w_index);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn out_shape(x: &[usize], w: &[usize], p: Conv2dParams) -> Vec<usize> {
    vec![
        x[0],
        w[0],
        out_len(x[2], w[2], p.stride[0], p.padding[0], p.dilation[0]),
        out_len(x[3], w[3], p.stride[1], p.padding[1], p.dilation[1]),
    ]
}

fn naive_conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Tensor {
    let (xv, wv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let shape = out_shape(x.shape(), w.shape(), p);
    let mut out = vec![0.0; shape.iter().product()];
    for_each_tap(x.shape(), w.shape(), p, |o, i, k| out[o] += xv[i] * wv[k]);
    if let Some(b) = bias {
        let bv = b.to_vec_f64().unwrap();
        let plane = shape[2] * shape[3];
        for (i, v) in out.iter_mut().enumerate() {
            *v += bv[(i / plane) % shape[1]];
        }
    }
    Tensor::from_vec(out, &shape).unwrap()
}

/// Gradients of input and weight by the adjoint of the direct loop.
fn naive_conv2d_backward(x: &Tensor, w: &Tensor, dy: &Tensor, p: Conv2dParams) -> (Tensor, Tensor) {
    let (xv, wv, gv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), dy.to_vec_f64().unwrap());
    let (mut dx, mut dw) = (vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for_each_tap(x.shape(), w.shape(), p, |o, i, k| {
        dx[i] += gv[o] * wv[k];
        dw[k] += gv[o] * xv[i];
    });
    (Tensor::from_vec(dx, x.shape()).unwrap(), Tensor::from_vec(dw, w.shape()).unwrap())
}

struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
}

fn p(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], groups: usize) -> Conv2dParams {
    Conv2dParams { stride, padding, dilation, groups }
}

fn cases() -> Vec<Case> {
    vec![
        Case { name: "3x3 pad 1", x: [2, 3, 7, 6], w: [4, 3, 3, 3], params: Conv2dParams::new(1, 1) },
        Case { name: "3x3 stride 2 pad 1", x: [2, 3, 9, 8], w: [5, 3, 3, 3], params: Conv2dParams::new(2, 1) },
        Case { name: "dilation 2", x: [1, 2, 9, 7], w: [3, 2, 3, 3], params: Conv2dParams::new(1, 2).with_dilation(2) },
        Case { name: "groups 2", x: [2, 4, 6, 5], w: [6, 2, 3, 3], params: Conv2dParams::new(1, 1).with_groups(2) },
        Case { name: "depthwise x2", x: [2, 4, 6, 7], w: [8, 1, 3, 3], params: Conv2dParams::new(2, 1).with_groups(4) },
        Case { name: "1x1 pointwise", x: [2, 5, 4, 3], w: [3, 5, 1, 1], params: Conv2dParams::default() },
        Case { name: "1x1 pointwise groups", x: [1, 6, 3, 5], w: [4, 3, 1, 1], params: Conv2dParams::default().with_groups(2) },
        Case { name: "1x1 stride 2", x: [2, 3, 5, 6], w: [4, 3, 1, 1], params: Conv2dParams::new(2, 0) },
        Case { name: "7x7 stride 2 pad 3", x: [1, 3, 13, 11], w: [4, 3, 7, 7], params: Conv2dParams::new(2, 3) },
        Case { name: "non-square everything", x: [2, 2, 8, 9], w: [3, 2, 2, 3], params: p([2, 1], [0, 1], [1, 2], 1) },
        Case { name: "kernel fills input", x: [1, 2, 3, 4], w: [2, 2, 3, 4], params: Conv2dParams::default() },
        Case { name: "padding only in width", x: [1, 1, 1, 5], w: [2, 1, 1, 3], params: p([1, 2], [0, 1], [1, 1], 1) },
    ]
}

#[test]
fn conv2d_forward_matches_direct_loop() {
    for (i, case) in cases().into_iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let x = rand_f64(&case.x, seed);
        let w = rand_f64(&case.w, seed + 1);
        let b = rand_f64(&[case.w[0]], seed + 2);
        let want = naive_conv2d(&x, &w, Some(&b), case.params);
        let got = x.conv2d(&w, Some(&b), case.params).unwrap();
        assert_eq!(got.shape(), want.shape(), "{}", case.name);
        assert_close(&got, &want, 1e-12, 1e-12);
        let want = naive_conv2d(&x, &w, None, case.params);
        assert_close(&x.conv2d(&w, None, case.params).unwrap(), &want, 1e-12, 1e-12);
        // f32 agrees with f64 to f32 precision.
        let (x32, w32, b32) = (x.to_dtype(DType::F32).unwrap(), w.to_dtype(DType::F32).unwrap(), b.to_dtype(DType::F32).unwrap());
        let got32 = x32.conv2d(&w32, Some(&b32), case.params).unwrap();
        assert_eq!(got32.dtype(), DType::F32);
        assert_close(&got32, &naive_conv2d(&x, &w, Some(&b), case.params), 1e-5, 1e-5);
    }
}

#[test]
fn conv2d_accepts_non_contiguous_views() {
    // [2, 6, 3, 5] permuted to [2, 3, 6, 5], and a transposed weight.
    let x = rand_f64(&[2, 6, 3, 5], 1).permute(&[0, 2, 1, 3]).unwrap();
    let w = rand_f64(&[4, 3, 3, 2], 2).transpose(2, 3).unwrap(); // [4, 3, 2, 3]
    assert!(!x.is_contiguous() && !w.is_contiguous());
    let params = Conv2dParams::new(1, 1);
    let got = x.conv2d(&w, None, params).unwrap();
    assert_close(&got, &naive_conv2d(&x, &w, None, params), 1e-12, 1e-12);
    check_gradients(&[x, w], |v| v[0].conv2d(&v[1], None, params), EPS, TOL).unwrap();
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    for case in cases() {
        let x = rand_f64(&case.x, 7);
        let w = rand_f64(&case.w, 8);
        let b = rand_f64(&[case.w[0]], 9);
        let params = case.params;
        check_gradients(&[x, w, b], |v| v[0].conv2d(&v[1], Some(&v[2]), params), EPS, TOL).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

/// Sizes large enough for the blocked, multithreaded paths: several row
/// blocks per image (batch 1), parallel (image, group) items, and threads
/// inside GEMM, im2col and col2im.
#[test]
fn conv2d_blocked_parallel_paths_match_direct_loops() {
    let large = [
        ("batch 1, many blocks", [1, 32, 64, 64], [8, 32, 3, 3], Conv2dParams::new(1, 1)),
        ("batch 4 grouped stride 2", [4, 8, 30, 34], [12, 4, 3, 3], Conv2dParams::new(2, 1).with_groups(2)),
        ("pointwise batch 1", [1, 64, 48, 40], [24, 64, 1, 1], Conv2dParams::default()),
        ("one output row: threads inside backward-weight", [1, 64, 3, 200], [32, 64, 3, 3], Conv2dParams::default()),
    ];
    for (name, xs, ws, params) in large {
        let x = rand_f64(&xs, 11);
        let w = rand_f64(&ws, 12);
        let b = rand_f64(&[ws[0]], 13);
        let y = x.conv2d(&w, Some(&b), params).unwrap();
        assert_close(&y, &naive_conv2d(&x, &w, Some(&b), params), 1e-10, 1e-10);
        let dy = rand_f64(y.shape(), 14);
        let (want_dx, want_dw) = naive_conv2d_backward(&x, &w, &dy, params);
        let dx = conv2d_backward_input(&dy, &w, x.shape(), params).unwrap();
        let dw = conv2d_backward_weight(&x, &dy, w.shape(), params).unwrap();
        assert_close(&dx, &want_dx, 1e-10, 1e-10);
        assert_close(&dw, &want_dw, 1e-9, 1e-10);
        let db = conv2d_backward_bias(&dy).unwrap();
        assert_close(&db, &dy.sum(&[0, 2, 3], false).unwrap(), 1e-10, 1e-10);
        // The f32 kernels agree.
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let dw32 = conv2d_backward_weight(&f32s(&x), &f32s(&dy), w.shape(), params).unwrap();
        assert_close(&dw32, &want_dw, 2e-3, 1e-4);
        let dx32 = conv2d_backward_input(&f32s(&dy), &f32s(&w), x.shape(), params).unwrap();
        assert_close(&dx32, &want_dx, 1e-4, 1e-4);
        eprintln!("{name}: ok");
    }
}

#[test]
fn conv2d_rejects_bad_shapes_with_clear_errors() {
    let x = rand_f64(&[1, 4, 5, 5], 1);
    let err = |r: privdistill::Result<Tensor>| r.unwrap_err().to_string();
    let e = err(x.conv2d(&rand_f64(&[2, 3, 3, 3], 2), None, Conv2dParams::default()));
    assert!(e.contains("[1, 4, 5, 5]") && e.contains("[2, 3, 3, 3]") && e.contains("channels"), "{e}");
    let e = err(x.conv2d(&rand_f64(&[3, 2, 3, 3], 2), None, Conv2dParams::default().with_groups(2)));
    assert!(e.contains("groups") && e.contains("[3, 2, 3, 3]"), "{e}");
    let e = err(x.conv2d(&rand_f64(&[2, 4, 7, 3], 2), None, Conv2dParams::new(1, 0)));
    assert!(e.contains("larger than the padded input"), "{e}");
    assert!(x.conv2d(&rand_f64(&[2, 4, 7, 3], 2), None, Conv2dParams::new(1, 1)).is_ok());
    let e = err(x.conv2d(&rand_f64(&[2, 4, 3, 3], 2), Some(&rand_f64(&[3], 3)), Conv2dParams::default()));
    assert!(e.contains("bias"), "{e}");
    let e = err(rand_f64(&[4, 5, 5], 1).conv2d(&rand_f64(&[2, 4, 3, 3], 2), None, Conv2dParams::default()));
    assert!(e.contains("[N, C_in, H, W]"), "{e}");
    assert!(x.conv2d(&rand_f64(&[2, 4, 3, 3], 2), None, Conv2dParams::new(0, 1)).is_err());
    assert!(x.conv2d(&rand_f64(&[2, 4, 3, 3], 2).to_dtype(DType::F32).unwrap(), None, Conv2dParams::default()).is_err());
    let dy = rand_f64(&[1, 2, 4, 4], 4);
    assert!(conv2d_backward_input(&dy, &rand_f64(&[2, 4, 3, 3], 2), &[1, 4, 5, 5], Conv2dParams::default()).is_err());
}

/// `conv2d_fused` as inference (no gradients: one fused pass) equals the
/// composition of the separate ops on every case, for each part of the
/// epilogue; with gradients on it is that composition, so its backward is
/// checked against finite differences too.
#[test]
fn conv2d_fused_matches_the_composed_ops() {
    for (i, case) in cases().into_iter().enumerate() {
        let seed = 500 + 5 * i as u64;
        let x = rand_f64(&case.x, seed);
        let w = rand_f64(&case.w, seed + 1);
        let c = case.w[0];
        let (scale, shift) = (rand_f64(&[c], seed + 2), rand_f64(&[c], seed + 3));
        let y = x.conv2d(&w, None, case.params).unwrap();
        let residual = rand_f64(y.shape(), seed + 4);
        let per_channel = [1, c, 1, 1];
        let composed = y
            .mul(&scale.reshape(&per_channel).unwrap())
            .unwrap()
            .add(&shift.reshape(&per_channel).unwrap())
            .unwrap()
            .add(&residual)
            .unwrap()
            .relu()
            .unwrap();
        let epilogue = Conv2dEpilogue { scale: Some(&scale), shift: Some(&shift), residual: Some(&residual), relu: true };
        let fused = privdistill::no_grad(|| x.conv2d_fused(&w, epilogue, case.params)).unwrap();
        assert_close(&fused, &composed, 1e-12, 1e-12);
        // Each part alone.
        let only_shift = Conv2dEpilogue { shift: Some(&shift), ..Default::default() };
        let want = y.add(&shift.reshape(&per_channel).unwrap()).unwrap();
        assert_close(&privdistill::no_grad(|| x.conv2d_fused(&w, only_shift, case.params)).unwrap(), &want, 1e-12, 1e-12);
        let only_relu = Conv2dEpilogue { relu: true, ..Default::default() };
        assert_close(&privdistill::no_grad(|| x.conv2d_fused(&w, only_relu, case.params)).unwrap(), &y.relu().unwrap(), 1e-12, 1e-12);
        let params = case.params;
        check_gradients(
            &[x, w, scale, shift, residual],
            |v| {
                let e = Conv2dEpilogue { scale: Some(&v[2]), shift: Some(&v[3]), residual: Some(&v[4]), relu: false };
                v[0].conv2d_fused(&v[1], e, params)
            },
            EPS,
            TOL,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

#[test]
fn conv2d_fused_rejects_mismatched_epilogues() {
    let x = rand_f64(&[2, 3, 6, 6], 1);
    let w = rand_f64(&[4, 3, 3, 3], 2);
    let params = Conv2dParams::new(1, 1);
    let bad_scale = rand_f64(&[3], 3);
    let e = Conv2dEpilogue { scale: Some(&bad_scale), ..Default::default() };
    let err = x.conv2d_fused(&w, e, params).unwrap_err().to_string();
    assert!(err.contains("scale") && err.contains("[4]"), "{err}");
    let bad_residual = rand_f64(&[2, 4, 5, 6], 4);
    let e = Conv2dEpilogue { residual: Some(&bad_residual), ..Default::default() };
    assert!(x.conv2d_fused(&w, e, params).is_err());
}

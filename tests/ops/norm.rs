//! group_norm (and group_norm_silu), layer_norm, batch_norm: forward vs naive
//! references on strided views and odd sizes, running-statistics updates,
//! backward vs finite differences.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-5;

/// Mean and biased variance of a list of values.
fn moments(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64)
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn opt_vec(t: Option<&Tensor>) -> Option<Vec<f64>> {
    t.map(|t| t.to_vec_f64().unwrap())
}

/// Group norm over [N, C, S...] computed element by element.
fn naive_group_norm(x: &Tensor, groups: usize, w: Option<&Tensor>, b: Option<&Tensor>, silu_after: bool) -> Tensor {
    let shape = x.shape().to_vec();
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let v = x.to_vec_f64().unwrap();
    let (w, b) = (opt_vec(w), opt_vec(b));
    let cg = c / groups;
    let mut out = vec![0.0; v.len()];
    for ni in 0..n {
        for g in 0..groups {
            let idx: Vec<usize> = (g * cg..(g + 1) * cg).flat_map(|ch| (0..s).map(move |si| (ni * c + ch) * s + si)).collect();
            let (m, var) = moments(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
            for &i in &idx {
                let ch = (i / s) % c;
                let y = (v[i] - m) / (var + EPS).sqrt() * w.as_ref().map_or(1.0, |w| w[ch]) + b.as_ref().map_or(0.0, |b| b[ch]);
                out[i] = if silu_after { silu(y) } else { y };
            }
        }
    }
    Tensor::from_vec(out, &shape).unwrap()
}

/// Layer norm over rows of the last `len` elements.
fn naive_layer_norm(x: &Tensor, len: usize, w: Option<&Tensor>, b: Option<&Tensor>) -> Tensor {
    let v = x.to_vec_f64().unwrap();
    let (w, b) = (opt_vec(w), opt_vec(b));
    let mut out = vec![0.0; v.len()];
    for (row, orow) in v.chunks(len).zip(out.chunks_mut(len)) {
        let (m, var) = moments(row);
        for (j, o) in orow.iter_mut().enumerate() {
            *o = (row[j] - m) / (var + EPS).sqrt() * w.as_ref().map_or(1.0, |w| w[j]) + b.as_ref().map_or(0.0, |b| b[j]);
        }
    }
    Tensor::from_vec(out, x.shape()).unwrap()
}

/// Per-channel values of an [N, C, S...] tensor.
fn channel_values(x: &Tensor) -> Vec<Vec<f64>> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let v = x.to_vec_f64().unwrap();
    (0..c).map(|ch| (0..n).flat_map(|ni| v[(ni * c + ch) * s..(ni * c + ch + 1) * s].to_vec()).collect()).collect()
}

/// Batch norm with the given per-channel mean and variance.
fn naive_batch_norm(x: &Tensor, mean: &[f64], var: &[f64], w: Option<&Tensor>, b: Option<&Tensor>) -> Tensor {
    let c = x.shape()[1];
    let s: usize = x.shape()[2..].iter().product();
    let (w, b) = (opt_vec(w), opt_vec(b));
    let v = x.to_vec_f64().unwrap();
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &xv)| {
            let ch = (i / s) % c;
            (xv - mean[ch]) / (var[ch] + EPS).sqrt() * w.as_ref().map_or(1.0, |w| w[ch]) + b.as_ref().map_or(0.0, |b| b[ch])
        })
        .collect();
    Tensor::from_vec(out, x.shape()).unwrap()
}

fn f32_of(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

// ----- group norm ---------------------------------------------------------

#[test]
fn group_norm_forward_matches_naive() {
    // Non-contiguous [2, 6, 3, 5] with an offset mean and scale.
    let x = rand_f64(&[2, 3, 5, 6], 21).affine(3.0, 1.5).unwrap().permute(&[0, 3, 1, 2]).unwrap();
    let w = rand_f64(&[6], 22);
    let b = rand_f64(&[6], 23);
    for groups in [1, 2, 3, 6] {
        for (wo, bo) in [(Some(&w), Some(&b)), (None, None), (Some(&w), None)] {
            for silu_after in [false, true] {
                let want = naive_group_norm(&x, groups, wo, bo, silu_after);
                let got = if silu_after { x.group_norm_silu(groups, wo, bo, EPS) } else { x.group_norm(groups, wo, bo, EPS) }.unwrap();
                assert_close(&got, &want, 1e-12, 1e-12);
                let got32 = if silu_after {
                    f32_of(&x).group_norm_silu(groups, wo.map(f32_of).as_ref(), bo.map(f32_of).as_ref(), EPS)
                } else {
                    f32_of(&x).group_norm(groups, wo.map(f32_of).as_ref(), bo.map(f32_of).as_ref(), EPS)
                }
                .unwrap();
                assert_close(&got32, &want, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn group_norm_large_input_uses_threads_and_stays_accurate() {
    // SD-like: 32 groups of 2 channels, values far from zero (f32 cancellation test).
    let x = rand_f64(&[2, 64, 17, 19], 24).affine(2.0, 50.0).unwrap();
    let w = rand_f64(&[64], 25);
    let b = rand_f64(&[64], 26);
    let want = naive_group_norm(&x, 32, Some(&w), Some(&b), true);
    assert_close(&x.group_norm_silu(32, Some(&w), Some(&b), EPS).unwrap(), &want, 1e-11, 1e-11);
    let got32 = f32_of(&x).group_norm_silu(32, Some(&f32_of(&w)), Some(&f32_of(&b)), EPS).unwrap();
    assert_close(&got32, &want, 5e-5, 5e-5);
}

#[test]
fn group_norm_backward_matches_finite_differences() {
    let x = rand_f64(&[2, 3, 4], 27).permute(&[0, 2, 1]).unwrap(); // [2, 4, 3], non-contiguous
    let w = rand_f64(&[4], 28).affine(1.0, 0.5).unwrap();
    let b = rand_f64(&[4], 29);
    for silu_after in [false, true] {
        let f = |v: &[Tensor]| {
            let (w, b) = (v.get(1), v.get(2));
            if silu_after {
                v[0].group_norm_silu(2, w, b, EPS)
            } else {
                v[0].group_norm(2, w, b, EPS)
            }
        };
        check_gradients(&[x.clone(), w.clone(), b.clone()], f, 1e-6, 1e-6).unwrap_or_else(|e| panic!("silu={silu_after}: {e}"));
        check_gradients(std::slice::from_ref(&x), f, 1e-6, 1e-6).unwrap_or_else(|e| panic!("silu={silu_after}, no affine: {e}"));
    }
    // Rank 2 (spatial size 1) and one channel per group.
    let x2 = rand_f64(&[3, 4], 30);
    check_gradients(&[x2, w.clone(), b.clone()], |v| v[0].group_norm(4, Some(&v[1]), Some(&v[2]), EPS), 1e-6, 1e-5).unwrap();
    // Larger than the parallel threshold, on a few entries' worth of checking cost: compare
    // the parallel kernel's gradients against the same op on a serial-sized slice.
    let big = rand_f64(&[2, 8, 48, 48], 31);
    let wb = rand_f64(&[8], 32);
    let bb = rand_f64(&[8], 33);
    let g = rand_f64(&[2, 8, 48, 48], 34);
    let (mean, rstd) = {
        let v = big.to_vec_f64().unwrap();
        let per = 4 * 48 * 48;
        let (mut m, mut r) = (vec![], vec![]);
        for grp in v.chunks(per) {
            let (mu, var) = moments(grp);
            m.push(mu);
            r.push(1.0 / (var + EPS).sqrt());
        }
        (Tensor::from_vec(m, &[2, 2]).unwrap(), Tensor::from_vec(r, &[2, 2]).unwrap())
    };
    let full = big.group_norm_backward(&g, &mean, &rstd, 2, Some(&wb), Some(&bb), true).unwrap();
    let first = big.narrow(0, 0, 1).unwrap();
    let part = first
        .group_norm_backward(
            &g.narrow(0, 0, 1).unwrap(),
            &mean.narrow(0, 0, 1).unwrap(),
            &rstd.narrow(0, 0, 1).unwrap(),
            2,
            Some(&wb),
            Some(&bb),
            true,
        )
        .unwrap();
    assert_close(&full.input.narrow(0, 0, 1).unwrap(), &part.input, 1e-12, 1e-10);
}

#[test]
fn group_norm_rejects_bad_arguments() {
    let x = rand_f64(&[2, 6, 4], 35);
    assert!(x.group_norm(4, None, None, EPS).is_err());
    assert!(x.group_norm(0, None, None, EPS).is_err());
    assert!(x.group_norm(3, Some(&rand_f64(&[3], 1)), None, EPS).is_err());
    assert!(x.group_norm(3, None, Some(&f32_of(&rand_f64(&[6], 1))), EPS).is_err());
    assert!(rand_f64(&[6], 1).group_norm(3, None, None, EPS).is_err());
}

// ----- layer norm ---------------------------------------------------------

#[test]
fn layer_norm_forward_over_last_one_and_two_dims() {
    let x = rand_f64(&[5, 3, 7], 41).affine(2.0, -3.0).unwrap().permute(&[1, 0, 2]).unwrap(); // [3, 5, 7], strided
    for ns in [vec![7], vec![5, 7]] {
        let len: usize = ns.iter().product();
        let w = rand_f64(&ns, 42);
        let b = rand_f64(&ns, 43);
        for (wo, bo) in [(Some(&w), Some(&b)), (None, None), (None, Some(&b))] {
            let want = naive_layer_norm(&x, len, wo, bo);
            assert_close(&x.layer_norm(&ns, wo, bo, EPS).unwrap(), &want, 1e-12, 1e-12);
            let got32 = f32_of(&x).layer_norm(&ns, wo.map(f32_of).as_ref(), bo.map(f32_of).as_ref(), EPS).unwrap();
            assert_close(&got32, &want, 1e-5, 1e-5);
        }
    }
    // Many rows: the parallel path.
    let big = rand_f64(&[301, 129], 44);
    let (w, b) = (rand_f64(&[129], 45), rand_f64(&[129], 46));
    assert_close(&big.layer_norm(&[129], Some(&w), Some(&b), EPS).unwrap(), &naive_layer_norm(&big, 129, Some(&w), Some(&b)), 1e-12, 1e-12);
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    let x = rand_f64(&[4, 2, 3], 47).permute(&[1, 0, 2]).unwrap(); // [2, 4, 3]
    for ns in [vec![3], vec![4, 3]] {
        let w = rand_f64(&ns, 48).affine(1.0, 0.5).unwrap();
        let b = rand_f64(&ns, 49);
        let n2 = ns.clone();
        check_gradients(&[x.clone(), w, b], move |v| v[0].layer_norm(&n2, Some(&v[1]), Some(&v[2]), EPS), 1e-6, 1e-6)
            .unwrap_or_else(|e| panic!("{ns:?}: {e}"));
        let n3 = ns.clone();
        check_gradients(std::slice::from_ref(&x), move |v| v[0].layer_norm(&n3, None, None, EPS), 1e-6, 1e-6).unwrap();
    }
}

#[test]
fn layer_norm_parallel_backward_matches_serial_rows() {
    let x = rand_f64(&[300, 130], 50);
    let g = rand_f64(&[300, 130], 51);
    let w = rand_f64(&[130], 52);
    let rows: Vec<Vec<f64>> = x.to_vec_f64().unwrap().chunks(130).map(|r| r.to_vec()).collect();
    let mean = Tensor::from_vec(rows.iter().map(|r| moments(r).0).collect::<Vec<_>>(), &[300]).unwrap();
    let rstd = Tensor::from_vec(rows.iter().map(|r| 1.0 / (moments(r).1 + EPS).sqrt()).collect::<Vec<_>>(), &[300]).unwrap();
    let full = x.layer_norm_backward(&g, &mean, &rstd, &[130], Some(&w)).unwrap();
    let mut dw = vec![0.0; 130];
    for k in 0..300 {
        let one = x
            .narrow(0, k, 1)
            .unwrap()
            .layer_norm_backward(
                &g.narrow(0, k, 1).unwrap(),
                &mean.narrow(0, k, 1).unwrap(),
                &rstd.narrow(0, k, 1).unwrap(),
                &[130],
                Some(&w),
            )
            .unwrap();
        assert_close(&full.input.narrow(0, k, 1).unwrap(), &one.input, 1e-12, 1e-10);
        dw.iter_mut().zip(one.weight.to_vec_f64().unwrap()).for_each(|(a, b)| *a += b);
    }
    assert_close(&full.weight, &Tensor::from_vec(dw, &[130]).unwrap(), 1e-10, 1e-10);
    assert_close(&full.bias, &g.sum(&[0], false).unwrap(), 1e-10, 1e-10);
}

#[test]
fn layer_norm_rejects_bad_shapes() {
    let x = rand_f64(&[2, 3, 4], 53);
    assert!(x.layer_norm(&[3], None, None, EPS).is_err());
    assert!(x.layer_norm(&[], None, None, EPS).is_err());
    assert!(x.layer_norm(&[1, 2, 3, 4], None, None, EPS).is_err());
    assert!(x.layer_norm(&[4], Some(&rand_f64(&[3], 1)), None, EPS).is_err());
}

// ----- batch norm ---------------------------------------------------------

#[test]
fn batch_norm_training_normalises_with_batch_stats_and_updates_running_stats() {
    let x = rand_f64(&[3, 5, 2, 4], 61).affine(2.0, 1.0).unwrap().permute(&[0, 1, 3, 2]).unwrap(); // [3, 5, 4, 2]
    let w = rand_f64(&[5], 62);
    let b = rand_f64(&[5], 63);
    let rm0 = rand_f64(&[5], 64);
    let rv0 = rand_f64(&[5], 65).affine(0.5, 1.0).unwrap();
    let (rm_before, rv_before) = (rm0.to_vec_f64().unwrap(), rv0.to_vec_f64().unwrap());
    for dtype in [DType::F64, DType::F32] {
        // Fresh copies: to_dtype to the same dtype shares the storage, which the update writes.
        let (rm, rv) = (rm0.to_dtype(dtype).unwrap().affine(1.0, 0.0).unwrap(), rv0.to_dtype(dtype).unwrap().affine(1.0, 0.0).unwrap());
        let rm_alias = rm.reshape(&[5]).unwrap(); // a view sharing the storage sees the update
        let (xd, wd, bd) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
        let y = xd.batch_norm(Some(&rm), Some(&rv), Some(&wd), Some(&bd), true, 0.1, EPS).unwrap();
        let stats: Vec<(f64, f64)> = channel_values(&x).iter().map(|v| moments(v)).collect();
        let (mean, var): (Vec<f64>, Vec<f64>) = stats.iter().copied().unzip();
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        assert_close(&y, &naive_batch_norm(&x, &mean, &var, Some(&w), Some(&b)), tol, tol);
        let count = 3.0 * 4.0 * 2.0;
        let want_rm: Vec<f64> = rm_before.iter().zip(&mean).map(|(r, m)| 0.9 * r + 0.1 * m).collect();
        let want_rv: Vec<f64> = rv_before.iter().zip(&var).map(|(r, v)| 0.9 * r + 0.1 * v * count / (count - 1.0)).collect();
        assert_close(&rm, &Tensor::from_vec(want_rm, &[5]).unwrap(), tol, tol);
        assert_close(&rm_alias, &rm, 0.0, 0.0);
        assert_close(&rv, &Tensor::from_vec(want_rv, &[5]).unwrap(), tol, tol);
    }
    // Without running statistics, training still normalises with the batch's.
    let y = x.batch_norm(None, None, None, None, true, 0.1, EPS).unwrap();
    let (mean, var): (Vec<f64>, Vec<f64>) = channel_values(&x).iter().map(|v| moments(v)).unzip();
    assert_close(&y, &naive_batch_norm(&x, &mean, &var, None, None), 1e-12, 1e-12);
}

#[test]
fn batch_norm_eval_uses_running_stats_and_leaves_them_alone() {
    let x = rand_f64(&[4, 3, 5], 66);
    let (w, b) = (rand_f64(&[3], 67), rand_f64(&[3], 68));
    let rm = rand_f64(&[3], 69);
    let rv = rand_f64(&[3], 70).affine(0.5, 1.0).unwrap();
    let before = (rm.to_vec_f64().unwrap(), rv.to_vec_f64().unwrap());
    let y = x.batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), false, 0.1, EPS).unwrap();
    assert_close(&y, &naive_batch_norm(&x, &before.0, &before.1, Some(&w), Some(&b)), 1e-12, 1e-12);
    assert_eq!(rm.to_vec_f64().unwrap(), before.0);
    assert_eq!(rv.to_vec_f64().unwrap(), before.1);
    // Rank 2 [N, C] input (BatchNorm1d), parallel-sized.
    let x2 = rand_f64(&[2000, 20], 71);
    let (rm2, rv2) = (rand_f64(&[20], 72), rand_f64(&[20], 73).affine(0.5, 1.0).unwrap());
    let y2 = x2.batch_norm(Some(&rm2), Some(&rv2), None, None, false, 0.1, EPS).unwrap();
    assert_close(&y2, &naive_batch_norm(&x2, &rm2.to_vec_f64().unwrap(), &rv2.to_vec_f64().unwrap(), None, None), 1e-12, 1e-12);
}

#[test]
fn batch_norm_backward_matches_finite_differences_in_both_modes() {
    let x = rand_f64(&[3, 2, 4], 74).permute(&[0, 2, 1]).unwrap(); // [3, 4, 2]
    let w = rand_f64(&[4], 75).affine(1.0, 0.5).unwrap();
    let b = rand_f64(&[4], 76);
    check_gradients(
        &[x.clone(), w.clone(), b.clone()],
        |v| v[0].batch_norm(None, None, Some(&v[1]), Some(&v[2]), true, 0.1, EPS),
        1e-6,
        1e-6,
    )
    .unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].batch_norm(None, None, None, None, true, 0.1, EPS), 1e-6, 1e-6).unwrap();
    let rm = rand_f64(&[4], 77);
    let rv = rand_f64(&[4], 78).affine(0.5, 1.0).unwrap();
    check_gradients(&[x, w, b], |v| v[0].batch_norm(Some(&rm), Some(&rv), Some(&v[1]), Some(&v[2]), false, 0.1, EPS), 1e-6, 1e-6).unwrap();
}

#[test]
fn batch_norm_parallel_backward_matches_naive_closed_form() {
    let x = rand_f64(&[64, 6, 100], 79);
    let g = rand_f64(&[64, 6, 100], 80);
    let w = rand_f64(&[6], 81);
    let xv = x.to_vec_f64().unwrap();
    let gv = g.to_vec_f64().unwrap();
    let wv = w.to_vec_f64().unwrap();
    let (mean, var): (Vec<f64>, Vec<f64>) = channel_values(&x).iter().map(|v| moments(v)).unzip();
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
    let m = 64.0 * 100.0;
    let (mut sg, mut sgx) = (vec![0.0; 6], vec![0.0; 6]);
    for (i, (&xi, &gi)) in xv.iter().zip(&gv).enumerate() {
        let ch = (i / 100) % 6;
        sg[ch] += gi;
        sgx[ch] += gi * (xi - mean[ch]) * rstd[ch];
    }
    let want: Vec<f64> = xv
        .iter()
        .zip(&gv)
        .enumerate()
        .map(|(i, (&xi, &gi))| {
            let ch = (i / 100) % 6;
            let xhat = (xi - mean[ch]) * rstd[ch];
            wv[ch] * rstd[ch] * (gi - sg[ch] / m - xhat * sgx[ch] / m)
        })
        .collect();
    let grads =
        x.batch_norm_backward(&g, &Tensor::from_vec(mean, &[6]).unwrap(), &Tensor::from_vec(rstd, &[6]).unwrap(), Some(&w), true).unwrap();
    assert_close(&grads.input, &Tensor::from_vec(want, x.shape()).unwrap(), 1e-12, 1e-9);
    assert_close(&grads.weight, &Tensor::from_vec(sgx, &[6]).unwrap(), 1e-9, 1e-9);
    assert_close(&grads.bias, &Tensor::from_vec(sg, &[6]).unwrap(), 1e-9, 1e-9);
}

#[test]
fn batch_norm_rejects_bad_arguments() {
    let x = rand_f64(&[2, 3, 4], 82);
    assert!(x.batch_norm(None, None, None, None, false, 0.1, EPS).is_err(), "eval needs running stats");
    assert!(rand_f64(&[1, 3], 83).batch_norm(None, None, None, None, true, 0.1, EPS).is_err(), "one value per channel");
    assert!(x.batch_norm(Some(&rand_f64(&[4], 84)), None, None, None, true, 0.1, EPS).is_err());
    assert!(rand_f64(&[3], 85).batch_norm(None, None, None, None, true, 0.1, EPS).is_err());
}

#[test]
fn norm_gradients_agree_between_f32_and_f64() {
    type Op = fn(&Tensor, &Tensor, &Tensor) -> Tensor;
    let x = rand_f64(&[2, 6, 5, 3], 90).affine(2.0, 1.0).unwrap();
    let g = rand_f64(&[2, 6, 5, 3], 91);
    let (w6, b6) = (rand_f64(&[6], 92), rand_f64(&[6], 93));
    let (w3, b3) = (rand_f64(&[5, 3], 94), rand_f64(&[5, 3], 95));
    let cases: [(Op, &Tensor, &Tensor); 5] = [
        (|x, w, b| x.group_norm(3, Some(w), Some(b), EPS).unwrap(), &w6, &b6),
        (|x, w, b| x.group_norm_silu(2, Some(w), Some(b), EPS).unwrap(), &w6, &b6),
        (|x, w, b| x.layer_norm(&[5, 3], Some(w), Some(b), EPS).unwrap(), &w3, &b3),
        (|x, w, b| x.batch_norm(None, None, Some(w), Some(b), true, 0.1, EPS).unwrap(), &w6, &b6),
        (
            |x, w, b| {
                x.batch_norm(Some(&w.ones_like().unwrap()), Some(&w.ones_like().unwrap()), Some(w), Some(b), false, 0.1, EPS).unwrap()
            },
            &w6,
            &b6,
        ),
    ];
    for (k, (op, w, b)) in cases.into_iter().enumerate() {
        let grads = |dtype: DType| {
            let vars = [&x, w, b].map(|t| t.to_dtype(dtype).unwrap().to_variable());
            let gr = op(&vars[0], &vars[1], &vars[2]).backward_with(g.to_dtype(dtype).unwrap()).unwrap();
            vars.map(|v| gr.get(&v).unwrap().clone())
        };
        let (g64, g32) = (grads(DType::F64), grads(DType::F32));
        for (a, b) in g32.iter().zip(&g64) {
            assert!(privdistill::testing::max_abs_diff(a, b).unwrap() < 1e-4, "case {k}");
        }
    }
}

/// `cat_channel_affine` (eval BatchNorm + ReLU over a concatenation) as
/// inference equals cat → scale → shift → ReLU, with contiguous parts, a
/// strided part, and one part; large enough for the threaded path too; its
/// differentiable form passes finite differences.
#[test]
fn cat_channel_affine_matches_the_composed_ops() {
    let strided = rand_f64(&[3, 5, 4, 2], 9).permute(&[0, 1, 3, 2]).unwrap(); // [3, 5, 2, 4], not contiguous
    let cases: Vec<Vec<Tensor>> = vec![
        vec![rand_f64(&[3, 4, 2, 4], 1), rand_f64(&[3, 2, 2, 4], 2), strided],
        vec![rand_f64(&[2, 7, 3, 3], 3)],
        vec![rand_f64(&[4, 40, 16, 16], 4), rand_f64(&[4, 24, 16, 16], 5)],
    ];
    for (i, parts) in cases.into_iter().enumerate() {
        let channels: usize = parts.iter().map(|p| p.shape()[1]).sum();
        let (scale, shift) = (rand_f64(&[channels], 20 + i as u64), rand_f64(&[channels], 30 + i as u64));
        let per_channel = [1, channels, 1, 1];
        let affine = Tensor::cat(&parts, 1)
            .unwrap()
            .mul(&scale.reshape(&per_channel).unwrap())
            .unwrap()
            .add(&shift.reshape(&per_channel).unwrap())
            .unwrap();
        for relu in [false, true] {
            let want = if relu { affine.relu().unwrap() } else { affine.clone() };
            let got = privdistill::no_grad(|| Tensor::cat_channel_affine(&parts, &scale, &shift, relu)).unwrap();
            assert_close(&got, &want, 1e-12, 1e-12);
        }
        if i == 0 {
            let mut inputs = parts.clone();
            inputs.extend([scale, shift]);
            check_gradients(&inputs, |v| Tensor::cat_channel_affine(&v[..3], &v[3], &v[4], false), EPS, 1e-6).unwrap();
        }
    }
    let parts = [rand_f64(&[2, 3, 4, 4], 1), rand_f64(&[2, 3, 5, 4], 2)];
    let ones = Tensor::ones(&[6], DType::F64, privdistill::Device::Cpu).unwrap();
    assert!(Tensor::cat_channel_affine(&parts, &ones, &ones, true).is_err(), "parts differing outside the channels");
}

//! Losses: values computed by hand, forward against naive formulas (strided
//! inputs, spatial cross entropy, every reduction, sizes large enough for the
//! parallel paths), gradients of every float input against finite
//! differences, f32 against f64, numerical stability, and argument errors.

use privdistill::tensor::ops::loss::{CrossEntropyOptions, Reduction};
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;
const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn classes(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    assert_eq!(x.rank(), 0, "a reduced loss is rank 0");
    x.to_scalar_f64().unwrap()
}

// ----- mse ------------------------------------------------------------------

#[test]
fn mse_loss_by_hand_and_against_naive() {
    // (1 - 1.5)² + (2 - 2)² + (3 - 1)² = 0.25 + 0 + 4 = 4.25; the mean is 4.25 / 3.
    let (p, y) = (t(&[1.0, 2.0, 3.0], &[3]), t(&[1.5, 2.0, 1.0], &[3]));
    assert!((scalar(&p.mse_loss(&y).unwrap()) - 4.25 / 3.0).abs() < 1e-15);
    assert!((scalar(&p.mse_loss_with(&y, Reduction::Sum).unwrap()) - 4.25).abs() < 1e-15);
    assert_eq!(p.mse_loss_with(&y, Reduction::None).unwrap().to_vec_f64().unwrap(), vec![0.25, 0.0, 4.0]);

    let pred = rand_f64(&[5, 3], 1).t().unwrap(); // strided [3, 5]
    let target = rand_f64(&[3, 5], 2);
    let (pv, tv) = (pred.to_vec_f64().unwrap(), target.to_vec_f64().unwrap());
    let sq: Vec<f64> = pv.iter().zip(&tv).map(|(a, b)| (a - b) * (a - b)).collect();
    assert!((scalar(&pred.mse_loss(&target).unwrap()) - sq.iter().sum::<f64>() / 15.0).abs() < 1e-14);
    let p32 = pred.to_dtype(DType::F32).unwrap().mse_loss(&target.to_dtype(DType::F32).unwrap()).unwrap();
    assert!((scalar(&p32) - scalar(&pred.mse_loss(&target).unwrap())).abs() < 1e-6);
    for r in REDUCTIONS {
        check_gradients(&[pred.clone(), target.clone()], |v| v[0].mse_loss_with(&v[1], r), EPS, TOL).unwrap();
    }
    assert!(pred.mse_loss(&rand_f64(&[3, 4], 3)).is_err(), "shape mismatch");
    assert!(pred.mse_loss(&target.to_dtype(DType::F32).unwrap()).is_err(), "dtype mismatch");
}

// ----- bce with logits --------------------------------------------------------

/// PyTorch's BCEWithLogitsLoss per element, written out directly.
fn naive_bce(x: f64, y: f64, w: f64) -> f64 {
    let log_sigmoid = -(1.0 + (-x).exp()).ln();
    let log_one_minus_sigmoid = -(1.0 + x.exp()).ln();
    -(w * y * log_sigmoid + (1.0 - y) * log_one_minus_sigmoid)
}

#[test]
fn bce_with_logits_by_hand() {
    // Per element max(x, 0) - x·y + ln(1 + e^{-|x|}):
    //   x = 2,  y = 1:   2 - 2 + ln(1 + e^-2) = ln(1.135335283) = 0.126928011
    //   x = -1, y = 0:   0 - 0 + ln(1 + e^-1) = ln(1.367879441) = 0.313261688
    //   x = 0,  y = 0.5: 0 - 0 + ln 2                          = 0.693147181
    // mean = 1.133336879 / 3 = 0.377778960
    let (x, y) = (t(&[2.0, -1.0, 0.0], &[3]), t(&[1.0, 0.0, 0.5], &[3]));
    assert!((scalar(&x.bce_with_logits(&y, None).unwrap()) - 0.3777789597070469).abs() < 1e-15);
    // With pos_weight w = [2, 1, 3] the log-sigmoid term is scaled by 1 + (w - 1)·y:
    //   2 · 0.126928011 = 0.253856022;  0.313261688 (y = 0);  (0.5·0) + 2 · ln 2 = 1.386294361
    // mean = 1.953412072 / 3 = 0.651137357
    let w = t(&[2.0, 1.0, 3.0], &[3]);
    assert!((scalar(&x.bce_with_logits(&y, Some(&w)).unwrap()) - 0.6511373569080194).abs() < 1e-15);
    // The gradient of the mean is (σ(x) - y) / 3 without pos_weight:
    //   (0.880797078 - 1) / 3 = -0.039734307;  0.268941421 / 3 = 0.089647140;  (0.5 - 0.5) / 3 = 0
    let xv = x.to_variable();
    let g = xv.bce_with_logits(&y, None).unwrap().backward().unwrap();
    assert_close(g.get(&xv).unwrap(), &t(&[-0.0397343073407059, 0.08964714045666504, 0.0], &[3]), 1e-15, 0.0);
}

#[test]
fn bce_with_logits_is_stable_for_large_logits() {
    // A confident wrong answer costs |x|; a confident right one costs ≈ e^{-|x|}.
    let x = t(&[100.0, -100.0, 100.0, -800.0], &[4]);
    let y = t(&[0.0, 1.0, 1.0, 0.0], &[4]);
    let l = x.bce_with_logits_with(&y, None, Reduction::None).unwrap().to_vec_f64().unwrap();
    assert_eq!(&l[..2], &[100.0, 100.0]);
    assert!(l[2] > 0.0 && l[2] < 1e-40 && l[3] == 0.0, "{l:?}");
    let l32 = x.to_dtype(DType::F32).unwrap().bce_with_logits(&y.to_dtype(DType::F32).unwrap(), None).unwrap();
    assert!((scalar(&l32) - 50.0).abs() < 1e-4);
}

#[test]
fn bce_with_logits_matches_naive_and_differentiates_every_input() {
    let x = rand_f64(&[4, 3], 4).affine(3.0, 0.0).unwrap().t().unwrap(); // strided [3, 4]
    let y = rand_f64(&[3, 4], 5).affine(0.5, 0.5).unwrap(); // soft labels in [0, 1)
    let w = rand_f64(&[4], 6).affine(1.0, 2.0).unwrap(); // one weight per class, broadcast over rows
    let (xv, yv, wv) = (x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let want: Vec<f64> = (0..12).map(|i| naive_bce(xv[i], yv[i], wv[i % 4])).collect();
    let got = x.bce_with_logits_with(&y, Some(&w), Reduction::None).unwrap();
    assert_close(&got, &Tensor::from_vec(want.clone(), &[3, 4]).unwrap(), 1e-13, 1e-13);
    let sum = scalar(&x.bce_with_logits_with(&y, Some(&w), Reduction::Sum).unwrap());
    assert!((sum - want.iter().sum::<f64>()).abs() < 1e-12);
    let f32_mean =
        x.to_dtype(DType::F32).unwrap().bce_with_logits(&y.to_dtype(DType::F32).unwrap(), Some(&w.to_dtype(DType::F32).unwrap()));
    assert!((scalar(&f32_mean.unwrap()) - sum / 12.0).abs() < 1e-5);
    for r in REDUCTIONS {
        check_gradients(&[x.clone(), y.clone(), w.clone()], |v| v[0].bce_with_logits_with(&v[1], Some(&v[2]), r), EPS, TOL).unwrap();
        check_gradients(&[x.clone(), y.clone()], |v| v[0].bce_with_logits_with(&v[1], None, r), EPS, TOL).unwrap();
    }
}

#[test]
fn bce_with_logits_large_matches_naive() {
    // 40k elements: the forward sum and the backward both run in parallel chunks.
    let x = rand_f64(&[200, 200], 7).affine(4.0, 0.0).unwrap();
    let y = rand_f64(&[200, 200], 8).gt(&Tensor::scalar(0.0f64)).unwrap().to_dtype(DType::F64).unwrap();
    let (xv, yv) = (x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
    let want: f64 = xv.iter().zip(&yv).map(|(&a, &b)| naive_bce(a, b, 1.0)).sum::<f64>() / 40000.0;
    assert!((scalar(&x.bce_with_logits(&y, None).unwrap()) - want).abs() < 1e-12);
    let xg = x.to_variable();
    let g = xg.bce_with_logits(&y, None).unwrap().backward().unwrap();
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let want: Vec<f64> = xv.iter().zip(&yv).map(|(&a, &b)| (sig(a) - b) / 40000.0).collect();
    assert_close(g.get(&xg).unwrap(), &Tensor::from_vec(want, &[200, 200]).unwrap(), 1e-15, 1e-10);
}

#[test]
fn bce_with_logits_rejects_mismatched_inputs() {
    let x = rand_f64(&[2, 3], 9);
    assert!(x.bce_with_logits(&rand_f64(&[3, 2], 10), None).is_err(), "target shape");
    let err = x.bce_with_logits(&rand_f64(&[2, 3], 10), Some(&rand_f64(&[2], 11))).unwrap_err().to_string();
    assert!(err.contains("pos_weight") || err.contains("shape mismatch"), "{err}");
    assert!(x.bce_with_logits(&rand_f64(&[2, 3], 10), Some(&rand_f64(&[4, 2, 3], 12))).is_err(), "pos_weight larger than logits");
}

// ----- cross entropy ----------------------------------------------------------

/// Per-sample cross entropy with label smoothing, by the textbook formula, for
/// logits `[n, c, inner]` (row-major) and targets `[n, inner]`.
fn naive_cross_entropy(z: &[f64], targets: &[i64], n: usize, c: usize, inner: usize, eps: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        for s in 0..inner {
            let row: Vec<f64> = (0..c).map(|k| z[(i * c + k) * inner + s]).collect();
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            let log_p: Vec<f64> = row.iter().map(|v| v - lse).collect();
            let target = targets[i * inner + s] as usize;
            let smooth_target = |k: usize| (1.0 - eps) * (k == target) as u8 as f64 + eps / c as f64;
            out.push(-(0..c).map(|k| smooth_target(k) * log_p[k]).sum::<f64>());
        }
    }
    out
}

#[test]
fn cross_entropy_by_hand() {
    // Row [1, 2, 3], target 2: lse = ln(e + e² + e³) = 3.407605964, so -log p₂ = 0.407605964.
    // With ε = 0.1: 0.9 · 0.407605964 + 0.1 · mean_c(lse - z_c) = 0.9 · 0.407605964 + 0.1 · 1.407605964
    //             = 0.507605964.
    // Row [0, 0, 0], target 0: every -log p = ln 3 = 1.098612289, smoothing changes nothing.
    // mean = (0.507605964 + 1.098612289) / 2 = 0.803109127; without smoothing (0.407605964 + 1.098612289) / 2.
    let z = t(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 3]);
    let y = classes(&[2, 0], &[2]);
    assert!((scalar(&z.cross_entropy(&y, 0.1).unwrap()) - 0.8031091265562449).abs() < 1e-15);
    assert!((scalar(&z.cross_entropy(&y, 0.0).unwrap()) - 0.753109126556245).abs() < 1e-15);
    let per = z.cross_entropy_with(&y, &CrossEntropyOptions { label_smoothing: 0.1, reduction: Reduction::None, ignore_index: None });
    assert_close(&per.unwrap(), &t(&[0.5076059644443801, 1.0986122886681098], &[2]), 1e-15, 0.0);
    // An unbatched [C] row with a scalar target.
    assert!((scalar(&t(&[1.0, 2.0, 3.0], &[3]).cross_entropy(&Tensor::scalar(2i64), 0.0).unwrap()) - 0.40760596444438013).abs() < 1e-15);
    // The gradient of the mean is (softmax - onehot) / N: for row [0, 0, 0], target 0, (1/3 - 1, 1/3, 1/3) / 2.
    let zv = z.to_variable();
    let g = zv.cross_entropy(&y, 0.0).unwrap().backward().unwrap();
    let g_row1 = &g.get(&zv).unwrap().to_vec_f64().unwrap()[3..];
    for (got, want) in g_row1.iter().zip([-1.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0]) {
        assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    }
}

#[test]
fn cross_entropy_matches_naive_for_spatial_logits_and_every_reduction() {
    // [N=2, C=5, 3, 2] logits from a strided view; targets [2, 3, 2].
    let z = rand_f64(&[2, 3, 2, 5], 13).affine(3.0, 0.0).unwrap().permute(&[0, 3, 1, 2]).unwrap();
    assert!(!z.is_contiguous());
    let targets: Vec<i64> = (0..12).map(|i| (i * 3 % 5) as i64).collect();
    let y = classes(&targets, &[2, 3, 2]);
    let zv = z.to_vec_f64().unwrap();
    for eps in [0.0, 0.25] {
        let want = naive_cross_entropy(&zv, &targets, 2, 5, 6, eps);
        let opts = |reduction| CrossEntropyOptions { label_smoothing: eps, reduction, ignore_index: None };
        let none = z.cross_entropy_with(&y, &opts(Reduction::None)).unwrap();
        assert_close(&none, &Tensor::from_vec(want.clone(), &[2, 3, 2]).unwrap(), 1e-13, 1e-13);
        assert!((scalar(&z.cross_entropy_with(&y, &opts(Reduction::Sum)).unwrap()) - want.iter().sum::<f64>()).abs() < 1e-12);
        assert!((scalar(&z.cross_entropy(&y, eps).unwrap()) - want.iter().sum::<f64>() / 12.0).abs() < 1e-13);
        let z32 = z.to_dtype(DType::F32).unwrap();
        assert!((scalar(&z32.cross_entropy(&y, eps).unwrap()) - want.iter().sum::<f64>() / 12.0).abs() < 1e-5);
        for r in REDUCTIONS {
            check_gradients(std::slice::from_ref(&z), |v| v[0].cross_entropy_with(&y, &opts(r)), EPS, TOL).unwrap();
        }
    }
    // i32 targets are accepted.
    let y32 = Tensor::from_vec(targets.iter().map(|&v| v as i32).collect(), &[2, 3, 2]).unwrap();
    assert_close(&z.cross_entropy(&y32, 0.1).unwrap(), &z.cross_entropy(&y, 0.1).unwrap(), 0.0, 0.0);
}

#[test]
fn cross_entropy_ignores_the_ignore_index() {
    let z = rand_f64(&[4, 3], 14);
    let y = classes(&[2, -100, 0, -100], &[4]);
    let opts = |eps, reduction| CrossEntropyOptions { label_smoothing: eps, reduction, ignore_index: Some(-100) };
    let kept = classes(&[2, 0], &[2]);
    let z_kept = z.index_select(0, &classes(&[0, 2], &[2])).unwrap();
    // The mean is over the two counted samples only.
    let got = scalar(&z.cross_entropy_with(&y, &opts(0.2, Reduction::Mean)).unwrap());
    assert!((got - scalar(&z_kept.cross_entropy(&kept, 0.2).unwrap())).abs() < 1e-15);
    let none = z.cross_entropy_with(&y, &opts(0.2, Reduction::None)).unwrap().to_vec_f64().unwrap();
    assert_eq!((none[1], none[3]), (0.0, 0.0));
    check_gradients(std::slice::from_ref(&z), |v| v[0].cross_entropy_with(&y, &opts(0.2, Reduction::Mean)), EPS, TOL).unwrap();
    let zv = z.to_variable();
    let g = zv.cross_entropy_with(&y, &opts(0.2, Reduction::Mean)).unwrap().backward().unwrap().get(&zv).unwrap().to_vec_f64().unwrap();
    assert!(g[3..6].iter().chain(&g[9..12]).all(|&v| v == 0.0), "ignored rows get no gradient");
}

#[test]
fn cross_entropy_is_stable_and_parallel_paths_match_naive() {
    // Huge logits: the max is subtracted before exponentiating.
    let z = t(&[1000.0, 0.0, -1000.0], &[1, 3]);
    assert!(scalar(&z.cross_entropy(&classes(&[0], &[1]), 0.0).unwrap()).abs() < 1e-12);
    assert!((scalar(&z.cross_entropy(&classes(&[1], &[1]), 0.0).unwrap()) - 1000.0).abs() < 1e-9);
    // [N=300, C=150]: 45k logits, forward and backward in parallel tasks.
    let (n, c) = (300, 150);
    let z = rand_f64(&[n, c], 15).affine(5.0, 0.0).unwrap();
    let targets: Vec<i64> = (0..n).map(|i| ((i * 37 + 11) % c) as i64).collect();
    let y = classes(&targets, &[n]);
    let zv = z.to_vec_f64().unwrap();
    let want = naive_cross_entropy(&zv, &targets, n, c, 1, 0.1);
    assert!((scalar(&z.cross_entropy(&y, 0.1).unwrap()) - want.iter().sum::<f64>() / n as f64).abs() < 1e-12);
    let var = z.to_variable();
    let g = var.cross_entropy(&y, 0.1).unwrap().backward().unwrap();
    let mut want_g = vec![0.0; n * c];
    for i in 0..n {
        let row = &zv[i * c..(i + 1) * c];
        let total: f64 = row.iter().map(|v| v.exp()).sum();
        for k in 0..c {
            let target = 0.9 * (k == targets[i] as usize) as u8 as f64 + 0.1 / c as f64;
            want_g[i * c + k] = (row[k].exp() / total - target) / n as f64;
        }
    }
    assert_close(g.get(&var).unwrap(), &Tensor::from_vec(want_g, &[n, c]).unwrap(), 1e-15, 1e-10);
}

#[test]
fn cross_entropy_rejects_bad_targets_and_options() {
    let z = rand_f64(&[3, 4], 16);
    let err = z.cross_entropy(&classes(&[0, 4, 1], &[3]), 0.0).unwrap_err().to_string();
    assert!(err.contains("target class 4") && err.contains("4 classes"), "{err}");
    let err = z.cross_entropy(&classes(&[0, -100, 1], &[3]), 0.0).unwrap_err().to_string();
    assert!(err.contains("-100"), "without ignore_index every target is a class: {err}");
    assert!(z.cross_entropy(&rand_f64(&[3], 17), 0.0).is_err(), "float targets");
    assert!(z.cross_entropy(&classes(&[0, 1], &[2]), 0.0).is_err(), "target count");
    assert!(z.cross_entropy(&classes(&[0, 1, 2], &[3, 1]), 0.0).is_err(), "target rank");
    assert!(z.cross_entropy(&classes(&[0, 1, 2], &[3]), 1.5).is_err(), "label smoothing above 1");
}

// ----- cosine similarity --------------------------------------------------

fn naive_cosine(a: &[f64], b: &[f64], eps: f64) -> f64 {
    let na = a.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
    let nb = b.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
    a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum()
}

#[test]
fn cosine_similarity_by_hand() {
    // [3, 4]·[4, 3] = 24, norms 5 and 5: 24/25 = 0.96. [1, 1] vs [-1, -1]: -1.
    // [1, 0] vs [0, 0]: the zero norm is clamped to eps, the dot product is 0: 0.
    let a = t(&[3.0, 4.0, 1.0, 1.0, 1.0, 0.0], &[3, 2]);
    let b = t(&[4.0, 3.0, -1.0, -1.0, 0.0, 0.0], &[3, 2]);
    let s = a.cosine_similarity(&b, 1, 1e-8).unwrap().to_vec_f64().unwrap();
    assert!((s[0] - 0.96).abs() < 1e-15 && (s[1] + 1.0).abs() < 1e-15 && s[2] == 0.0, "{s:?}");
    // The zero vector's gradient stays finite: with its norm clamped, d/da = b / (n_a · eps) = 0 for b = 0,
    // and d/db = a / (n_a · eps) = [1e8, 0].
    let (av, bv) = (a.to_variable(), b.to_variable());
    let g = av.cosine_similarity(&bv, 1, 1e-8).unwrap().sum_all().unwrap().backward().unwrap();
    let (ga, gb) = (g.get(&av).unwrap().to_vec_f64().unwrap(), g.get(&bv).unwrap().to_vec_f64().unwrap());
    assert!(ga.iter().chain(&gb).all(|v| v.is_finite()));
    assert_eq!(&ga[4..], &[0.0, 0.0]);
    assert!((gb[4] - 1e8).abs() < 1e-4 && gb[5] == 0.0, "{gb:?}");
    // Vectors of length 0 are all zero: similarity 0.
    let empty = Tensor::zeros(&[3, 0], DType::F64, privdistill::Device::Cpu).unwrap();
    assert_eq!(empty.cosine_similarity(&empty, 1, 1e-8).unwrap().to_vec_f64().unwrap(), vec![0.0; 3]);
}

#[test]
fn cosine_similarity_broadcasts_and_differentiates_along_any_dim() {
    let a = rand_f64(&[2, 1, 5], 18);
    let b = rand_f64(&[5, 3], 19).t().unwrap(); // strided [3, 5]
    let shape = [2, 3, 5];
    let (ae, be) = (a.broadcast_to(&shape).unwrap().to_vec_f64().unwrap(), b.broadcast_to(&shape).unwrap().to_vec_f64().unwrap());
    // Along the last dim.
    let got = a.cosine_similarity(&b, -1, 1e-8).unwrap();
    let want: Vec<f64> = (0..6).map(|r| naive_cosine(&ae[r * 5..(r + 1) * 5], &be[r * 5..(r + 1) * 5], 1e-8)).collect();
    assert_close(&got, &Tensor::from_vec(want, &[2, 3]).unwrap(), 1e-14, 0.0);
    // Along dim 1 (length 3).
    let got = a.cosine_similarity(&b, 1, 1e-8).unwrap();
    let col = |v: &[f64], i: usize, k: usize| (0..3).map(|j| v[(i * 3 + j) * 5 + k]).collect::<Vec<_>>();
    let want: Vec<f64> = (0..10).map(|r| naive_cosine(&col(&ae, r / 5, r % 5), &col(&be, r / 5, r % 5), 1e-8)).collect();
    assert_close(&got, &Tensor::from_vec(want, &[2, 5]).unwrap(), 1e-14, 0.0);
    let f32_got = a.to_dtype(DType::F32).unwrap().cosine_similarity(&b.to_dtype(DType::F32).unwrap(), 1, 1e-8).unwrap();
    assert_close(&f32_got, &got, 1e-6, 1e-6);
    for dim in [0isize, 1, 2, -1] {
        check_gradients(&[a.clone(), b.clone()], |v| v[0].cosine_similarity(&v[1], dim, 1e-8), EPS, TOL).unwrap();
    }
    // Large eps: the clamp is active for these short vectors and the gradient still checks out.
    let small = rand_f64(&[4, 3], 20).affine(0.1, 0.0).unwrap();
    check_gradients(&[small.clone(), rand_f64(&[4, 3], 21)], |v| v[0].cosine_similarity(&v[1], 1, 0.5), EPS, TOL).unwrap();
    assert!(a.cosine_similarity(&rand_f64(&[4], 22), 0, 1e-8).is_err(), "shapes do not broadcast");
}

#[test]
fn cosine_similarity_large_matches_naive() {
    let (rows, len) = (400, 96);
    let (a, b) = (rand_f64(&[rows, len], 23), rand_f64(&[rows, len], 24));
    let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    let want: Vec<f64> = (0..rows).map(|r| naive_cosine(&av[r * len..(r + 1) * len], &bv[r * len..(r + 1) * len], 1e-8)).collect();
    assert_close(&a.cosine_similarity(&b, 1, 1e-8).unwrap(), &Tensor::from_vec(want, &[rows]).unwrap(), 1e-14, 0.0);
    // A small check of the parallel backward: the gradient is orthogonal to a for each row (scale invariance).
    let var = a.to_variable();
    let g = var.cosine_similarity(&b, 1, 1e-8).unwrap().sum_all().unwrap().backward().unwrap();
    let gv = g.get(&var).unwrap().to_vec_f64().unwrap();
    for r in 0..rows {
        let dot: f64 = (0..len).map(|k| gv[r * len + k] * av[r * len + k]).sum();
        assert!(dot.abs() < 1e-12, "row {r}: {dot}");
    }
}

//! softmax and log_softmax: forward vs a naive reference along every dim,
//! on strided views; backward vs finite differences.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

/// Softmax (or log-softmax) of `x` along `dim`, one row at a time in f64.
fn naive_softmax(x: &Tensor, dim: usize, log: bool) -> Tensor {
    let shape = x.shape().to_vec();
    let v = x.to_vec_f64().unwrap();
    let len = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let outer: usize = shape[..dim].iter().product();
    let mut out = vec![0.0; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |l: usize| (o * len + l) * inner + i;
            let m = (0..len).map(|l| v[idx(l)]).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..len).map(|l| (v[idx(l)] - m).exp()).sum();
            for l in 0..len {
                out[idx(l)] = if log { v[idx(l)] - m - s.ln() } else { (v[idx(l)] - m).exp() / s };
            }
        }
    }
    Tensor::from_vec(out, &shape).unwrap()
}

fn apply(x: &Tensor, dim: isize, log: bool) -> Tensor {
    if log {
        x.log_softmax(dim).unwrap()
    } else {
        x.softmax(dim).unwrap()
    }
}

#[test]
fn softmax_forward_matches_naive_along_every_dim() {
    // A transposed (non-contiguous) [5, 3, 7] view with odd sizes.
    let x = rand_f64(&[7, 3, 5], 11).affine(4.0, 0.0).unwrap().permute(&[2, 1, 0]).unwrap();
    for log in [false, true] {
        for dim in 0..3 {
            let want = naive_softmax(&x, dim, log);
            assert_close(&apply(&x, dim as isize, log), &want, 1e-12, 1e-12);
            // Negative dims count from the end.
            assert_close(&apply(&x, dim as isize - 3, log), &want, 1e-12, 1e-12);
            let y32 = apply(&x.to_dtype(DType::F32).unwrap(), dim as isize, log);
            assert_close(&y32, &want, 2e-6, 2e-6);
        }
    }
}

#[test]
fn softmax_rows_are_long_enough_to_use_threads() {
    // Large enough to take the parallel path, with rows and a middle axis.
    let x = rand_f64(&[40, 33, 29], 12).affine(10.0, 0.0).unwrap();
    for log in [false, true] {
        for dim in [1, 2] {
            let want = naive_softmax(&x, dim, log);
            assert_close(&apply(&x, dim as isize, log), &want, 1e-12, 1e-12);
            assert_close(&apply(&x.to_dtype(DType::F32).unwrap(), dim as isize, log), &want, 2e-6, 2e-6);
        }
    }
}

#[test]
fn softmax_is_stable_for_huge_inputs() {
    let x = Tensor::from_vec(vec![1000.0f32, 999.0, -1000.0, 0.0, 1e30, 1e30], &[3, 2]).unwrap();
    let y = x.softmax(-1).unwrap().to_vec_f64().unwrap();
    let e = (-1.0f64).exp();
    let want = [1.0 / (1.0 + e), e / (1.0 + e), 0.0, 1.0, 0.5, 0.5];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{y:?}");
    }
    let ly = x.log_softmax(-1).unwrap().to_vec_f64().unwrap();
    assert!(ly.iter().all(|v| v.is_finite()), "{ly:?}");
    assert!((ly[2] + 1000.0).abs() < 1e-3);
}

#[test]
fn softmax_of_all_minus_infinity_is_nan_like_pytorch() {
    let x = Tensor::from_vec(vec![f32::NEG_INFINITY; 3], &[1, 3]).unwrap();
    assert!(x.softmax(1).unwrap().to_vec_f64().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn softmax_backward_matches_finite_differences() {
    for log in [false, true] {
        for dim in [0isize, 1, 2, -1] {
            let x = rand_f64(&[4, 3, 5], 13).permute(&[2, 1, 0]).unwrap();
            check_gradients(&[x], |v| Ok(apply(&v[0], dim, log)), 1e-6, 1e-6).unwrap_or_else(|e| panic!("log={log} dim={dim}: {e}"));
        }
    }
}

#[test]
fn softmax_rejects_bad_dims_and_integer_tensors() {
    let x = rand_f64(&[2, 3], 14);
    assert!(x.softmax(2).is_err());
    assert!(x.log_softmax(-3).is_err());
    assert!(x.to_dtype(DType::I64).unwrap().softmax(0).is_err());
}

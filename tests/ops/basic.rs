//! Elementwise, reduction, view and matmul ops.

use privdistill::backend::op::UnaryOp;
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Device, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn naive_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Square => x * x,
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Gelu => 0.5 * x * (1.0 + privdistill::tensor::erf_f64(x / 2f64.sqrt())),
        UnaryOp::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        UnaryOp::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
        UnaryOp::Affine { mul, add } => x * mul + add,
        UnaryOp::Powf(p) => x.powf(p),
        UnaryOp::Clamp { min, max } => x.clamp(min, max),
        UnaryOp::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                s * x
            }
        }
    }
}

const UNARY: &[UnaryOp] = UnaryOp::ALL;

/// Inputs kept away from kinks and domain edges so finite differences are valid.
fn safe_input(op: UnaryOp, shape: &[usize], seed: u64) -> Tensor {
    let x = rand_f64(shape, seed);
    let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip | UnaryOp::Powf(_));
    let v: Vec<f64> = x
        .to_vec_f64()
        .unwrap()
        .into_iter()
        .map(|v| {
            if positive {
                0.2 + v.abs()
            } else if v.abs() < 0.05 {
                v + 0.1
            } else {
                v
            }
        })
        .map(|v| if matches!(op, UnaryOp::Clamp { .. }) && ((v + 0.3).abs() < 0.01 || (v - 0.4).abs() < 0.01) { v + 0.05 } else { v })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn unary_forward_matches_naive_on_strided_views() {
    for &op in UNARY {
        let x = safe_input(op, &[5, 7], 1).t().unwrap(); // non-contiguous
        let y = x.unary(op).unwrap();
        let want: Vec<f64> = x.to_vec_f64().unwrap().into_iter().map(|v| naive_unary(op, v)).collect();
        assert_close(&y, &Tensor::from_vec(want, &[7, 5]).unwrap(), 1e-12, 1e-12);
        // f32 path agrees with f64 to f32 precision.
        let y32 = x.to_dtype(DType::F32).unwrap().unary(op).unwrap();
        assert_close(&y32, &y, 1e-5, 1e-5);
    }
}

#[test]
fn unary_backward_matches_finite_differences() {
    for &op in UNARY {
        let x = safe_input(op, &[3, 4], 2).t().unwrap();
        check_gradients(&[x], |v| v[0].unary(op), EPS, TOL).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
    }
}

#[test]
fn binary_ops_broadcast_and_differentiate() {
    let a = rand_f64(&[2, 3, 4], 3);
    let b = rand_f64(&[3, 1], 4).affine(0.5, 1.5).unwrap(); // positive for div/pow
    let at = rand_f64(&[4, 3, 2], 5).permute(&[2, 1, 0]).unwrap(); // strided [2,3,4]
    let naive = |x: &Tensor, y: &Tensor, f: fn(f64, f64) -> f64| -> Tensor {
        let shape = [2, 3, 4];
        let xb = x.broadcast_to(&shape).unwrap().to_vec_f64().unwrap();
        let yb = y.broadcast_to(&shape).unwrap().to_vec_f64().unwrap();
        Tensor::from_vec(xb.iter().zip(&yb).map(|(p, q)| f(*p, *q)).collect::<Vec<_>>(), &shape).unwrap()
    };
    assert_close(&a.add(&b).unwrap(), &naive(&a, &b, |x, y| x + y), 1e-12, 0.0);
    assert_close(&at.sub(&b).unwrap(), &naive(&at, &b, |x, y| x - y), 1e-12, 0.0);
    assert_close(&b.mul(&at).unwrap(), &naive(&b, &at, |x, y| x * y), 1e-12, 0.0);
    assert_close(&a.div(&b).unwrap(), &naive(&a, &b, |x, y| x / y), 1e-12, 0.0);
    assert_close(&b.pow(&a).unwrap(), &naive(&b, &a, f64::powf), 1e-12, 1e-12);
    assert_close(&a.maximum(&at).unwrap(), &naive(&a, &at, f64::max), 0.0, 0.0);
    for f in [Tensor::add, Tensor::sub, Tensor::mul, Tensor::div, Tensor::pow, Tensor::maximum, Tensor::minimum] {
        check_gradients(&[at.clone(), b.clone()], |v| f(&v[1], &v[0]), EPS, TOL).unwrap();
        check_gradients(&[a.clone(), b.clone()], |v| f(&v[0], &v[1]), EPS, TOL).unwrap();
    }
}

#[test]
fn reductions_match_naive_and_differentiate() {
    let x = rand_f64(&[3, 4, 5], 6).permute(&[2, 0, 1]).unwrap(); // [5,3,4] strided
    let v = x.to_vec_f64().unwrap();
    let at = |i: usize, j: usize, k: usize| v[i * 12 + j * 4 + k];
    let s = x.sum(&[0, 2], false).unwrap();
    let want: Vec<f64> = (0..3).map(|j| (0..5).flat_map(|i| (0..4).map(move |k| (i, k))).map(|(i, k)| at(i, j, k)).sum()).collect();
    assert_close(&s, &Tensor::from_vec(want, &[3]).unwrap(), 1e-12, 0.0);
    let m = x.max(&[1], true).unwrap();
    assert_eq!(m.shape(), &[5, 1, 4]);
    let want: Vec<f64> =
        (0..5).flat_map(|i| (0..4).map(move |k| (i, k))).map(|(i, k)| (0..3).map(|j| at(i, j, k)).fold(f64::MIN, f64::max)).collect();
    assert_close(&m, &Tensor::from_vec(want, &[5, 1, 4]).unwrap(), 0.0, 0.0);
    let am = x.argmax(1, false).unwrap().to_vec::<i64>().unwrap();
    for (idx, &a) in am.iter().enumerate() {
        let (i, k) = (idx / 4, idx % 4);
        assert_eq!(at(i, a as usize, k), (0..3).map(|j| at(i, j, k)).fold(f64::MIN, f64::max));
    }
    let var = x.var(&[0], true, false).unwrap();
    let want: Vec<f64> = (0..12)
        .map(|jk| {
            let col: Vec<f64> = (0..5).map(|i| at(i, jk / 4, jk % 4)).collect();
            let mean = col.iter().sum::<f64>() / 5.0;
            col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / 4.0
        })
        .collect();
    assert_close(&var, &Tensor::from_vec(want, &[3, 4]).unwrap(), 1e-12, 1e-12);
    check_gradients(std::slice::from_ref(&x), |v| v[0].sum(&[0, 2], true), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].mean(&[1], false), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].max(&[0], false), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].min(&[2, 1], false), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].var(&[0, 2], false, true), EPS, TOL).unwrap();
}

#[test]
fn matmul_matches_naive_with_transposes_and_batch_broadcast() {
    let a = rand_f64(&[2, 1, 5, 3], 7).t().unwrap(); // [2,1,3,5] transposed view
    let b = rand_f64(&[4, 5, 6], 8);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), &[2, 4, 3, 6]);
    let (av, bv, cv) = (a.contiguous().unwrap().to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
    for p in 0..2 {
        for q in 0..4 {
            for i in 0..3 {
                for j in 0..6 {
                    let want: f64 = (0..5).map(|k| av[p * 15 + i * 5 + k] * bv[q * 30 + k * 6 + j]).sum();
                    assert!((cv[((p * 4 + q) * 3 + i) * 6 + j] - want).abs() < 1e-12);
                }
            }
        }
    }
    check_gradients(&[a, b], |v| v[0].matmul(&v[1]), EPS, TOL).unwrap();
}

#[test]
fn views_share_storage_and_differentiate() {
    let x = rand_f64(&[2, 3, 4], 9);
    let n = x.narrow(2, 1, 2).unwrap();
    assert!(n.same_storage(&x));
    assert_eq!(n.to_vec_f64().unwrap()[0], x.to_vec_f64().unwrap()[1]);
    let r = x.permute(&[2, 0, 1]).unwrap().reshape(&[4, 6]).unwrap();
    assert_eq!(r.shape(), &[4, 6]);
    check_gradients(std::slice::from_ref(&x), |v| v[0].narrow(1, 1, 2)?.permute(&[2, 0, 1])?.reshape(&[4, 4]), EPS, TOL).unwrap();
    check_gradients(&[rand_f64(&[3, 1], 10)], |v| v[0].broadcast_to(&[2, 3, 4])?.unsqueeze(0)?.squeeze(0), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| Ok(v[0].chunk(2, 2)?.remove(1)), EPS, TOL).unwrap();
}

#[test]
fn casts_round_trip_and_keep_gradients() {
    let x = rand_f64(&[3, 5], 11);
    let h = x.to_dtype(DType::F16).unwrap().to_dtype(DType::F64).unwrap();
    assert_close(&h, &x, 1e-3, 1e-3);
    let b = x.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    assert_close(&b, &x, 1e-2, 1e-2);
    check_gradients(&[x], |v| v[0].to_dtype(DType::F32)?.exp()?.to_dtype(DType::F64), 1e-4, 1e-3).unwrap();
    assert!(Tensor::zeros(&[2], DType::F32, Device::Cuda(0)).is_err());
}

#[test]
fn gradients_accumulate_and_no_grad_records_nothing() {
    let w = rand_f64(&[4], 12).to_variable();
    let g1 = w.square().unwrap().sum_all().unwrap().backward().unwrap();
    let mut acc = g1.clone();
    acc.accumulate(w.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
    let want: Vec<f64> = w.to_vec_f64().unwrap().iter().map(|v| 2.0 * v + 3.0).collect();
    assert_close(acc.get(&w).unwrap(), &Tensor::from_vec(want, &[4]).unwrap(), 1e-12, 0.0);
    let y = privdistill::no_grad(|| w.exp().unwrap());
    assert!(!y.requires_grad() && y.grad_fn().is_none());
}

//! where_cond and masked_fill: forward against a naive elementwise choice
//! with three-way broadcasting and strided inputs, gradients to both values
//! against finite differences, and shape errors.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Every value broadcast to `shape`, as f64, row-major.
fn expanded(t: &Tensor, shape: &[usize]) -> Vec<f64> {
    t.broadcast_to(shape).unwrap().to_vec_f64().unwrap()
}

fn naive_where(cond: &Tensor, a: &Tensor, b: &Tensor, shape: &[usize]) -> Tensor {
    let (c, a, b) = (expanded(cond, shape), expanded(a, shape), expanded(b, shape));
    let v = c.iter().zip(a.iter().zip(&b)).map(|(&c, (&a, &b))| if c != 0.0 { a } else { b }).collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn where_cond_broadcasts_all_three_and_accepts_any_cond_dtype() {
    let cond = rand_f64(&[3, 1, 5], 1).gt(&Tensor::scalar(0.0f64)).unwrap(); // u8 mask
    let a = rand_f64(&[4, 1], 2);
    let b = rand_f64(&[5, 4, 3], 3).permute(&[2, 1, 0]).unwrap(); // [3, 4, 5] strided
    let shape = [3, 4, 5];
    let got = Tensor::where_cond(&cond, &a, &b).unwrap();
    assert_eq!(got.shape(), &shape);
    assert_close(&got, &naive_where(&cond, &a, &b, &shape), 0.0, 0.0);
    // A float or i64 condition means "nonzero".
    let cond_f = cond.to_dtype(DType::F64).unwrap().mul_scalar(-2.5).unwrap();
    assert_close(&Tensor::where_cond(&cond_f, &a, &b).unwrap(), &got, 0.0, 0.0);
    assert_close(&Tensor::where_cond(&cond.to_dtype(DType::I64).unwrap(), &a, &b).unwrap(), &got, 0.0, 0.0);
    // f32 values, and integer values.
    let (a32, b32) = (a.to_dtype(DType::F32).unwrap(), b.to_dtype(DType::F32).unwrap());
    assert_close(&Tensor::where_cond(&cond, &a32, &b32).unwrap(), &got, 1e-7, 1e-6);
    let (ai, bi) = (Tensor::from_slice(&[1i64, 2], &[2]).unwrap(), Tensor::from_slice(&[-1i64], &[1]).unwrap());
    let ci = Tensor::from_slice(&[0u8, 1], &[2]).unwrap();
    assert_eq!(Tensor::where_cond(&ci, &ai, &bi).unwrap().to_vec::<i64>().unwrap(), vec![-1, 2]);
}

#[test]
fn where_cond_gradients_go_to_the_chosen_side() {
    let cond = rand_f64(&[3, 1, 5], 4).gt(&Tensor::scalar(0.1f64)).unwrap();
    let a = rand_f64(&[4, 1], 5);
    let b = rand_f64(&[5, 4, 3], 6).permute(&[2, 1, 0]).unwrap();
    check_gradients(&[a.clone(), b.clone()], |v| Tensor::where_cond(&cond, &v[0], &v[1]), EPS, TOL).unwrap();
    check_gradients(&[b.clone(), a.clone()], |v| Tensor::where_cond(&cond, &v[0], &v[1]), EPS, TOL).unwrap();
    // Only one side requiring grad.
    let av = a.to_variable();
    let g = Tensor::where_cond(&cond, &av, &b).unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = (0..4)
        .map(|j| {
            let c = expanded(&cond, &[3, 4, 5]);
            (0..3).flat_map(|i| (0..5).map(move |k| (i, k))).filter(|&(i, k)| c[(i * 4 + j) * 5 + k] != 0.0).count() as f64
        })
        .collect();
    assert_close(g.get(&av).unwrap(), &Tensor::from_vec(want, &[4, 1]).unwrap(), 0.0, 0.0);
}

#[test]
fn where_cond_large_takes_the_parallel_path() {
    let shape = [16, 48, 64];
    let cond = rand_f64(&[16, 1, 64], 7).lt(&Tensor::scalar(0.0f64)).unwrap();
    let a = rand_f64(&[64, 48, 16], 8).permute(&[2, 1, 0]).unwrap();
    let b = rand_f64(&[48, 1], 9);
    assert_close(&Tensor::where_cond(&cond, &a, &b).unwrap(), &naive_where(&cond, &a, &b, &shape), 0.0, 0.0);
}

#[test]
fn masked_fill_fills_and_blocks_gradients() {
    let x = rand_f64(&[4, 3], 10).t().unwrap(); // [3, 4] strided
    let mask = Tensor::from_slice(&[1u8, 0, 0, 1], &[4]).unwrap(); // broadcast over rows
    let got = x.masked_fill(&mask, -1e9).unwrap();
    let xv = x.to_vec_f64().unwrap();
    let want: Vec<f64> = xv.iter().enumerate().map(|(i, &v)| if i % 4 == 0 || i % 4 == 3 { -1e9 } else { v }).collect();
    assert_close(&got, &Tensor::from_vec(want, &[3, 4]).unwrap(), 0.0, 0.0);
    check_gradients(std::slice::from_ref(&x), |v| v[0].masked_fill(&mask, 2.0), EPS, TOL).unwrap();
    let xv = x.to_variable();
    let g = xv.masked_fill(&mask, 0.0).unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = (0..12).map(|i| if i % 4 == 0 || i % 4 == 3 { 0.0 } else { 1.0 }).collect();
    assert_close(g.get(&xv).unwrap(), &Tensor::from_vec(want, &[3, 4]).unwrap(), 0.0, 0.0);
    // f32 agrees.
    assert_close(&x.to_dtype(DType::F32).unwrap().masked_fill(&mask, 0.5).unwrap(), &x.masked_fill(&mask, 0.5).unwrap(), 1e-7, 1e-6);
}

#[test]
fn where_and_masked_fill_reject_mismatched_shapes() {
    let a = rand_f64(&[3, 4], 11);
    let err = Tensor::where_cond(&Tensor::ones(&[2], DType::U8, privdistill::Device::Cpu).unwrap(), &a, &a).unwrap_err().to_string();
    assert!(err.contains("where_cond"), "{err}");
    assert!(Tensor::where_cond(&Tensor::scalar(1u8), &a, &rand_f64(&[5], 12)).is_err());
    assert!(Tensor::where_cond(&Tensor::scalar(1u8), &a, &a.to_dtype(DType::F32).unwrap()).is_err(), "dtype");
    // A mask that would enlarge the input is refused.
    assert!(rand_f64(&[4], 13).masked_fill(&Tensor::ones(&[3, 4], DType::U8, privdistill::Device::Cpu).unwrap(), 0.0).is_err());
}

//! cat and stack: forward against coordinate loops on every dim (negative
//! dims, strided inputs, large enough for the parallel path), gradients
//! against finite differences, and errors for mismatched inputs.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Concatenation by coordinates: out[.., j, ..] comes from the part whose window holds j.
fn naive_cat(parts: &[Tensor], dim: usize) -> Tensor {
    let shape0 = parts[0].shape().to_vec();
    let outer: usize = shape0[..dim].iter().product();
    let inner: usize = shape0[dim + 1..].iter().product();
    let values: Vec<Vec<f64>> = parts.iter().map(|p| p.to_vec_f64().unwrap()).collect();
    let mut out = Vec::new();
    for o in 0..outer {
        for (p, v) in parts.iter().zip(&values) {
            let size = p.shape()[dim];
            out.extend_from_slice(&v[o * size * inner..(o + 1) * size * inner]);
        }
    }
    let mut shape = shape0;
    shape[dim] = parts.iter().map(|p| p.shape()[dim]).sum();
    Tensor::from_vec(out, &shape).unwrap()
}

/// Parts of shape `base` with `sizes[k]` along `dim`, the middle one a strided view.
fn parts(base: [usize; 3], dim: usize, sizes: &[usize], seed: u64) -> Vec<Tensor> {
    sizes
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut shape = base;
            shape[dim] = s;
            if k == 1 {
                // Same shape, built as the transpose of a contiguous tensor.
                rand_f64(&[shape[2], shape[1], shape[0]], seed + k as u64).permute(&[2, 1, 0]).unwrap()
            } else {
                rand_f64(&shape, seed + k as u64)
            }
        })
        .collect()
}

#[test]
fn cat_matches_naive_on_every_dim_with_strided_inputs() {
    for dim in 0..3 {
        let ps = parts([3, 2, 5], dim, &[2, 3, 1], 10 + dim as u64);
        assert!(!ps[1].is_contiguous());
        let want = naive_cat(&ps, dim);
        assert_close(&Tensor::cat(&ps, dim as isize).unwrap(), &want, 0.0, 0.0);
        let refs: Vec<&Tensor> = ps.iter().collect();
        assert_close(&Tensor::cat(&refs, dim as isize - 3).unwrap(), &want, 0.0, 0.0);
        let ps32: Vec<Tensor> = ps.iter().map(|p| p.to_dtype(DType::F32).unwrap()).collect();
        assert_close(&Tensor::cat(&ps32, dim as isize).unwrap(), &want, 1e-7, 1e-6);
        check_gradients(&ps, |v| Tensor::cat(v, dim as isize), EPS, TOL).unwrap();
    }
    // Zero-length parts and integer tensors.
    let ps = parts([2, 3, 2], 1, &[2, 0, 1], 20);
    assert_close(&Tensor::cat(&ps, 1).unwrap(), &naive_cat(&ps, 1), 0.0, 0.0);
    let a = Tensor::from_slice(&[1i64, 2], &[2]).unwrap();
    let b = Tensor::from_slice(&[3i64], &[1]).unwrap();
    assert_eq!(Tensor::cat(&[&a, &b], 0).unwrap().to_vec::<i64>().unwrap(), vec![1, 2, 3]);
}

#[test]
fn cat_gradient_reaches_only_inputs_that_need_it() {
    let a = rand_f64(&[2, 3], 30).to_variable();
    let b = rand_f64(&[2, 2], 31); // a constant
    let w = rand_f64(&[2, 5], 32);
    let g = Tensor::cat(&[&a, &b], 1).unwrap().mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&b).is_none());
    assert_close(g.get(&a).unwrap(), &w.narrow(1, 0, 3).unwrap(), 0.0, 0.0);
}

#[test]
fn cat_large_takes_the_parallel_path() {
    // 40 rows of 1200 output columns (48k elements).
    let ps = vec![
        rand_f64(&[40, 3, 100], 40),
        rand_f64(&[40, 5, 100], 41).t().unwrap().contiguous().unwrap().t().unwrap(),
        rand_f64(&[40, 4, 100], 42),
    ];
    assert_close(&Tensor::cat(&ps, 1).unwrap(), &naive_cat(&ps, 1), 0.0, 0.0);
    assert_close(&Tensor::cat(&ps[..1], 0).unwrap(), &ps[0], 0.0, 0.0);
}

#[test]
fn stack_inserts_a_new_dim_anywhere() {
    let xs: Vec<Tensor> = (0..3).map(|k| rand_f64(&[2, 4], 50 + k)).collect();
    let vals: Vec<Vec<f64>> = xs.iter().map(|x| x.to_vec_f64().unwrap()).collect();
    for dim in [0isize, 1, 2, -1, -3] {
        let s = Tensor::stack(&xs, dim).unwrap();
        let d = if dim < 0 { (dim + 3) as usize } else { dim as usize };
        let mut shape = vec![2, 4];
        shape.insert(d, 3);
        assert_eq!(s.shape(), shape.as_slice());
        let sv = s.to_vec_f64().unwrap();
        for (k, part) in vals.iter().enumerate() {
            for i in 0..2 {
                for j in 0..4 {
                    let mut at = vec![i, j];
                    at.insert(d, k);
                    let flat = (at[0] * shape[1] + at[1]) * shape[2] + at[2];
                    assert_eq!(sv[flat], part[i * 4 + j]);
                }
            }
        }
        check_gradients(&xs, |v| Tensor::stack(v, dim), EPS, TOL).unwrap();
    }
}

#[test]
fn cat_and_stack_reject_mismatched_inputs() {
    let a = rand_f64(&[2, 3], 60);
    let err = Tensor::cat(&[&a, &rand_f64(&[3, 3], 61)], 1).unwrap_err().to_string();
    assert!(err.contains("[3, 3]") && err.contains("dim 1"), "{err}");
    assert!(Tensor::cat(&[&a, &rand_f64(&[2, 3, 1], 62)], 0).is_err(), "rank");
    assert!(Tensor::cat(&[&a, &a.to_dtype(DType::F32).unwrap()], 0).is_err(), "dtype");
    assert!(Tensor::cat(&[&a], 2).is_err(), "dim");
    assert!(Tensor::cat::<Tensor>(&[], 0).is_err(), "empty list");
    assert!(Tensor::stack(&[&a, &rand_f64(&[2, 2], 63)], 0).is_err(), "stack shapes");
    assert!(Tensor::stack(&[&a, &a], 3).is_err(), "stack dim");
}

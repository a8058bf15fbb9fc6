//! embedding, index_select and gather: forward against naive loops (odd
//! shapes, strided views, negative dims, sizes large enough for the parallel
//! paths), backward against finite differences, f32 against f64, and errors
//! for out-of-range indices and mismatched shapes.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn ids(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

/// Deterministic pseudo-random indices in `0..bound`, with repeats.
fn spread_ids(n: usize, bound: usize, seed: u64) -> Vec<i64> {
    (0..n as u64).map(|i| ((i * 7919 + seed * 104729 + (i * i) % 13) % bound as u64) as i64).collect()
}

#[test]
fn embedding_picks_rows_for_any_id_shape() {
    let weight = rand_f64(&[7, 5], 1);
    let w = weight.to_vec_f64().unwrap();
    let id_values = [3i64, 0, 6, 3, 1, 6];
    let out = Tensor::embedding(&ids(&id_values, &[2, 3]), &weight).unwrap();
    assert_eq!(out.shape(), &[2, 3, 5]);
    let want: Vec<f64> = id_values.iter().flat_map(|&i| w[i as usize * 5..(i as usize + 1) * 5].to_vec()).collect();
    assert_close(&out, &Tensor::from_vec(want.clone(), &[2, 3, 5]).unwrap(), 0.0, 0.0);
    // i32 and u8 ids, a transposed (strided) weight, and an f32 weight agree.
    let i32_ids = Tensor::from_vec(id_values.iter().map(|&i| i as i32).collect(), &[2, 3]).unwrap();
    let u8_ids = Tensor::from_vec(id_values.iter().map(|&i| i as u8).collect(), &[2, 3]).unwrap();
    assert_close(&Tensor::embedding(&i32_ids, &weight).unwrap(), &out, 0.0, 0.0);
    assert_close(&Tensor::embedding(&u8_ids, &weight).unwrap(), &out, 0.0, 0.0);
    let strided = weight.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!strided.is_contiguous());
    assert_close(&Tensor::embedding(&ids(&id_values, &[2, 3]), &strided).unwrap(), &out, 0.0, 0.0);
    let out32 = Tensor::embedding(&ids(&id_values, &[2, 3]), &weight.to_dtype(DType::F32).unwrap()).unwrap();
    assert_eq!(out32.dtype(), DType::F32);
    assert_close(&out32, &out, 1e-7, 1e-6);
    // A scalar id gives one row.
    assert_eq!(Tensor::embedding(&Tensor::scalar(2i64), &weight).unwrap().shape(), &[5]);
}

#[test]
fn embedding_backward_sums_repeated_ids() {
    let weight = rand_f64(&[6, 3], 2);
    let id_values = [1i64, 4, 1, 1, 5, 0, 4];
    let x = ids(&id_values, &[7]);
    check_gradients(std::slice::from_ref(&weight), |v| Tensor::embedding(&x, &v[0]), EPS, TOL).unwrap();
    check_gradients(std::slice::from_ref(&weight), |v| Tensor::embedding(&ids(&id_values[..6], &[3, 2]), &v[0]), EPS, TOL).unwrap();
    // Hand-checked: with a gradient of ones, row r of dW counts the occurrences of r.
    let w = weight.to_variable();
    let g = Tensor::embedding(&x, &w).unwrap().sum_all().unwrap().backward().unwrap();
    let counts = [1.0, 3.0, 0.0, 0.0, 2.0, 1.0];
    let want: Vec<f64> = counts.iter().flat_map(|&c| [c; 3]).collect();
    assert_close(g.get(&w).unwrap(), &Tensor::from_vec(want, &[6, 3]).unwrap(), 0.0, 0.0);
}

#[test]
fn embedding_backward_in_parallel_matches_naive_scatter_add() {
    // 96 ids of width 512: the gradient (49k elements) takes the multithreaded path.
    let (vocab, dim, n) = (40, 512, 96);
    let id_values = spread_ids(n, vocab, 3);
    let grad = rand_f64(&[n, dim], 4);
    let gv = grad.to_vec_f64().unwrap();
    let got = Tensor::embedding_backward(&ids(&id_values, &[n]), &grad, vocab).unwrap();
    let mut want = vec![0.0; vocab * dim];
    for (p, &i) in id_values.iter().enumerate() {
        for k in 0..dim {
            want[i as usize * dim + k] += gv[p * dim + k];
        }
    }
    assert_close(&got, &Tensor::from_vec(want, &[vocab, dim]).unwrap(), 1e-12, 0.0);
    let got32 = Tensor::embedding_backward(&ids(&id_values, &[n]), &grad.to_dtype(DType::F32).unwrap(), vocab).unwrap();
    assert_close(&got32, &got, 1e-5, 1e-5);
}

#[test]
fn embedding_rejects_bad_ids_and_shapes() {
    let weight = rand_f64(&[10, 4], 5);
    let err = Tensor::embedding(&ids(&[2, 10, 3], &[3]), &weight).unwrap_err().to_string();
    assert!(err.contains("id 10") && err.contains("vocabulary of 10"), "{err}");
    let err = Tensor::embedding(&ids(&[-1], &[1]), &weight).unwrap_err().to_string();
    assert!(err.contains("id -1"), "{err}");
    assert!(Tensor::embedding(&rand_f64(&[3], 6), &weight).is_err(), "float ids");
    assert!(Tensor::embedding(&ids(&[0], &[1]), &rand_f64(&[10], 7)).is_err(), "1-d weight");
    assert!(Tensor::embedding_backward(&ids(&[0, 1], &[2]), &rand_f64(&[3, 4], 8), 10).is_err(), "grad shape");
}

/// index_select by coordinates: the reference for any dim.
fn naive_index_select(x: &Tensor, dim: usize, idx: &[i64]) -> Tensor {
    let shape = x.shape().to_vec();
    let v = x.to_vec_f64().unwrap();
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for &i in idx {
            for k in 0..inner {
                out.push(v[(o * shape[dim] + i as usize) * inner + k]);
            }
        }
    }
    let mut out_shape = shape;
    out_shape[dim] = idx.len();
    Tensor::from_vec(out, &out_shape).unwrap()
}

#[test]
fn index_select_matches_naive_on_strided_views_and_negative_dims() {
    let x = rand_f64(&[5, 3, 4], 9).permute(&[1, 2, 0]).unwrap(); // [3, 4, 5] strided
    let idx = [4i64, 0, 0, 2];
    for dim in [0isize, 1, 2, -1, -3] {
        let d = if dim < 0 { (dim + 3) as usize } else { dim as usize };
        let sel: Vec<i64> = idx.iter().map(|&i| i % x.shape()[d] as i64).collect();
        let got = x.index_select(dim, &ids(&sel, &[sel.len()])).unwrap();
        assert_close(&got, &naive_index_select(&x, d, &sel), 0.0, 0.0);
        let got32 = x.to_dtype(DType::F32).unwrap().index_select(dim, &ids(&sel, &[sel.len()])).unwrap();
        assert_close(&got32, &got, 1e-7, 1e-6);
        check_gradients(std::slice::from_ref(&x), |v| v[0].index_select(dim, &ids(&sel, &[sel.len()])), EPS, TOL).unwrap();
    }
    // A 0-d index keeps the dimension with size 1; an empty index gives an empty dim.
    assert_eq!(x.index_select(1, &Tensor::scalar(3i64)).unwrap().shape(), &[3, 1, 5]);
    assert_eq!(x.index_select(1, &Tensor::from_vec(Vec::<i64>::new(), &[0]).unwrap()).unwrap().shape(), &[3, 0, 5]);
    // Integer tensors can be selected from too.
    let labels = ids(&[10, 11, 12, 13], &[4]);
    assert_eq!(labels.index_select(0, &ids(&[3, 1], &[2])).unwrap().to_vec::<i64>().unwrap(), vec![13, 11]);
}

#[test]
fn index_select_large_matches_naive_and_scatters_back() {
    // Outer 6 × 50 selected rows × 160: both kernels take the multithreaded path.
    let x = rand_f64(&[6, 30, 160], 10);
    let sel = spread_ids(50, 30, 11);
    let got = x.index_select(1, &ids(&sel, &[50])).unwrap();
    assert_close(&got, &naive_index_select(&x, 1, &sel), 0.0, 0.0);
    let g = rand_f64(&[6, 50, 160], 12);
    let back = g.index_select_backward(1, &ids(&sel, &[50]), 30).unwrap();
    let gv = g.to_vec_f64().unwrap();
    let mut want = vec![0.0; 6 * 30 * 160];
    for o in 0..6 {
        for (j, &i) in sel.iter().enumerate() {
            for k in 0..160 {
                want[(o * 30 + i as usize) * 160 + k] += gv[(o * 50 + j) * 160 + k];
            }
        }
    }
    assert_close(&back, &Tensor::from_vec(want, &[6, 30, 160]).unwrap(), 1e-12, 0.0);
}

#[test]
fn index_select_rejects_bad_indices() {
    let x = rand_f64(&[3, 4], 13);
    let err = x.index_select(1, &ids(&[0, 4], &[2])).unwrap_err().to_string();
    assert!(err.contains("index 4") && err.contains("dim 1"), "{err}");
    assert!(x.index_select(0, &ids(&[-1], &[1])).is_err());
    assert!(x.index_select(0, &ids(&[0, 1], &[1, 2])).is_err(), "2-d indices");
    assert!(x.index_select(2, &ids(&[0], &[1])).is_err(), "dim out of range");
}

/// torch.gather by coordinates (3-d).
fn naive_gather(x: &Tensor, dim: usize, index: &[i64], index_shape: &[usize]) -> Tensor {
    let xs = x.shape().to_vec();
    let v = x.to_vec_f64().unwrap();
    let mut out = Vec::new();
    for a in 0..index_shape[0] {
        for b in 0..index_shape[1] {
            for c in 0..index_shape[2] {
                let i = index[(a * index_shape[1] + b) * index_shape[2] + c] as usize;
                let mut at = [a, b, c];
                at[dim] = i;
                out.push(v[(at[0] * xs[1] + at[1]) * xs[2] + at[2]]);
            }
        }
    }
    Tensor::from_vec(out, index_shape).unwrap()
}

#[test]
fn gather_matches_naive_with_smaller_index_and_strided_input() {
    let x = rand_f64(&[4, 5, 3], 14).permute(&[2, 0, 1]).unwrap(); // [3, 4, 5] strided
    for dim in [0usize, 1, 2] {
        let mut index_shape = [2, 3, 4];
        index_shape[dim] = 6; // longer than the input along dim: indices repeat
        let n: usize = index_shape.iter().product();
        let index = spread_ids(n, x.shape()[dim], dim as u64);
        let it = ids(&index, &index_shape);
        let got = x.gather(dim as isize - 3, &it).unwrap();
        assert_close(&got, &naive_gather(&x, dim, &index, &index_shape), 0.0, 0.0);
        let got32 = x.to_dtype(DType::F32).unwrap().gather(dim as isize, &it).unwrap();
        assert_close(&got32, &got, 1e-7, 1e-6);
        check_gradients(std::slice::from_ref(&x), |v| v[0].gather(dim as isize, &it), EPS, TOL).unwrap();
    }
    // Cross-entropy style: pick one class per row.
    let logits = Tensor::from_vec(vec![0.1, 0.2, 0.3, 1.0, 2.0, 3.0], &[2, 3]).unwrap();
    let picked = logits.gather(1, &ids(&[2, 0], &[2, 1])).unwrap();
    assert_eq!(picked.to_vec_f64().unwrap(), vec![0.3, 1.0]);
}

#[test]
fn gather_backward_in_parallel_matches_naive_scatter_add() {
    // dim 1 of [8, 70, 64] with a [8, 90, 64] index: 46k gradient elements, slabs in parallel.
    let shape = [8, 70, 64];
    let index_shape = [8, 90, 64];
    let n: usize = index_shape.iter().product();
    let index = spread_ids(n, shape[1], 15);
    let g = rand_f64(&index_shape, 16);
    let got = g.gather_backward(1, &ids(&index, &index_shape), &shape).unwrap();
    let gv = g.to_vec_f64().unwrap();
    let mut want = vec![0.0; shape.iter().product()];
    for a in 0..8 {
        for b in 0..90 {
            for c in 0..64 {
                let p = (a * 90 + b) * 64 + c;
                want[(a * 70 + index[p] as usize) * 64 + c] += gv[p];
            }
        }
    }
    assert_close(&got, &Tensor::from_vec(want, &shape).unwrap(), 1e-12, 0.0);
}

#[test]
fn gather_rejects_bad_indices_and_shapes() {
    let x = rand_f64(&[3, 4], 17);
    let err = x.gather(1, &ids(&[0, 4, 1], &[3, 1])).unwrap_err().to_string();
    assert!(err.contains("index 4"), "{err}");
    assert!(x.gather(0, &ids(&[0, 1, 2], &[3])).is_err(), "rank differs");
    assert!(x.gather(0, &ids(&[0; 10], &[2, 5])).is_err(), "index wider than input along dim 1");
}

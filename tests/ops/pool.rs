//! max_pool2d, avg_pool2d, adaptive_avg_pool2d: forward against direct
//! loops, backward against finite differences, f32 against f64.

use privdistill::tensor::ops::pool::{avg_pool2d_backward, max_pool2d_backward};
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Output shape and, for each output element, the in-bounds input indices
/// (flat within the plane) of its window in row-major order, plus the window
/// size counting padding.
fn windows(shape: &[usize], k: [usize; 2], s: [usize; 2], p: [usize; 2]) -> (Vec<usize>, Vec<(Vec<usize>, usize)>) {
    let (h, w) = (shape[2], shape[3]);
    let oh = (h + 2 * p[0] - k[0]) / s[0] + 1;
    let ow = (w + 2 * p[1] - k[1]) / s[1] + 1;
    let mut out = Vec::new();
    for y in 0..oh {
        for x in 0..ow {
            let mut idx = Vec::new();
            for i in 0..k[0] {
                for j in 0..k[1] {
                    let (ih, iw) = ((y * s[0] + i) as isize - p[0] as isize, (x * s[1] + j) as isize - p[1] as isize);
                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                        idx.push(ih as usize * w + iw as usize);
                    }
                }
            }
            out.push((idx, k[0] * k[1]));
        }
    }
    (vec![shape[0], shape[1], oh, ow], out)
}

/// Apply `reduce` to each window of each plane.
fn naive_pool(x: &Tensor, shape: &[usize], wins: &[(Vec<usize>, usize)], reduce: impl Fn(&[f64], usize) -> f64) -> Tensor {
    let v = x.to_vec_f64().unwrap();
    let plane = x.shape()[2] * x.shape()[3];
    let mut out = Vec::new();
    for pl in v.chunks(plane) {
        for (idx, size) in wins {
            let vals: Vec<f64> = idx.iter().map(|&i| pl[i]).collect();
            out.push(reduce(&vals, *size));
        }
    }
    Tensor::from_vec(out, shape).unwrap()
}

type PoolCase = ([usize; 4], [usize; 2], [usize; 2], [usize; 2]);
const CASES: &[PoolCase] = &[
    ([2, 3, 7, 8], [3, 3], [2, 2], [1, 1]), // ResNet stem pool
    ([1, 2, 6, 6], [2, 2], [2, 2], [0, 0]), // DenseNet transition
    ([2, 1, 5, 7], [2, 3], [1, 2], [1, 1]), // non-square everything
    ([1, 2, 4, 5], [3, 3], [3, 3], [0, 0]), // stride = kernel, leftover dropped
    ([1, 1, 3, 3], [3, 3], [1, 1], [1, 1]),
];

#[test]
fn max_pool2d_matches_direct_loop_and_differentiates() {
    for (c, &(xs, k, s, p)) in CASES.iter().enumerate() {
        let x = rand_f64(&xs, 20 + c as u64);
        let (shape, wins) = windows(&xs, k, s, p);
        let (y, idx) = x.max_pool2d_with_indices(k, s, p).unwrap();
        assert_close(&y, &naive_pool(&x, &shape, &wins, |v, _| v.iter().copied().fold(f64::MIN, f64::max)), 0.0, 0.0);
        // Each index names an element holding the maximum.
        let (xv, yv, iv) = (x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), idx.to_vec::<i64>().unwrap());
        let (plane, out_plane) = (xs[2] * xs[3], shape[2] * shape[3]);
        for (o, (&m, &i)) in yv.iter().zip(&iv).enumerate() {
            assert_eq!(xv[(o / out_plane) * plane + i as usize], m);
        }
        let y32 = x.to_dtype(DType::F32).unwrap().max_pool2d(k, s, p).unwrap();
        assert_close(&y32, &y, 1e-6, 1e-6);
        check_gradients(&[x], |v| v[0].max_pool2d(k, s, p), EPS, TOL).unwrap();
    }
}

#[test]
fn max_pool2d_routes_ties_to_the_first_index() {
    // A constant plane: every window ties; PyTorch picks the first in-bounds element.
    let x = Tensor::ones(&[1, 1, 4, 4], DType::F64, privdistill::Device::Cpu).unwrap();
    let (_, idx) = x.max_pool2d_with_indices([3, 3], [2, 2], [1, 1]).unwrap();
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![0, 1, 4, 5]);
    let g = x.to_variable();
    let grads = g.max_pool2d([2, 2], [1, 1], [0, 0]).unwrap().sum_all().unwrap().backward().unwrap();
    let want = vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(grads.get(&g).unwrap().to_vec_f64().unwrap(), want);
    // The backward kernel alone, with overlapping windows adding up.
    let dy = Tensor::ones(&[1, 1, 2, 2], DType::F64, privdistill::Device::Cpu).unwrap();
    let dx = max_pool2d_backward(&dy, &Tensor::from_vec(vec![5i64, 5, 5, 0], &[1, 1, 2, 2]).unwrap(), &[1, 1, 4, 4]).unwrap();
    assert_eq!(dx.to_vec_f64().unwrap()[..6], [1.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
}

#[test]
fn avg_pool2d_matches_direct_loop_and_differentiates() {
    for (c, &(xs, k, s, p)) in CASES.iter().enumerate() {
        let x = rand_f64(&[xs[0], xs[1], xs[3], xs[2]], 40 + c as u64).transpose(2, 3).unwrap(); // shape xs, strided
        assert!(!x.is_contiguous());
        let (shape, wins) = windows(&xs, k, s, p);
        let y = x.avg_pool2d(k, s, p).unwrap();
        // count_include_pad: the divisor is the full window.
        assert_close(&y, &naive_pool(&x, &shape, &wins, |v, size| v.iter().sum::<f64>() / size as f64), 1e-14, 1e-14);
        assert_close(&x.to_dtype(DType::F32).unwrap().avg_pool2d(k, s, p).unwrap(), &y, 1e-6, 1e-6);
        check_gradients(&[x], |v| v[0].avg_pool2d(k, s, p), EPS, TOL).unwrap();
    }
}

#[test]
fn adaptive_avg_pool2d_matches_pytorch_bins_and_differentiates() {
    for (c, &(xs, out)) in
        [([2, 3, 7, 5], [3, 2]), ([1, 2, 6, 6], [1, 1]), ([1, 1, 3, 4], [5, 6]), ([2, 2, 8, 8], [4, 4])].iter().enumerate()
    {
        let x = rand_f64(&xs, 60 + c as u64);
        let v = x.to_vec_f64().unwrap();
        let (h, w) = (xs[2], xs[3]);
        let mut want = Vec::new();
        for pl in v.chunks(h * w) {
            for i in 0..out[0] {
                let (r0, r1) = ((i * h) / out[0], ((i + 1) * h).div_ceil(out[0]));
                for j in 0..out[1] {
                    let (c0, c1) = ((j * w) / out[1], ((j + 1) * w).div_ceil(out[1]));
                    let sum: f64 = (r0..r1).flat_map(|r| (c0..c1).map(move |cc| (r, cc))).map(|(r, cc)| pl[r * w + cc]).sum();
                    want.push(sum / ((r1 - r0) * (c1 - c0)) as f64);
                }
            }
        }
        let y = x.adaptive_avg_pool2d(out).unwrap();
        assert_close(&y, &Tensor::from_vec(want, &[xs[0], xs[1], out[0], out[1]]).unwrap(), 1e-14, 1e-14);
        assert_close(&x.to_dtype(DType::F32).unwrap().adaptive_avg_pool2d(out).unwrap(), &y, 1e-6, 1e-6);
        check_gradients(&[x], |v| v[0].adaptive_avg_pool2d(out), EPS, TOL).unwrap();
    }
    // Global pooling is the spatial mean.
    let x = rand_f64(&[2, 3, 5, 4], 70);
    assert_close(&x.adaptive_avg_pool2d([1, 1]).unwrap(), &x.mean(&[2, 3], true).unwrap(), 1e-14, 1e-14);
}

#[test]
fn pools_run_their_parallel_paths() {
    // Enough planes for the multithreaded branches; compared with the small-path results plane by plane.
    let x = rand_f64(&[4, 64, 16, 18], 80);
    let y = x.max_pool2d([3, 3], [2, 2], [1, 1]).unwrap();
    let first = x.narrow(0, 3, 1).unwrap().narrow(1, 60, 2).unwrap();
    assert_close(&y.narrow(0, 3, 1).unwrap().narrow(1, 60, 2).unwrap(), &first.max_pool2d([3, 3], [2, 2], [1, 1]).unwrap(), 0.0, 0.0);
    let a = x.avg_pool2d([2, 2], [2, 2], [0, 0]).unwrap();
    assert_close(&a.narrow(1, 5, 1).unwrap(), &x.narrow(1, 5, 1).unwrap().avg_pool2d([2, 2], [2, 2], [0, 0]).unwrap(), 0.0, 0.0);
    let dy = rand_f64(a.shape(), 81);
    let dx = avg_pool2d_backward(&dy, x.shape(), [2, 2], [2, 2], [0, 0]).unwrap();
    // Non-overlapping 2×2 windows: each input gets a quarter of its window's gradient.
    let want = dy.affine(0.25, 0.0).unwrap().upsample_nearest2d([16, 18]).unwrap();
    assert_close(&dx, &want, 1e-15, 0.0);
}

#[test]
fn pools_reject_bad_arguments() {
    let x = rand_f64(&[1, 2, 4, 4], 1);
    let e = x.max_pool2d([2, 2], [2, 2], [2, 2]).unwrap_err().to_string();
    assert!(e.contains("half of the kernel"), "{e}");
    let e = x.avg_pool2d([5, 5], [1, 1], [0, 0]).unwrap_err().to_string();
    assert!(e.contains("larger than the input"), "{e}");
    assert!(x.avg_pool2d([2, 2], [0, 1], [0, 0]).is_err());
    assert!(rand_f64(&[2, 4, 4], 1).max_pool2d([2, 2], [2, 2], [0, 0]).is_err());
    assert!(x.adaptive_avg_pool2d([0, 2]).is_err());
}

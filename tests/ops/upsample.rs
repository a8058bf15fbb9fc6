//! upsample_nearest2d: forward against PyTorch's nearest index rule,
//! backward against finite differences, f32 against f64.

use privdistill::tensor::ops::upsample::upsample_nearest2d_backward;
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

/// `out[o] = in[min(floor(o · ratio), in − 1)]` per axis, ratio in f32 as PyTorch computes it.
fn naive_upsample(x: &Tensor, out: [usize; 2], ratio: [f32; 2]) -> Tensor {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let v = x.to_vec_f64().unwrap();
    let src = |o: usize, r: f32, len: usize| ((o as f32 * r).floor() as usize).min(len - 1);
    let mut y = Vec::new();
    for pl in v.chunks(h * w) {
        for i in 0..out[0] {
            for j in 0..out[1] {
                y.push(pl[src(i, ratio[0], h) * w + src(j, ratio[1], w)]);
            }
        }
    }
    Tensor::from_vec(y, &[s[0], s[1], out[0], out[1]]).unwrap()
}

#[test]
fn upsample_nearest2d_matches_pytorch_indices() {
    let x = rand_f64(&[2, 3, 4, 5], 1);
    // Scale 2, as diffusers' Upsample2D.
    let y = x.upsample_nearest2d_scale([2.0, 2.0]).unwrap();
    assert_eq!(y.shape(), &[2, 3, 8, 10]);
    assert_close(&y, &naive_upsample(&x, [8, 10], [0.5, 0.5]), 0.0, 0.0);
    assert_close(&x.upsample_nearest2d([8, 10]).unwrap(), &y, 0.0, 0.0);
    // Non-integer ratios, up and down, and a scale factor whose output size rounds down.
    for size in [[7, 3], [5, 12], [3, 5], [4, 5]] {
        let want = naive_upsample(&x, size, [4.0 / size[0] as f32, 5.0 / size[1] as f32]);
        assert_close(&x.upsample_nearest2d(size).unwrap(), &want, 0.0, 0.0);
    }
    let y = x.upsample_nearest2d_scale([1.5, 3.0]).unwrap();
    assert_eq!(y.shape(), &[2, 3, 6, 15]);
    assert_close(&y, &naive_upsample(&x, [6, 15], [(1.0 / 1.5f64) as f32, (1.0 / 3.0f64) as f32]), 0.0, 0.0);
    // A strided input and f32.
    let xt = rand_f64(&[1, 2, 5, 3], 2).transpose(2, 3).unwrap();
    assert_close(&xt.upsample_nearest2d([6, 10]).unwrap(), &naive_upsample(&xt, [6, 10], [0.5, 0.5]), 0.0, 0.0);
    let y32 = xt.to_dtype(DType::F32).unwrap().upsample_nearest2d([6, 10]).unwrap();
    assert_close(&y32, &naive_upsample(&xt, [6, 10], [0.5, 0.5]), 1e-7, 1e-7);
}

#[test]
fn upsample_nearest2d_backward_matches_finite_differences() {
    let x = rand_f64(&[2, 2, 3, 4], 3);
    check_gradients(std::slice::from_ref(&x), |v| v[0].upsample_nearest2d_scale([2.0, 2.0]), 1e-6, 1e-6).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].upsample_nearest2d([5, 7]), 1e-6, 1e-6).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].upsample_nearest2d([2, 3]), 1e-6, 1e-6).unwrap();
    // Each input pixel of a ×2 upsample collects its 2×2 block of gradients.
    let big = rand_f64(&[2, 64, 16, 16], 4);
    let dy = rand_f64(&[2, 64, 32, 32], 5);
    let dx = upsample_nearest2d_backward(&dy, big.shape(), [Some(2.0), Some(2.0)]).unwrap();
    assert_close(&dx, &dy.avg_pool2d([2, 2], [2, 2], [0, 0]).unwrap().affine(4.0, 0.0).unwrap(), 1e-12, 1e-12);
}

#[test]
fn upsample_nearest2d_rejects_bad_arguments() {
    let x = rand_f64(&[1, 2, 3, 3], 1);
    assert!(x.upsample_nearest2d_scale([0.0, 2.0]).is_err());
    assert!(x.upsample_nearest2d([0, 4]).is_err());
    assert!(rand_f64(&[2, 3, 3], 1).upsample_nearest2d([4, 4]).is_err());
    let e = upsample_nearest2d_backward(&rand_f64(&[1, 3, 6, 6], 2), x.shape(), [None, None]).unwrap_err().to_string();
    assert!(e.contains("[1, 3, 6, 6]"), "{e}");
}

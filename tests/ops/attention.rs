//! scaled_dot_product_attention: forward vs a naive reference (lengths that
//! are not multiples of the tile sizes, causal, key-padding masks, Lq ≠ Lk,
//! strided inputs), backward vs finite differences on tiny shapes and vs the
//! same attention composed of matmul and softmax on multi-tile shapes.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

/// softmax(scale·QKᵀ + mask, causal)·V in plain f64 loops; a row with every
/// key hidden gives 0 (the op's documented convention).
fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool, scale: f64) -> Tensor {
    let (b, h, lq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (lk, dv) = (k.shape()[2], v.shape()[3]);
    let (qv, kv, vv) = (q.to_vec_f64().unwrap(), k.to_vec_f64().unwrap(), v.to_vec_f64().unwrap());
    let mv = mask.map(|m| m.broadcast_to(&[b, h, lq, lk]).unwrap().to_vec_f64().unwrap());
    let mut out = vec![0.0; b * h * lq * dv];
    for bh in 0..b * h {
        for i in 0..lq {
            let mut s: Vec<f64> = (0..lk)
                .map(|j| {
                    let dot: f64 = (0..d).map(|x| qv[(bh * lq + i) * d + x] * kv[(bh * lk + j) * d + x]).sum();
                    let mut sc = dot * scale + mv.as_ref().map_or(0.0, |m| m[(bh * lq + i) * lk + j]);
                    if causal && j > i {
                        sc = f64::NEG_INFINITY;
                    }
                    sc
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            s.iter_mut().for_each(|x| *x = (*x - m).exp());
            let sum: f64 = s.iter().sum();
            for c in 0..dv {
                out[(bh * lq + i) * dv + c] = (0..lk).map(|j| s[j] * vv[(bh * lk + j) * dv + c]).sum::<f64>() / sum;
            }
        }
    }
    Tensor::from_vec(out, &[b, h, lq, dv]).unwrap()
}

/// The same attention composed of matmul, softmax and an additive causal
/// mask, for checking gradients on shapes too large for finite differences.
fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool, scale: f64) -> Tensor {
    let (lq, lk) = (q.shape()[2], k.shape()[2]);
    let mut s = q.matmul(&k.transpose(-2, -1).unwrap()).unwrap().affine(scale, 0.0).unwrap();
    if let Some(m) = mask {
        s = s.add(m).unwrap();
    }
    if causal {
        let tri: Vec<f64> = (0..lq * lk).map(|x| if x % lk > x / lk { f64::NEG_INFINITY } else { 0.0 }).collect();
        s = s.add(&Tensor::from_vec(tri, &[lq, lk]).unwrap().to_dtype(q.dtype()).unwrap()).unwrap();
    }
    s.softmax(-1).unwrap().matmul(v).unwrap()
}

fn qkv(b: usize, h: usize, lq: usize, lk: usize, d: usize, dv: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    (rand_f64(&[b, h, lq, d], seed), rand_f64(&[b, h, lk, d], seed + 1), rand_f64(&[b, h, lk, dv], seed + 2).affine(2.0, 0.5).unwrap())
}

fn f32_of(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

/// Check f64 against the naive reference and f32 against f64.
fn check_forward(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool, scale: Option<f64>) {
    let s = scale.unwrap_or(1.0 / (q.shape()[3] as f64).sqrt());
    let want = naive_attention(q, k, v, mask, causal, s);
    let got = q.scaled_dot_product_attention(k, v, mask, causal, scale).unwrap();
    assert_close(&got, &want, 1e-12, 1e-11);
    let m32 = mask.map(f32_of);
    let got32 = f32_of(q).scaled_dot_product_attention(&f32_of(k), &f32_of(v), m32.as_ref(), causal, scale).unwrap();
    assert_close(&got32, &want, 2e-5, 2e-5);
}

#[test]
fn attention_matches_naive_across_tile_boundaries() {
    // 150 queries and keys: two query tiles and two key tiles, both partial.
    let (q, k, v) = qkv(2, 3, 150, 150, 8, 5, 1);
    check_forward(&q, &k, &v, None, false, None);
    check_forward(&q, &k, &v, None, true, None);
    check_forward(&q, &k, &v, None, false, Some(0.7));
}

#[test]
fn cross_attention_with_lq_different_from_lk() {
    // Image tokens attending to 77 text tokens, and the other way round; causal is top-left aligned.
    let (q, k, v) = qkv(1, 2, 130, 77, 8, 6, 4);
    check_forward(&q, &k, &v, None, false, None);
    check_forward(&q, &k, &v, None, true, None);
    let (q, k, v) = qkv(1, 2, 70, 200, 4, 3, 7);
    check_forward(&q, &k, &v, None, false, None);
    check_forward(&q, &k, &v, None, true, None);
}

#[test]
fn attention_with_key_padding_mask_and_fully_masked_rows() {
    let (b, lk) = (3, 140);
    let (q, k, v) = qkv(b, 2, 20, lk, 6, 4, 10);
    // Batch 0 keeps every key, batch 1 hides the last 50 with -inf, batch 2 hides all of them.
    let mut m = vec![0.0; b * lk];
    for j in 90..lk {
        m[lk + j] = f64::NEG_INFINITY;
    }
    m[2 * lk..].fill(f64::NEG_INFINITY);
    let mask = Tensor::from_vec(m, &[b, 1, 1, lk]).unwrap();
    check_forward(&q, &k, &v, Some(&mask), false, None);
    let out = q.scaled_dot_product_attention(&k, &v, Some(&mask), false, None).unwrap();
    let last = out.narrow(0, 2, 1).unwrap().to_vec_f64().unwrap();
    assert!(last.iter().all(|&x| x == 0.0), "fully masked rows give 0");
    // A BERT-style large negative mask instead of -inf: same result where something is visible.
    let big_neg =
        Tensor::from_vec(mask.to_vec_f64().unwrap().iter().map(|&x| if x < 0.0 { -1e9 } else { 0.0 }).collect(), &[b, 1, 1, lk]).unwrap();
    let out2 = q.scaled_dot_product_attention(&k, &v, Some(&big_neg), false, None).unwrap();
    assert_close(&out2.narrow(0, 0, 2).unwrap(), &out.narrow(0, 0, 2).unwrap(), 1e-12, 1e-11);
    // Padding mask combined with causal.
    check_forward(&q, &k, &v, Some(&mask), true, None);
    // Gradients of a fully masked row are zero, not NaN.
    let (qv, kv, vv) = (q.to_variable(), k.to_variable(), v.to_variable());
    let grads = qv.scaled_dot_product_attention(&kv, &vv, Some(&mask), false, None).unwrap().sum_all().unwrap().backward().unwrap();
    for t in [&qv, &kv, &vv] {
        assert!(grads.get(t).unwrap().to_vec_f64().unwrap().iter().all(|x| x.is_finite()));
    }
    assert!(grads.get(&qv).unwrap().narrow(0, 2, 1).unwrap().to_vec_f64().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn attention_with_a_full_float_mask_and_strided_inputs() {
    let (b, h, l, d) = (2, 2, 67, 5);
    // q and v as [B, L, H, D] projections viewed as [B, H, L, D]; k transposed in storage.
    let q = rand_f64(&[b, l, h, d], 20).permute(&[0, 2, 1, 3]).unwrap();
    let k = rand_f64(&[b, h, d, l], 21).transpose(2, 3).unwrap();
    let v = rand_f64(&[b, l, h, 3], 22).permute(&[0, 2, 1, 3]).unwrap();
    let mask = rand_f64(&[l, l], 23).affine(3.0, 0.0).unwrap(); // broadcast over batch and heads
    check_forward(&q, &k, &v, Some(&mask), false, None);
    check_forward(&q, &k, &v, Some(&mask.t().unwrap()), true, None); // a strided mask
}

#[test]
fn attention_backward_matches_finite_differences() {
    let (q, k, v) = qkv(1, 2, 3, 4, 3, 2, 30);
    let mask = Tensor::from_vec(vec![0.0, -0.5, f64::NEG_INFINITY, 0.3, 0.1, 0.0, 0.2, -1.0], &[2, 1, 1, 4]).unwrap();
    let mask = mask.narrow(0, 0, 1).unwrap();
    for causal in [false, true] {
        for m in [None, Some(&mask)] {
            check_gradients(
                &[q.clone(), k.clone(), v.clone()],
                |t| t[0].scaled_dot_product_attention(&t[1], &t[2], m, causal, None),
                1e-6,
                1e-6,
            )
            .unwrap_or_else(|e| panic!("causal={causal} mask={}: {e}", m.is_some()));
        }
    }
    // Cross attention, Lq > Lk, with a custom scale.
    let (q, k, v) = qkv(2, 1, 5, 2, 2, 3, 31);
    check_gradients(&[q, k, v], |t| t[0].scaled_dot_product_attention(&t[1], &t[2], None, true, Some(0.3)), 1e-6, 1e-6).unwrap();
}

#[test]
fn attention_backward_matches_composed_ops_across_tiles() {
    // Its 4 heads make one whole-head pass on one thread and the key-block and
    // query-block passes on four (the backward picks by heads per thread).
    for threads in [1, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(backward_matches_composed_ops_across_tiles);
    }
}

fn backward_matches_composed_ops_across_tiles() {
    let cases: [(usize, usize, bool, bool); 4] =
        [(150, 150, false, false), (150, 150, true, true), (131, 77, false, true), (70, 200, true, false)];
    for (lq, lk, causal, masked) in cases {
        let (q, k, v) = qkv(2, 2, lq, lk, 7, 5, 40 + lq as u64);
        let q = q.permute(&[0, 2, 1, 3]).unwrap().contiguous().unwrap().permute(&[0, 2, 1, 3]).unwrap(); // strided q
        let mask = masked.then(|| {
            let m: Vec<f64> = (0..2 * lk).map(|x| if x >= lk && x % lk >= lk / 2 { -1e9 } else { 0.0 }).collect();
            Tensor::from_vec(m, &[2, 1, 1, lk]).unwrap()
        });
        let g = rand_f64(&[2, 2, lq, 5], 50);
        let grads_of = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor| {
            let (qv, kv, vv) = (q.to_variable(), k.to_variable(), v.to_variable());
            let out = f(&qv, &kv, &vv);
            let gr = out.backward_with(g.clone()).unwrap();
            (out.detach(), [&qv, &kv, &vv].map(|t| gr.get(t).unwrap().clone()))
        };
        let (out_a, ga) = grads_of(&|q, k, v| q.scaled_dot_product_attention(k, v, mask.as_ref(), causal, None).unwrap());
        let (out_b, gb) = grads_of(&|q, k, v| composed_attention(q, k, v, mask.as_ref(), causal, 1.0 / 7f64.sqrt()));
        assert_close(&out_a, &out_b, 1e-12, 1e-10);
        for (a, b) in ga.iter().zip(&gb) {
            assert_close(a, b, 1e-11, 1e-9);
        }
        // f32 gradients agree with f64 to f32 precision.
        let (q32, k32, v32) = (f32_of(&q).to_variable(), f32_of(&k).to_variable(), f32_of(&v).to_variable());
        let m32 = mask.as_ref().map(f32_of);
        let out32 = q32.scaled_dot_product_attention(&k32, &v32, m32.as_ref(), causal, None).unwrap();
        let gr32 = out32.backward_with(f32_of(&g)).unwrap();
        for (t, b) in [&q32, &k32, &v32].iter().zip(&ga) {
            assert_close(gr32.get(t).unwrap(), b, 1e-4, 1e-4);
        }
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    let (q, k, v) = qkv(1, 2, 4, 5, 3, 2, 60);
    assert!(q.scaled_dot_product_attention(&k.narrow(3, 0, 2).unwrap(), &v, None, false, None).is_err(), "D mismatch");
    assert!(q.scaled_dot_product_attention(&k, &v.narrow(2, 0, 4).unwrap(), None, false, None).is_err(), "Lk mismatch");
    assert!(q.reshape(&[2, 4, 3]).unwrap().scaled_dot_product_attention(&k, &v, None, false, None).is_err(), "rank");
    assert!(q.scaled_dot_product_attention(&k, &v, Some(&rand_f64(&[3, 5], 1)), false, None).is_err(), "mask broadcast");
    assert!(q.scaled_dot_product_attention(&k, &v, Some(&f32_of(&rand_f64(&[4, 5], 1))), false, None).is_err(), "mask dtype");
    assert!(f32_of(&q).scaled_dot_product_attention(&k, &v, None, false, None).is_err(), "dtype");
}

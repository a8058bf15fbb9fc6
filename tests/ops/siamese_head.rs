//! The fused siamese head (and its BCE variant) against the composed ops and finite differences.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::Tensor;

fn composed(a: &Tensor, b: &Tensor, w: &Tensor, bias: &Tensor) -> privdistill::Result<Tensor> {
    a.sigmoid()?.sub(&b.sigmoid()?)?.abs()?.matmul(&w.t()?)?.add(bias)
}

#[test]
fn siamese_head_matches_composed_ops_and_finite_differences() {
    let (a, b) = (rand_f64(&[5, 7], 1).mul_scalar(3.0).unwrap(), rand_f64(&[5, 7], 2).mul_scalar(3.0).unwrap());
    let (w, bias) = (rand_f64(&[1, 7], 3), rand_f64(&[1], 4));
    let fused = Tensor::siamese_head(&a, &b, &w, &bias).unwrap();
    assert_close(&fused, &composed(&a, &b, &w, &bias).unwrap(), 1e-12, 1e-12);
    check_gradients(&[a.clone(), b.clone(), w.clone(), bias.clone()], |v| Tensor::siamese_head(&v[0], &v[1], &v[2], &v[3]), 1e-6, 1e-6)
        .unwrap();
    let target = Tensor::from_vec(vec![1.0f64, 0.0, 1.0, 0.0, 0.0], &[5]).unwrap();
    let loss = Tensor::siamese_head_bce(&a, &b, &w, &bias, &target).unwrap();
    let want = composed(&a, &b, &w, &bias).unwrap().reshape(&[5]).unwrap().bce_with_logits(&target, None).unwrap();
    assert_close(&loss, &want, 1e-12, 1e-12);
    check_gradients(&[a, b, w, bias], |v| Tensor::siamese_head_bce(&v[0], &v[1], &v[2], &v[3], &target), 1e-6, 1e-6).unwrap();
}

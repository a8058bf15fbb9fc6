//! GEGLU: the fused op against narrow · gelu · mul (f64 exactly, f32 to its
//! precision, on a strided view, with row blocks that split across threads),
//! its backward against finite differences and against the composed ops'
//! gradients, and a clear error for an odd last dimension.

use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Tensor};

fn composed(x: &Tensor) -> Tensor {
    let half = x.dim(-1).unwrap() / 2;
    x.narrow(-1, 0, half).unwrap().mul(&x.narrow(-1, half, half).unwrap().gelu().unwrap()).unwrap()
}

#[test]
fn geglu_matches_the_composed_ops() {
    // Odd half (not a multiple of the vector width) and enough rows for parallel blocks.
    for shape in [vec![3, 5, 14], vec![2, 300, 70], vec![6]] {
        let x = rand_f64(&shape, 3).affine(4.0, 0.0).unwrap();
        assert_close(&x.geglu().unwrap(), &composed(&x), 1e-14, 1e-14);
        let x32 = x.to_dtype(DType::F32).unwrap();
        let got = x32.geglu().unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_close(&got, &composed(&x), 1e-5, 1e-5);
    }
    // A non-contiguous input: the transpose of a [14, 4] matrix.
    let x = rand_f64(&[14, 4], 5).t().unwrap();
    assert_close(&x.geglu().unwrap(), &composed(&x), 1e-14, 1e-14);
}

#[test]
fn geglu_backward_matches_finite_differences_and_the_composed_gradient() {
    let x = rand_f64(&[3, 4, 10], 7).affine(3.0, 0.0).unwrap();
    check_gradients(std::slice::from_ref(&x), |v| v[0].geglu(), 1e-6, 1e-6).unwrap();

    let x32 = rand_f64(&[2, 300, 70], 9).affine(3.0, 0.0).unwrap().to_dtype(DType::F32).unwrap();
    let g = rand_f64(&[2, 300, 35], 10).to_dtype(DType::F32).unwrap();
    let fused = x32.geglu_backward(&g).unwrap();
    let v = x32.to_variable();
    let grads = composed(&v).mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&fused, grads.get(&v).unwrap(), 1e-5, 1e-5);
}

#[test]
fn geglu_rejects_an_odd_last_dimension() {
    let err = rand_f64(&[2, 5], 1).geglu().unwrap_err().to_string();
    assert!(err.contains("geglu") && err.contains("even"), "{err}");
}

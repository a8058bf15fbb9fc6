//! Test helpers shared by the unit, integration and parity tests: random
//! inputs, closeness checks, and gradient checks by central differences.

use crate::{autograd, DType, Device, Error, Result, Rng, Tensor};

/// A random f64 tensor in [-1, 1), deterministic in `seed`.
pub fn rand_f64(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand(shape, -1.0, 1.0, DType::F64, Device::Cpu, &mut Rng::new(seed)).expect("rand")
}

/// A random f32 tensor in [-1, 1), deterministic in `seed`.
pub fn rand_f32(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand(shape, -1.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).expect("rand")
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op: "max_abs_diff", lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    let (a, b) = (a.to_vec_f64()?, b.to_vec_f64()?);
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}

/// Panic unless `a` and `b` agree elementwise within `atol + rtol·|b|`.
#[track_caller]
pub fn assert_close(a: &Tensor, b: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    for (i, (x, y)) in av.iter().zip(&bv).enumerate() {
        let ok = (x - y).abs() <= atol + rtol * y.abs() || (x.is_nan() && y.is_nan());
        assert!(ok, "element {i}: {x} vs {y} (atol {atol}, rtol {rtol}), shape {:?}", a.shape());
    }
}

/// Check the autograd gradients of `f` (which must return a tensor; its
/// elements are summed with fixed random weights to make a scalar) against
/// central finite differences, for each f64 input. Returns the worst
/// relative error seen.
pub fn check_gradients(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>, eps: f64, tol: f64) -> Result<f64> {
    let vars: Vec<Tensor> = inputs.iter().map(|t| t.to_variable()).collect();
    let out = f(&vars)?;
    // Random weights make every output element matter and break symmetries.
    let w = rand_f64(out.shape(), 0xC0FFEE).affine(1.0, 0.0)?;
    let loss = out.mul(&w)?.sum_all()?;
    let grads = loss.backward()?;
    let mut worst: f64 = 0.0;
    for (k, (v, x)) in vars.iter().zip(inputs).enumerate() {
        if x.dtype() != DType::F64 {
            continue;
        }
        let analytic = match grads.get(v) {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; x.numel()],
        };
        let base = x.to_vec_f64()?;
        for i in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut p = base.clone();
                p[i] += delta;
                let mut args: Vec<Tensor> = inputs.to_vec();
                args[k] = Tensor::from_vec(p, x.shape())?;
                autograd::no_grad(|| f(&args)?.mul(&w)?.sum_all()?.to_scalar_f64())
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
            if err > tol {
                return Err(Error::msg(format!(
                    "gradient of input {k} element {i}: autograd {} vs finite difference {numeric} (rel err {err:.3e})",
                    analytic[i]
                )));
            }
            worst = worst.max(err);
        }
    }
    Ok(worst)
}

/// Writes `data/manifest.jsonl` with the first `n` shipped records, their image
/// paths made absolute: the tiny training sets of the pipeline tests. With
/// `distinct_reports`, only records with a non-empty report not seen before
/// count, so each prompt names one image.
pub fn write_shipped_records(data: &std::path::Path, n: usize, distinct_reports: bool) -> Result<()> {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cxr-real-a");
    let manifest = shipped.join("manifest.jsonl");
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let mut seen = std::collections::HashSet::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let mut r: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::file(&manifest, e.to_string()))?;
        let report = r["text"].as_str().unwrap_or("").to_string();
        if distinct_reports && (report.is_empty() || !seen.insert(report)) {
            continue;
        }
        let image = shipped.join(r["image"].as_str().unwrap_or_default());
        r["image"] = serde_json::json!(image.to_string_lossy());
        lines.push(r.to_string());
        if lines.len() == n {
            break;
        }
    }
    std::fs::create_dir_all(data).map_err(|e| Error::io(data, e))?;
    let out = data.join("manifest.jsonl");
    std::fs::write(&out, lines.join("\n") + "\n").map_err(|e| Error::io(&out, e))
}

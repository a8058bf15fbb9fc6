//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::autograd::no_grad;
use crate::backend::cpu::PARALLEL_MIN;
use crate::tensor::Element;
use crate::{DType, Device, Gradients, Result, Tensor};
use rayon::prelude::*;

/// Σ x² over a tensor, accumulated in f64.
fn sum_of_squares(t: &Tensor) -> Result<f64> {
    fn cpu<T: Element>(t: &Tensor) -> Result<f64> {
        t.with_cpu_slice::<T, _>(|s, l| {
            let s = &s[l.contiguous_range().expect("contiguous")];
            let partial = |c: &[T]| c.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
            if s.len() >= PARALLEL_MIN {
                s.par_chunks(PARALLEL_MIN).map(partial).sum()
            } else {
                partial(s)
            }
        })
    }
    let t = t.contiguous()?;
    match (t.device(), t.dtype()) {
        (Device::Cpu, DType::F32) => cpu::<f32>(&t),
        (Device::Cpu, DType::F64) => cpu::<f64>(&t),
        _ => t.square()?.sum_all()?.to_scalar_f64(),
    }
}

/// The L2 norm of all the gradients of `params` taken together (parameters
/// without a gradient count as zero).
pub fn global_grad_norm(grads: &Gradients, params: &[Tensor]) -> Result<f64> {
    let mut total = 0.0;
    let mut on_gpu = Vec::new();
    for p in params {
        if let Some(g) = grads.get(p) {
            if matches!(g.device(), Device::Cuda(_)) {
                let gc = no_grad(|| g.contiguous())?;
                if crate::nn::optim::fusable_on_gpu(&[&gc]) {
                    on_gpu.push(gc);
                    continue;
                }
            }
            total += no_grad(|| sum_of_squares(g))?;
        }
    }
    // GPU gradients: one multi-tensor launch per (device, dtype).
    while let Some(first) = on_gpu.first() {
        let key = (first.device(), first.dtype());
        let (group, rest): (Vec<Tensor>, Vec<Tensor>) = on_gpu.into_iter().partition(|t| (t.device(), t.dtype()) == key);
        let rows: Vec<[&Tensor; 1]> = group.iter().map(|t| [t]).collect();
        crate::nn::optim::fused_gpu_update(&rows, 0, |spans| {
            let flat: Vec<_> = spans.iter().map(|s| s[0]).collect();
            total += crate::backend::cuda::optim::sum_of_squares(&flat)?;
            Ok(())
        })?;
        on_gpu = rest;
    }
    Ok(total.sqrt())
}

/// Scale the gradients of `params` so their global L2 norm is at most
/// `max_norm`, and return the norm before clipping.
///
/// As in torch, the factor is `max_norm / (norm + 1e-6)` capped at 1, and a
/// non-finite norm is returned and propagated into the gradients rather than
/// raised: check the returned value to skip such a step.
pub fn clip_grad_norm(grads: &mut Gradients, params: &[Tensor], max_norm: f64) -> Result<f64> {
    let total = global_grad_norm(grads, params)?;
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 || !coef.is_finite() {
        no_grad(|| -> Result<()> {
            for p in params {
                if let Some(g) = grads.get(p) {
                    let scaled = g.mul_scalar(coef)?;
                    grads.insert(p, scaled);
                }
            }
            Ok(())
        })?;
    }
    Ok(total)
}

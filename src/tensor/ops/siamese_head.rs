//! The fused siamese head: `logit = w·|σ(a) − σ(b)| + bias`, and the same
//! followed by the mean BCE loss against pair labels.

use crate::autograd::rules::siamese_head::SiameseHeadBackward;
use crate::backend::cpu::siamese_head::{bce_from_logits, siamese_head_bwd, siamese_head_fwd};
use crate::backend::cuda;
use crate::tensor::ops::{cuda_tensor, unsupported, with_cuda};
use crate::{dispatch_float, Device, Error, Result, Tensor};
use std::sync::Arc;

fn check(a: &Tensor, b: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<usize> {
    if a.rank() != 2 || a.shape() != b.shape() {
        return Err(Error::bad_shape("siamese_head", format!("embeddings must both be [N, D], got {:?} and {:?}", a.shape(), b.shape())));
    }
    let d = a.shape()[1];
    if weight.numel() != d || bias.numel() != 1 {
        return Err(Error::bad_shape(
            "siamese_head",
            format!("head weight {:?} / bias {:?} do not match D = {d}", weight.shape(), bias.shape()),
        ));
    }
    Ok(d)
}

impl Tensor {
    /// Logits [N, 1] of the re-identification head from the two branches'
    /// pre-sigmoid embeddings [N, D], with `weight` [1, D] and `bias` [1].
    pub fn siamese_head(a: &Tensor, b: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let d = check(a, b, weight, bias)?;
        let n = a.shape()[0];
        let out = match a.device() {
            Device::Cpu => dispatch_float!(a.dtype(), "siamese_head", |T| {
                let (av, bv, wv) = (a.cpu_vec::<T>()?, b.cpu_vec::<T>()?, weight.cpu_vec::<T>()?);
                let bias_v = bias.cpu_vec::<T>()?[0];
                Tensor::from_cpu_vec(siamese_head_fwd(&av, &bv, &wv, bias_v, d), &[n, 1])
            }),
            Device::Cuda(_) => {
                let logits = with_cuda("siamese_head", &[Some(a), Some(b), Some(weight), Some(bias)], |o| match *o {
                    [Some(a), Some(b), Some(w), Some(bias)] => cuda::siamese_head_forward(a, b, w, bias),
                    _ => Err(unsupported("siamese_head", a)),
                })?;
                cuda_tensor(logits, &[n, 1])
            }
        };
        Ok(out.recorded(&[a, b, weight, bias], || {
            Arc::new(SiameseHeadBackward { a: a.clone(), b: b.clone(), weight: weight.clone(), bias: bias.clone() })
        }))
    }

    /// The head's gradients given dL/dlogit [N, 1]: (da, db, dweight, dbias).
    pub fn siamese_head_backward(a: &Tensor, b: &Tensor, weight: &Tensor, grad_logit: &Tensor) -> Result<[Tensor; 4]> {
        let d = a.shape()[1];
        match a.device() {
            Device::Cpu => dispatch_float!(a.dtype(), "siamese_head_backward", |T| {
                let (av, bv, wv, gv) = (a.cpu_vec::<T>()?, b.cpu_vec::<T>()?, weight.cpu_vec::<T>()?, grad_logit.cpu_vec::<T>()?);
                let (da, db, dw, dbias) = siamese_head_bwd(&av, &bv, &wv, &gv, d);
                Ok([
                    Tensor::from_cpu_vec(da, a.shape()),
                    Tensor::from_cpu_vec(db, b.shape()),
                    Tensor::from_cpu_vec(dw, weight.shape()),
                    Tensor::from_cpu_vec(vec![dbias], &[1]),
                ])
            }),
            Device::Cuda(_) => {
                let [da, db, dw, dbias] =
                    with_cuda("siamese_head_backward", &[Some(a), Some(b), Some(weight), Some(grad_logit)], |o| match *o {
                        [Some(a), Some(b), Some(w), Some(g)] => cuda::siamese_head_backward(a, b, w, g),
                        _ => Err(unsupported("siamese_head_backward", a)),
                    })?;
                Ok([cuda_tensor(da, a.shape()), cuda_tensor(db, b.shape()), cuda_tensor(dw, weight.shape()), cuda_tensor(dbias, &[1])])
            }
        }
    }

    /// Mean binary cross-entropy of the head's logits against pair labels
    /// `target` [N] (1 = same patient), fused with the head: one pass forward,
    /// one pass backward.
    pub fn siamese_head_bce(a: &Tensor, b: &Tensor, weight: &Tensor, bias: &Tensor, target: &Tensor) -> Result<Tensor> {
        let d = check(a, b, weight, bias)?;
        if target.numel() != a.shape()[0] {
            return Err(Error::bad_shape("siamese_head_bce", format!("{} targets for {} pairs", target.numel(), a.shape()[0])));
        }
        match a.device() {
            Device::Cpu => dispatch_float!(a.dtype(), "siamese_head_bce", |T| {
                let (av, bv, wv) = (a.cpu_vec::<T>()?, b.cpu_vec::<T>()?, weight.cpu_vec::<T>()?);
                let (bias_v, tv) = (bias.cpu_vec::<T>()?[0], target.to_dtype(a.dtype())?.cpu_vec::<T>()?);
                let logits = siamese_head_fwd(&av, &bv, &wv, bias_v, d);
                let (loss, grad_logit) = bce_from_logits(&logits, &tv);
                let out = Tensor::from_cpu_vec(vec![loss], &[]);
                let n = logits.len();
                Ok(out.recorded(&[a, b, weight, bias], || {
                    Arc::new(crate::autograd::rules::siamese_head::SiameseHeadBceBackward {
                        a: a.clone(),
                        b: b.clone(),
                        weight: weight.clone(),
                        bias: bias.clone(),
                        grad_logit: Tensor::from_cpu_vec(grad_logit, &[n, 1]),
                    })
                }))
            }),
            Device::Cuda(_) => {
                let target = target.to_dtype(a.dtype())?;
                let (loss, grad_logit) =
                    with_cuda("siamese_head_bce", &[Some(a), Some(b), Some(weight), Some(bias), Some(&target)], |o| match *o {
                        [Some(a), Some(b), Some(w), Some(bias), Some(t)] => cuda::siamese_head_bce(a, b, w, bias, t),
                        _ => Err(unsupported("siamese_head_bce", a)),
                    })?;
                let n = a.shape()[0];
                let out = cuda_tensor(loss, &[]);
                Ok(out.recorded(&[a, b, weight, bias], || {
                    Arc::new(crate::autograd::rules::siamese_head::SiameseHeadBceBackward {
                        a: a.clone(),
                        b: b.clone(),
                        weight: weight.clone(),
                        bias: bias.clone(),
                        grad_logit: cuda_tensor(grad_logit, &[n, 1]),
                    })
                }))
            }
        }
    }
}

//! Losses with fused forward and backward kernels: mean squared error, binary
//! cross entropy with logits, cross entropy over class logits (with label
//! smoothing), and cosine similarity.
//!
//! Each loss is a `Tensor` method whose plain form reduces by the mean (as
//! PyTorch does by default) and whose `_with` form takes a [`Reduction`] or
//! options. The backward kernels are public functions of this module, so the
//! CUDA twins can be checked against them.

use super::indexing::index_values;
use super::with_contiguous;
use super::{cuda_tensor, same_device, same_dtype, with_cuda};
use crate::autograd::no_grad;
use crate::autograd::rules::loss::{BceWithLogitsBackward, CosineSimilarityBackward, CrossEntropyBackward, MseLossBackward};
use crate::backend::cpu;
use crate::backend::cpu::loss::{ClassShape, LossGrad};
use crate::backend::cuda;
use crate::tensor::{broadcast_shapes, resolve_dim, Element, Float, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// How a loss combines its per-element (or per-sample) values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The average, a rank-0 tensor (PyTorch's default).
    #[default]
    Mean,
    /// The total, a rank-0 tensor.
    Sum,
    /// No reduction: one loss per element (or per sample for cross entropy).
    None,
}

/// Options of [`Tensor::cross_entropy_with`], as torch.nn.functional.cross_entropy's
/// keyword arguments (class weights are not supported).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// ε in `[0, 1]`: the target distribution is `(1 - ε)·onehot + ε/C`.
    pub label_smoothing: f64,
    /// How the per-sample losses are combined.
    pub reduction: Reduction,
    /// Samples with this target contribute no loss and no gradient, and are
    /// not counted by the mean. `None` (the default here, unlike PyTorch's
    /// -100) makes every target a class index that must be in range.
    pub ignore_index: Option<i64>,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { label_smoothing: 0.0, reduction: Reduction::Mean, ignore_index: None }
    }
}

/// The loss tensor from per-element values or their sum.
fn reduced<T: Element>(values: Vec<T>, reduction: Reduction, count: usize, shape: &[usize]) -> Tensor {
    match reduction {
        Reduction::None => Tensor::from_cpu_vec(values, shape),
        Reduction::Sum => Tensor::from_cpu_vec(values, &[]),
        Reduction::Mean => Tensor::from_cpu_vec(vec![T::from_f64(values[0].to_f64() / count as f64)], &[]),
    }
}

/// Sum of per-sample values as a one-element vector (for the reduced forms).
fn summed<T: Float>(values: Vec<T>, reduction: Reduction) -> Vec<T> {
    match reduction {
        Reduction::None => values,
        Reduction::Mean | Reduction::Sum => vec![cpu::reduce::sum_slice(&values)],
    }
}

/// Run `f` with the upstream gradient of a loss as seen by each element:
/// `g / count` (mean), `g` (sum), or the gradient tensor itself (none).
fn with_loss_grad<T: Float, R>(grad: &Tensor, reduction: Reduction, count: usize, f: impl FnOnce(LossGrad<'_, T>) -> R) -> Result<R> {
    match reduction {
        Reduction::Mean => Ok(f(LossGrad::Uniform(T::from_f64(grad.to_scalar_f64()? / count as f64)))),
        Reduction::Sum => Ok(f(LossGrad::Uniform(T::from_f64(grad.to_scalar_f64()?)))),
        Reduction::None => with_contiguous::<T, _>(grad, |g| f(LossGrad::PerElement(g))),
    }
}

/// Per-element GPU losses reduced as `reduction` asks (sum, or sum / `count`).
fn cuda_reduced(values: Tensor, reduction: Reduction, count: usize) -> Result<Tensor> {
    no_grad(|| match reduction {
        Reduction::None => Ok(values),
        Reduction::Sum => values.sum_all(),
        Reduction::Mean => values.sum_all()?.affine(1.0 / count as f64, 0.0),
    })
}

/// The uniform factor of a reduced loss's gradient (`g / count` or `g`), or
/// `None` for reduction "none" (the gradient is per element).
fn uniform_grad(grad: &Tensor, reduction: Reduction, count: usize) -> Result<Option<f64>> {
    match reduction {
        Reduction::Mean => Ok(Some(grad.to_scalar_f64()? / count as f64)),
        Reduction::Sum => Ok(Some(grad.to_scalar_f64()?)),
        Reduction::None => Ok(None),
    }
}

/// The kernels' form of the upstream gradient: the uniform factor, else the per-element gradient.
fn cuda_loss_grad(scale: Option<f64>, per_element: Option<cuda::Operand<'_>>) -> Result<cuda::LossGrad<'_>> {
    match (scale, per_element) {
        (Some(s), _) => Ok(cuda::LossGrad::Uniform(s)),
        (None, Some(g)) => Ok(cuda::LossGrad::PerElement(g)),
        (None, None) => Err(Error::msg("loss backward: reduction \"none\" needs the per-element gradient")),
    }
}

fn class_dims(s: ClassShape) -> cuda::ClassDims {
    cuda::ClassDims { n: s.n, classes: s.classes, inner: s.inner }
}

/// Two float inputs of one loss on one device, of one dtype and shape.
fn same_float_inputs(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    same_device(op, a, b)?;
    same_dtype(op, a, b)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    Ok(())
}

impl Tensor {
    /// Mean squared error between this prediction and `target` (same shape
    /// and dtype), averaged over every element.
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        self.mse_loss_with(target, Reduction::Mean)
    }

    /// Squared error `(self - target)²` reduced by `reduction`. Both inputs
    /// get gradients when they require them.
    pub fn mse_loss_with(&self, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
        const OP: &str = "mse_loss";
        same_float_inputs(OP, self, target)?;
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), OP, |T| {
                let sum = reduction != Reduction::None;
                let v = with_contiguous::<T, _>(self, |p| with_contiguous::<T, _>(target, |t| cpu::loss::mse_loss_fwd(p, t, sum)))??;
                reduced(v, reduction, self.numel(), self.shape())
            }),
            Device::Cuda(_) => {
                let v = with_cuda(OP, &[Some(self), Some(target)], |o| {
                    Ok(cuda_tensor(cuda::mse_loss(o[0].expect("given"), o[1].expect("given"))?, self.shape()))
                })?;
                cuda_reduced(v, reduction, self.numel())?
            }
        };
        Ok(out.recorded(&[self, target], || Arc::new(MseLossBackward { pred: self.clone(), target: target.clone(), reduction })))
    }

    /// Binary cross entropy between `sigmoid(self)` and `targets` (same shape
    /// and dtype, values in [0, 1]), averaged, as torch's BCEWithLogitsLoss:
    /// `pos_weight` (broadcast to the logits' shape, typically `[classes]`)
    /// weighs the positive term. Computed in the stable form
    /// `max(x, 0) - x·y + log(1 + e^{-|x|})`.
    pub fn bce_with_logits(&self, targets: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
        self.bce_with_logits_with(targets, pos_weight, Reduction::Mean)
    }

    /// [`Tensor::bce_with_logits`] reduced by `reduction`. Logits, targets and
    /// `pos_weight` all get gradients when they require them.
    pub fn bce_with_logits_with(&self, targets: &Tensor, pos_weight: Option<&Tensor>, reduction: Reduction) -> Result<Tensor> {
        const OP: &str = "bce_with_logits";
        same_float_inputs(OP, self, targets)?;
        if let Some(w) = pos_weight {
            check_pos_weight(OP, self, w)?;
        }
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), OP, |T| {
                let sum = reduction != Reduction::None;
                let weight = pos_weight.map(|w| broadcast_vec::<T>(w, self.shape())).transpose()?;
                let v = with_contiguous::<T, _>(self, |x| {
                    with_contiguous::<T, _>(targets, |y| cpu::loss::bce_with_logits_fwd(x, y, weight.as_deref(), sum))
                })??;
                reduced(v, reduction, self.numel(), self.shape())
            }),
            Device::Cuda(_) => {
                let weight = pos_weight.map(|w| no_grad(|| w.broadcast_to(self.shape()))).transpose()?;
                let v = with_cuda(OP, &[Some(self), Some(targets), weight.as_ref()], |o| {
                    Ok(cuda_tensor(cuda::bce_with_logits(o[0].expect("given"), o[1].expect("given"), o[2])?, self.shape()))
                })?;
                cuda_reduced(v, reduction, self.numel())?
            }
        };
        let mut inputs = vec![self, targets];
        inputs.extend(pos_weight);
        Ok(out.recorded(&inputs, || {
            Arc::new(BceWithLogitsBackward { logits: self.clone(), targets: targets.clone(), pos_weight: pos_weight.cloned(), reduction })
        }))
    }

    /// Cross entropy of class `logits` (`[N, C]`, `[N, C, d1, …]` or `[C]`)
    /// against integer class `targets` (`[N]`, `[N, d1, …]` or `[]`), averaged
    /// over the samples, with `label_smoothing` ε in `[0, 1]`, as
    /// torch.nn.functional.cross_entropy: log-softmax over the class dim, then
    /// `(1 - ε)·(-log p_target) + ε·mean_c(-log p_c)`.
    pub fn cross_entropy(&self, targets: &Tensor, label_smoothing: f64) -> Result<Tensor> {
        self.cross_entropy_with(targets, &CrossEntropyOptions { label_smoothing, ..Default::default() })
    }

    /// [`Tensor::cross_entropy`] with a reduction and an optional ignored target.
    pub fn cross_entropy_with(&self, targets: &Tensor, options: &CrossEntropyOptions) -> Result<Tensor> {
        let (loss, lse) = cross_entropy_forward(self, targets, options)?;
        let options = *options;
        Ok(loss.recorded(&[self], || {
            Arc::new(CrossEntropyBackward { logits: self.clone(), targets: targets.clone(), log_sum_exp: lse, options })
        }))
    }

    /// Cosine similarity of this tensor and `other` along `dim`, as
    /// torch.nn.functional.cosine_similarity: the inputs broadcast together,
    /// and the result is `Σ (x / max(‖x‖, eps)) · (y / max(‖y‖, eps))` with
    /// `dim` removed. Both inputs get gradients.
    pub fn cosine_similarity(&self, other: &Tensor, dim: isize, eps: f64) -> Result<Tensor> {
        const OP: &str = "cosine_similarity";
        same_device(OP, self, other)?;
        same_dtype(OP, self, other)?;
        let shape = broadcast_shapes(OP, self.shape(), other.shape())?;
        if shape.is_empty() {
            return Err(Error::bad_shape(OP, "inputs must have at least one dimension"));
        }
        let d = resolve_dim(dim, shape.len(), OP)?;
        let len = shape[d];
        let mut out_shape = shape.clone();
        out_shape.remove(d);
        let out = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), OP, |T| {
                let a = rows_along::<T>(self, &shape, d)?;
                let b = rows_along::<T>(other, &shape, d)?;
                Tensor::from_cpu_vec(cpu::loss::cosine_similarity_fwd(&a, &b, out_shape.iter().product(), len, eps), &out_shape)
            }),
            Device::Cuda(_) => {
                let (a, b) = (rows_view(self, &shape, d)?, rows_view(other, &shape, d)?);
                let rows = out_shape.iter().product();
                with_cuda(OP, &[Some(&a), Some(&b)], |o| {
                    Ok(cuda_tensor(cuda::cosine_similarity(o[0].expect("given"), o[1].expect("given"), rows, len, eps)?, &out_shape))
                })?
            }
        };
        Ok(out.recorded(&[self, other], || Arc::new(CosineSimilarityBackward { a: self.clone(), b: other.clone(), dim: d, eps })))
    }
}

/// `pos_weight` has the logits' dtype and device and broadcasts to their shape.
fn check_pos_weight(op: &'static str, logits: &Tensor, w: &Tensor) -> Result<()> {
    same_device(op, logits, w)?;
    same_dtype(op, logits, w)?;
    if broadcast_shapes(op, w.shape(), logits.shape())? != logits.shape() {
        return Err(Error::bad_shape(
            op,
            format!("pos_weight of shape {:?} does not broadcast to logits of shape {:?}", w.shape(), logits.shape()),
        ));
    }
    Ok(())
}

/// The elements of `t` broadcast to `shape`, row-major.
fn broadcast_vec<T: Element>(t: &Tensor, shape: &[usize]) -> Result<Vec<T>> {
    let layout = t.layout().broadcast_to(shape)?;
    t.with_cpu_slice::<T, _>(|s, _| cpu::copy::gather(s, &layout))
}

/// `t` broadcast to `shape` with dimension `dim` moved last, as contiguous rows.
fn rows_along<T: Element>(t: &Tensor, shape: &[usize], dim: usize) -> Result<Vec<T>> {
    let mut perm: Vec<usize> = (0..shape.len()).filter(|&i| i != dim).collect();
    perm.push(dim);
    let layout = t.layout().broadcast_to(shape)?.permute(&perm)?;
    t.with_cpu_slice::<T, _>(|s, _| cpu::copy::gather(s, &layout))
}

/// `t` broadcast to `shape` with dimension `dim` moved last, as a view (the GPU kernels pack it).
fn rows_view(t: &Tensor, shape: &[usize], dim: usize) -> Result<Tensor> {
    let mut perm: Vec<usize> = (0..shape.len()).filter(|&i| i != dim).collect();
    perm.push(dim);
    no_grad(|| t.broadcast_to(shape)?.permute(&perm))
}

/// The gradient of [`Tensor::mse_loss_with`] with respect to the prediction
/// (the target's is its negation), given the loss's gradient `grad`.
pub fn mse_loss_backward(pred: &Tensor, target: &Tensor, grad: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "mse_loss_backward";
    same_float_inputs(OP, pred, target)?;
    match pred.device() {
        Device::Cpu => dispatch_float!(pred.dtype(), OP, |T| {
            let v = with_contiguous::<T, _>(pred, |p| {
                with_contiguous::<T, _>(target, |t| {
                    with_loss_grad::<T, _>(grad, reduction, pred.numel(), |g| cpu::loss::mse_loss_bwd(p, t, g))
                })
            })???;
            Ok(Tensor::from_cpu_vec(v, pred.shape()))
        }),
        Device::Cuda(_) => {
            let scale = uniform_grad(grad, reduction, pred.numel())?;
            with_cuda(OP, &[Some(pred), Some(target), scale.is_none().then_some(grad)], |o| {
                let g = cuda_loss_grad(scale, o[2])?;
                Ok(cuda_tensor(cuda::mse_loss_backward(o[0].expect("given"), o[1].expect("given"), g)?, pred.shape()))
            })
        }
    }
}

/// Gradients of [`Tensor::bce_with_logits_with`] with respect to the logits,
/// the targets and `pos_weight` (summed back to its shape), each computed
/// only when its flag in `need` is set.
pub fn bce_with_logits_backward(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
    grad: &Tensor,
    reduction: Reduction,
    need: [bool; 3],
) -> Result<[Option<Tensor>; 3]> {
    const OP: &str = "bce_with_logits_backward";
    same_float_inputs(OP, logits, targets)?;
    if let Some(w) = pos_weight {
        check_pos_weight(OP, logits, w)?;
    }
    let shape = logits.shape();
    let (dx, dy, dw) = match logits.device() {
        Device::Cpu => dispatch_float!(logits.dtype(), OP, |T| {
            let weight = pos_weight.map(|w| broadcast_vec::<T>(w, shape)).transpose()?;
            let (dx, dy, dw) = with_contiguous::<T, _>(logits, |x| {
                with_contiguous::<T, _>(targets, |y| {
                    with_loss_grad::<T, _>(grad, reduction, logits.numel(), |g| {
                        cpu::loss::bce_with_logits_bwd(x, y, weight.as_deref(), g, need)
                    })
                })
            })???;
            let wrap = |v: Option<Vec<T>>| v.map(|v| Tensor::from_cpu_vec(v, shape));
            (wrap(dx), wrap(dy), wrap(dw))
        }),
        Device::Cuda(_) => {
            let scale = uniform_grad(grad, reduction, logits.numel())?;
            let weight = pos_weight.map(|w| no_grad(|| w.broadcast_to(shape))).transpose()?;
            let [dx, dy, dw] = with_cuda(OP, &[Some(logits), Some(targets), weight.as_ref(), scale.is_none().then_some(grad)], |o| {
                let g = cuda_loss_grad(scale, o[3])?;
                cuda::bce_with_logits_backward(o[0].expect("given"), o[1].expect("given"), o[2], g, need)
            })?;
            let wrap = |v: Option<cuda::CudaStorage>| v.map(|v| cuda_tensor(v, shape));
            (wrap(dx), wrap(dy), wrap(dw))
        }
    };
    let dw = match (dw, pos_weight) {
        (Some(dw), Some(w)) => Some(dw.sum_to_shape(w.shape())?),
        _ => None,
    };
    Ok([dx, dy, dw])
}

/// Logits and targets of a cross entropy as `[n, classes, inner]` samples,
/// after checking their shapes and dtypes.
fn class_shape(op: &'static str, logits: &Tensor, targets: &Tensor) -> Result<ClassShape> {
    same_device(op, logits, targets)?;
    if !logits.dtype().is_float() {
        return Err(Error::msg(format!("{op}: logits must be floating point, found {}", logits.dtype().as_str())));
    }
    if targets.dtype().is_float() {
        return Err(Error::msg(format!(
            "{op}: targets must be integer class indices (i64, i32 or u8), found {}; class-probability targets are not supported",
            targets.dtype().as_str()
        )));
    }
    let ls = logits.shape();
    let expected: Vec<usize> = match ls.len() {
        0 => return Err(Error::bad_shape(op, "logits must be [C], [N, C] or [N, C, d1, ...], found a scalar")),
        1 => vec![],
        _ => ls.iter().enumerate().filter(|&(i, _)| i != 1).map(|(_, &d)| d).collect(),
    };
    if targets.shape() != expected.as_slice() {
        return Err(Error::bad_shape(
            op,
            format!("targets of shape {:?} do not match logits of shape {ls:?} (expected targets of shape {expected:?})", targets.shape()),
        ));
    }
    Ok(if ls.len() == 1 {
        ClassShape { n: 1, classes: ls[0], inner: 1 }
    } else {
        ClassShape { n: ls[0], classes: ls[1], inner: ls[2..].iter().product() }
    })
}

/// Target values, each a class in `0..classes` or the ignored index, and the
/// number of samples not ignored.
fn checked_targets(op: &'static str, targets: &Tensor, classes: usize, ignore_index: Option<i64>) -> Result<(Vec<i64>, usize)> {
    let values = index_values(op, targets)?;
    let mut counted = 0;
    for (pos, &v) in values.iter().enumerate() {
        if Some(v) == ignore_index {
            continue;
        }
        if v < 0 || v as u64 >= classes as u64 {
            return Err(Error::msg(format!(
                "{op}: target class {v} at position {pos} is out of range for {classes} classes (valid: 0..{classes})"
            )));
        }
        counted += 1;
    }
    Ok((values, counted))
}

fn check_label_smoothing(op: &'static str, eps: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::msg(format!("{op}: label_smoothing must be in [0, 1], found {eps}")));
    }
    Ok(())
}

/// The unrecorded forward of [`Tensor::cross_entropy_with`]: the loss and the
/// per-sample log-sum-exp of the logits (flat, one per target), which
/// [`cross_entropy_backward`] reuses.
pub fn cross_entropy_forward(logits: &Tensor, targets: &Tensor, options: &CrossEntropyOptions) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cross_entropy";
    let shape = class_shape(OP, logits, targets)?;
    check_label_smoothing(OP, options.label_smoothing)?;
    match logits.device() {
        Device::Cpu => {
            let (t, counted) = checked_targets(OP, targets, shape.classes, options.ignore_index)?;
            dispatch_float!(logits.dtype(), OP, |T| {
                let (loss, lse) = with_contiguous::<T, _>(logits, |z| {
                    cpu::loss::cross_entropy_fwd(z, &t, shape, options.label_smoothing, options.ignore_index)
                })?;
                let samples = lse.len();
                let loss = reduced(summed(loss, options.reduction), options.reduction, counted, targets.shape());
                Ok((loss, Tensor::from_cpu_vec(lse, &[samples])))
            })
        }
        Device::Cuda(_) => {
            let (t, counted) = checked_targets(OP, &targets.to_device(Device::Cpu)?, shape.classes, options.ignore_index)?;
            let (loss, lse) = with_cuda(OP, &[Some(logits)], |o| {
                cuda::cross_entropy(o[0].expect("given"), &t, class_dims(shape), options.label_smoothing, options.ignore_index)
            })?;
            let samples = lse.len();
            let loss = cuda_reduced(cuda_tensor(loss, targets.shape()), options.reduction, counted)?;
            Ok((loss, cuda_tensor(lse, &[samples])))
        }
    }
}

/// The gradient of [`Tensor::cross_entropy_with`] with respect to the logits:
/// per sample, `w·(softmax - (1 - ε)·onehot - ε/C)` with `w` the sample's
/// share of `grad`; `log_sum_exp` is the second result of [`cross_entropy_forward`].
pub fn cross_entropy_backward(
    logits: &Tensor,
    targets: &Tensor,
    log_sum_exp: &Tensor,
    grad: &Tensor,
    options: &CrossEntropyOptions,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy_backward";
    let shape = class_shape(OP, logits, targets)?;
    check_label_smoothing(OP, options.label_smoothing)?;
    if log_sum_exp.numel() != shape.n * shape.inner {
        return Err(Error::bad_shape(
            OP,
            format!("log_sum_exp has {} elements for {} samples", log_sum_exp.numel(), shape.n * shape.inner),
        ));
    }
    match logits.device() {
        Device::Cpu => {
            let (t, counted) = checked_targets(OP, targets, shape.classes, options.ignore_index)?;
            dispatch_float!(logits.dtype(), OP, |T| {
                let g = with_contiguous::<T, _>(logits, |z| {
                    with_contiguous::<T, _>(log_sum_exp, |lse| {
                        with_loss_grad::<T, _>(grad, options.reduction, counted, |g| {
                            cpu::loss::cross_entropy_bwd(z, lse, &t, shape, options.label_smoothing, options.ignore_index, g)
                        })
                    })
                })???;
                Ok(Tensor::from_cpu_vec(g, logits.shape()))
            })
        }
        Device::Cuda(_) => {
            let (t, counted) = checked_targets(OP, &targets.to_device(Device::Cpu)?, shape.classes, options.ignore_index)?;
            let scale = uniform_grad(grad, options.reduction, counted)?;
            with_cuda(OP, &[Some(logits), Some(log_sum_exp), scale.is_none().then_some(grad)], |o| {
                let g = cuda_loss_grad(scale, o[2])?;
                let (z, lse) = (o[0].expect("given"), o[1].expect("given"));
                let dz = cuda::cross_entropy_backward(z, lse, &t, class_dims(shape), options.label_smoothing, options.ignore_index, g)?;
                Ok(cuda_tensor(dz, logits.shape()))
            })
        }
    }
}

/// Gradients of [`Tensor::cosine_similarity`] with respect to `a` and `b`
/// (each summed back to its own shape when it was broadcast), given the
/// gradient `grad` of the similarity.
pub fn cosine_similarity_backward(a: &Tensor, b: &Tensor, dim: usize, eps: f64, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cosine_similarity_backward";
    same_device(OP, a, b)?;
    same_dtype(OP, a, b)?;
    let shape = broadcast_shapes(OP, a.shape(), b.shape())?;
    if dim >= shape.len() {
        return Err(Error::bad_shape(OP, format!("dimension {dim} out of range for rank {}", shape.len())));
    }
    let mut out_shape = shape.clone();
    let len = out_shape.remove(dim);
    if grad.shape() != out_shape.as_slice() {
        return Err(Error::ShapeMismatch { op: OP, lhs: grad.shape().to_vec(), rhs: out_shape });
    }
    // The kernel works with `dim` last; `moved` is that shape and `back` undoes the move.
    let mut moved = out_shape.clone();
    moved.push(len);
    let back: Vec<usize> = (0..shape.len())
        .map(|i| {
            if i < dim {
                i
            } else if i == dim {
                shape.len() - 1
            } else {
                i - 1
            }
        })
        .collect();
    let (da, db) = match a.device() {
        Device::Cpu => dispatch_float!(a.dtype(), OP, |T| {
            let (av, bv) = (rows_along::<T>(a, &shape, dim)?, rows_along::<T>(b, &shape, dim)?);
            let (da, db) = with_contiguous::<T, _>(grad, |g| cpu::loss::cosine_similarity_bwd(&av, &bv, len, eps, g))?;
            (Tensor::from_cpu_vec(da, &moved), Tensor::from_cpu_vec(db, &moved))
        }),
        Device::Cuda(_) => {
            let (av, bv) = (rows_view(a, &shape, dim)?, rows_view(b, &shape, dim)?);
            let rows = out_shape.iter().product();
            let (da, db) = with_cuda(OP, &[Some(&av), Some(&bv), Some(grad)], |o| {
                cuda::cosine_similarity_backward(o[0].expect("given"), o[1].expect("given"), o[2].expect("given"), rows, len, eps)
            })?;
            (cuda_tensor(da, &moved), cuda_tensor(db, &moved))
        }
    };
    no_grad(|| {
        let da = da.permute(&back)?.contiguous()?.sum_to_shape(a.shape())?;
        let db = db.permute(&back)?.contiguous()?.sum_to_shape(b.shape())?;
        Ok((da, db))
    })
}

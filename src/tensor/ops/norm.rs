//! Normalisation layers with PyTorch semantics: group norm (and group norm
//! fused with SiLU), layer norm and batch norm. Statistics use the biased
//! variance and `1/sqrt(var + eps)`; each op saves its mean and reciprocal
//! standard deviation for a dedicated backward kernel.

use super::with_contiguous;
use super::{cuda_tensor, same_device, same_dtype, with_cuda};
use crate::autograd::rules::norm::{BatchNormBackward, GroupNormBackward, LayerNormBackward};
use crate::backend::cpu;
use crate::backend::cpu::norm::NcsDims;
use crate::backend::cuda;
use crate::tensor::{Element, Float, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// Gradients of a normalisation with respect to its input and its affine
/// parameters (`weight` and `bias` gradients are computed whether or not the
/// op had those parameters; the backward rule keeps the ones it needs).
pub struct NormGradients {
    /// Gradient of the input.
    pub input: Tensor,
    /// Gradient of the weight (per channel, or shaped `normalized_shape`).
    pub weight: Tensor,
    /// Gradient of the bias, shaped like the weight's.
    pub bias: Tensor,
}

/// Check that an optional affine parameter has `shape` and matches `x`'s dtype and device.
fn check_param(op: &'static str, what: &str, p: Option<&Tensor>, x: &Tensor, shape: &[usize]) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    same_device(op, x, p)?;
    same_dtype(op, x, p)?;
    if p.shape() != shape {
        return Err(Error::bad_shape(op, format!("{what} has shape {:?}, expected {shape:?}", p.shape())));
    }
    Ok(())
}

/// `[N, C, spatial]` dimensions of a tensor of rank ≥ 2.
fn ncs_dims(op: &'static str, x: &Tensor) -> Result<NcsDims> {
    if x.rank() < 2 {
        return Err(Error::bad_shape(op, format!("expected an [N, C, *] input of rank >= 2, got shape {:?}", x.shape())));
    }
    Ok(NcsDims { n: x.shape()[0], c: x.shape()[1], spatial: x.shape()[2..].iter().product() })
}

/// Run `f` on an optional tensor's contiguous elements.
fn with_opt<T: Element, R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[T]>) -> R) -> Result<R> {
    match t {
        Some(t) => with_contiguous::<T, _>(t, |s| f(Some(s))),
        None => Ok(f(None)),
    }
}

/// A CPU vector of `T` from a tensor (copied).
fn vec_of<T: Element>(t: &Tensor) -> Result<Vec<T>> {
    t.cpu_vec::<T>()
}

/// Gradients from a CPU kernel, as tensors.
fn grads_to_tensors<T: Float>(g: cpu::norm::NormGrads<T>, x_shape: &[usize], param_shape: &[usize]) -> NormGradients {
    NormGradients {
        input: Tensor::from_cpu_vec(g.dx, x_shape),
        weight: Tensor::from_cpu_vec(g.dweight, param_shape),
        bias: Tensor::from_cpu_vec(g.dbias, param_shape),
    }
}

/// Gradients from a CUDA kernel, as tensors.
fn cuda_grads(g: cuda::NormGrads, x_shape: &[usize], param_shape: &[usize]) -> NormGradients {
    NormGradients {
        input: cuda_tensor(g.dx, x_shape),
        weight: cuda_tensor(g.dweight, param_shape),
        bias: cuda_tensor(g.dbias, param_shape),
    }
}

impl Tensor {
    // ----- group norm -----------------------------------------------------

    /// Group norm of an `[N, C, *spatial]` tensor: channels split into
    /// `num_groups` groups, each (sample, group) normalised by its own mean
    /// and biased variance, then `· weight[c] + bias[c]` (both `[C]`, optional).
    pub fn group_norm(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.group_norm_impl(num_groups, weight, bias, eps, false)
    }

    /// `silu(group_norm(x))` in one pass, with its own backward: the
    /// normalisation + activation pair of every diffusers ResNet block.
    pub fn group_norm_silu(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.group_norm_impl(num_groups, weight, bias, eps, true)
    }

    fn group_norm_impl(&self, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64, silu: bool) -> Result<Tensor> {
        let op = if silu { "group_norm_silu" } else { "group_norm" };
        let dims = ncs_dims(op, self)?;
        if num_groups == 0 || dims.c % num_groups != 0 {
            return Err(Error::bad_shape(op, format!("{} channels cannot be split into {num_groups} groups", dims.c)));
        }
        check_param(op, "weight", weight, self, &[dims.c])?;
        check_param(op, "bias", bias, self, &[dims.c])?;
        let stats_shape = [dims.n, num_groups];
        let (out, mean, rstd) = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let f = with_contiguous::<T, _>(self, |x| {
                    with_opt::<T, _>(weight, |w| {
                        with_opt::<T, _>(bias, |b| cpu::norm::group_norm_fwd(x, dims, num_groups, w, b, eps, silu))
                    })
                })???;
                (
                    Tensor::from_cpu_vec(f.out, self.shape()),
                    Tensor::from_cpu_vec(f.mean, &stats_shape),
                    Tensor::from_cpu_vec(f.rstd, &stats_shape),
                )
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self), weight, bias], |o| {
                let f = cuda::group_norm(o[0].expect("given"), [dims.n, dims.c, dims.spatial], num_groups, o[1], o[2], eps, silu)?;
                Ok((cuda_tensor(f.out, self.shape()), cuda_tensor(f.mean, &stats_shape), cuda_tensor(f.rstd, &stats_shape)))
            })?,
        };
        let inputs: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        Ok(out.recorded(&inputs, || {
            Arc::new(GroupNormBackward { input: self.clone(), weight: weight.cloned(), bias: bias.cloned(), mean, rstd, num_groups, silu })
        }))
    }

    /// Gradients of group norm (with `silu`, of `group_norm_silu`) at this
    /// input, from the output gradient `grad` and the `[N, groups]` statistics
    /// the forward saved. `bias` is only read to recompute the SiLU input.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        num_groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        silu: bool,
    ) -> Result<NormGradients> {
        let op = "group_norm_backward";
        let dims = ncs_dims(op, self)?;
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        if num_groups == 0 || dims.c % num_groups != 0 || mean.numel() != dims.n * num_groups || rstd.numel() != mean.numel() {
            return Err(Error::bad_shape(
                op,
                format!("statistics {:?} do not match {num_groups} groups of {:?}", mean.shape(), self.shape()),
            ));
        }
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (m, r) = (vec_of::<T>(mean)?, vec_of::<T>(rstd)?);
                let g = with_contiguous::<T, _>(self, |x| {
                    with_contiguous::<T, _>(grad, |gs| {
                        with_opt::<T, _>(weight, |w| {
                            with_opt::<T, _>(bias, |b| cpu::norm::group_norm_bwd(x, gs, dims, num_groups, &m, &r, w, b, silu))
                        })
                    })
                })????;
                Ok(grads_to_tensors(g, self.shape(), &[dims.c]))
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self), Some(grad), Some(mean), Some(rstd), weight, bias], |o| {
                let (x, g, m, r) = (o[0].expect("given"), o[1].expect("given"), o[2].expect("given"), o[3].expect("given"));
                let g = cuda::group_norm_backward(x, g, m, r, [dims.n, dims.c, dims.spatial], num_groups, o[4], o[5], silu)?;
                Ok(cuda_grads(g, self.shape(), &[dims.c]))
            }),
        }
    }

    // ----- layer norm -----------------------------------------------------

    /// Layer norm over the trailing dims `normalized_shape`: each row of
    /// `prod(normalized_shape)` elements is normalised by its mean and biased
    /// variance, then `· weight + bias` (both shaped `normalized_shape`, optional).
    pub fn layer_norm(&self, normalized_shape: &[usize], weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let op = "layer_norm";
        let rank = self.rank();
        if normalized_shape.is_empty()
            || normalized_shape.len() > rank
            || self.shape()[rank - normalized_shape.len()..] != *normalized_shape
        {
            return Err(Error::bad_shape(
                op,
                format!("normalized_shape {normalized_shape:?} is not a suffix of the input shape {:?}", self.shape()),
            ));
        }
        check_param(op, "weight", weight, self, normalized_shape)?;
        check_param(op, "bias", bias, self, normalized_shape)?;
        let len: usize = normalized_shape.iter().product();
        let rows = self.numel() / len.max(1);
        let (out, mean, rstd) = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let f = with_contiguous::<T, _>(self, |x| {
                    with_opt::<T, _>(weight, |w| with_opt::<T, _>(bias, |b| cpu::norm::layer_norm_fwd(x, len, w, b, eps)))
                })???;
                (Tensor::from_cpu_vec(f.out, self.shape()), Tensor::from_cpu_vec(f.mean, &[rows]), Tensor::from_cpu_vec(f.rstd, &[rows]))
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self), weight, bias], |o| {
                let f = cuda::layer_norm(o[0].expect("given"), len, o[1], o[2], eps)?;
                Ok((cuda_tensor(f.out, self.shape()), cuda_tensor(f.mean, &[rows]), cuda_tensor(f.rstd, &[rows])))
            })?,
        };
        let inputs: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        Ok(out.recorded(&inputs, || {
            Arc::new(LayerNormBackward {
                input: self.clone(),
                weight: weight.cloned(),
                bias: bias.cloned(),
                mean,
                rstd,
                normalized_shape: normalized_shape.to_vec(),
            })
        }))
    }

    /// Gradients of layer norm over `normalized_shape` at this input, from the
    /// output gradient and the per-row statistics the forward saved.
    pub fn layer_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
    ) -> Result<NormGradients> {
        let op = "layer_norm_backward";
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        let len: usize = normalized_shape.iter().product();
        if len == 0 || self.numel() % len != 0 || mean.numel() != self.numel() / len || rstd.numel() != mean.numel() {
            return Err(Error::bad_shape(op, format!("statistics {:?} do not match rows of {len} in {:?}", mean.shape(), self.shape())));
        }
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (m, r) = (vec_of::<T>(mean)?, vec_of::<T>(rstd)?);
                let g = with_contiguous::<T, _>(self, |x| {
                    with_contiguous::<T, _>(grad, |gs| with_opt::<T, _>(weight, |w| cpu::norm::layer_norm_bwd(x, gs, len, &m, &r, w)))
                })???;
                Ok(grads_to_tensors(g, self.shape(), normalized_shape))
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self), Some(grad), Some(mean), Some(rstd), weight], |o| {
                let (x, g, m, r) = (o[0].expect("given"), o[1].expect("given"), o[2].expect("given"), o[3].expect("given"));
                Ok(cuda_grads(cuda::layer_norm_backward(x, g, m, r, len, o[4])?, self.shape(), normalized_shape))
            }),
        }
    }

    // ----- batch norm -----------------------------------------------------

    /// Batch norm of an `[N, C, *]` tensor, as `torch.nn.functional.batch_norm`.
    ///
    /// Training: normalise with the batch's per-channel mean and biased
    /// variance, and when running statistics are given update them in place
    /// (every view of their storage sees it):
    /// `running = (1 − momentum)·running + momentum·batch`, using the
    /// *unbiased* batch variance for `running_var`. Evaluation: normalise with
    /// the running statistics (both required). `weight`/`bias` are `[C]`, optional.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "batch_norm";
        let dims = ncs_dims(op, self)?;
        let c = dims.c;
        check_param(op, "running_mean", running_mean, self, &[c])?;
        check_param(op, "running_var", running_var, self, &[c])?;
        check_param(op, "weight", weight, self, &[c])?;
        check_param(op, "bias", bias, self, &[c])?;
        let count = dims.n * dims.spatial;
        if training && count <= 1 {
            return Err(Error::bad_shape(
                op,
                format!("expected more than 1 value per channel when training, got input shape {:?}", self.shape()),
            ));
        }
        let (out, mean, rstd) = match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (mean, rstd): (Vec<T>, Vec<T>) = if training {
                    let (bm, bv) = with_contiguous::<T, _>(self, |x| cpu::norm::batch_norm_stats(x, dims))?;
                    let _g = crate::autograd::no_grad_guard();
                    let bessel = count as f64 / (count - 1) as f64;
                    if let Some(rm) = running_mean {
                        let old = rm.to_vec_f64()?;
                        let new: Vec<T> = old.iter().zip(&bm).map(|(&r, &b)| T::from_f64((1.0 - momentum) * r + momentum * b)).collect();
                        rm.assign(&Tensor::from_cpu_vec(new, &[c]))?;
                    }
                    if let Some(rv) = running_var {
                        let old = rv.to_vec_f64()?;
                        let new: Vec<T> =
                            old.iter().zip(&bv).map(|(&r, &v)| T::from_f64((1.0 - momentum) * r + momentum * v * bessel)).collect();
                        rv.assign(&Tensor::from_cpu_vec(new, &[c]))?;
                    }
                    (bm.iter().map(|&m| T::from_f64(m)).collect(), bv.iter().map(|&v| T::from_f64(1.0 / (v + eps).sqrt())).collect())
                } else {
                    let (Some(rm), Some(rv)) = (running_mean, running_var) else {
                        return Err(Error::bad_shape(op, "evaluation mode needs running_mean and running_var (or use training = true)"));
                    };
                    let rstd = rv.to_vec_f64()?.into_iter().map(|v| T::from_f64(1.0 / (v + eps).sqrt())).collect();
                    (vec_of::<T>(rm)?, rstd)
                };
                let y = with_contiguous::<T, _>(self, |x| {
                    with_opt::<T, _>(weight, |w| with_opt::<T, _>(bias, |b| cpu::norm::batch_norm_fwd(x, dims, &mean, &rstd, w, b)))
                })???;
                (Tensor::from_cpu_vec(y, self.shape()), Tensor::from_cpu_vec(mean, &[c]), Tensor::from_cpu_vec(rstd, &[c]))
            }),
            Device::Cuda(_) => {
                let dims3 = [dims.n, c, dims.spatial];
                let stats = if training {
                    with_cuda(op, &[Some(self), running_mean, running_var], |o| {
                        cuda::batch_norm_train_stats(o[0].expect("given"), dims3, o[1], o[2], momentum, eps)
                    })?
                } else {
                    let (Some(rm), Some(rv)) = (running_mean, running_var) else {
                        return Err(Error::bad_shape(op, "evaluation mode needs running_mean and running_var (or use training = true)"));
                    };
                    with_cuda(op, &[Some(rm), Some(rv)], |o| cuda::batch_norm_eval_stats(o[0].expect("given"), o[1].expect("given"), eps))?
                };
                let cuda::BatchStats { mean, rstd, running_mean: new_mean, running_var: new_var } = stats;
                {
                    let _g = crate::autograd::no_grad_guard();
                    if let (Some(rm), Some(new)) = (running_mean, new_mean) {
                        rm.assign(&cuda_tensor(new, &[c]))?;
                    }
                    if let (Some(rv), Some(new)) = (running_var, new_var) {
                        rv.assign(&cuda_tensor(new, &[c]))?;
                    }
                }
                let y = with_cuda(op, &[Some(self), weight, bias], |o| {
                    cuda::batch_norm_forward(o[0].expect("given"), dims3, &mean, &rstd, o[1], o[2])
                })?;
                (cuda_tensor(y, self.shape()), cuda_tensor(mean, &[c]), cuda_tensor(rstd, &[c]))
            }
        };
        let inputs: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        Ok(out.recorded(&inputs, || {
            Arc::new(BatchNormBackward { input: self.clone(), weight: weight.cloned(), bias: bias.cloned(), mean, rstd, training })
        }))
    }

    /// Gradients of batch norm at this input from the output gradient and the
    /// per-channel statistics the forward used (batch statistics when
    /// `training`, through which the gradient then flows; running statistics,
    /// constants, otherwise).
    pub fn batch_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        weight: Option<&Tensor>,
        training: bool,
    ) -> Result<NormGradients> {
        let op = "batch_norm_backward";
        let dims = ncs_dims(op, self)?;
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        if mean.numel() != dims.c || rstd.numel() != dims.c {
            return Err(Error::bad_shape(op, format!("statistics {:?} do not match {} channels", mean.shape(), dims.c)));
        }
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (m, r) = (vec_of::<T>(mean)?, vec_of::<T>(rstd)?);
                let g = with_contiguous::<T, _>(self, |x| {
                    with_contiguous::<T, _>(grad, |gs| {
                        with_opt::<T, _>(weight, |w| cpu::norm::batch_norm_bwd(x, gs, dims, &m, &r, w, training))
                    })
                })???;
                Ok(grads_to_tensors(g, self.shape(), &[dims.c]))
            }),
            Device::Cuda(_) => with_cuda(op, &[Some(self), Some(grad), Some(mean), Some(rstd), weight], |o| {
                let (x, g, m, r) = (o[0].expect("given"), o[1].expect("given"), o[2].expect("given"), o[3].expect("given"));
                let g = cuda::batch_norm_backward(x, g, [dims.n, dims.c, dims.spatial], m, r, o[4], training)?;
                Ok(cuda_grads(g, self.shape(), &[dims.c]))
            }),
        }
    }
}

impl Tensor {
    /// `relu?(cat(parts, 1)·scale[c] + shift[c])` for `[N, C_i, …]` parts
    /// and `[ΣC_i]` scale and shift: an eval-mode BatchNorm (see
    /// `BatchNorm2d::eval_scale_shift`) and ReLU over a channel-wise
    /// concatenation. On the CPU with nothing needing gradients it is one
    /// pass that reads each part in place; otherwise the separate
    /// differentiable ops compute the same function.
    pub fn cat_channel_affine(parts: &[Tensor], scale: &Tensor, shift: &Tensor, relu: bool) -> Result<Tensor> {
        let op = "cat_channel_affine";
        let Some(first) = parts.first() else {
            return Err(Error::bad_shape(op, "needs at least one tensor"));
        };
        let rank = first.rank();
        if rank < 2 {
            return Err(Error::bad_shape(op, format!("parts must be [N, C, …], got {:?}", first.shape())));
        }
        for p in &parts[1..] {
            same_device(op, first, p)?;
            same_dtype(op, first, p)?;
            let same_outside_channels = p.rank() == rank && p.shape()[0] == first.shape()[0] && p.shape()[2..] == first.shape()[2..];
            if !same_outside_channels {
                return Err(Error::bad_shape(
                    op,
                    format!("parts must differ only in channels, got {:?} and {:?}", first.shape(), p.shape()),
                ));
            }
        }
        let channels: usize = parts.iter().map(|p| p.shape()[1]).sum();
        for (name, t) in [("scale", scale), ("shift", shift)] {
            same_device(op, first, t)?;
            same_dtype(op, first, t)?;
            if t.shape() != [channels] {
                return Err(Error::bad_shape(
                    op,
                    format!("{name} {:?} must be [{channels}] for parts with {channels} channels in all", t.shape()),
                ));
            }
        }
        let operands: Vec<&Tensor> = parts.iter().chain([scale, shift]).collect();
        let needs_grad = Tensor::would_record(&operands);
        if needs_grad || first.device() != Device::Cpu {
            let mut per_channel = vec![1; rank];
            per_channel[1] = channels;
            let x = if parts.len() == 1 { first.clone() } else { Tensor::cat(parts, 1)? };
            let y = x.mul(&scale.reshape(&per_channel)?)?.add(&shift.reshape(&per_channel)?)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let (n, spatial) = (first.shape()[0], first.shape()[2..].iter().product::<usize>());
        let mut shape = first.shape().to_vec();
        shape[1] = channels;
        dispatch_float!(first.dtype(), op, |T| {
            let (scale, shift) = (scale.cpu_vec::<T>()?, shift.cpu_vec::<T>()?);
            // Contiguous parts (fresh layer outputs, the usual case) are read where they
            // lie, under their storage locks; any other is gathered once first.
            let gathered: Vec<Option<Vec<T>>> =
                parts.iter().map(|p| if p.is_contiguous() { Ok(None) } else { p.cpu_vec::<T>().map(Some) }).collect::<Result<_>>()?;
            let guards: Vec<_> = parts.iter().map(|p| p.storage()).collect();
            let mut views: Vec<(&[T], usize)> = Vec::with_capacity(parts.len());
            for ((part, guard), gathered) in parts.iter().zip(&guards).zip(&gathered) {
                let values = match gathered {
                    Some(v) => v.as_slice(),
                    None => {
                        let cpu = guard.cpu().ok_or_else(|| Error::msg(format!("{op}: a part is not on the CPU")))?;
                        let all = cpu.as_slice::<T>().ok_or(Error::DTypeMismatch { op, lhs: part.dtype(), rhs: T::DTYPE })?;
                        let range =
                            part.layout().contiguous_range().ok_or_else(|| Error::msg(format!("{op}: contiguous part without a range")))?;
                        &all[range]
                    }
                };
                views.push((values, part.shape()[1]));
            }
            Ok(Tensor::from_cpu_vec(cpu::norm::channel_affine(&views, n, spatial, &scale, &shift, relu), &shape))
        })
    }
}

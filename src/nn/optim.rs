//! Optimizers: AdamW and SGD with the arithmetic of `torch.optim`, updating
//! parameters in place.
//!
//! On the CPU an update is one pass over the parameter, its gradient and its
//! state slices (split across threads for large tensors), in the order torch's
//! single-tensor implementation applies its in-place ops, so results agree
//! with PyTorch to rounding. On a GPU every parameter group is updated by one
//! multi-tensor kernel launch (kernels/optim.cu) with the same arithmetic;
//! elsewhere the update is composed of tensor ops.
//!
//! State is exported and imported as named tensors (`exp_avg.<param>`,
//! `exp_avg_sq.<param>`, `step.<param>`, `momentum_buffer.<param>`), so a
//! checkpoint stores it as `optim.exp_avg.<param>` with
//! `Checkpoint::insert_group("optim.", …)`; restoring it resumes training
//! bit for bit.

use crate::autograd::no_grad;
use crate::backend::cpu::PARALLEL_MIN;
use crate::backend::cuda;
use crate::tensor::{Float, Storage};
use crate::{dispatch_float, DType, Device, Error, Gradients, Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What a training loop needs from an optimizer.
pub trait Optimizer {
    /// Update every parameter that has a gradient in `grads` (the others are left alone, as torch does).
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    /// The learning rate the next step uses.
    fn learning_rate(&self) -> f64;
    /// Set the learning rate (a schedule calls this before each step).
    fn set_learning_rate(&mut self, lr: f64);
    /// The optimizer's state as named tensors (`<state>.<param name>`), for a checkpoint.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restore the state from a checkpoint: `get(name)` returns the tensor
    /// saved under `name`, or `None` if there is none.
    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Result<Option<Tensor>>) -> Result<()>;
}

/// Elements per work item when an update is split across threads.
const CHUNK: usize = PARALLEL_MIN / 2;

/// Check a gradient against its parameter and make it a contiguous tensor that shares no storage with it.
fn prepared_grad(name: &str, param: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if grad.shape() != param.shape() {
        return Err(Error::msg(format!("optimizer: gradient of `{name}` has shape {:?}, the parameter {:?}", grad.shape(), param.shape())));
    }
    if grad.dtype() != param.dtype() {
        return Err(Error::msg(format!("optimizer: gradient of `{name}` is {:?}, the parameter {:?}", grad.dtype(), param.dtype())));
    }
    let g = grad.contiguous()?;
    // The update holds the parameter's write lock while reading the gradient: they must not share a lock.
    if g.same_storage(param) {
        return no_grad(|| g.affine(1.0, 0.0));
    }
    Ok(g)
}

/// Run `f` on mutable slices of the contiguous CPU tensors `targets` and the
/// read-only slice of `input`, all of `T`. `None` when a target is not a
/// contiguous CPU tensor of `T` (the caller then falls back to tensor ops).
fn with_cpu_slices<T: Float, R>(targets: &[&Tensor], input: &Tensor, f: impl FnOnce(&mut [&mut [T]], &[T]) -> R) -> Option<R> {
    if targets.iter().chain([&input]).any(|t| t.device() != Device::Cpu || t.dtype() != T::DTYPE || !t.is_contiguous()) {
        return None;
    }
    let mut guards: Vec<_> = targets.iter().map(|t| t.storage_mut()).collect();
    let read = input.storage();
    let input_slice = &read.cpu()?.as_slice::<T>()?[input.layout().contiguous_range()?];
    let mut slices: Vec<&mut [T]> = Vec::with_capacity(targets.len());
    for (guard, t) in guards.iter_mut().zip(targets) {
        let Storage::Cpu(cs) = &mut **guard else { return None };
        slices.push(&mut cs.as_mut_slice::<T>()?[t.layout().contiguous_range()?]);
    }
    Some(f(&mut slices, input_slice))
}

/// A named parameter's storage must not be shared by two of the tensors an update writes.
fn check_distinct(name: &str, tensors: &[&Tensor]) -> Result<()> {
    for (i, a) in tensors.iter().enumerate() {
        if tensors[i + 1..].iter().any(|b| a.same_storage(b)) {
            return Err(Error::msg(format!("optimizer: the state of `{name}` shares storage with its parameter")));
        }
    }
    Ok(())
}

fn scalar_state(step: u64) -> Tensor {
    Tensor::scalar(step as i64)
}

fn read_step(name: &str, t: &Tensor) -> Result<u64> {
    let v = t.to_scalar_f64().map_err(|e| Error::msg(format!("optimizer state `{name}`: {e}")))?;
    if v < 0.0 || v.fract() != 0.0 {
        return Err(Error::msg(format!("optimizer state `{name}`: a step count must be a non-negative integer, found {v}")));
    }
    Ok(v as u64)
}

/// Copy a saved state tensor into the optimizer's own, checking its shape.
fn load_into(name: &str, target: &Tensor, src: &Tensor) -> Result<()> {
    crate::nn::store::copy_into(name, target, src).map_err(|e| Error::msg(format!("optimizer state {e}")))
}

/// A fresh zero tensor like `p`, detached from the tape.
fn zeros_like(p: &Tensor) -> Result<Tensor> {
    Tensor::zeros(p.shape(), p.dtype(), p.device())
}

// ----- AdamW ------------------------------------------------------------

/// Hyper-parameters of [`AdamW`], named and defaulted as in `torch.optim.AdamW`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment (torch's `betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (torch's `betas[1]`).
    pub beta2: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Decoupled weight decay: parameters are multiplied by `1 − lr·weight_decay` each step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

struct AdamState {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

/// Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`
/// with amsgrad off: each parameter is first multiplied by `1 − lr·wd`, then
/// moved by the bias-corrected Adam step.
pub struct AdamW {
    config: AdamWConfig,
    states: Vec<AdamState>,
}

/// The per-step scalars of one AdamW update, rounded to the compute type as torch does.
#[derive(Clone, Copy)]
struct AdamScalars<T> {
    decay: T,
    lerp_weight: T,
    beta2: T,
    one_minus_beta2: T,
    neg_step_size: T,
    bias_correction2_sqrt: T,
    eps: T,
}

impl<T: Float> AdamScalars<T> {
    fn new(c: &AdamWConfig, step: u64) -> Self {
        let t = T::from_f64;
        let bias_correction1 = 1.0 - c.beta1.powf(step as f64);
        let bias_correction2 = 1.0 - c.beta2.powf(step as f64);
        AdamScalars {
            decay: t(1.0 - c.lr * c.weight_decay),
            lerp_weight: t(1.0 - c.beta1),
            beta2: t(c.beta2),
            one_minus_beta2: t(1.0 - c.beta2),
            neg_step_size: t(-(c.lr / bias_correction1)),
            bias_correction2_sqrt: t(bias_correction2.sqrt()),
            eps: t(c.eps),
        }
    }

    /// One element: torch's `mul_`, `lerp_`, `mul_().addcmul_()`, `sqrt()/…add_()`, `addcdiv_()` in order,
    /// fused where torch's CPU kernels fuse (lerp and addcmul compile to FMAs there).
    /// `SMALL_WEIGHT` picks torch's lerp form (the one exact at the end the weight is near), hoisted out of the loop.
    #[inline(always)]
    fn update<const SMALL_WEIGHT: bool>(&self, p: &mut T, m: &mut T, v: &mut T, g: T) {
        *p *= self.decay;
        let w = self.lerp_weight;
        *m = if SMALL_WEIGHT { w.mul_add(g - *m, *m) } else { (*m - g).mul_add(T::one() - w, g) };
        *v = (self.one_minus_beta2 * g).mul_add(g, *v * self.beta2);
        let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
        *p += self.neg_step_size * *m / denom;
    }
}

/// One chunk of the AdamW update.
#[inline(always)]
fn adamw_chunk<T: Float>(s: &AdamScalars<T>, p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) {
    let items = p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
    if s.lerp_weight.abs() < T::from_f64(0.5) {
        items.for_each(|(((p, m), v), &g)| s.update::<true>(p, m, v, g));
    } else {
        items.for_each(|(((p, m), v), &g)| s.update::<false>(p, m, v, g));
    }
}

/// [`adamw_chunk`] compiled for AVX2 and FMA, where `mul_add` is one instruction.
///
/// # Safety
/// The CPU must support AVX2 and FMA (see [`has_fma`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adamw_chunk_fma<T: Float>(s: &AdamScalars<T>, p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) {
    adamw_chunk(s, p, m, v, g)
}

/// Whether the FMA builds of the update loops may run: without hardware FMA
/// `mul_add` is a libm call per element, several times slower.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn adamw_cpu<T: Float>(s: AdamScalars<T>, p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) {
    let fma = has_fma();
    let run = |p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]| {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: `fma` says the CPU has AVX2 and FMA.
            unsafe { adamw_chunk_fma(&s, p, m, v, g) };
            return;
        }
        let _ = fma;
        adamw_chunk(&s, p, m, v, g);
    };
    if p.len() >= PARALLEL_MIN {
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| run(p, m, v, g));
    } else {
        run(p, m, v, g);
    }
}

/// The same update composed of tensor ops (any device).
fn adamw_ops(c: &AdamWConfig, step: u64, p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> Result<()> {
    no_grad(|| {
        let bias_correction1 = 1.0 - c.beta1.powf(step as f64);
        let bias_correction2 = 1.0 - c.beta2.powf(step as f64);
        let decayed = p.affine(1.0 - c.lr * c.weight_decay, 0.0)?;
        let m_new = m.add(&g.sub(m)?.affine(1.0 - c.beta1, 0.0)?)?;
        let v_new = v.affine(c.beta2, 0.0)?.add(&g.square()?.affine(1.0 - c.beta2, 0.0)?)?;
        let denom = v_new.sqrt()?.affine(1.0 / bias_correction2.sqrt(), c.eps)?;
        let p_new = decayed.sub(&m_new.div(&denom)?.affine(c.lr / bias_correction1, 0.0)?)?;
        m.assign(&m_new)?;
        v.assign(&v_new)?;
        p.assign(&p_new)
    })
}

impl AdamW {
    /// An optimizer over named parameters (e.g. [`crate::nn::ParamStore::trainable_parameters`]),
    /// with zero moments.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<AdamW> {
        if !(0.0..1.0).contains(&config.beta1) || !(0.0..1.0).contains(&config.beta2) {
            return Err(Error::msg(format!("AdamW: betas must lie in [0, 1), got ({}, {})", config.beta1, config.beta2)));
        }
        if config.lr < 0.0 || config.eps < 0.0 || config.weight_decay < 0.0 {
            return Err(Error::msg(format!("AdamW: lr, eps and weight_decay must be non-negative, got {config:?}")));
        }
        let states = params
            .into_iter()
            .map(|(name, param)| {
                let (exp_avg, exp_avg_sq) = (zeros_like(&param)?, zeros_like(&param)?);
                Ok(AdamState { name, param, exp_avg, exp_avg_sq, step: 0 })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { config, states })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken by the parameter `name` (0 if unknown or never updated).
    pub fn step_count(&self, name: &str) -> u64 {
        self.states.iter().find(|s| s.name == name).map_or(0, |s| s.step)
    }

    fn update_one(&self, s: &AdamState, g: &Tensor) -> Result<()> {
        let (p, m, v) = (&s.param, &s.exp_avg, &s.exp_avg_sq);
        check_distinct(&s.name, &[p, m, v])?;
        let done = match p.dtype() {
            DType::F32 | DType::F64 => dispatch_float!(p.dtype(), "adamw", |T| {
                let scalars = AdamScalars::<T>::new(&self.config, s.step);
                with_cpu_slices::<T, _>(&[p, m, v], g, |t, g| {
                    let [p, m, v] = t else { unreachable!("three targets") };
                    adamw_cpu(scalars, p, m, v, g)
                })
                .is_some()
            }),
            _ => false,
        };
        if done {
            Ok(())
        } else {
            adamw_ops(&self.config, s.step, p, m, v, g)
        }
    }
}

/// Parameters updated by one fused launch: same device, dtype and step count.
type FusedGroup<'a> = ((Device, DType, u64), Vec<&'a (usize, Tensor)>);

impl AdamW {
    /// The AdamW step of GPU parameters as multi-tensor launches, one per
    /// (device, dtype, step count); a group whose tensors share storage goes
    /// through the per-tensor path instead.
    fn update_fused_gpu(&self, items: &[(usize, Tensor)]) -> Result<()> {
        let mut groups: Vec<FusedGroup<'_>> = Vec::new();
        for item in items {
            let s = &self.states[item.0];
            let key = (s.param.device(), s.param.dtype(), s.step);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(item),
                None => groups.push((key, vec![item])),
            }
        }
        for ((_, _, step), members) in groups {
            let tensors: Vec<[&Tensor; 4]> = members
                .iter()
                .map(|(i, g)| {
                    let s = &self.states[*i];
                    [&s.param, &s.exp_avg, &s.exp_avg_sq, g]
                })
                .collect();
            let flat: Vec<&Tensor> = tensors.iter().flat_map(|t| t.iter().copied()).collect();
            if flat.iter().enumerate().any(|(k, a)| flat[k + 1..].iter().any(|b| a.same_storage(b))) {
                for (i, g) in members {
                    self.update_one(&self.states[*i], g)?;
                }
                continue;
            }
            fused_gpu_update(&tensors, 3, |spans| cuda::optim::adamw(spans, adam_scalars_f64(&self.config, step)))?;
        }
        Ok(())
    }
}

/// The AdamW scalars of `step` in f64 (the GPU kernel rounds them to its compute type, as [`AdamScalars`] does).
fn adam_scalars_f64(c: &AdamWConfig, step: u64) -> cuda::optim::AdamScalars {
    let bias_correction1 = 1.0 - c.beta1.powf(step as f64);
    let bias_correction2 = 1.0 - c.beta2.powf(step as f64);
    cuda::optim::AdamScalars {
        decay: 1.0 - c.lr * c.weight_decay,
        lerp_weight: 1.0 - c.beta1,
        beta2: c.beta2,
        one_minus_beta2: 1.0 - c.beta2,
        neg_step_size: -(c.lr / bias_correction1),
        bias_correction2_sqrt: bias_correction2.sqrt(),
        eps: c.eps,
    }
}

/// Whether these tensors (a parameter's update operands) can go to a fused
/// GPU kernel: all on one GPU, of one float dtype, contiguous.
pub(crate) fn fusable_on_gpu(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else { return false };
    matches!(first.device(), Device::Cuda(_))
        && matches!(first.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16)
        && tensors.iter().all(|t| t.device() == first.device() && t.dtype() == first.dtype() && t.is_contiguous())
}

/// Run a multi-tensor GPU kernel over `tensors` (each row: the operands of one
/// parameter, all [`fusable_on_gpu`]). The first `written` operands of each
/// row are updated in place and are locked for writing, so they must share no
/// storage with any other operand (the callers check); the rest are read.
pub(crate) fn fused_gpu_update<const N: usize>(
    tensors: &[[&Tensor; N]],
    written: usize,
    run: impl FnOnce(&[[cuda::optim::Span<'_>; N]]) -> Result<()>,
) -> Result<()> {
    enum Guard<'a> {
        Write(std::sync::RwLockWriteGuard<'a, Storage>),
        Read(std::sync::RwLockReadGuard<'a, Storage>),
    }
    let guards: Vec<Vec<Guard<'_>>> = tensors
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, t)| if j < written { Guard::Write(t.storage_mut()) } else { Guard::Read(t.storage()) })
                .collect()
        })
        .collect();
    let mut spans = Vec::with_capacity(tensors.len());
    for (row, row_guards) in tensors.iter().zip(&guards) {
        let mut entry = Vec::with_capacity(N);
        for (t, g) in row.iter().zip(row_guards) {
            let st: &Storage = match g {
                Guard::Write(w) => w,
                Guard::Read(r) => r,
            };
            let Storage::Cuda(s) = st else {
                return Err(Error::msg("optimizer: a fused GPU update was given a CPU tensor"));
            };
            entry.push(cuda::optim::Span::new(s, t.layout().offset(), t.numel()));
        }
        spans.push(<[cuda::optim::Span<'_>; N]>::try_from(entry).map_err(|_| Error::msg("optimizer: internal: operand count"))?);
    }
    run(&spans)
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        crate::autograd::on_workers(|| {
            let mut on_gpu = Vec::new();
            for i in 0..self.states.len() {
                let Some(grad) = grads.get(&self.states[i].param) else { continue };
                let g = prepared_grad(&self.states[i].name, &self.states[i].param, grad)?;
                self.states[i].step += 1;
                if fusable_on_gpu(&[&self.states[i].param, &self.states[i].exp_avg, &self.states[i].exp_avg_sq, &g]) {
                    on_gpu.push((i, g));
                    continue;
                }
                self.update_one(&self.states[i], &g)?;
            }
            self.update_fused_gpu(&on_gpu)
        })
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.states.len());
        for s in &self.states {
            out.push((format!("exp_avg.{}", s.name), s.exp_avg.clone()));
            out.push((format!("exp_avg_sq.{}", s.name), s.exp_avg_sq.clone()));
            out.push((format!("step.{}", s.name), scalar_state(s.step)));
        }
        Ok(out)
    }

    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Result<Option<Tensor>>) -> Result<()> {
        for s in &mut self.states {
            let key = |what: &str| format!("{what}.{}", s.name);
            let fetch = |k: &str| get(k)?.ok_or_else(|| Error::msg(format!("optimizer state `{k}` is missing from the checkpoint")));
            let step = read_step(&key("step"), &fetch(&key("step"))?)?;
            load_into(&key("exp_avg"), &s.exp_avg, &fetch(&key("exp_avg"))?)?;
            load_into(&key("exp_avg_sq"), &s.exp_avg_sq, &fetch(&key("exp_avg_sq"))?)?;
            s.step = step;
        }
        Ok(())
    }
}

// ----- SGD --------------------------------------------------------------

/// Hyper-parameters of [`Sgd`], named and defaulted as in `torch.optim.SGD`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = plain SGD).
    pub momentum: f64,
    /// Dampening of the gradient's share of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient (`g + weight_decay · p`).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and no dampening).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

struct SgdState {
    name: String,
    param: Tensor,
    /// Created from the first gradient, as torch does.
    momentum_buffer: Option<Tensor>,
}

/// Stochastic gradient descent with optional momentum (heavy-ball or
/// Nesterov), dampening and L2 weight decay, as `torch.optim.SGD`.
pub struct Sgd {
    config: SgdConfig,
    states: Vec<SgdState>,
}

/// The scalars of one SGD update in the compute type.
#[derive(Clone, Copy)]
struct SgdScalars<T> {
    weight_decay: T,
    momentum: T,
    one_minus_dampening: T,
    neg_lr: T,
    nesterov: bool,
}

impl<T: Float> SgdScalars<T> {
    fn new(c: &SgdConfig) -> Self {
        let t = T::from_f64;
        SgdScalars {
            weight_decay: t(c.weight_decay),
            momentum: t(c.momentum),
            one_minus_dampening: t(1.0 - c.dampening),
            neg_lr: t(-c.lr),
            nesterov: c.nesterov,
        }
    }

    /// One element with a momentum buffer; `first` when the buffer is being created.
    /// Each `add(x, alpha)` of torch is a fused multiply-add in its CPU kernel, and here.
    #[inline(always)]
    fn update_momentum(&self, p: &mut T, buf: &mut T, g: T, first: bool) {
        let d = if self.weight_decay != T::zero() { self.weight_decay.mul_add(*p, g) } else { g };
        *buf = if first { d } else { self.one_minus_dampening.mul_add(d, *buf * self.momentum) };
        let d = if self.nesterov { self.momentum.mul_add(*buf, d) } else { *buf };
        *p = self.neg_lr.mul_add(d, *p);
    }

    /// One element without momentum.
    #[inline(always)]
    fn update_plain(&self, p: &mut T, g: T) {
        let d = if self.weight_decay != T::zero() { self.weight_decay.mul_add(*p, g) } else { g };
        *p = self.neg_lr.mul_add(d, *p);
    }
}

/// One chunk of the SGD update; `buf` is the momentum buffer, if any.
#[inline(always)]
fn sgd_chunk<T: Float>(s: &SgdScalars<T>, p: &mut [T], buf: Option<&mut [T]>, g: &[T], first: bool) {
    match buf {
        Some(buf) => {
            for ((p, b), &g) in p.iter_mut().zip(buf.iter_mut()).zip(g) {
                s.update_momentum(p, b, g, first);
            }
        }
        None => p.iter_mut().zip(g).for_each(|(p, &g)| s.update_plain(p, g)),
    }
}

/// [`sgd_chunk`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA (see [`has_fma`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sgd_chunk_fma<T: Float>(s: &SgdScalars<T>, p: &mut [T], buf: Option<&mut [T]>, g: &[T], first: bool) {
    sgd_chunk(s, p, buf, g, first)
}

fn sgd_cpu<T: Float>(s: SgdScalars<T>, p: &mut [T], buf: Option<&mut [T]>, g: &[T], first: bool) {
    let fma = has_fma();
    let run = |p: &mut [T], b: Option<&mut [T]>, g: &[T]| {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: `fma` says the CPU has AVX2 and FMA.
            unsafe { sgd_chunk_fma(&s, p, b, g, first) };
            return;
        }
        let _ = fma;
        sgd_chunk(&s, p, b, g, first);
    };
    if p.len() < PARALLEL_MIN {
        return run(p, buf, g);
    }
    match buf {
        Some(buf) => {
            p.par_chunks_mut(CHUNK).zip(buf.par_chunks_mut(CHUNK)).zip(g.par_chunks(CHUNK)).for_each(|((p, b), g)| run(p, Some(b), g))
        }
        None => p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(p, g)| run(p, None, g)),
    }
}

/// The same update composed of tensor ops (any device).
fn sgd_ops(c: &SgdConfig, p: &Tensor, buf: Option<&Tensor>, g: &Tensor, first: bool) -> Result<()> {
    no_grad(|| {
        let d = if c.weight_decay != 0.0 { g.add(&p.affine(c.weight_decay, 0.0)?)? } else { g.clone() };
        let d = match buf {
            Some(buf) => {
                let b = if first { d.clone() } else { buf.affine(c.momentum, 0.0)?.add(&d.affine(1.0 - c.dampening, 0.0)?)? };
                buf.assign(&b)?;
                if c.nesterov {
                    d.add(&b.affine(c.momentum, 0.0)?)?
                } else {
                    b
                }
            }
            None => d,
        };
        p.assign(&p.sub(&d.affine(c.lr, 0.0)?)?)
    })
}

impl Sgd {
    /// An optimizer over named parameters.
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Result<Sgd> {
        if config.lr < 0.0 || config.momentum < 0.0 || config.weight_decay < 0.0 {
            return Err(Error::msg(format!("SGD: lr, momentum and weight_decay must be non-negative, got {config:?}")));
        }
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::msg("SGD: Nesterov momentum requires a momentum and zero dampening (as in torch)"));
        }
        let states = params.into_iter().map(|(name, param)| SgdState { name, param, momentum_buffer: None }).collect();
        Ok(Sgd { config, states })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    fn update_one(&mut self, i: usize, g: &Tensor) -> Result<()> {
        let c = self.config;
        let s = &mut self.states[i];
        let first = c.momentum != 0.0 && s.momentum_buffer.is_none();
        if first {
            s.momentum_buffer = Some(zeros_like(&s.param)?);
        }
        let p = &s.param;
        let buf = s.momentum_buffer.as_ref();
        if let Some(b) = buf {
            check_distinct(&s.name, &[p, b])?;
        }
        let done = match p.dtype() {
            DType::F32 | DType::F64 => dispatch_float!(p.dtype(), "sgd", |T| {
                let scalars = SgdScalars::<T>::new(&c);
                let targets: Vec<&Tensor> = std::iter::once(p).chain(buf).collect();
                with_cpu_slices::<T, _>(&targets, g, |t, g| match t {
                    [p, b] => sgd_cpu(scalars, p, Some(b), g, first),
                    [p] => sgd_cpu(scalars, p, None, g, first),
                    _ => unreachable!("one or two targets"),
                })
                .is_some()
            }),
            _ => false,
        };
        if done {
            Ok(())
        } else {
            sgd_ops(&c, p, buf, g, first)
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        crate::autograd::on_workers(|| {
            for i in 0..self.states.len() {
                let Some(grad) = grads.get(&self.states[i].param) else { continue };
                let g = prepared_grad(&self.states[i].name, &self.states[i].param, grad)?;
                self.update_one(i, &g)?;
            }
            Ok(())
        })
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.states.iter().filter_map(|s| Some((format!("momentum_buffer.{}", s.name), s.momentum_buffer.clone()?))).collect())
    }

    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Result<Option<Tensor>>) -> Result<()> {
        for s in &mut self.states {
            let key = format!("momentum_buffer.{}", s.name);
            s.momentum_buffer = match get(&key)? {
                Some(src) => {
                    let buf = zeros_like(&s.param)?;
                    load_into(&key, &buf, &src)?;
                    Some(buf)
                }
                None => None,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, rand_f32};

    /// The tensor-op fallback (used off the CPU) must agree with the fused CPU loop.
    #[test]
    fn composed_updates_match_the_cpu_loops() {
        let config = AdamWConfig { lr: 1e-2, weight_decay: 0.1, ..AdamWConfig::default() };
        let (p_fast, p_ops) = (rand_f32(&[5, 7], 1), rand_f32(&[5, 7], 1).affine(1.0, 0.0).unwrap());
        let (m_fast, v_fast) = (zeros_like(&p_fast).unwrap(), zeros_like(&p_fast).unwrap());
        let (m_ops, v_ops) = (zeros_like(&p_fast).unwrap(), zeros_like(&p_fast).unwrap());
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, nesterov: true, ..SgdConfig::default() };
        let (q_fast, q_ops) = (rand_f32(&[40], 3), rand_f32(&[40], 3).affine(1.0, 0.0).unwrap());
        let (b_fast, b_ops) = (zeros_like(&q_fast).unwrap(), zeros_like(&q_fast).unwrap());
        for step in 1..=4u64 {
            let g = rand_f32(&[5, 7], 10 + step);
            let s = AdamScalars::<f32>::new(&config, step);
            with_cpu_slices::<f32, _>(&[&p_fast, &m_fast, &v_fast], &g, |t, g| {
                let [p, m, v] = t else { unreachable!() };
                adamw_cpu(s, p, m, v, g)
            })
            .unwrap();
            adamw_ops(&config, step, &p_ops, &m_ops, &v_ops, &g).unwrap();

            let g = rand_f32(&[40], 20 + step);
            with_cpu_slices::<f32, _>(&[&q_fast, &b_fast], &g, |t, g| {
                let [p, b] = t else { unreachable!() };
                sgd_cpu(SgdScalars::new(&sgd), p, Some(b), g, step == 1)
            })
            .unwrap();
            sgd_ops(&sgd, &q_ops, Some(&b_ops), &g, step == 1).unwrap();
        }
        assert_close(&p_ops, &p_fast, 1e-6, 1e-5);
        assert_close(&v_ops, &v_fast, 1e-9, 1e-5);
        assert_close(&q_ops, &q_fast, 1e-6, 1e-5);
        assert_close(&b_ops, &b_fast, 1e-6, 1e-5);
    }
}

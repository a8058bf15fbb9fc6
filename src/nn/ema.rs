//! Exponential moving average of parameters, as diffusers' `EMAModel`: a
//! shadow copy of each parameter that follows it with a decay that warms up.

use crate::autograd::no_grad;
use crate::backend::cpu::PARALLEL_MIN;
use crate::tensor::{Element, Float, Storage};
use crate::{dispatch_float, DType, Device, Error, Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the decay grows over the first updates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmaWarmup {
    /// The configured decay from the first update on.
    Off,
    /// `(1 + t) / (10 + t)`: diffusers' default (`use_ema_warmup=False`).
    Ratio,
    /// `1 − (1 + t/inv_gamma)^−power`: diffusers' `use_ema_warmup=True`
    /// (power 2/3 suits long runs, 3/4 short ones).
    Power {
        /// Scale of the step count.
        inv_gamma: f64,
        /// Exponent of the warm-up.
        power: f64,
    },
}

/// Settings of an [`Ema`], named as diffusers' `EMAModel` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmaConfig {
    /// The largest decay used.
    pub decay: f64,
    /// The smallest decay used once updates start.
    pub min_decay: f64,
    /// Optimizer steps before the average starts following (it copies until then).
    pub update_after_step: u64,
    /// How the decay grows over the first updates.
    pub warmup: EmaWarmup,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig { decay: 0.9999, min_decay: 0.0, update_after_step: 0, warmup: EmaWarmup::Ratio }
    }
}

impl EmaConfig {
    /// The decay used at optimization step `optimization_step` (counted from 1
    /// at the first update): 0 (a plain copy) until `update_after_step` has passed.
    pub fn decay_at(&self, optimization_step: u64) -> f64 {
        let t = optimization_step.saturating_sub(self.update_after_step).saturating_sub(1);
        if t == 0 {
            return 0.0;
        }
        let t = t as f64;
        let warm = match self.warmup {
            EmaWarmup::Off => self.decay,
            EmaWarmup::Ratio => (1.0 + t) / (10.0 + t),
            EmaWarmup::Power { inv_gamma, power } => 1.0 - (1.0 + t / inv_gamma).powf(-power),
        };
        warm.min(self.decay).max(self.min_decay)
    }
}

struct Shadow {
    name: String,
    param: Tensor,
    average: Tensor,
}

/// The moving average of a set of named parameters.
pub struct Ema {
    config: EmaConfig,
    optimization_step: u64,
    shadows: Vec<Shadow>,
}

/// `average ← average − (1 − decay)(average − param)` on CPU slices.
fn ema_cpu<T: Float>(one_minus_decay: T, average: &mut [T], param: &[T]) {
    let run = |a: &mut [T], p: &[T]| a.iter_mut().zip(p).for_each(|(a, &p)| *a -= one_minus_decay * (*a - p));
    if average.len() >= PARALLEL_MIN {
        average.par_chunks_mut(PARALLEL_MIN).zip(param.par_chunks(PARALLEL_MIN)).for_each(|(a, p)| run(a, p));
    } else {
        run(average, param);
    }
}

/// Update `average` in place from `param`; `false` if it is not a CPU float tensor pair this loop handles.
fn ema_update_cpu(one_minus_decay: f64, average: &Tensor, param: &Tensor) -> Result<bool> {
    if average.device() != Device::Cpu || !matches!(average.dtype(), DType::F32 | DType::F64) || param.dtype() != average.dtype() {
        return Ok(false);
    }
    dispatch_float!(average.dtype(), "ema", |T| {
        let p = param.contiguous()?.cpu_vec::<T>()?;
        let mut st = average.storage_mut();
        let Storage::Cpu(cs) = &mut *st else { return Ok(false) };
        let a = &mut cs.as_mut_slice::<T>().expect("dtype checked")[average.layout().contiguous_range().expect("own copy")];
        ema_cpu(<T as Element>::from_f64(one_minus_decay), a, &p);
        Ok(true)
    })
}

/// A detached, contiguous copy with its own storage.
fn own_copy(t: &Tensor) -> Result<Tensor> {
    no_grad(|| {
        let copy = Tensor::zeros(t.shape(), t.dtype(), t.device())?;
        copy.assign(t)?;
        Ok(copy)
    })
}

impl Ema {
    /// Start averaging `params` (copied as they are now).
    pub fn new(params: &[(String, Tensor)], config: EmaConfig) -> Result<Ema> {
        if !(0.0..=1.0).contains(&config.decay) || !(0.0..=1.0).contains(&config.min_decay) {
            return Err(Error::msg(format!("EMA: decay and min_decay must lie in [0, 1], got {config:?}")));
        }
        let shadows = params
            .iter()
            .map(|(name, p)| Ok(Shadow { name: name.clone(), param: p.clone(), average: own_copy(p)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Ema { config, optimization_step: 0, shadows })
    }

    /// The settings.
    pub fn config(&self) -> &EmaConfig {
        &self.config
    }

    /// Updates made so far (diffusers' `optimization_step`).
    pub fn optimization_step(&self) -> u64 {
        self.optimization_step
    }

    /// Follow the parameters one step (call after each optimizer step); returns the decay used.
    /// Parameters that record no gradients (frozen) are copied, as diffusers does.
    pub fn update(&mut self) -> Result<f64> {
        self.optimization_step += 1;
        let decay = self.config.decay_at(self.optimization_step);
        let mut on_gpu: Vec<[&Tensor; 2]> = Vec::new();
        for s in &self.shadows {
            if !s.param.requires_grad() {
                no_grad(|| s.average.assign(&s.param))?;
            } else if crate::nn::optim::fusable_on_gpu(&[&s.average, &s.param]) && !s.average.same_storage(&s.param) {
                on_gpu.push([&s.average, &s.param]);
            } else if !ema_update_cpu(1.0 - decay, &s.average, &s.param)? {
                no_grad(|| s.average.assign(&s.average.sub(&s.average.sub(&s.param)?.affine(1.0 - decay, 0.0)?)?))?;
            }
        }
        // GPU shadows: one multi-tensor launch per (device, dtype).
        while let Some(first) = on_gpu.first() {
            let key = (first[0].device(), first[0].dtype());
            let (group, rest): (Vec<[&Tensor; 2]>, Vec<[&Tensor; 2]>) =
                on_gpu.into_iter().partition(|t| (t[0].device(), t[0].dtype()) == key);
            crate::nn::optim::fused_gpu_update(&group, 1, |spans| crate::backend::cuda::optim::ema(spans, 1.0 - decay))?;
            on_gpu = rest;
        }
        Ok(decay)
    }

    /// The averaged tensors by parameter name (what an EMA checkpoint or export saves).
    pub fn averages(&self) -> Vec<(String, Tensor)> {
        self.shadows.iter().map(|s| (s.name.clone(), s.average.clone())).collect()
    }

    /// Write the averages into the live parameters (before sampling or exporting).
    pub fn copy_to_params(&self) -> Result<()> {
        for s in &self.shadows {
            no_grad(|| s.param.assign(&s.average))?;
        }
        Ok(())
    }

    /// Restore the averages and the step count from a checkpoint; `get(name)`
    /// returns the average saved under a parameter's name.
    pub fn load(&mut self, optimization_step: u64, get: &dyn Fn(&str) -> Result<Option<Tensor>>) -> Result<()> {
        for s in &self.shadows {
            let src = get(&s.name)?.ok_or_else(|| Error::msg(format!("EMA average of `{}` is missing from the checkpoint", s.name)))?;
            crate::nn::store::copy_into(&s.name, &s.average, &src).map_err(|e| Error::msg(format!("EMA average {e}")))?;
        }
        self.optimization_step = optimization_step;
        Ok(())
    }
}

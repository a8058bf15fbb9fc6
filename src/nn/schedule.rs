//! Learning-rate schedules, as the `get_*_schedule_with_warmup` functions of
//! transformers and diffusers: a multiplier of the base learning rate at each
//! optimizer step.
//!
//! Like torch's `LambdaLR`, the rate used by optimizer step `k` (counting
//! from 0) is `base_lr · factor(k)`: with warm-up, step 0 runs at rate 0.

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up from 0 over `warmup_steps`, then constant
    /// (`get_constant_schedule_with_warmup`).
    ConstantWithWarmup {
        /// Steps of linear warm-up.
        warmup_steps: u64,
    },
    /// Linear warm-up, then linear decay to 0 at `total_steps`
    /// (`get_linear_schedule_with_warmup`).
    Linear {
        /// Steps of linear warm-up.
        warmup_steps: u64,
        /// The step at which the rate reaches 0.
        total_steps: u64,
    },
    /// Linear warm-up, then a cosine from 1 down over `total_steps`
    /// (`get_cosine_schedule_with_warmup`; `num_cycles` 0.5 is a half cosine down to 0).
    Cosine {
        /// Steps of linear warm-up.
        warmup_steps: u64,
        /// Length of the whole schedule.
        total_steps: u64,
        /// Cosine periods over the decay (0.5: one half-wave down to 0).
        num_cycles: f64,
    },
}

/// `step / max(1, warmup)` during warm-up.
fn warmup_factor(step: u64, warmup_steps: u64) -> Option<f64> {
    (step < warmup_steps).then(|| step as f64 / warmup_steps.max(1) as f64)
}

impl LrSchedule {
    /// The half-cosine schedule transformers uses by default.
    pub fn cosine(warmup_steps: u64, total_steps: u64) -> LrSchedule {
        LrSchedule::Cosine { warmup_steps, total_steps, num_cycles: 0.5 }
    }

    /// The multiplier of the base rate at optimizer step `step` (from 0).
    pub fn factor(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::ConstantWithWarmup { warmup_steps } => warmup_factor(step, warmup_steps).unwrap_or(1.0),
            LrSchedule::Linear { warmup_steps, total_steps } => warmup_factor(step, warmup_steps).unwrap_or_else(|| {
                let remaining = total_steps as f64 - step as f64;
                (remaining / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
            }),
            LrSchedule::Cosine { warmup_steps, total_steps, num_cycles } => warmup_factor(step, warmup_steps).unwrap_or_else(|| {
                let progress = (step - warmup_steps) as f64 / total_steps.saturating_sub(warmup_steps).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }),
        }
    }

    /// `base_lr · factor(step)`.
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }
}

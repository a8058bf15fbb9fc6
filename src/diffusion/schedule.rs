//! Noise schedules from a diffusers `scheduler_config.json`: betas, cumulative
//! alphas, inference timesteps for each spacing, and the forward (noising)
//! process with its ε and v targets.

use crate::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What the denoiser predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread over the training range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The keys of a diffusers scheduler config shared by DDPM, DDIM and PNDM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: String,
    pub prediction_type: PredictionType,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub skip_prk_steps: bool,
    pub timestep_spacing: TimestepSpacing,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub trained_betas: Option<Vec<f64>>,
    /// DDPM's variance choice; only `fixed_small` (the default) and `fixed_large` are supported.
    pub variance_type: String,
}

impl Default for SchedulerConfig {
    /// diffusers' constructor defaults (which differ from SD's shipped config).
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            prediction_type: PredictionType::Epsilon,
            steps_offset: 0,
            set_alpha_to_one: true,
            skip_prk_steps: false,
            timestep_spacing: TimestepSpacing::Leading,
            clip_sample: false,
            clip_sample_range: 1.0,
            trained_betas: None,
            variance_type: "fixed_small".into(),
        }
    }
}

impl SchedulerConfig {
    /// Stable Diffusion 1.x's shipped `scheduler/scheduler_config.json` (PNDM).
    pub fn stable_diffusion() -> Self {
        SchedulerConfig {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            steps_offset: 1,
            set_alpha_to_one: false,
            skip_prk_steps: true,
            ..Default::default()
        }
    }

    /// Parse a diffusers `scheduler_config.json` (unknown keys are ignored).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::msg(format!("scheduler config: {e}")))
    }
}

/// torch.linspace in f32, reproducing its two-sided evaluation.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 }).collect()
}

/// The training noise schedule.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    pub config: SchedulerConfig,
    /// β_t, as diffusers holds them (f32 values).
    pub betas: Vec<f64>,
    /// ᾱ_t = Π (1 − β), accumulated in f32 as torch.cumprod does.
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let n = config.num_train_timesteps;
        if n == 0 {
            return Err(Error::msg("scheduler config: num_train_timesteps must be positive"));
        }
        let betas: Vec<f32> = if let Some(b) = &config.trained_betas {
            b.iter().map(|&v| v as f32).collect()
        } else {
            match config.beta_schedule.as_str() {
                "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
                "scaled_linear" => {
                    linspace_f32((config.beta_start as f32).sqrt(), (config.beta_end as f32).sqrt(), n).into_iter().map(|b| b * b).collect()
                }
                "squaredcos_cap_v2" => {
                    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                    (0..n)
                        .map(|i| (1.0 - alpha_bar((i + 1) as f64 / n as f64) / alpha_bar(i as f64 / n as f64)).min(0.999) as f32)
                        .collect()
                }
                other => {
                    return Err(Error::msg(format!(
                        "scheduler config: beta_schedule `{other}` is not supported (linear, scaled_linear, squaredcos_cap_v2)"
                    )))
                }
            }
        };
        let mut acc = 1f32;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|&b| {
                acc *= 1.0 - b;
                acc as f64
            })
            .collect();
        Ok(NoiseSchedule { config: config.clone(), betas: betas.into_iter().map(f64::from).collect(), alphas_cumprod })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }

    /// ᾱ before the first step: 1, or ᾱ_0 when `set_alpha_to_one` is off.
    pub fn final_alpha_cumprod(&self) -> f64 {
        if self.config.set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// ᾱ at `t`, with negative t meaning "before the first step".
    pub fn alpha_cumprod_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod()
        }
    }

    /// Inference timesteps, descending, as DDIM/DDPM's `set_timesteps`.
    pub fn timesteps(&self, num_steps: usize) -> Result<Vec<i64>> {
        let n = self.config.num_train_timesteps;
        if num_steps == 0 || num_steps > n {
            return Err(Error::msg(format!("{num_steps} inference steps for {n} training timesteps")));
        }
        Ok(match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<i64> =
                    (0..num_steps).map(|i| round_half_even(i as f64 * (n - 1) as f64 / (num_steps - 1).max(1) as f64)).collect();
                t.reverse();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = n / num_steps;
                (0..num_steps).rev().map(|i| (i * ratio + self.config.steps_offset) as i64).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / num_steps as f64;
                // np.round(np.arange(N, 0, -ratio)) - 1
                (0..).map(|i| n as f64 - i as f64 * ratio).take_while(|&v| v > 0.0).map(|v| round_half_even(v) - 1).collect()
            }
        })
    }

    /// x_t = √ᾱ_t · x_0 + √(1−ᾱ_t) · ε, for one timestep per batch item.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let (a, b) = self.per_item(timesteps, x0)?;
        x0.mul(&a)?.add(&noise.mul(&b)?)
    }

    /// The v target: √ᾱ_t · ε − √(1−ᾱ_t) · x_0.
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let (a, b) = self.per_item(timesteps, x0)?;
        noise.mul(&a)?.sub(&x0.mul(&b)?)
    }

    /// Signal-to-noise ratio ᾱ/(1−ᾱ) at t (for min-SNR weighting).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        a / (1.0 - a)
    }

    /// Per-item √ᾱ and √(1−ᾱ) as [B, 1, 1, 1] tensors of `like`'s dtype and device.
    fn per_item(&self, timesteps: &[usize], like: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = like.shape()[0];
        if timesteps.len() != b {
            return Err(Error::bad_shape("add_noise", format!("{} timesteps for a batch of {b}", timesteps.len())));
        }
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, like.rank() - 1));
        let mut sa = Vec::with_capacity(b);
        let mut sb = Vec::with_capacity(b);
        for &t in timesteps {
            let ac = *self.alphas_cumprod.get(t).ok_or_else(|| Error::msg(format!("timestep {t} outside the schedule")))?;
            sa.push(ac.sqrt());
            sb.push((1.0 - ac).sqrt());
        }
        let to = |v: Vec<f64>| -> Result<Tensor> { Tensor::from_vec(v, &shape)?.to_dtype(like.dtype())?.to_device(like.device()) };
        Ok((to(sa)?, to(sb)?))
    }
}

/// numpy's round: halves to even.
pub(crate) fn round_half_even(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - v.signum()) as i64
    } else {
        r as i64
    }
}

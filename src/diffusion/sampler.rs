//! Samplers equal to diffusers' DDPM, DDIM and PNDM schedulers step for step,
//! over tensors (so they run on either backend).

use crate::diffusion::schedule::{round_half_even, NoiseSchedule, PredictionType, TimestepSpacing};
use crate::{Error, Result, Tensor};

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Pseudo-numerical (PLMS, with Runge–Kutta warm-up unless `skip_prk_steps`).
    Pndm,
    /// Denoising diffusion implicit models, with η.
    Ddim,
    /// Ancestral DDPM.
    Ddpm,
}

use serde::{Deserialize, Serialize};

/// Supplies the Gaussian noise a stochastic step needs, shaped like the sample.
pub type NoiseSource<'a> = dyn FnMut(&Tensor) -> Result<Tensor> + 'a;

/// A sampler's state over one trajectory.
pub struct Sampler {
    kind: SamplerKind,
    schedule: NoiseSchedule,
    num_steps: usize,
    timesteps: Vec<i64>,
    eta: f64,
    // PNDM state
    prk_len: usize,
    counter: usize,
    ets: Vec<Tensor>,
    cur_sample: Option<Tensor>,
    cur_model_output: Option<Tensor>,
}

impl Sampler {
    /// A sampler of `kind` over `num_steps` inference steps (`eta` is DDIM's).
    pub fn new(kind: SamplerKind, schedule: &NoiseSchedule, num_steps: usize, eta: f64) -> Result<Self> {
        let (timesteps, prk_len) = match kind {
            SamplerKind::Pndm => pndm_timesteps(schedule, num_steps)?,
            _ => (schedule.timesteps(num_steps)?, 0),
        };
        Ok(Sampler {
            kind,
            schedule: schedule.clone(),
            num_steps,
            timesteps,
            eta,
            prk_len,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
        })
    }

    /// The timesteps at which the model is called, in order.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The factor initial noise is scaled by (1 for these samplers).
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn step_ratio(&self) -> i64 {
        (self.schedule.num_train_timesteps() / self.num_steps) as i64
    }

    /// One step from `sample` at timestep `t` given the model's output there.
    pub fn step(&mut self, model_output: &Tensor, t: i64, sample: &Tensor, noise: &mut NoiseSource) -> Result<Tensor> {
        match self.kind {
            SamplerKind::Ddim => self.step_ddim(model_output, t, sample, noise),
            SamplerKind::Ddpm => self.step_ddpm(model_output, t, sample, noise),
            SamplerKind::Pndm => {
                if self.counter < self.prk_len && !self.schedule.config.skip_prk_steps {
                    self.step_prk(model_output, t, sample)
                } else {
                    self.step_plms(model_output, t, sample)
                }
            }
        }
    }

    /// (x̂_0, ε̂) from the model output at ᾱ_t (scalars in f32, as diffusers computes them).
    fn predict(&self, model_output: &Tensor, sample: &Tensor, alpha_prod_t: f32) -> Result<(Tensor, Tensor)> {
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
        let (x0, eps) = match self.schedule.config.prediction_type {
            PredictionType::Epsilon => (div_scalar(&sample.sub(&scale(model_output, sb)?)?, sa)?, model_output.clone()),
            PredictionType::Sample => (model_output.clone(), div_scalar(&sample.sub(&scale(model_output, sa)?)?, sb)?),
            PredictionType::VPrediction => {
                (scale(sample, sa)?.sub(&scale(model_output, sb)?)?, scale(model_output, sa)?.add(&scale(sample, sb)?)?)
            }
        };
        let x0 = if self.schedule.config.clip_sample {
            let r = self.schedule.config.clip_sample_range;
            x0.clamp(-r, r)?
        } else {
            x0
        };
        Ok((x0, eps))
    }

    fn step_ddim(&mut self, model_output: &Tensor, t: i64, sample: &Tensor, noise: &mut NoiseSource) -> Result<Tensor> {
        let prev_t = t - self.step_ratio();
        let alpha_prod_t = self.schedule.alpha_cumprod_at(t) as f32;
        let alpha_prod_prev = self.schedule.alpha_cumprod_at(prev_t) as f32;
        let (beta_prod_t, beta_prod_prev) = (1.0 - alpha_prod_t, 1.0 - alpha_prod_prev);
        let (x0, eps) = self.predict(model_output, sample, alpha_prod_t)?;
        let variance = (beta_prod_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_prev);
        let std_dev = self.eta as f32 * variance.sqrt();
        let direction = scale(&eps, (1.0 - alpha_prod_prev - std_dev * std_dev).max(0.0).sqrt())?;
        let prev = scale(&x0, alpha_prod_prev.sqrt())?.add(&direction)?;
        if self.eta > 0.0 {
            return prev.add(&scale(&noise(sample)?, std_dev)?);
        }
        Ok(prev)
    }

    fn step_ddpm(&mut self, model_output: &Tensor, t: i64, sample: &Tensor, noise: &mut NoiseSource) -> Result<Tensor> {
        let index =
            self.timesteps.iter().position(|&x| x == t).ok_or_else(|| Error::msg(format!("DDPM: timestep {t} is not in the schedule")))?;
        let prev_t = self.timesteps.get(index + 1).copied().unwrap_or(-1);
        let alpha_prod_t = self.schedule.alphas_cumprod[t as usize] as f32;
        let alpha_prod_prev = if prev_t >= 0 { self.schedule.alphas_cumprod[prev_t as usize] as f32 } else { 1.0 };
        let (beta_prod_t, beta_prod_prev) = (1.0 - alpha_prod_t, 1.0 - alpha_prod_prev);
        let current_alpha = alpha_prod_t / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;
        let (x0, _) = self.predict(model_output, sample, alpha_prod_t)?;
        let c0 = (alpha_prod_prev.sqrt() * current_beta) / beta_prod_t;
        let ct = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let prev = scale(&x0, c0)?.add(&scale(sample, ct)?)?;
        if t > 0 {
            let variance = match self.schedule.config.variance_type.as_str() {
                "fixed_small" => ((1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t) * current_beta).max(1e-20),
                "fixed_large" => current_beta,
                other => return Err(Error::msg(format!("DDPM variance_type `{other}` is not supported (fixed_small, fixed_large)"))),
            };
            return prev.add(&scale(&noise(sample)?, variance.sqrt())?);
        }
        Ok(prev)
    }

    /// PNDM's transfer: x_{t−δ} from x_t and an ε estimate.
    fn prev_sample(&self, sample: &Tensor, t: i64, prev_t: i64, model_output: &Tensor) -> Result<Tensor> {
        let alpha_prod_t = self.schedule.alpha_cumprod_at(t) as f32;
        let alpha_prod_prev = self.schedule.alpha_cumprod_at(prev_t) as f32;
        let (beta_prod_t, beta_prod_prev) = (1.0 - alpha_prod_t, 1.0 - alpha_prod_prev);
        let eps = match self.schedule.config.prediction_type {
            PredictionType::Epsilon => model_output.clone(),
            PredictionType::VPrediction => scale(model_output, alpha_prod_t.sqrt())?.add(&scale(sample, beta_prod_t.sqrt())?)?,
            PredictionType::Sample => return Err(Error::msg("PNDM does not support prediction_type `sample`")),
        };
        let sample_coeff = (alpha_prod_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_prev.sqrt() + (alpha_prod_t * beta_prod_t * alpha_prod_prev).sqrt();
        scale(sample, sample_coeff)?.sub(&div_scalar(&scale(&eps, alpha_prod_prev - alpha_prod_t)?, denom)?)
    }

    fn step_prk(&mut self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        let half = self.step_ratio() / 2;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = t - diff_to_prev;
        let t = self.timesteps[self.counter / 4 * 4];
        let accumulate = |acc: &Option<Tensor>, w: f32| -> Result<Tensor> {
            let term = scale(model_output, w)?;
            match acc {
                Some(a) => a.add(&term),
                None => Ok(term),
            }
        };
        let eps = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(accumulate(&self.cur_model_output, 1.0 / 6.0)?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                self.cur_model_output = Some(accumulate(&self.cur_model_output, 1.0 / 3.0)?);
                model_output.clone()
            }
            _ => {
                let e = accumulate(&self.cur_model_output, 1.0 / 6.0)?;
                self.cur_model_output = None;
                e
            }
        };
        let cur = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&cur, t, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(&mut self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        let ratio = self.step_ratio();
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let mut sample = sample.clone();
        let e = &self.ets;
        let eps = if e.len() == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if e.len() == 1 && self.counter == 1 {
            sample = self.cur_sample.take().ok_or_else(|| Error::msg("PNDM: second step without a first"))?;
            div_scalar(&model_output.add(&e[0])?, 2.0)?
        } else if e.len() == 2 {
            div_scalar(&scale(&e[1], 3.0)?.sub(&e[0])?, 2.0)?
        } else if e.len() == 3 {
            div_scalar(&scale(&e[2], 23.0)?.sub(&scale(&e[1], 16.0)?)?.add(&scale(&e[0], 5.0)?)?, 12.0)?
        } else {
            let n = e.len();
            let sum = scale(&e[n - 1], 55.0)?.sub(&scale(&e[n - 2], 59.0)?)?.add(&scale(&e[n - 3], 37.0)?)?.sub(&scale(&e[n - 4], 9.0)?)?;
            scale(&sum, 1.0 / 24.0)?
        };
        let prev = self.prev_sample(&sample, t, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }
}

/// `t · s` with the scalar rounded to f32 first, as a torch f32 scalar tensor is.
fn scale(t: &Tensor, s: f32) -> Result<Tensor> {
    t.mul_scalar(s as f64)
}

/// `t / s` as a true division (not a multiplication by 1/s), as torch divides.
fn div_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    t.div(&Tensor::full(s as f64, &[], t.dtype(), t.device())?)
}

/// PNDM's `set_timesteps`: the Runge–Kutta warm-up timesteps (unless skipped)
/// then the PLMS ones; returns them and the warm-up's length.
fn pndm_timesteps(schedule: &NoiseSchedule, num_steps: usize) -> Result<(Vec<i64>, usize)> {
    let cfg = &schedule.config;
    let n = cfg.num_train_timesteps;
    if num_steps < 2 || num_steps > n {
        return Err(Error::msg(format!("PNDM needs 2..={n} inference steps, got {num_steps}")));
    }
    let base: Vec<i64> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => (0..num_steps).map(|i| round_half_even(i as f64 * (n - 1) as f64 / (num_steps - 1) as f64)).collect(),
        TimestepSpacing::Leading => (0..num_steps).map(|i| (i * (n / num_steps) + cfg.steps_offset) as i64).collect(),
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / num_steps as f64;
            let mut t: Vec<i64> =
                (0..).map(|i| n as f64 - i as f64 * ratio).take_while(|&v| v > 0.0).map(|v| round_half_even(v) - 1).collect();
            t.reverse();
            t
        }
    };
    let len = base.len();
    if cfg.skip_prk_steps {
        // [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed: the second step repeats a timestep.
        let mut plms: Vec<i64> = base[..len - 1].to_vec();
        plms.push(base[len - 2]);
        plms.push(base[len - 1]);
        plms.reverse();
        Ok((plms, 0))
    } else {
        if len < 4 {
            return Err(Error::msg("PNDM with Runge–Kutta warm-up needs at least 4 inference steps"));
        }
        let half = (n / num_steps / 2) as i64;
        let mut prk: Vec<i64> = Vec::new();
        for &t in &base[len - 4..] {
            prk.push(t);
            prk.push(t + half);
        }
        // prk[:-1].repeat(2)[1:-1][::-1]
        let trimmed = &prk[..prk.len() - 1];
        let repeated: Vec<i64> = trimmed.iter().flat_map(|&t| [t, t]).collect();
        let mut prk: Vec<i64> = repeated[1..repeated.len() - 1].to_vec();
        prk.reverse();
        let mut plms: Vec<i64> = base[..len - 3].to_vec();
        plms.reverse();
        let prk_len = prk.len();
        prk.extend(plms);
        Ok((prk, prk_len))
    }
}

//! DP-SGD (Abadi et al. 2016): Poisson subsampling of the records, per-sample
//! gradient clipping to norm `C`, Gaussian noise of standard deviation `σC`
//! on the sum, normalised by the *expected* batch size `qN` (Opacus'
//! `expected_batch_size`, which keeps the estimate unbiased and the
//! sensitivity fixed whatever batch size the sampler drew).
//!
//! Noise multiplicity (Dockhorn et al. 2022, DPDM): each selected record is
//! used `K` times per step with independent diffusion noise and timesteps, and
//! its loss is the mean of its `K` losses. The averaging happens *before*
//! clipping, so one record still moves the clipped sum by at most `C`: the
//! privacy cost is that of `K = 1`, the gradient variance lower.
//!
//! The per-sample gradients come from
//! [`Tensor::backward_per_sample`](crate::Tensor::backward_per_sample). This
//! module does not account for privacy (ε); the RDP accountant does.

use crate::{no_grad, Error, Gradients, Result, Rng, Tensor};
use serde::{Deserialize, Serialize};

/// The DP-SGD mechanism's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSgdConfig {
    /// `C`: every sample's gradient is clipped to this L2 norm (over all parameters).
    pub max_grad_norm: f64,
    /// `σ`: the noise on the clipped sum has standard deviation `σ·C` per coordinate.
    pub noise_multiplier: f64,
    /// `q`: each record joins a step's batch independently with this probability.
    pub sample_rate: f64,
    /// `K`: diffusion-noise draws per selected record per step (DPDM's noise multiplicity).
    pub noise_multiplicity: usize,
    /// Seed of the sampler and of the privacy noise.
    pub seed: u64,
}

impl Default for DpSgdConfig {
    /// DPDM-like settings: `C` = 1, `σ` = 1, `q` = 0.01, `K` = 1.
    fn default() -> Self {
        DpSgdConfig { max_grad_norm: 1.0, noise_multiplier: 1.0, sample_rate: 0.01, noise_multiplicity: 1, seed: 0 }
    }
}

impl DpSgdConfig {
    /// Reject settings for which the mechanism is undefined.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return Err(Error::msg(format!("dp-sgd: max_grad_norm must be a positive number, got {}", self.max_grad_norm)));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(Error::msg(format!("dp-sgd: noise_multiplier must be a non-negative number, got {}", self.noise_multiplier)));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(Error::msg(format!("dp-sgd: sample_rate must lie in (0, 1], got {}", self.sample_rate)));
        }
        if self.noise_multiplicity == 0 {
            return Err(Error::msg("dp-sgd: noise_multiplicity must be at least 1"));
        }
        Ok(())
    }
}

/// Poisson subsampling: at every step each of `n` records joins the batch
/// independently with probability `q`. A step's batch is a pure function of
/// (seed, step), so a resumed run draws exactly the batches it would have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoissonSampler {
    records: usize,
    rate: f64,
    seed: u64,
}

impl PoissonSampler {
    /// A sampler over `records` records with rate `rate` in (0, 1].
    pub fn new(records: usize, rate: f64, seed: u64) -> Result<Self> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(Error::msg(format!("Poisson sampler: the rate must lie in (0, 1], got {rate}")));
        }
        Ok(PoissonSampler { records, rate, seed })
    }

    /// The records (indices, ascending) of step `step`; may be empty.
    pub fn sample(&self, step: u64) -> Vec<usize> {
        let mut rng = Rng::new(self.seed ^ 0x9015_5011).fork(step);
        rng.uniform_vec(self.records).into_iter().enumerate().filter(|&(_, u)| u < self.rate).map(|(i, _)| i).collect()
    }

    /// `q·N`, the expected batch size.
    pub fn expected_batch(&self) -> f64 {
        self.rate * self.records as f64
    }
}

/// What clipping did to a batch of per-sample gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClipStats {
    /// Samples seen.
    pub samples: usize,
    /// Samples whose norm exceeded `C` (and were scaled down).
    pub clipped: usize,
    /// Mean pre-clip L2 norm.
    pub mean_norm: f64,
    /// Largest pre-clip L2 norm.
    pub max_norm: f64,
}

impl ClipStats {
    /// The share of samples that were clipped (0 for no samples).
    pub fn clipped_fraction(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.clipped as f64 / self.samples as f64
        }
    }

    /// The statistics of two disjoint sets of samples together (chunks of one batch).
    pub fn merge(&self, other: &ClipStats) -> ClipStats {
        let samples = self.samples + other.samples;
        let mean_norm = if samples == 0 {
            0.0
        } else {
            (self.mean_norm * self.samples as f64 + other.mean_norm * other.samples as f64) / samples as f64
        };
        ClipStats { samples, clipped: self.clipped + other.clipped, mean_norm, max_norm: self.max_norm.max(other.max_norm) }
    }

    fn of(norms: &[f64], max_grad_norm: f64) -> ClipStats {
        ClipStats {
            samples: norms.len(),
            clipped: norms.iter().filter(|&&n| n > max_grad_norm).count(),
            mean_norm: if norms.is_empty() { 0.0 } else { norms.iter().sum::<f64>() / norms.len() as f64 },
            max_norm: norms.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The batch size of a set of per-sample gradients (their common leading
/// dimension), 0 when `params` received none.
fn batch_of(per_sample: &Gradients, params: &[Tensor]) -> Result<usize> {
    let mut batch = None;
    for p in params {
        let Some(g) = per_sample.get(p) else { continue };
        if g.rank() != p.rank() + 1 || g.shape()[1..] != *p.shape() {
            return Err(Error::bad_shape(
                "dp-sgd",
                format!("per-sample gradient {:?} does not stack parameter {:?}", g.shape(), p.shape()),
            ));
        }
        match batch {
            None => batch = Some(g.shape()[0]),
            Some(b) if b != g.shape()[0] => {
                return Err(Error::bad_shape("dp-sgd", format!("per-sample gradients of {b} and {} samples mixed", g.shape()[0])))
            }
            Some(_) => {}
        }
    }
    Ok(batch.unwrap_or(0))
}

/// Each sample's gradient L2 norm over all of `params` (missing gradients count as zero).
pub fn per_sample_norms(per_sample: &Gradients, params: &[Tensor]) -> Result<Vec<f64>> {
    let batch = batch_of(per_sample, params)?;
    let mut squares = vec![0.0; batch];
    no_grad(|| -> Result<()> {
        for p in params {
            let Some(g) = per_sample.get(p) else { continue };
            let s = g.reshape(&[batch, p.numel()])?.square()?.sum(&[1], false)?.to_vec_f64()?;
            for (acc, v) in squares.iter_mut().zip(s) {
                *acc += v;
            }
        }
        Ok(())
    })?;
    Ok(squares.into_iter().map(f64::sqrt).collect())
}

/// The factor `min(1, C/‖g‖)` that clips a gradient of norm `norm` to `max_grad_norm`.
pub fn clip_factor(norm: f64, max_grad_norm: f64) -> f64 {
    if norm > max_grad_norm {
        max_grad_norm / norm
    } else {
        1.0
    }
}

/// The per-sample gradients, each scaled to norm at most `max_grad_norm`
/// (still one per sample: for inspection; training uses [`clip_and_sum`]).
pub fn clip_per_sample(per_sample: &Gradients, params: &[Tensor], max_grad_norm: f64) -> Result<(Gradients, ClipStats)> {
    let norms = per_sample_norms(per_sample, params)?;
    let batch = norms.len();
    let factors: Vec<f64> = norms.iter().map(|&n| clip_factor(n, max_grad_norm)).collect();
    let mut clipped = Gradients::default();
    no_grad(|| -> Result<()> {
        for p in params {
            let Some(g) = per_sample.get(p) else { continue };
            let f = Tensor::from_vec(factors.clone(), &[batch, 1])?.to_dtype(g.dtype())?.to_device(g.device())?;
            clipped.insert(p, g.reshape(&[batch, p.numel()])?.mul(&f)?.reshape(g.shape())?);
        }
        Ok(())
    })?;
    Ok((clipped, ClipStats::of(&norms, max_grad_norm)))
}

/// The sum over samples of the clipped per-sample gradients (one GEMV per
/// parameter: factors `[1, B]` times the stack `[B, numel]`); every parameter
/// gets an entry, zeros where it received no gradient.
pub fn clip_and_sum(per_sample: &Gradients, params: &[Tensor], max_grad_norm: f64) -> Result<(Gradients, ClipStats)> {
    let norms = per_sample_norms(per_sample, params)?;
    let batch = norms.len();
    let factors: Vec<f64> = norms.iter().map(|&n| clip_factor(n, max_grad_norm)).collect();
    let mut sum = Gradients::default();
    no_grad(|| -> Result<()> {
        for p in params {
            let g = match per_sample.get(p) {
                Some(g) if batch > 0 => {
                    let f = Tensor::from_vec(factors.clone(), &[1, batch])?.to_dtype(g.dtype())?.to_device(g.device())?;
                    f.matmul(&g.reshape(&[batch, p.numel()])?)?.reshape(p.shape())?
                }
                _ => Tensor::zeros(p.shape(), p.dtype(), p.device())?,
            };
            sum.insert(p, g);
        }
        Ok(())
    })?;
    Ok((sum, ClipStats::of(&norms, max_grad_norm)))
}

/// The privatised gradient from a clipped sum: `(sum + N(0, σ²C²)) / expected_batch`
/// for every parameter, the noise drawn from `rng` in the order of `params`
/// (no draw when `σ` = 0).
pub fn noise_and_normalise(
    clipped_sum: &Gradients,
    params: &[Tensor],
    cfg: &DpSgdConfig,
    rng: &mut Rng,
    expected_batch: f64,
) -> Result<Gradients> {
    cfg.validate()?;
    if !(expected_batch.is_finite() && expected_batch > 0.0) {
        return Err(Error::msg(format!("dp-sgd: the expected batch size must be positive, got {expected_batch}")));
    }
    let std = cfg.noise_multiplier * cfg.max_grad_norm;
    let mut out = Gradients::default();
    no_grad(|| -> Result<()> {
        for p in params {
            let sum = match clipped_sum.get(p) {
                Some(g) => g.clone(),
                None => Tensor::zeros(p.shape(), p.dtype(), p.device())?,
            };
            let noisy = if std > 0.0 { sum.add(&Tensor::randn(p.shape(), 0.0, std, p.dtype(), p.device(), rng)?)? } else { sum };
            out.insert(p, noisy.affine(1.0 / expected_batch, 0.0)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// One DP-SGD gradient from per-sample gradients: clip each sample to
/// `C`, sum, add `N(0, σ²C²)` per coordinate, divide by `expected_batch` (`qN`).
pub fn clip_and_noise(
    per_sample: &Gradients,
    params: &[Tensor],
    cfg: &DpSgdConfig,
    rng: &mut Rng,
    expected_batch: f64,
) -> Result<(Gradients, ClipStats)> {
    let (sum, stats) = clip_and_sum(per_sample, params, cfg.max_grad_norm)?;
    Ok((noise_and_normalise(&sum, params, cfg, rng, expected_batch)?, stats))
}

//! The training objective of latent diffusion: draw t uniformly, noise the
//! latents, predict ε or v, mean squared error — optionally weighted by
//! min-SNR-γ (Hang et al. 2023) — and classifier-free-guidance dropout of prompts.

use crate::diffusion::schedule::{NoiseSchedule, PredictionType};
use crate::models::unet::UNet2DConditionModel;
use crate::{Error, Result, Rng, Tensor};

/// Settings of the denoising loss.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectiveConfig {
    /// γ of min-SNR weighting; `None` is the plain MSE.
    pub min_snr_gamma: Option<f64>,
}

/// The denoising loss of `unet` on clean latents [B, C, h, w] with text
/// states `context` [B, L, D]; draws t and ε from `rng`.
pub fn diffusion_loss(
    unet: &UNet2DConditionModel,
    schedule: &NoiseSchedule,
    latents: &Tensor,
    context: &Tensor,
    rng: &mut Rng,
    config: ObjectiveConfig,
) -> Result<Tensor> {
    let b = latents.shape()[0];
    let n = schedule.num_train_timesteps();
    let timesteps: Vec<usize> = (0..b).map(|_| rng.below(n)).collect();
    let noise = Tensor::randn(latents.shape(), 0.0, 1.0, latents.dtype(), latents.device(), rng)?;
    let noisy = schedule.add_noise(latents, &noise, &timesteps)?;
    let ts: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
    let pred = unet.forward(&noisy, &ts, context)?;
    let prediction = schedule.config.prediction_type;
    let target = match prediction {
        PredictionType::Epsilon => noise,
        PredictionType::VPrediction => schedule.velocity(latents, &noise, &timesteps)?,
        PredictionType::Sample => latents.clone(),
    };
    let per_item = pred.sub(&target)?.square()?.mean(&[1, 2, 3], false)?;
    match config.min_snr_gamma {
        None => per_item.mean_all(),
        Some(gamma) => {
            if gamma <= 0.0 {
                return Err(Error::msg(format!("min_snr_gamma must be positive, got {gamma}")));
            }
            let w: Vec<f64> = timesteps
                .iter()
                .map(|&t| {
                    let snr = schedule.snr(t);
                    match prediction {
                        PredictionType::VPrediction => snr.min(gamma) / (snr + 1.0),
                        _ => snr.min(gamma) / snr,
                    }
                })
                .collect();
            let w = Tensor::from_vec(w, &[b])?.to_dtype(per_item.dtype())?.to_device(per_item.device())?;
            per_item.mul(&w)?.mean_all()
        }
    }
}

/// Classifier-free-guidance dropout: each prompt is replaced by the empty
/// prompt with probability `p`; returns how many were dropped.
pub fn cfg_dropout(prompts: &mut [Vec<i64>], empty: &[i64], p: f64, rng: &mut Rng) -> usize {
    let mut dropped = 0;
    for ids in prompts.iter_mut() {
        if rng.uniform() < p {
            ids.clear();
            ids.extend_from_slice(empty);
            dropped += 1;
        }
    }
    dropped
}

//! Sampling with classifier-free guidance: the unconditional pass is batched
//! with the conditional one, ε = ε_u + s·(ε_c − ε_u).

use crate::diffusion::sampler::{Sampler, SamplerKind};
use crate::diffusion::schedule::NoiseSchedule;
use crate::models::unet::UNet2DConditionModel;
use crate::{no_grad, Error, Result, Rng, Tensor};

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleConfig {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub guidance_scale: f64,
    /// DDIM's η (ignored by the others).
    pub eta: f64,
}

impl Default for SampleConfig {
    /// PNDM (as Stable Diffusion and Privacy Distillation sample), 50 steps, guidance 4.
    fn default() -> Self {
        SampleConfig { sampler: SamplerKind::Pndm, steps: 50, guidance_scale: 4.0, eta: 0.0 }
    }
}

/// Denoise from Gaussian noise to latents [B, C, h, w] for text states
/// `cond` [B, L, D], guided against `uncond` [1, L, D] (the empty prompt).
/// `on_step` is called after each step (progress bars).
#[allow(clippy::too_many_arguments)]
pub fn sample_latents(
    unet: &UNet2DConditionModel,
    schedule: &NoiseSchedule,
    config: &SampleConfig,
    cond: &Tensor,
    uncond: &Tensor,
    latent_shape: [usize; 3],
    rng: &mut Rng,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let b = cond.shape()[0];
    if uncond.rank() != 3 || uncond.shape()[1..] != cond.shape()[1..] {
        return Err(Error::bad_shape(
            "sample",
            format!("unconditional states {:?} do not match conditional {:?}", uncond.shape(), cond.shape()),
        ));
    }
    no_grad(|| {
        let mut sampler = Sampler::new(config.sampler, schedule, config.steps, config.eta)?;
        let shape = [b, latent_shape[0], latent_shape[1], latent_shape[2]];
        let mut x = Tensor::randn(&shape, 0.0, 1.0, cond.dtype(), cond.device(), rng)?.mul_scalar(sampler.init_noise_sigma())?;
        let guided = config.guidance_scale != 1.0;
        let context =
            if guided { Tensor::cat(&[uncond.broadcast_to(cond.shape())?.contiguous()?, cond.clone()], 0)? } else { cond.clone() };
        let timesteps = sampler.timesteps().to_vec();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let eps = if guided {
                let out = unet.forward(&Tensor::cat(&[x.clone(), x.clone()], 0)?, &[t as f64], &context)?;
                let (u, c) = (out.narrow(0, 0, b)?, out.narrow(0, b, b)?);
                u.add(&c.sub(&u)?.mul_scalar(config.guidance_scale)?)?
            } else {
                unet.forward(&x, &[t as f64], &context)?
            };
            let mut noise = |like: &Tensor| Tensor::randn(like.shape(), 0.0, 1.0, like.dtype(), like.device(), rng);
            x = sampler.step(&eps, t, &x, &mut noise)?;
            on_step(i + 1, total);
        }
        Ok(x)
    })
}

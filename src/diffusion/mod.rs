//! Latent diffusion: noise schedules, the training objective, and the
//! samplers (PNDM, DDIM, DDPM) with classifier-free guidance.

pub mod guidance;
pub mod objective;
pub mod sampler;
pub mod schedule;

//! Differential privacy: PrivImage's DP baseline (DP-SGD fine-tuning of the
//! latent diffusion model) and its privacy accounting.

pub mod sgd;

//! Differential privacy for the PrivImage baseline: the Rényi-DP accountant
//! that turns noise, sampling rate and steps into (ε, δ) and back ([`rdp`]),
//! DP-SGD — per-sample clipping, Gaussian noise, Poisson sampling ([`sgd`]) —
//! and the semantic query of the sensitive data with the public-data
//! selection it drives ([`semantic`]).

pub mod rdp;
pub mod semantic;
pub mod sgd;

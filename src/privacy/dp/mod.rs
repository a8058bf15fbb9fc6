//! Differential privacy for the PrivImage baseline: the Rényi-DP accountant
//! that turns noise, sampling rate and steps into (ε, δ) and back ([`rdp`]),
//! the semantic query of the sensitive data with the public-data selection it
//! drives ([`semantic`]), and DP-SGD's clipping, sampling and noise ([`sgd`]).

pub mod rdp;
pub mod semantic;
pub mod sgd;

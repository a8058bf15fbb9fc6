//! Differential privacy for the PrivImage baseline (issue 9): the Rényi-DP
//! accountant that turns noise, sampling rate and steps into (ε, δ) and back
//! ([`rdp`]).

pub mod rdp;

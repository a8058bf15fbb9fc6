//! Differential privacy: the PrivImage baseline's building blocks — the
//! semantic query of the sensitive data and the public-data selection it
//! drives ([`semantic`]).

pub mod semantic;

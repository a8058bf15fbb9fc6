//! Compute backends. `cpu` is the reference for every op; `cuda` is its twin.

pub mod cpu;
pub mod cuda;
pub mod op;

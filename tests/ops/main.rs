//! Op tests: every op's forward against a naive reference (including
//! broadcasting and non-contiguous views) and its backward against central
//! finite differences in f64. One module per op family.

mod basic;
mod gemm;

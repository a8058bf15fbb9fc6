//! Op tests: every op's forward against a naive reference (including
//! broadcasting and non-contiguous views) and its backward against central
//! finite differences in f64. One module per op family.

mod attention;
mod basic;
mod concat;
mod conv;
mod geglu;
mod gemm;
mod indexing;
mod loss;
mod norm;
mod pool;
mod select;
mod siamese_head;
mod softmax;
mod upsample;

//! Backward rules, one file per op family (named as the forward op's file).

pub mod binary;
pub mod cast;
pub mod conv;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod unary;
pub mod upsample;
pub mod view;

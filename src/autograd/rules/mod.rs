//! Backward rules, one file per op family (named as the forward op's file).

pub mod binary;
pub mod cast;
pub mod concat;
pub mod indexing;
pub mod loss;
pub mod matmul;
pub mod reduce;
pub mod select;
pub mod unary;
pub mod view;

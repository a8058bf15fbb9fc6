//! Backward rules, one file per op family (named as the forward op's file).

pub mod attention;
pub mod binary;
pub mod cast;
pub mod concat;
pub mod conv;
pub mod geglu;
pub mod indexing;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod select;
pub mod siamese_head;
pub mod softmax;
pub mod unary;
pub mod upsample;
pub mod view;

//! Privacy: the filter rule, lineage, re-identification and alignment scoring.

pub mod filter;
pub mod lineage;
pub mod score;

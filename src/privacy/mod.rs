//! The privacy side of Privacy Distillation: the networks that score synthetic
//! images against the real data — re-identification ([`reid`]: s_reid),
//! nearest-real-image retrieval for unconditional samples ([`retrieval`]) and
//! image–text alignment ([`align`]: s_align) — their folders on disk
//! ([`scorer_folder`]), the split real dataset they train on ([`dataset`]);
//! the scoring interface ([`score`]), the filter rule ([`filter`]) with its
//! pixel-space copy gate ([`copy_gate`], on [`pixel_index`]), the
//! lineage that proves the distilled model never saw a real image
//! ([`lineage`]), and the audit of the filter's sensitivity and specificity
//! ([`audit`]).

pub mod align;
pub mod audit;
pub mod copy_gate;
pub mod dataset;
pub mod dp;
pub mod filter;
pub mod lineage;
pub mod pixel_index;
pub mod reid;
pub mod retrieval;
pub mod score;
pub mod scorer_folder;

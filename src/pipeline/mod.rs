//! Pipeline stages and tools: each reads files and writes files atomically;
//! the CLI parses arguments and calls one of these.
//!
//! The chain (`run`, `demo`): [`prepare`] → [`train_vae`] → [`train_ldm`] →
//! [`sample`] → [`train_reid`], [`train_align`], [`train_retrieval`] →
//! [`score`] → [`filter`] → [`audit`] → distill ([`train_ldm`] on the filtered
//! set, after the lineage check) → [`sample`] → [`score`] → [`evaluate`] →
//! [`export`] → [`report`]; [`workdir`] skips what is unchanged.

pub mod audit;
pub mod config;
pub mod dp_cli;
pub mod eval_cli;
pub mod evaluate;
pub mod export;
pub mod filter;
pub mod forward;
pub mod model_folder;
pub mod prepare;
pub mod privimage;
pub mod progress;
pub mod report;
pub mod run;
pub mod run_cli;
pub mod sample;
pub mod score;
pub mod scorer_stage;
pub mod train_align;
pub mod train_ldm;
pub mod train_ldm_dp;
pub mod train_reid;
pub mod train_retrieval;
pub mod train_vae;
pub mod workdir;

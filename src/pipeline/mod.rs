//! Pipeline stages and tools: each reads files and writes files atomically;
//! the CLI parses arguments and calls one of these.

pub mod config;
pub mod filter;
pub mod eval_cli;
pub mod evaluate;
pub mod forward;
pub mod prepare;
pub mod progress;
pub mod score;
pub mod scorer_stage;
pub mod train_align;
pub mod train_reid;
pub mod train_retrieval;
pub mod workdir;
pub mod model_folder;
pub mod train_vae;
pub mod export;
pub mod sample;
pub mod train_ldm;
pub mod report;

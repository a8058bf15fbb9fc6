//! Pipeline stages and tools: each reads files and writes files atomically;
//! the CLI parses arguments and calls one of these.

pub mod audit;
pub mod config;
pub mod forward;
pub mod progress;
pub mod scorer_stage;
pub mod train_align;
pub mod train_reid;
pub mod train_retrieval;

//! Pipeline stages and tools: each reads files and writes files atomically;
//! the CLI parses arguments and calls one of these.

pub mod config;
pub mod export;
pub mod forward;
pub mod model_folder;
pub mod progress;
pub mod sample;
pub mod train_ldm;
pub mod train_vae;

//! Pipeline stages and tools: each reads files and writes files atomically;
//! the CLI parses arguments and calls one of these.

pub mod config;
pub mod eval_cli;
pub mod evaluate;
pub mod forward;
pub mod progress;
pub mod report;

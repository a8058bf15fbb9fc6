//! Neural-network building blocks over the tensor runtime: the parameter
//! store with PyTorch `state_dict` names, initialisers, layers, optimizers,
//! learning-rate schedules, the parameter EMA and gradient clipping.

pub mod clip;
pub mod dropout;
pub mod ema;
pub mod embedding;
pub mod init;
pub mod linear;
pub mod norm;
pub mod optim;
pub mod schedule;
pub mod store;

pub use clip::{clip_grad_norm, global_grad_norm};
pub use dropout::Dropout;
pub use ema::{Ema, EmaConfig, EmaWarmup};
pub use embedding::Embedding;
pub use init::{fan_in_fan_out, Init};
pub use linear::Linear;
pub use norm::{BatchNorm2d, GroupNorm, LayerNorm};
pub use optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
pub use schedule::LrSchedule;
pub use store::{EntryKind, NamedParam, ParamPath, ParamStore};

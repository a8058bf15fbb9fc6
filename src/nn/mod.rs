//! Neural-network building blocks over the tensor runtime: the parameter
//! store with PyTorch `state_dict` names ([`ParamStore`], [`ParamPath`]),
//! PyTorch's default initialisers ([`Init`]), layers ([`Linear`], [`Conv2d`],
//! [`GroupNorm`], [`LayerNorm`], [`BatchNorm2d`], [`Embedding`], [`Dropout`]),
//! optimizers ([`AdamW`], [`Sgd`]), learning-rate schedules, the parameter
//! [`Ema`] and gradient clipping.
//!
//! A layer is a struct holding its parameter tensors, created through a
//! [`ParamPath`] so their names are the reference implementation's, with a
//! `forward` method; training-only behaviour takes an explicit `train` flag.

#![warn(missing_docs)]

pub mod clip;
pub mod conv;
pub mod dropout;
pub mod ema;
pub mod embedding;
pub mod init;
pub mod linear;
pub mod norm;
pub mod optim;
pub mod schedule;
pub mod store;

pub use crate::tensor::ops::conv::Conv2dParams;
pub use clip::{clip_grad_norm, global_grad_norm};
pub use conv::Conv2d;
pub use dropout::Dropout;
pub use ema::{Ema, EmaConfig, EmaWarmup};
pub use embedding::Embedding;
pub use init::{fan_in_fan_out, Init};
pub use linear::Linear;
pub use norm::{BatchNorm2d, GroupNorm, LayerNorm};
pub use optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
pub use schedule::LrSchedule;
pub use store::{EntryKind, NamedParam, ParamPath, ParamStore};

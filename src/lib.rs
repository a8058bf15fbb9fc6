//! privdistill: Privacy Distillation for medical text-to-image diffusion
//! models, on its own tensor runtime (CPU reference kernels and CUDA twins).
//!
//! Layers, top to bottom: `pipeline` → `privacy`, `eval` → `data`,
//! `diffusion` → `models` → `nn` → `autograd`/`tensor` → `backend` (cpu, cuda),
//! with `io` for safetensors and checkpoints. Arrows point down only.

pub mod autograd;
pub mod backend;
pub mod data;
pub mod diffusion;
pub mod doctor;
pub mod error;
pub mod eval;
pub mod io;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod privacy;
pub mod rng;
pub mod tensor;
pub mod testing;

pub use autograd::{no_grad, Gradients};
pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::{DType, Device, Tensor, TensorId};

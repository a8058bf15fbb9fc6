//! Files in and out: memory-mapped safetensors, atomic writes, checkpoints.
//!
//! - [`safetensors`]: [`SafeTensorsFile::open`] maps a `.safetensors` file and
//!   validates its header (lengths, JSON, dtypes, shapes, offsets) without
//!   reading tensor data; [`SafeTensorsFile::get`] returns a CPU tensor that
//!   points into the map (storage [`CpuStorage::Mapped`](crate::tensor::CpuStorage::Mapped)),
//!   so a model loads in the time it takes to read its header and pages
//!   come from disk as the first forward pass touches them.
//!   [`SafeTensorsFile::get_checked`] is what model loaders call: it names the
//!   file, the tensor, and the expected and found shape/dtype on a mismatch.
//!   [`save_safetensors`] writes the standard format (readable by the
//!   reference `safetensors` library and by diffusers/transformers).
//! - [`atomic`]: [`write_atomic`] and friends. Every file privdistill writes
//!   goes to a temporary name, is fsynced, and is renamed into place, so an
//!   interrupted run never leaves a partial output behind.
//! - [`hash`]: SHA-256 content hashes of files and folders (lineage, stage skipping).
//! - [`checkpoint`]: [`Checkpoint`], named tensors (`param.*`, `optim.*`)
//!   plus resume state (step, epoch, data position, RNG, config) in one
//!   safetensors file.
//!
//! Every error names the file, and the tensor where one is involved, and
//! says what to do next.

pub mod atomic;
pub mod checkpoint;
pub mod hash;
pub mod safetensors;

pub use atomic::{write_atomic, write_atomic_bytes, write_atomic_json, AtomicWriter};
pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use safetensors::{save_safetensors, NamedTensor, SafeTensorsFile, TensorEntry};

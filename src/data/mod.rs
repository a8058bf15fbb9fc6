//! The data layer: dataset manifests, image decoding and each model's input
//! contract, augmentation, threaded batching, patient-level splits,
//! re-identification pairs, importers (MIMIC-CXR-JPG, CSV, folders), the
//! phantom chest X-ray generator, and dataset statistics.
//!
//! A dataset is a `manifest.jsonl` next to its images (see [`manifest`]).

mod atomic;
pub mod augment;
pub mod cli;
pub mod contract;
pub mod csv;
pub mod error;
pub mod imaging;
pub mod import;
pub mod loader;
pub mod manifest;
mod noise;
pub mod pairs;
pub mod phantom;
pub mod split;
pub mod stats;
pub mod tokens;

pub use augment::Augment;
pub use contract::{classifier_input, fid_input, ldm_input, reid_input, Contract};
pub use error::{DataError, DataResult};
pub use imaging::{decode, read_image, Image};
pub use loader::{Batch, BatchLoader, LoaderConfig};
pub use manifest::{Manifest, Record, Split};
pub use pairs::{Pair, PairSampler};
pub use split::{assign_splits, split_manifest, SplitConfig, SplitReport};
pub use tokens::{TokenCounter, WordPieceEstimate};

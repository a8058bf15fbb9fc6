//! The real dataset as the scorer networks see it: a manifest whose records
//! all carry a patient-level split, and its images decoded once and kept at
//! the network's input size.

use super::scorer_folder::data_error;
use crate::data::{Image, Manifest, Split};
use crate::{Error, Result};
use rayon::prelude::*;
use std::path::Path;

/// A dataset with its train/val/test record indices.
#[derive(Clone, Debug)]
pub struct SplitDataset {
    /// The manifest.
    pub manifest: Manifest,
    /// Record indices of the training split.
    pub train: Vec<usize>,
    /// Record indices of the validation split.
    pub val: Vec<usize>,
    /// Record indices of the test split.
    pub test: Vec<usize>,
}

impl SplitDataset {
    /// Reads the dataset folder (or manifest) and checks that every record has a split.
    pub fn load(dataset: &Path) -> Result<SplitDataset> {
        let manifest = Manifest::load(dataset).map_err(data_error)?;
        SplitDataset::from_manifest(manifest)
    }

    /// Checks and indexes an already loaded manifest.
    pub fn from_manifest(manifest: Manifest) -> Result<SplitDataset> {
        if let Some(i) = manifest.records.iter().position(|r| r.split.is_none()) {
            return Err(Error::file(
                &manifest.path,
                format!(
                    "line {}: field `split` is missing — the scorer networks need a patient-level split; run `privdistill data split` first",
                    manifest.lines[i]
                ),
            ));
        }
        let (train, val, test) = (manifest.indices_in(Split::Train), manifest.indices_in(Split::Val), manifest.indices_in(Split::Test));
        Ok(SplitDataset { manifest, train, val, test })
    }

    /// The record indices of `split`.
    pub fn indices(&self, split: Split) -> &[usize] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// Patient ids of `indices`, as small integers (equal ids → equal numbers).
    pub fn patient_labels(&self, indices: &[usize]) -> Vec<usize> {
        let mut ids = std::collections::BTreeMap::new();
        indices
            .iter()
            .map(|&i| {
                let next = ids.len();
                *ids.entry(self.manifest.records[i].patient.as_str()).or_insert(next)
            })
            .collect()
    }
}

/// Decoded images of a manifest, resized and centre-cropped to a square once,
/// so training epochs do not decode again. Indexed by record index.
pub struct ImageBank {
    images: Vec<Option<Image>>,
}

impl ImageBank {
    /// Decodes the records `indices` of `manifest` (in parallel) at `size`×`size`.
    pub fn load(manifest: &Manifest, indices: &[usize], size: usize) -> Result<ImageBank> {
        let decoded: Vec<(usize, Image)> = indices
            .par_iter()
            .map(|&i| {
                let img = manifest.load_image(i).map_err(data_error)?;
                let square = if img.width == size && img.height == size { img } else { img.resize_center_crop(size) };
                Ok((i, square))
            })
            .collect::<Result<_>>()?;
        let mut images = vec![None; manifest.len()];
        for (i, img) in decoded {
            images[i] = Some(img);
        }
        Ok(ImageBank { images })
    }

    /// The image of record `i` (it must have been loaded).
    pub fn get(&self, i: usize) -> &Image {
        self.images[i].as_ref().expect("ImageBank: record was not loaded")
    }

    /// Clones of the images of `indices`.
    pub fn gather(&self, indices: &[usize]) -> Vec<Image> {
        indices.iter().map(|&i| self.get(i).clone()).collect()
    }
}

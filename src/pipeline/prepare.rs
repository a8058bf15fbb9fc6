//! The `prepare` stage: the real dataset as the run sees it — its manifest,
//! checked, with a patient-level split (kept if the dataset has one), written
//! to `work/real/manifest.jsonl` with image paths pointing at the original
//! files, and every real image's hash registered in the lineage.

use crate::data::{split_manifest, Manifest, SplitConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Patient-level split fractions (used only when the dataset has no split).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSettings {
    /// Fraction of patients in validation.
    pub val: f64,
    /// Fraction of patients in test.
    pub test: f64,
    /// Seed of the assignment.
    pub seed: u64,
}

impl Default for SplitSettings {
    fn default() -> Self {
        SplitSettings { val: 0.1, test: 0.2, seed: 0 }
    }
}

/// What `prepare` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// Images in the real dataset.
    pub images: usize,
    /// Distinct patients.
    pub patients: usize,
    /// Images per split.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Test images.
    pub test: usize,
    /// Whether the split was assigned here (false: the dataset brought its own).
    pub split_assigned: bool,
    /// Records without a report (not used as prompts).
    pub without_text: usize,
}

/// Read `data`, check every image decodes, split by patient if needed, and
/// write `out/manifest.jsonl`.
pub fn prepare_real(data: &Path, out: &Path, split: &SplitSettings) -> Result<PrepareSummary> {
    let mut manifest = Manifest::load(data)?;
    manifest.check_images()?;
    let without_text = manifest.records.iter().filter(|r| r.text.as_deref().is_none_or(|t| t.trim().is_empty())).count();
    if without_text == manifest.len() {
        return Err(Error::file(&manifest.path, "no record has a `text` field: Privacy Distillation needs the reports as prompts"));
    }
    if without_text > 0 {
        eprintln!(
            "prepare: {without_text} of {} records have no report; they train the diffusion model as unconditional \
             examples and are not used as prompts",
            manifest.len()
        );
    }
    let has_split = manifest.records.iter().all(|r| r.split.is_some());
    if !has_split {
        split_manifest(&mut manifest, &SplitConfig { val: split.val, test: split.test, seed: split.seed, stratify: true })?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let to_data = super::filter::relative_path(out, &manifest.root())?;
    let images = manifest.len();
    let patients = manifest.patients().len();
    for r in &mut manifest.records {
        if !Path::new(&r.image).is_absolute() {
            r.image = to_data.join(&r.image).to_string_lossy().replace('\\', "/");
        }
    }
    let count = |s: crate::data::Split| manifest.records.iter().filter(|r| r.split == Some(s)).count();
    let summary = PrepareSummary {
        images,
        patients,
        train: count(crate::data::Split::Train),
        val: count(crate::data::Split::Val),
        test: count(crate::data::Split::Test),
        split_assigned: !has_split,
        without_text,
    };
    let target: PathBuf = out.join("manifest.jsonl");
    crate::io::write_atomic_bytes(&target, Manifest::new(&target, manifest.records).to_jsonl().as_bytes())?;
    Ok(summary)
}

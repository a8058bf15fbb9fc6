//! Re-identification pairs: two images of the same patient (positive) or of two
//! patients (negative). Positives are few (a patient has a handful of images),
//! so, as in Privacy Distillation, positives are oversampled until they match
//! the negatives one to one.

use super::error::{DataError, DataResult};
use super::manifest::Manifest;
use crate::Rng;
use std::collections::BTreeMap;

/// Two manifest indices and whether they show the same patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub same_patient: bool,
}

/// Draws balanced pair sets from a subset of a manifest.
#[derive(Clone, Debug)]
pub struct PairSampler {
    /// Every unordered same-patient pair (i < j).
    positives: Vec<(usize, usize)>,
    /// Image indices of each patient.
    by_patient: Vec<Vec<usize>>,
    /// Patient number of each image in the subset.
    patient_of: BTreeMap<usize, usize>,
    subset: Vec<usize>,
}

impl PairSampler {
    /// Indexes `subset` (manifest indices, e.g. the train split). It needs at
    /// least two patients and one patient with two images.
    pub fn new(manifest: &Manifest, subset: &[usize]) -> DataResult<PairSampler> {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in subset {
            groups.entry(manifest.records[i].patient.as_str()).or_default().push(i);
        }
        let by_patient: Vec<Vec<usize>> = groups.into_values().collect();
        let mut positives = Vec::new();
        let mut patient_of = BTreeMap::new();
        for (p, imgs) in by_patient.iter().enumerate() {
            for (x, &i) in imgs.iter().enumerate() {
                patient_of.insert(i, p);
                for &j in &imgs[x + 1..] {
                    positives.push((i, j));
                }
            }
        }
        if by_patient.len() < 2 {
            return Err(DataError::Invalid(format!(
                "re-identification pairs need at least 2 patients, the subset has {}",
                by_patient.len()
            )));
        }
        if positives.is_empty() {
            return Err(DataError::Invalid("re-identification pairs need a patient with at least 2 images; the subset has none".into()));
        }
        Ok(PairSampler { positives, by_patient, patient_of, subset: subset.to_vec() })
    }

    /// How many distinct positive pairs exist.
    pub fn n_positive_pairs(&self) -> usize {
        self.positives.len()
    }

    /// How many patients the subset holds.
    pub fn n_patients(&self) -> usize {
        self.by_patient.len()
    }

    /// `n_negatives` random negative pairs plus as many positives, shuffled.
    /// Positives cycle through reshuffled passes over all positive pairs, so each
    /// is used ⌊n/P⌋ or ⌈n/P⌉ times (the oversampling).
    pub fn epoch(&self, n_negatives: usize, rng: &mut Rng) -> Vec<Pair> {
        let mut pairs = Vec::with_capacity(2 * n_negatives);
        let mut pass = self.positives.clone();
        let mut used = pass.len();
        for _ in 0..n_negatives {
            if used == pass.len() {
                rng.shuffle(&mut pass);
                used = 0;
            }
            let (a, b) = pass[used];
            used += 1;
            let (a, b) = if rng.uniform() < 0.5 { (a, b) } else { (b, a) };
            pairs.push(Pair { a, b, same_patient: true });
        }
        for _ in 0..n_negatives {
            let a = self.subset[rng.below(self.subset.len())];
            let pa = self.patient_of[&a];
            // Draw the other patient among the rest uniformly, then one of its images.
            let mut pb = rng.below(self.by_patient.len() - 1);
            if pb >= pa {
                pb += 1;
            }
            let imgs = &self.by_patient[pb];
            let b = imgs[rng.below(imgs.len())];
            pairs.push(Pair { a, b, same_patient: false });
        }
        rng.shuffle(&mut pairs);
        pairs
    }
}

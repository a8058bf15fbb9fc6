//! Patient-level train/val/test splits: a patient's images are all on one
//! side, the assignment is a pure function of the manifest and the seed, and
//! patients are stratified by label where the data allow.
//!
//! Stratification: each patient gets one stratum, its rarest positive label in
//! the dataset (or "no label"), the usual approximation to iterative
//! stratification for multi-label data. Within a stratum, patients (sorted by
//! id, then shuffled by the seed) go one at a time to the split with the
//! largest deficit: how far it is below its target share of the stratum's
//! patients plus how far below its target share of all patients so far. Large
//! strata are thus divided in proportion; strata too small to divide fill
//! whichever split the overall counts need.

use super::error::{DataError, DataResult};
use super::manifest::{Manifest, Split};
use crate::Rng;
use std::collections::BTreeMap;
use std::fmt;

/// Split fractions and seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitConfig {
    pub val: f64,
    pub test: f64,
    pub seed: u64,
    /// Balance label frequencies across splits.
    pub stratify: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { val: 0.1, test: 0.1, seed: 0, stratify: true }
    }
}

/// Counts per split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitCounts {
    pub patients: usize,
    pub images: usize,
    /// Positive images per label.
    pub labels: BTreeMap<String, usize>,
}

/// What a split did.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitReport {
    pub seed: u64,
    pub strata: usize,
    pub counts: BTreeMap<Split, SplitCounts>,
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "patient-level split (seed {}, {} label strata)", self.seed, self.strata)?;
        writeln!(f, "{:<6} {:>9} {:>7}", "split", "patients", "images")?;
        for (split, c) in &self.counts {
            writeln!(f, "{:<6} {:>9} {:>7}", split.as_str(), c.patients, c.images)?;
        }
        let labels: Vec<&String> = {
            let mut l: Vec<&String> = self.counts.values().flat_map(|c| c.labels.keys()).collect();
            l.sort();
            l.dedup();
            l
        };
        if !labels.is_empty() {
            writeln!(f, "positive images per label (train / val / test):")?;
            for name in labels {
                let per: Vec<String> = Split::ALL
                    .iter()
                    .map(|s| self.counts.get(s).and_then(|c| c.labels.get(name)).copied().unwrap_or(0).to_string())
                    .collect();
                writeln!(f, "  {name}: {}", per.join(" / "))?;
            }
        }
        Ok(())
    }
}

/// Assigns a split to every record, by patient.
pub fn assign_splits(manifest: &Manifest, cfg: &SplitConfig) -> DataResult<(Vec<Split>, SplitReport)> {
    let train = 1.0 - cfg.val - cfg.test;
    if !(0.0..=1.0).contains(&cfg.val) || !(0.0..=1.0).contains(&cfg.test) || train < 0.0 {
        return Err(DataError::Invalid(format!(
            "split fractions val={} test={} must be in [0, 1] and sum to at most 1",
            cfg.val, cfg.test
        )));
    }
    let target = [train, cfg.val, cfg.test];
    let patients = manifest.patients();

    // Dataset-wide positives per label decide which label is "rarest".
    let mut positives: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &manifest.records {
        for (name, &v) in r.labels.iter().flatten() {
            if v == 1 {
                *positives.entry(name.as_str()).or_default() += 1;
            }
        }
    }
    let mut strata: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (&patient, idx) in &patients {
        let key = if cfg.stratify {
            idx.iter()
                .flat_map(|&i| manifest.records[i].labels.iter().flatten().filter(|(_, &v)| v == 1).map(|(n, _)| n.as_str()))
                .min_by_key(|n| (positives[n], *n))
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        strata.entry(key).or_default().push(patient);
    }

    let mut overall = [0usize; 3];
    let mut side: BTreeMap<&str, Split> = BTreeMap::new();
    for (s, (_, members)) in strata.iter().enumerate() {
        let mut members = members.clone();
        Rng::new(cfg.seed).fork(s as u64).shuffle(&mut members);
        let mut local = [0usize; 3];
        for (n, p) in members.iter().enumerate() {
            let n_after = (n + 1) as f64;
            let total_after = (overall.iter().sum::<usize>() + 1) as f64;
            let pick = (0..3)
                .filter(|&k| target[k] > 0.0)
                .max_by(|&a, &b| {
                    let deficit = |k: usize| (target[k] * n_after - local[k] as f64) + (target[k] * total_after - overall[k] as f64);
                    deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a))
                })
                .unwrap_or(0);
            local[pick] += 1;
            overall[pick] += 1;
            side.insert(p, Split::ALL[pick]);
        }
    }

    let splits: Vec<Split> = manifest.records.iter().map(|r| side[r.patient.as_str()]).collect();
    let mut counts: BTreeMap<Split, SplitCounts> = Split::ALL.iter().map(|&s| (s, SplitCounts::default())).collect();
    for (&patient, idx) in &patients {
        let c = counts.get_mut(&side[patient]).expect("every split has an entry");
        c.patients += 1;
        c.images += idx.len();
        for &i in idx {
            for (name, &v) in manifest.records[i].labels.iter().flatten() {
                *c.labels.entry(name.clone()).or_default() += v as usize;
            }
        }
    }
    Ok((splits, SplitReport { seed: cfg.seed, strata: strata.len(), counts }))
}

/// Splits the manifest, sets each record's `split`, and returns the report.
pub fn split_manifest(manifest: &mut Manifest, cfg: &SplitConfig) -> DataResult<SplitReport> {
    let (splits, report) = assign_splits(manifest, cfg)?;
    for (r, s) in manifest.records.iter_mut().zip(splits) {
        r.split = Some(s);
    }
    Ok(report)
}

//! `privdistill data stats`: what a dataset holds.

use super::manifest::Manifest;
use super::tokens::TokenCounter;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Order statistics of a count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub mean: f64,
}

impl Summary {
    /// Summarises `values` (all zero if empty).
    pub fn of(values: &[usize]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Summary { min: v[0], median: at(0.5), p95: at(0.95), max: v[v.len() - 1], mean: v.iter().sum::<usize>() as f64 / v.len() as f64 }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "min {}, median {}, p95 {}, max {}, mean {:.2}", self.min, self.median, self.p95, self.max, self.mean)
    }
}

/// A dataset's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetStats {
    pub manifest: String,
    pub images: usize,
    pub patients: usize,
    pub images_per_patient: Summary,
    /// Patients by how many images they have.
    pub images_per_patient_hist: BTreeMap<usize, usize>,
    pub patients_with_2_or_more: usize,
    /// Positive images per label.
    pub labels: BTreeMap<String, usize>,
    pub text_nonempty: usize,
    /// Token counts of non-empty texts.
    pub text_tokens: Summary,
    /// Non-empty texts longer than `token_limit`.
    pub text_over_limit: usize,
    pub token_limit: usize,
    pub views: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
}

/// Computes the summary; `tokens` counts text length, `token_limit` is reported against.
pub fn dataset_stats(m: &Manifest, tokens: &dyn TokenCounter, token_limit: usize) -> DatasetStats {
    let patients = m.patients();
    let per: Vec<usize> = patients.values().map(Vec::len).collect();
    let mut hist = BTreeMap::new();
    for &n in &per {
        *hist.entry(n).or_default() += 1;
    }
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut views: BTreeMap<String, usize> = BTreeMap::new();
    let mut splits: BTreeMap<String, usize> = BTreeMap::new();
    let mut lengths = Vec::new();
    for r in &m.records {
        for (name, &v) in r.labels.iter().flatten() {
            *labels.entry(name.clone()).or_default() += v as usize;
        }
        *views.entry(r.view.clone().unwrap_or_else(|| "(none)".into())).or_default() += 1;
        *splits.entry(r.split.map_or("(none)".into(), |s| s.to_string())).or_default() += 1;
        if let Some(t) = r.text.as_deref().filter(|t| !t.trim().is_empty()) {
            lengths.push(tokens.count_tokens(t));
        }
    }
    DatasetStats {
        manifest: m.path.display().to_string(),
        images: m.len(),
        patients: patients.len(),
        images_per_patient: Summary::of(&per),
        images_per_patient_hist: hist,
        patients_with_2_or_more: per.iter().filter(|&&n| n >= 2).count(),
        labels,
        text_nonempty: lengths.len(),
        text_over_limit: lengths.iter().filter(|&&n| n > token_limit).count(),
        text_tokens: Summary::of(&lengths),
        token_limit,
        views,
        splits,
    }
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset: {}", self.manifest)?;
        writeln!(f, "images: {}", self.images)?;
        writeln!(f, "patients: {} ({} with 2 or more images)", self.patients, self.patients_with_2_or_more)?;
        writeln!(f, "images per patient: {}", self.images_per_patient)?;
        let hist: Vec<String> = self.images_per_patient_hist.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        writeln!(f, "  patients by image count: {}", hist.join("  "))?;
        writeln!(
            f,
            "texts: {} non-empty; tokens {}; {} over {} tokens",
            self.text_nonempty, self.text_tokens, self.text_over_limit, self.token_limit
        )?;
        let mut labels: Vec<(&String, &usize)> = self.labels.iter().collect();
        labels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        writeln!(f, "label positives ({} labels):", labels.len())?;
        for (name, n) in labels {
            writeln!(f, "  {name}: {n}")?;
        }
        let join = |m: &BTreeMap<String, usize>| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
        writeln!(f, "views: {}", join(&self.views))?;
        writeln!(f, "splits: {}", join(&self.splits))
    }
}

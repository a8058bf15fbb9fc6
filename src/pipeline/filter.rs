//! The `filter` stage: reads `scores.jsonl` and the synthetic dataset, applies
//! the Privacy Distillation rule ([`crate::privacy::filter`]) and writes the
//! filtered dataset (a manifest pointing at the kept synthetic images), the
//! decision log and a summary with R_reid and the counts.

use crate::data::{Manifest, Record};
use crate::privacy::filter::{apply_filter, Decision, FilterRule, FilterSummary, ScoreRecord};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings of the `filter` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// `scores.jsonl` written by `score`.
    pub scores: PathBuf,
    /// The synthetic dataset folder the scores refer to.
    pub synth: PathBuf,
    /// Output folder: `manifest.jsonl`, `decisions.jsonl`, `filter_summary.json`.
    pub out: PathBuf,
    /// δ and samples kept per prompt.
    #[serde(default)]
    pub rule: FilterRule,
}

/// Read a `scores.jsonl`; errors name the file and line.
pub fn read_scores(path: &Path) -> Result<Vec<ScoreRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut scores = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: ScoreRecord = serde_json::from_str(line).map_err(|e| Error::file(path, format!("line {}: {e}", n + 1)))?;
        scores.push(record);
    }
    Ok(scores)
}

/// Run the stage.
pub fn run(cfg: &FilterConfig) -> Result<FilterSummary> {
    cfg.rule.validate()?;
    let scores = read_scores(&cfg.scores)?;
    let synth = Manifest::load(&cfg.synth)?;
    let by_image: BTreeMap<&str, usize> = synth.records.iter().enumerate().map(|(i, r)| (r.image.as_str(), i)).collect();
    for s in &scores {
        if !by_image.contains_key(s.image.as_str()) {
            return Err(Error::file(&cfg.scores, format!("scores image {} which is not in {}", s.image, synth.path.display())));
        }
    }
    let scored: std::collections::BTreeSet<&str> = scores.iter().map(|s| s.image.as_str()).collect();
    if let Some(r) = synth.records.iter().find(|r| !scored.contains(r.image.as_str())) {
        return Err(Error::file(&cfg.scores, format!("has no score for {} (run `score` to completion first)", r.image)));
    }
    let (decisions, summary) = apply_filter(&scores, &cfg.rule)?;

    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let to_synth = relative_path(&cfg.out, &synth.root())?;
    let kept: Vec<Record> = decisions
        .iter()
        .filter(|d| d.kept)
        .map(|d| {
            let mut record = synth.records[by_image[d.score.image.as_str()]].clone();
            record.image = to_synth.join(&record.image).to_string_lossy().replace('\\', "/");
            record
        })
        .collect();
    let log: String = decisions
        .iter()
        .map(|d: &Decision| serde_json::to_string(d).map(|s| s + "\n"))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::msg(format!("filter: {e}")))?;
    crate::io::write_atomic_bytes(cfg.out.join("decisions.jsonl"), log.as_bytes())?;
    crate::io::write_atomic_json(cfg.out.join("filter_summary.json"), &summary)?;
    // The manifest last: its presence means the stage finished.
    let manifest = Manifest::new(cfg.out.join("manifest.jsonl"), kept);
    crate::io::write_atomic_bytes(&manifest.path, manifest.to_jsonl().as_bytes())?;
    Ok(summary)
}

/// The path of `to` relative to the folder `from` (both made absolute first).
pub fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let abs = |p: &Path| -> Result<PathBuf> { std::path::absolute(p).map_err(|e| Error::io(p, e)) };
    let (from, to) = (normalise(&abs(from)?), normalise(&abs(to)?));
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push("..");
    }
    for c in to.components().skip(common) {
        rel.push(c);
    }
    Ok(rel)
}

fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

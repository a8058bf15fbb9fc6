//! The Privacy Distillation filter rule: drop every synthetic sample whose
//! re-identification score reaches δ, then keep, per prompt, the sample(s)
//! whose image–text alignment is highest. Every sample gets a decision and a
//! reason, and a prompt that loses all its samples is reported, not lost.
//!
//! Beyond the paper, the copy gate ([`super::copy_gate`]) also drops a sample
//! whose calibrated pixel similarity to a real image reaches `copy_quantile`
//! (on by default; `copy_gate = false` gives the paper's rule exactly).
//! R_reid stays the paper's: the share of samples with s_reid ≥ δ.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The scores of one synthetic image (one line of `scores.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRecord {
    /// The image, relative to the synthetic dataset folder.
    pub image: String,
    /// Index of the prompt's record in the real manifest; `None` for an unconditional sample.
    pub prompt_index: Option<u64>,
    /// Which of the prompt's samples this is.
    pub sample_index: u64,
    /// Probability that the image shows the same patient as `matched_real`.
    pub s_reid: f64,
    /// The real image it was compared with, relative to the real dataset folder
    /// (the prompt's own image, or the retrieval net's nearest neighbour).
    pub matched_real: String,
    /// Cosine similarity of the image's and the prompt's embeddings; `None` when unconditional.
    pub s_align: Option<f64>,
    /// The copy gate's calibrated pixel similarity to the most similar real image, in [0, 1]
    /// (see [`super::copy_gate`]); `None` when scored without the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_copy: Option<f64>,
    /// The real image most similar in pixels, relative to the real dataset folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_match: Option<String>,
}

/// Filter settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterRule {
    /// Samples with `s_reid ≥ delta` are dropped (the paper: 0.5).
    pub delta: f64,
    /// How many samples to keep per prompt, best `s_align` first (the paper: 1).
    pub keep_per_prompt: usize,
    /// Also drop samples with `s_copy ≥ copy_quantile` (not in the paper; see [`super::copy_gate`]).
    pub copy_gate: bool,
    /// The copy gate's threshold on `s_copy`: about the share of new patients' real images it would pass.
    pub copy_quantile: f64,
}

impl Default for FilterRule {
    fn default() -> Self {
        FilterRule { delta: 0.5, keep_per_prompt: 1, copy_gate: true, copy_quantile: 0.99 }
    }
}

impl FilterRule {
    /// Check δ ∈ [0, 1] and k ≥ 1.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.delta) {
            return Err(Error::msg(format!("filter: delta = {} must lie in [0, 1] (s_reid is a probability)", self.delta)));
        }
        if self.keep_per_prompt == 0 {
            return Err(Error::msg("filter: keep_per_prompt must be at least 1"));
        }
        if !(self.copy_quantile > 0.0 && self.copy_quantile <= 1.0) {
            return Err(Error::msg(format!(
                "filter: copy_quantile = {} must lie in (0, 1] (s_copy is a calibrated fraction)",
                self.copy_quantile
            )));
        }
        Ok(())
    }

    /// Whether the copy gate drops this sample.
    pub fn is_near_copy(&self, score: &ScoreRecord) -> bool {
        self.copy_gate && score.s_copy.is_some_and(|c| c >= self.copy_quantile)
    }

    /// Whether the rule drops this sample before any ranking: re-identified, or a near-copy.
    pub fn drops(&self, score: &ScoreRecord) -> bool {
        score.s_reid >= self.delta || self.is_near_copy(score)
    }
}

/// Why a sample was kept or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `s_reid ≥ δ`: the sample re-identifies its patient.
    Reidentified,
    /// `s_reid < δ` but `s_copy ≥ copy_quantile`: a pixel-level near-copy of a real image.
    NearCopy,
    /// Passed the privacy checks and ranks within the top k of its prompt by `s_align`.
    BestAlignment,
    /// Passed the privacy checks but another sample of the prompt aligns better.
    Outranked,
    /// Unconditional sample that passed the privacy checks (no alignment ranking applies).
    UnconditionalPassed,
}

/// The filter's decision on one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The scores it was decided on.
    #[serde(flatten)]
    pub score: ScoreRecord,
    /// Whether it goes into the filtered set.
    pub kept: bool,
    /// Why.
    pub reason: Reason,
    /// Rank by `s_align` among the prompt's samples that passed (1 = best); `None` if dropped or unconditional.
    pub rank: Option<usize>,
}

/// Counts and means over one filtering run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSummary {
    /// δ used.
    pub delta: f64,
    /// Samples per prompt kept at most.
    pub keep_per_prompt: usize,
    /// Samples scored.
    pub generated: usize,
    /// Samples with `s_reid ≥ δ`.
    pub reidentified: usize,
    /// Re-identification ratio R_reid = reidentified / generated.
    pub r_reid: f64,
    /// Whether the copy gate was applied, and its threshold on `s_copy`.
    pub copy_gate: Option<f64>,
    /// Samples with `s_copy ≥ copy_quantile` (whether or not also re-identified); 0 without the gate.
    pub near_copies: usize,
    /// Samples dropped by the copy gate alone (`s_reid < δ`).
    pub dropped_near_copy: usize,
    /// Samples kept.
    pub kept: usize,
    /// Samples dropped (re-identified, near-copy or outranked).
    pub dropped: usize,
    /// Distinct prompts among the samples.
    pub prompts: usize,
    /// Prompts all of whose samples were dropped by the rule: they contribute nothing to the filtered set.
    pub prompts_all_dropped: Vec<u64>,
    /// Mean `s_reid` over all samples.
    pub s_reid_mean_all: f64,
    /// Mean `s_align` over all conditional samples (`None` if there are none).
    pub s_align_mean_all: Option<f64>,
    /// Mean `s_align` over the kept conditional samples.
    pub s_align_mean_kept: Option<f64>,
}

/// Apply the rule. Errors on a non-finite score or a duplicate
/// (prompt, sample) pair, naming the image.
pub fn apply_filter(scores: &[ScoreRecord], rule: &FilterRule) -> Result<(Vec<Decision>, FilterSummary)> {
    rule.validate()?;
    let mut seen = std::collections::BTreeSet::new();
    for s in scores {
        if !s.s_reid.is_finite() || !(0.0..=1.0).contains(&s.s_reid) {
            return Err(Error::msg(format!("filter: {}: s_reid = {} is not a probability", s.image, s.s_reid)));
        }
        if let Some(a) = s.s_align {
            if !a.is_finite() {
                return Err(Error::msg(format!("filter: {}: s_align = {a} is not finite", s.image)));
            }
        }
        if s.prompt_index.is_some() && s.s_align.is_none() {
            return Err(Error::msg(format!("filter: {}: conditional sample without s_align", s.image)));
        }
        match s.s_copy {
            Some(c) if !(0.0..=1.0).contains(&c) => {
                return Err(Error::msg(format!("filter: {}: s_copy = {c} is not a fraction in [0, 1]", s.image)));
            }
            None if rule.copy_gate => {
                return Err(Error::msg(format!(
                    "filter: {}: no s_copy — the scores were written without the copy gate; rescore, or set copy_gate = false",
                    s.image
                )));
            }
            _ => {}
        }
        if !seen.insert((s.prompt_index, s.sample_index, s.image.as_str())) {
            return Err(Error::msg(format!("filter: {}: scored twice", s.image)));
        }
    }

    let mut decisions: Vec<Option<Decision>> = vec![None; scores.len()];
    let mut by_prompt: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, s) in scores.iter().enumerate() {
        match s.prompt_index {
            _ if s.s_reid >= rule.delta => decisions[i] = Some(decide(s, false, Reason::Reidentified, None)),
            _ if rule.is_near_copy(s) => decisions[i] = Some(decide(s, false, Reason::NearCopy, None)),
            None => decisions[i] = Some(decide(s, true, Reason::UnconditionalPassed, None)),
            Some(p) => by_prompt.entry(p).or_default().push(i),
        }
    }
    // Deterministic ranking: best s_align first; ties go to the lower sample index.
    for members in by_prompt.values_mut() {
        members.sort_by(|&a, &b| {
            let (sa, sb) = (&scores[a], &scores[b]);
            sb.s_align
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&sa.s_align.unwrap_or(f64::NEG_INFINITY))
                .then(sa.sample_index.cmp(&sb.sample_index))
        });
        for (rank, &i) in members.iter().enumerate() {
            let keep = rank < rule.keep_per_prompt;
            let reason = if keep { Reason::BestAlignment } else { Reason::Outranked };
            decisions[i] = Some(decide(&scores[i], keep, reason, Some(rank + 1)));
        }
    }
    let decisions: Vec<Decision> = decisions.into_iter().map(|d| d.expect("every sample is decided exactly once")).collect();

    let all_prompts: std::collections::BTreeSet<u64> = scores.iter().filter_map(|s| s.prompt_index).collect();
    let prompts_all_dropped: Vec<u64> = all_prompts.iter().copied().filter(|p| !by_prompt.contains_key(p)).collect();
    let reidentified = decisions.iter().filter(|d| d.reason == Reason::Reidentified).count();
    let dropped_near_copy = decisions.iter().filter(|d| d.reason == Reason::NearCopy).count();
    let kept = decisions.iter().filter(|d| d.kept).count();
    let summary = FilterSummary {
        delta: rule.delta,
        keep_per_prompt: rule.keep_per_prompt,
        generated: scores.len(),
        reidentified,
        r_reid: if scores.is_empty() { 0.0 } else { reidentified as f64 / scores.len() as f64 },
        copy_gate: rule.copy_gate.then_some(rule.copy_quantile),
        near_copies: scores.iter().filter(|s| rule.is_near_copy(s)).count(),
        dropped_near_copy,
        kept,
        dropped: scores.len() - kept,
        prompts: all_prompts.len(),
        prompts_all_dropped,
        s_reid_mean_all: mean(scores.iter().map(|s| s.s_reid)).unwrap_or(0.0),
        s_align_mean_all: mean(scores.iter().filter_map(|s| s.s_align)),
        s_align_mean_kept: mean(decisions.iter().filter(|d| d.kept).filter_map(|d| d.score.s_align)),
    };
    Ok((decisions, summary))
}

fn decide(score: &ScoreRecord, kept: bool, reason: Reason, rank: Option<usize>) -> Decision {
    Decision { score: score.clone(), kept, reason, rank }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

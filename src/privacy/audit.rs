//! How well the re-identification filter does its job, measured rather than
//! assumed. Post-hoc filters are known to miss near-duplicates, so the audit
//! asks the filter (s_reid ≥ δ flags a pair) three questions:
//!
//! - **held-out real pairs**: same-patient pairs of unseen patients should be
//!   flagged (sensitivity), different-patient pairs not (specificity);
//! - **augmented copies** of training images — flipped, cropped, rotated,
//!   contrast-changed, noised, blurred at graded strengths — are copies of a
//!   real image and should all be flagged; the same attacked copy against
//!   another patient's image should not be;
//! - **samples of a memorising model** (optional): every sample of a model
//!   over-trained until it reproduces its training images, against the real
//!   image of its prompt, should be flagged. Which samples really are copies
//!   is decided without the network, by pixel correlation with the most
//!   similar real image ([`PixelIndex`]); [`near_copy_audit`] then reports the
//!   fraction of those near-copies the filter removes.
//!
//! Each rate comes with a percentile-bootstrap 95 % interval.

pub use super::pixel_index::PixelIndex;
use super::reid::ReidScorer;
use crate::data::Image;
use crate::eval::metrics::{bootstrap_ci, Estimate};
use crate::{Result, Rng};
use serde::{Deserialize, Serialize};

/// An image transformation a near-duplicate may have undergone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attack {
    /// Horizontal mirror (the same at every strength above 0).
    Flip,
    /// Centre crop keeping a side of 1 − strength/2, scaled back to full size.
    Crop,
    /// Rotation about the centre by 30° × strength.
    Rotation,
    /// Contrast about the mean scaled by 1 − 0.8 × strength.
    Contrast,
    /// Additive Gaussian noise, σ = 0.2 × strength (pixel values in [0, 1]).
    Noise,
    /// Gaussian blur, σ = strength × side / 32 pixels.
    Blur,
}

impl Attack {
    /// Every attack, in table order.
    pub const ALL: [Attack; 6] = [Attack::Flip, Attack::Crop, Attack::Rotation, Attack::Contrast, Attack::Noise, Attack::Blur];

    /// The name used in tables and configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Attack::Flip => "flip",
            Attack::Crop => "crop",
            Attack::Rotation => "rotation",
            Attack::Contrast => "contrast",
            Attack::Noise => "noise",
            Attack::Blur => "blur",
        }
    }

    /// `img` attacked at `strength` ∈ [0, 1] (0 leaves it unchanged); `rng` drives the noise.
    pub fn apply(self, img: &Image, strength: f64, rng: &mut Rng) -> Image {
        let s = strength.clamp(0.0, 1.0);
        if s == 0.0 {
            return img.clone();
        }
        match self {
            Attack::Flip => flip(img),
            Attack::Crop => {
                let keep = 1.0 - 0.5 * s;
                let (w, h) = (((img.width as f64 * keep).round() as usize).max(1), ((img.height as f64 * keep).round() as usize).max(1));
                img.center_crop(w, h).resize(img.width, img.height)
            }
            Attack::Rotation => rotate(img, (30.0 * s).to_radians()),
            Attack::Contrast => {
                let factor = (1.0 - 0.8 * s) as f32;
                let mean = img.data.iter().sum::<f32>() / img.data.len() as f32;
                map_pixels(img, |v| (v - mean) * factor + mean)
            }
            Attack::Noise => {
                let noise = rng.normal_vec(img.data.len());
                let std = 0.2 * s;
                let data = img.data.iter().zip(noise).map(|(&v, z)| (v as f64 + std * z).clamp(0.0, 1.0) as f32).collect();
                Image { data, ..img.clone() }
            }
            Attack::Blur => img.gaussian_blur(s * img.width.min(img.height) as f64 / 32.0),
        }
    }
}

fn map_pixels(img: &Image, f: impl Fn(f32) -> f32) -> Image {
    Image { data: img.data.iter().map(|&v| f(v).clamp(0.0, 1.0)).collect(), ..img.clone() }
}

fn flip(img: &Image) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..img.height {
        for x in (0..img.width).rev() {
            let at = (y * img.width + x) * c;
            data.extend_from_slice(&img.data[at..at + c]);
        }
    }
    Image { data, ..img.clone() }
}

/// Rotation about the centre with bilinear sampling; corners take the nearest edge pixel.
fn rotate(img: &Image, angle: f64) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let (cos, sin) = (angle.cos(), angle.sin());
    let at = |x: usize, y: usize, ch: usize| img.data[(y * w + x) * c + ch];
    let mut data = vec![0f32; img.data.len()];
    for oy in 0..h {
        for ox in 0..w {
            let (u, v) = (ox as f64 + 0.5 - cx, oy as f64 + 0.5 - cy);
            let sx = (cx + cos * u + sin * v - 0.5).clamp(0.0, (w - 1) as f64);
            let sy = (cy - sin * u + cos * v - 0.5).clamp(0.0, (h - 1) as f64);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
            for ch in 0..c {
                let top = at(x0, y0, ch) * (1.0 - fx) + at(x1, y0, ch) * fx;
                let bottom = at(x0, y1, ch) * (1.0 - fx) + at(x1, y1, ch) * fx;
                data[(oy * w + ox) * c + ch] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    Image { data, ..img.clone() }
}

/// A rate with its bootstrap interval and the count it is over.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Pairs the rate is over.
    pub n: usize,
    /// The rate and its 95 % interval.
    pub estimate: Estimate,
}

/// The fraction of `hits` that are true, with a percentile-bootstrap 95 % interval;
/// `None` when there are no items.
pub fn rate(hits: &[bool], resamples: usize, seed: u64) -> Result<Option<Rate>> {
    if hits.is_empty() {
        return Ok(None);
    }
    let fraction = |idx: &[usize]| Ok(idx.iter().filter(|&&i| hits[i]).count() as f64 / idx.len() as f64);
    let estimate = if resamples == 0 {
        let value = fraction(&(0..hits.len()).collect::<Vec<_>>())?;
        Estimate { value, lo: value, hi: value, level: 0.95, resamples: 0 }
    } else {
        bootstrap_ci(hits.len(), resamples, 0.95, seed, fraction)?
    };
    Ok(Some(Rate { n: hits.len(), estimate }))
}

/// One row of the audit table: a test set (and attack strength) with the filter's rates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// `heldout`, `augmented` or `memorised`.
    pub set: String,
    /// The attack, for augmented copies.
    pub attack: Option<Attack>,
    /// The attack strength in [0, 1], for augmented copies.
    pub strength: Option<f64>,
    /// Fraction of should-be-flagged pairs (same patient, or copies) with s_reid ≥ δ.
    pub sensitivity: Option<Rate>,
    /// Fraction of should-pass pairs (different patients) with s_reid < δ.
    pub specificity: Option<Rate>,
    /// Mean s_reid of the should-be-flagged pairs.
    pub mean_positive_score: Option<f64>,
}

/// The rates of one set of scored pairs.
pub fn audit_row(
    set: &str,
    attack: Option<(Attack, f64)>,
    positive_scores: &[f32],
    negative_scores: &[f32],
    delta: f64,
    resamples: usize,
    seed: u64,
) -> Result<AuditRow> {
    let flagged: Vec<bool> = positive_scores.iter().map(|&s| s as f64 >= delta).collect();
    let passed: Vec<bool> = negative_scores.iter().map(|&s| (s as f64) < delta).collect();
    let mean = (!positive_scores.is_empty()).then(|| positive_scores.iter().map(|&s| s as f64).sum::<f64>() / positive_scores.len() as f64);
    Ok(AuditRow {
        set: set.to_string(),
        attack: attack.map(|a| a.0),
        strength: attack.map(|a| a.1),
        sensitivity: rate(&flagged, resamples, seed)?,
        specificity: rate(&passed, resamples, seed ^ 1)?,
        mean_positive_score: mean,
    })
}

/// The threshold and the bootstrap settings of an audit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuditSettings {
    /// The filter's threshold δ: s_reid ≥ δ flags a pair.
    pub delta: f64,
    /// Bootstrap resamples per interval (0: no intervals).
    pub resamples: usize,
    /// Seeds the attacks' noise and the bootstrap.
    pub seed: u64,
    /// The copy gate's threshold on s_copy when the filter applies the gate (`None`: the paper's rule only).
    pub copy_quantile: Option<f64>,
}

/// Audits the filter on augmented copies: each image of `originals` against its
/// attacked copy (should be flagged) and the attacked copy against `others[i]`, an
/// image of another patient (should pass), for every attack and strength.
/// `progress` is called after each (attack, strength).
pub fn audit_augmented(
    scorer: &ReidScorer,
    originals: &[Image],
    others: &[Image],
    attacks: &[Attack],
    strengths: &[f64],
    settings: AuditSettings,
    mut progress: impl FnMut(),
) -> Result<Vec<AuditRow>> {
    let AuditSettings { delta, resamples, seed, .. } = settings;
    let original_emb = scorer.embed(originals)?;
    let other_emb = scorer.embed(others)?;
    let mut rows = Vec::new();
    for (a, &attack) in attacks.iter().enumerate() {
        for (s, &strength) in strengths.iter().enumerate() {
            let rng = Rng::new(seed).fork(a as u64).fork(s as u64);
            let copies: Vec<Image> =
                originals.iter().enumerate().map(|(i, img)| attack.apply(img, strength, &mut rng.fork(i as u64))).collect();
            let copy_emb = scorer.embed(&copies)?;
            let positives = scorer.score_embeddings(&original_emb, &copy_emb)?;
            let negatives = scorer.score_embeddings(&other_emb, &copy_emb)?;
            rows.push(audit_row("augmented", Some((attack, strength)), &positives, &negatives, delta, resamples, seed)?);
            progress();
        }
    }
    Ok(rows)
}

/// Whose image a near-copy reproduces, relative to the prompt it was sampled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyOf {
    /// The prompt's own real image.
    PromptImage,
    /// Another image of the prompt's patient.
    PromptPatient,
    /// An image of a different patient (e.g. one with the same report text).
    OtherPatient,
}

/// One synthetic sample as the near-copy audit sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleCopyCheck {
    /// Correlation with the most similar real image.
    pub correlation: f64,
    /// Whose image that is, relative to the prompt.
    pub copy_of: CopyOf,
    /// s_reid against the prompt's real image — the paper's filter score.
    pub s_reid_prompt: f32,
    /// The score the filter actually decided on (from `score`'s output; it may also
    /// have compared the sample with its nearest real images), if known.
    pub s_reid_filter: Option<f64>,
    /// s_reid against the most similar real image.
    pub s_reid_nearest: f32,
    /// The copy gate's s_copy recorded by `score`, if known.
    pub s_copy_filter: Option<f64>,
}

/// Does the filter remove the samples that really are copies of real images?
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearCopyAudit {
    /// Residual correlation at or above which a sample counts as a near-copy
    /// (by default the largest other-patient correlation among the real images).
    pub threshold: f64,
    /// Thumbnail side the images were compared at.
    pub side: usize,
    /// Samples examined.
    pub samples: usize,
    /// Real images' correlation with their most similar image of another patient: median and maximum.
    /// The threshold should sit at or above the maximum, or two patients' X-rays would count as copies.
    pub distinct_real_median: f64,
    /// See `distinct_real_median`.
    pub distinct_real_max: f64,
    /// Samples' correlation with their most similar real image: median and maximum.
    pub sample_median: f64,
    /// See `sample_median`.
    pub sample_max: f64,
    /// Samples at or above the threshold.
    pub near_copies: usize,
    /// Near-copies of the prompt's own image.
    pub of_prompt_image: usize,
    /// Near-copies of another image of the prompt's patient.
    pub of_prompt_patient: usize,
    /// Near-copies of another patient's image.
    pub of_other_patient: usize,
    /// Fraction of near-copies the filter removes: its recorded s_reid ≥ δ (or, with no
    /// scores given, s_reid against the prompt's image ≥ δ), or, with the copy gate,
    /// its recorded s_copy ≥ the gate's quantile.
    pub removed: Option<Rate>,
    /// Fraction of the other samples (below the threshold) the filter removes, by the same
    /// rule. A filter that removes every sample removes every copy too; this says what the
    /// copy removal cost.
    pub removed_others: Option<Rate>,
    /// The copy gate's threshold on s_copy, when the filter applied it.
    pub copy_quantile: Option<f64>,
    /// Of the near-copies: the fraction the re-identification rule alone (s_reid ≥ δ) removes.
    pub removed_by_reid: Option<Rate>,
    /// Of the near-copies: the fraction the copy gate alone removes (`None` without the gate).
    pub removed_by_gate: Option<Rate>,
    /// Of the other samples: the fraction the re-identification rule alone removes.
    pub others_removed_by_reid: Option<Rate>,
    /// Of the other samples: the fraction the copy gate alone removes (`None` without the gate).
    pub others_removed_by_gate: Option<Rate>,
    /// Whether `removed` comes from the filter's recorded scores (`scores.jsonl`).
    pub removed_from_scores: bool,
    /// Fraction of near-copies flagged when scored against their most similar real image instead.
    pub flagged_against_nearest: Option<Rate>,
    /// Mean s_reid (against the prompt's image) of near-copies and of the other samples.
    pub mean_s_reid_copies: Option<f64>,
    /// See `mean_s_reid_copies`.
    pub mean_s_reid_others: Option<f64>,
}

/// Summarises per-sample checks: which samples are near-copies (correlation ≥
/// `threshold`, or without one ≥ the largest of `distinct_real`) and how many
/// of them the filter's rule — s_reid ≥ δ, or with the copy gate
/// (`settings.copy_quantile`) also s_copy ≥ its quantile — removes. `side` is
/// recorded as given. With the gate on, every check needs its recorded s_copy.
pub fn near_copy_audit(
    checks: &[SampleCopyCheck],
    distinct_real: &[f64],
    threshold: Option<f64>,
    side: usize,
    settings: AuditSettings,
) -> Result<NearCopyAudit> {
    let mut sorted = distinct_real.to_vec();
    sorted.sort_by(f64::total_cmp);
    let distinct_max = sorted.last().copied().unwrap_or(f64::NAN);
    let threshold = threshold.unwrap_or(distinct_max);
    if !threshold.is_finite() {
        return Err(crate::Error::msg("near-copy audit: no threshold given and no other-patient real images to derive one from"));
    }
    let mut sample_corr: Vec<f64> = checks.iter().map(|c| c.correlation).collect();
    sample_corr.sort_by(f64::total_cmp);
    let median = |v: &[f64]| if v.is_empty() { f64::NAN } else { crate::eval::metrics::quantile(v, 0.5) };
    let copies: Vec<&SampleCopyCheck> = checks.iter().filter(|c| c.correlation >= threshold).collect();
    let count = |kind: CopyOf| copies.iter().filter(|c| c.copy_of == kind).count();
    if settings.copy_quantile.is_some() && checks.iter().any(|c| c.s_copy_filter.is_none()) {
        return Err(crate::Error::msg("near-copy audit: the copy gate is on but some samples have no recorded s_copy (rescore them)"));
    }
    let reid_removes = |c: &SampleCopyCheck| c.s_reid_filter.unwrap_or(c.s_reid_prompt as f64) >= settings.delta;
    let gate_removes = |c: &SampleCopyCheck| settings.copy_quantile.is_some_and(|q| c.s_copy_filter.is_some_and(|s| s >= q));
    let filter_removes = |c: &SampleCopyCheck| reid_removes(c) || gate_removes(c);
    let others: Vec<&SampleCopyCheck> = checks.iter().filter(|c| c.correlation < threshold).collect();
    let rate_of = |set: &[&SampleCopyCheck], rule: &dyn Fn(&SampleCopyCheck) -> bool, salt: u64| {
        rate(&set.iter().map(|c| rule(c)).collect::<Vec<_>>(), settings.resamples, settings.seed ^ salt)
    };
    let gate_on = settings.copy_quantile.is_some();
    let removed_from_scores = !checks.is_empty() && checks.iter().all(|c| c.s_reid_filter.is_some());
    let flagged: Vec<bool> = copies.iter().map(|c| c.s_reid_nearest as f64 >= settings.delta).collect();
    let mean = |scores: Vec<f32>| (!scores.is_empty()).then(|| scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64);
    Ok(NearCopyAudit {
        threshold,
        side,
        samples: checks.len(),
        distinct_real_median: median(&sorted),
        distinct_real_max: distinct_max,
        sample_median: median(&sample_corr),
        sample_max: sample_corr.last().copied().unwrap_or(f64::NAN),
        near_copies: copies.len(),
        of_prompt_image: count(CopyOf::PromptImage),
        of_prompt_patient: count(CopyOf::PromptPatient),
        of_other_patient: count(CopyOf::OtherPatient),
        removed: rate_of(&copies, &filter_removes, 0x6e63)?,
        removed_others: rate_of(&others, &filter_removes, 0x6e65)?,
        copy_quantile: settings.copy_quantile,
        removed_by_reid: rate_of(&copies, &reid_removes, 0x6e66)?,
        removed_by_gate: if gate_on { rate_of(&copies, &gate_removes, 0x6e67)? } else { None },
        others_removed_by_reid: rate_of(&others, &reid_removes, 0x6e68)?,
        others_removed_by_gate: if gate_on { rate_of(&others, &gate_removes, 0x6e69)? } else { None },
        removed_from_scores,
        flagged_against_nearest: rate(&flagged, settings.resamples, settings.seed ^ 0x6e64)?,
        mean_s_reid_copies: mean(copies.iter().map(|c| c.s_reid_prompt).collect()),
        mean_s_reid_others: mean(checks.iter().filter(|c| c.correlation < threshold).map(|c| c.s_reid_prompt).collect()),
    })
}
